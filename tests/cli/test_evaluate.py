"""``clfa evaluate`` (clfa.cli.evaluate): what it refuses before looking for the model."""

from __future__ import annotations

import pytest

from clfa.cli import main


@pytest.mark.parametrize("files, split, message", [
    (["--dev-file", "dev.jsonl"], [], "--dev-file would not be read: evaluate reads the --split splits only (test); give --split test dev to evaluate it as well"),
    (["--train-file", "t.jsonl", "--test-file", "x.jsonl"], ["--split", "test"], "--train-file would not be read"),
    (["--test-file", "x.jsonl"], ["--split", "dev"], "--test-file would not be read: evaluate reads the --split splits only (dev)"),
])
def test_evaluate_refuses_a_file_named_for_a_split_it_does_not_evaluate(tmp_path, capsys, files, split, message):
    # Refused before the model is looked for: the figures would otherwise be those of DATA_DIR's own file, or none.
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--dataset", "jsonl", "--data-dir", str(tmp_path),
                 *files, *split]) == 2
    assert capsys.readouterr().err.startswith(f"clfa: error: {message}")
