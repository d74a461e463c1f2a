"""Exporting from Python (clfa.export): the files the command writes, the model card, and metrics whose local paths are
made shareable."""

import json
import shlex

import pytest

from clfa.cli import main
from clfa.configuration import CLFAConfig
from clfa.errors import OptionError
from clfa.export import export_model, model_card, shareable_metrics
from test_predict import save_model


def test_a_model_is_exported_from_python_as_the_command_exports_it(tiny_models, tmp_path, capsys):
    run = tmp_path / "run"
    save_model(tiny_models, run)
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    files = export_model(str(run), tmp_path / "ship")
    assert files == sorted((tmp_path / "ship").iterdir())
    assert {"config.json", "model.safetensors", "metrics.json", "README.md"} <= {file.name for file in files}
    assert capsys.readouterr().out == ""  # the listing is the command's
    with pytest.raises(OptionError, match="not empty; give a new folder"):
        export_model(run, tmp_path / "ship")
    assert main(["export", "--model", str(run), "--output-dir", str(tmp_path / "by-command")]) == 0
    for file in files:  # the files the command writes; the card differs by the folder's name alone
        expected = (tmp_path / "by-command" / file.name).read_bytes()
        if file.name == "README.md":
            expected = expected.replace(b"by-command", b"ship")
        assert file.read_bytes() == expected, file.name


def test_what_was_skipped_keeps_its_file_and_line_not_the_paths_in_its_message():
    metrics = {"data_dir": "/srv/alice/MMSD", "options": {"output_dir": "/srv/alice/runs/mmsd", "text_model": "bert-base-uncased"},
               "data_options": {"image_dir": "/mnt/images", "mmsd_filter": "token"},
               "skipped": [{"file": "/srv/alice/MMSD/text/train.txt", "line": 7,
                            "reason": "missing image file /mnt/images/7.jpg"}]}
    shared = shareable_metrics(metrics)
    assert shared["options"] == {"output_dir": "mmsd", "text_model": "bert-base-uncased"}  # a hub name as it is
    assert shared["data_options"] == {"image_dir": "images", "mmsd_filter": "token"}
    assert shared["skipped"] == [{"file": "MMSD/text/train.txt", "line": 7, "reason": "missing image file"}]
    assert metrics["skipped"][0]["reason"].endswith("7.jpg")  # the run's own record is left as it was


def test_the_cards_commands_run_as_written_for_a_folder_name_with_a_space():
    card = model_card(CLFAConfig(), None, "my model", 10)
    command = next(line for line in card.splitlines() if line.startswith("clfa predict --model") and "--text" in line)
    assert shlex.split(command)[:4] == ["clfa", "predict", "--model", "my model"]
    assert 'Predictor.from_pretrained("my model")' in card
    assert "No scores came with this model" in card
