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
