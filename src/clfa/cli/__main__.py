"""``python -m clfa.cli``, as torchrun and accelerate launch start it with -m."""

from clfa.cli import run


if __name__ == "__main__":
    run()
