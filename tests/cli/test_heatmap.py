"""``clfa heatmap`` (clfa.cli.heatmap): what it refuses before drawing, and before importing matplotlib."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from clfa.cli import main
from test_visualize import heatmap_models

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


def test_heatmap_decodes_each_pair_drawn_once_for_all_its_models(tiny_models, tmp_path, decodes, broken_png):
    """Each model's batch decoded the pairs drawn again. The data check's decodings (every image under --skip-invalid,
    and without it those it cannot verify cheaply, neither PNG nor JPEG) are not drawn from: their pixels would be made
    for every pair of the split, to draw a few."""
    from clfa.data.custom import read_custom
    from clfa.predict import Predictor
    from clfa.visualize import alignment_heatmaps, cosine_matrix, pick_pairs
    from conftest import write_pairs
    from test_predict import save_model

    images = ["a.png", "b.jpg", "c.webp", "d.gif"]
    test = write_pairs(tmp_path / "test.jsonl", images)
    with_broken = write_pairs(tmp_path / "more.jsonl", [*images, broken_png.name])
    pairs, panels = pick_pairs(read_custom(test), 3), {}
    for name in ("one", "two"):
        save_model(tiny_models, tmp_path / name)
        features = Predictor.from_pretrained(tmp_path / name, device="cpu").run(pairs, progress=False)  # decoded by its batch
        panels[name] = cosine_matrix(features["text_features"], features["image_features"])
    alignment_heatmaps(panels, tmp_path / "expected.png", tick_labels=[pair.id for pair in pairs], text_label="text")
    drawn = {pair.image.name for pair in pairs}
    decodes.taken()
    heatmap = ["heatmap", "--model", str(tmp_path / "one"), "--model", str(tmp_path / "two"), "--samples", "3", "--device", "cpu",
               "--progress", "false", "--output", str(tmp_path / "heat.png"), "--dataset", "jsonl", "--labels", "negative,positive"]
    for given, checked in (([str(test)], {"c.webp", "d.gif"}), ([str(with_broken), "--skip-invalid"], {*images, "broken_pixels.png"})):
        assert main([*heatmap, "--test-file", *given]) == 0
        assert decodes.taken() == {name: (name in drawn) + (name in checked) for name in drawn | checked}
        assert (tmp_path / "heat.png").read_bytes() == (tmp_path / "expected.png").read_bytes()


def test_heatmap_draws_a_panel_per_model_and_refuses_what_it_cannot_draw(tiny_models, tiny_dataset, tmp_path, capsys):
    from clfa.cli import main

    folders = heatmap_models(tiny_models, tmp_path)
    data = ["--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--device", "cpu", "--progress", "false"]
    widths = []
    for count, models in enumerate(([str(folders["clfa"])], [str(folders["clfa"]), f"BERT+ViT={folders['no-alignment']}"]), 1):
        output = tmp_path / "figures" / f"{count}" / "heat.png"  # its folders made
        given = [arg for model in models for arg in ("--model", model)]
        assert main(["heatmap", *given, "--samples", "5", "--output", str(output), *data]) == 0
        assert capsys.readouterr().out.strip() == str(output)
        with Image.open(output) as png:
            png.verify()
            assert png.format == "PNG"
            widths.append(png.size[0])
    assert widths[1] > widths[0] * 1.5

    refused = {
        ("--model", str(folders["text-only"]), "--model", str(folders["clfa"])): "a text-only model has text features alone",
        ("--model", str(folders["clfa"]), "--samples", "17"): "--samples 17: the test split of 'jsonl' has 16 pairs",
        ("--model", str(folders["clfa"]), "--samples", "1"): "--samples 1: a heat map compares at least 2 pairs",
        ("--model", str(folders["clfa"]), "--model", f"={folders['no-alignment']}"): "or NAME=RUN to title its panel",
        ("--model", str(folders["clfa"]), "--model", f"clfa={folders['no-alignment']}"): "a second panel titled 'clfa'",
    }
    for argv, error in refused.items():
        assert main(["heatmap", *argv, "--output", str(tmp_path / "refused.png"), *data]) == 2
        assert error in capsys.readouterr().err
    assert not (tmp_path / "refused.png").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full, a file that is always full, is Linux's")
def test_a_heat_map_the_disk_cannot_take_names_the_flag_it_came_from(tiny_models, tiny_dataset, tmp_path, capsys):
    """The library names the path alone; the command's message named no --output, as predict's and evaluate's do."""
    from clfa.cli import main

    folders = heatmap_models(tiny_models, tmp_path)
    data = ["--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--device", "cpu", "--progress", "false"]
    assert main(["heatmap", "--model", str(folders["clfa"]), "--samples", "4", "--output", "/dev/full", *data]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "clfa: error: --output /dev/full: cannot be written (No space left on device)"
