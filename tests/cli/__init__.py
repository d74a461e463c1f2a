"""Tests of clfa.cli, a module each as the package has. A package, so that its modules may be named as those of tests/
(tests/cli/test_predict.py beside tests/test_predict.py) and import their helpers from beside them."""
