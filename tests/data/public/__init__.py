"""Tests of clfa.data.public, a module each as the package has. A package, so that its modules import the release
builders from beside them and may be named as modules elsewhere in tests/."""
