"""``python -m clfa.cli``, as torchrun and accelerate launch start it with -m."""

import sys

from clfa.cli import main


if __name__ == "__main__":
    sys.exit(main())
