"""``clfa heatmap`` (clfa.cli.heatmap): what it refuses before drawing, and before importing matplotlib."""

from __future__ import annotations

from clfa.cli import main

from .new_process import run_in_a_new_process


def test_heatmaps_option_and_model_errors_do_not_wait_for_matplotlib(tmp_path):
    """Its figure format was checked first, and so every heatmap error waited for matplotlib to import."""
    data, png = ["--dataset", "jsonl", "--data-dir", str(tmp_path)], ["--output", str(tmp_path / "h.png")]
    model = str(tmp_path / "no-model")
    statuses, stderr, imported = run_in_a_new_process([
        ["heatmap", "--model", "m", *data, *png, "--samples", "1"],
        ["heatmap", "--model", model, *data, *png],
        ["heatmap", "--model", "m", *data, *png, "--dev-file", "d.jsonl"],
        ["heatmap", "--model", model, *data, "--output", str(tmp_path / "h.xyz")]], watched=("matplotlib",))
    assert statuses == [2] * 4 and imported == []
    assert stderr.count(f"{model}: no such folder") == 2


def test_a_refused_heatmap_leaves_no_folder_for_its_output(tmp_path, capsys):
    """The output's folder was made first, and stayed when the format or a model was then refused."""
    model = tmp_path / "model"
    model.mkdir()
    data = ["--dataset", "jsonl", "--data-dir", str(tmp_path)]
    assert main(["heatmap", "--model", str(model), *data, "--output", str(tmp_path / "new" / "h.xyz")]) == 2
    assert main(["heatmap", "--model", str(tmp_path / "no-model"), *data, "--output", str(tmp_path / "new" / "h.png")]) == 2
    assert ".xyz is no image format" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
