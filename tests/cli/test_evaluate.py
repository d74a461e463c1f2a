"""``clfa evaluate`` (clfa.cli.evaluate): what it refuses before looking for the model."""

from __future__ import annotations

import json

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


def test_evaluate_scores_the_pixels_its_data_check_decoded(tiny_models, tmp_path, capsys, decodes, broken_png):
    """The data check decoded each image (every one under --skip-invalid, and without it those it cannot verify
    cheaply, neither PNG nor JPEG), and evaluate decoded it again for its batch."""
    from clfa.data.custom import read_custom
    from clfa.predict import Predictor
    from clfa.prediction_files import labelled
    from conftest import write_pairs
    from test_predict import save_model

    save_model(tiny_models, tmp_path / "model")
    images = ["a.png", "b.jpg", "c.webp", "d.gif"]
    test = write_pairs(tmp_path / "test.jsonl", images)
    with_broken = write_pairs(tmp_path / "more.jsonl", [*images, broken_png.name])
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    probabilities = predictor.run(read_custom(test), progress=False)["probabilities"]  # decoded by its batch
    expected = [labelled(probs, predictor.labels)["probabilities"] for probs in probabilities]
    decodes.taken()
    evaluate = ["evaluate", "--model", str(tmp_path / "model"), "--dataset", "jsonl", "--progress", "false",
                "--predictions", str(tmp_path / "predictions.jsonl"), "--test-file"]
    for given, broken in (([str(test)], {}), ([str(with_broken), "--skip-invalid"], {"broken_pixels.png": 1})):
        assert main([*evaluate, *given]) == 0
        assert decodes.taken() == {"a.png": 1, "b.jpg": 1, "c.webp": 1, "d.gif": 1} | broken
        rows = (tmp_path / "predictions.jsonl").read_text().splitlines()
        assert [json.loads(row)["probabilities"] for row in rows] == expected
        assert (f"{with_broken}:5: unreadable image file {broken_png} (" in capsys.readouterr().err) == bool(broken)


def test_evaluate_with_loader_workers_leaves_the_pixels_to_them(tiny_models, tmp_path, pixels_made):
    """As clfa predict does (tests/cli/test_predict.py): made while the data was read, one image after the other in
    this process, the pixels left the workers nothing to do side by side."""
    from conftest import write_pairs
    from test_predict import save_model

    save_model(tiny_models, tmp_path / "model")
    test = write_pairs(tmp_path / "test.jsonl", ["a.png", "b.jpg", "c.webp", "d.gif"])
    found = {}
    for workers in ("0", "2"):
        pixels_made.clear()
        assert main(["evaluate", "--model", str(tmp_path / "model"), "--dataset", "jsonl", "--progress", "false",
                     "--predictions", str(tmp_path / f"predictions-{workers}.jsonl"), "--test-file", str(test),
                     "--skip-invalid", "--num-workers", workers]) == 0
        found[workers] = (tmp_path / f"predictions-{workers}.jsonl").read_text()
        assert pixels_made == ({"a.png": 1, "b.jpg": 1, "c.webp": 1, "d.gif": 1} if workers == "0" else {})
    assert found["2"] == found["0"]
