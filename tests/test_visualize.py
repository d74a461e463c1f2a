"""The alignment heat map of the paper's Figure 4, drawn without a display."""

import functools
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from clfa.errors import OptionError
from clfa.visualize import alignment_heatmaps, cosine_matrix, figure_format


def test_the_heat_map_is_drawn_without_touching_the_callers_pyplot(tmp_path):
    """It switched matplotlib to Agg for the whole process: a notebook's inline figures stopped showing after it."""
    import matplotlib
    import matplotlib.pyplot as plt

    was = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        figure = plt.figure()
        rng = np.random.default_rng(0)
        text, image = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
        matrix = cosine_matrix(text, image)
        np.testing.assert_allclose(np.diag(cosine_matrix(text, text)), 1.0)
        assert matrix.shape == (6, 6) and np.abs(matrix).max() <= 1
        path = alignment_heatmaps({"CLFA": matrix, "BERT+ViT": matrix.T}, tmp_path / "heat.png", tick_labels=list("abcdef"))
        assert matplotlib.get_backend() == "svg" and plt.fignum_exists(figure.number)
    finally:
        plt.close("all")
        plt.switch_backend(was)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (int(2 * 4.2 * 120), 4 * 120)


def test_a_save_cut_short_leaves_the_figure_as_it_was_and_no_part_of_the_new_one(tmp_path, monkeypatch):
    """The figure was saved straight under its name: a save stopped half-way (Ctrl-C, a full disk) left a cut image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    matrix = cosine_matrix(*np.random.default_rng(0).normal(size=(2, 4, 8)))
    path = alignment_heatmaps({"CLFA": matrix}, tmp_path / "heat.png")
    before = path.read_bytes()
    real = FigureCanvasAgg.print_png

    @functools.wraps(real)  # matplotlib passes a print method the arguments its signature names
    def stopped_half_way(self, target, *args, **kwargs):
        if not isinstance(target, (str, os.PathLike)):  # a layout pass, drawn in memory
            return real(self, target, *args, **kwargs)
        whole = io.BytesIO()
        real(self, whole, *args, **kwargs)
        with open(target, "wb") as file:
            file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(FigureCanvasAgg, "print_png", stopped_half_way)
    with pytest.raises(KeyboardInterrupt):
        alignment_heatmaps({"CLFA": matrix.T}, path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full, a file that is always full, is Linux's")
def test_a_figure_the_disk_cannot_take_is_named(tmp_path):
    matrix = cosine_matrix(*np.random.default_rng(0).normal(size=(2, 4, 8)))
    with pytest.raises(OptionError, match=r"^/dev/full: cannot be written \(No space left on device\)$"):
        alignment_heatmaps({"CLFA": matrix}, "/dev/full")


def test_the_figure_is_written_under_the_name_given_in_the_format_its_suffix_names(tmp_path):
    """A name without a suffix was written as NAME.png, beside the name the command printed; one matplotlib cannot
    write is refused before anything is drawn."""
    matrix = cosine_matrix(*np.random.default_rng(0).normal(size=(2, 4, 8)))
    with Image.open(alignment_heatmaps({"CLFA": matrix}, tmp_path / "heat")) as png:
        assert png.format == "PNG"
    assert alignment_heatmaps({"CLFA": matrix}, tmp_path / "heat.SVG").read_text().lstrip().startswith("<?xml")
    with pytest.raises(OptionError, match=r"heat\.xyz: \.xyz is no image format matplotlib writes; give a name ending in "
                                          r"\.png, or one of .*\.pdf, .*\.svg"):
        alignment_heatmaps({"CLFA": matrix}, tmp_path / "heat.xyz")
    assert sorted(file.name for file in tmp_path.iterdir()) == ["heat", "heat.SVG"]


def test_a_format_matplotlib_writes_only_with_a_program_or_codec_missing_here_is_refused_before_drawing(tmp_path, monkeypatch):
    """pgf needs TeX and avif a Pillow with its codec: both are in matplotlib's list, and failed only once drawn."""
    from matplotlib import rcParams
    from PIL import features

    monkeypatch.setenv("PATH", str(tmp_path))  # no TeX on it, whether TeX is installed here or not
    with pytest.raises(OptionError, match=rf"^--output heat\.pgf: \.pgf is written through TeX, and {rcParams['pgf.texsystem']} is "
                                          "not installed; give a .pdf or .svg$"):
        figure_format("heat.pgf", "--output")
    check = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "avif" else check(name))  # an older Pillow
    from matplotlib.backend_bases import FigureCanvasBase

    listed = "avif" in FigureCanvasBase.get_supported_filetypes()  # by matplotlib 3.11 and later
    with pytest.raises(OptionError, match=r"^heat\.avif: " + ("this Pillow writes no AVIF" if listed else r"\.avif is no image format")):
        figure_format("heat.avif")
    assert figure_format("heat.webp") == "webp"

def heatmap_models(tiny_models, root):
    """A model aligned (as trained with CLFA) and one without alignment, both untrained, and a text-only baseline."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer

    from clfa.modeling import CLFAModel

    folders = {}
    for seed, (name, kwargs) in enumerate({"clfa": {}, "no-alignment": {"alignment": "none"},
                                           "text-only": {"alignment": "none", "fusion": "text_only"}}.items()):
        torch.manual_seed(seed)
        model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                                        fusion_heads=2, max_text_length=12, initializer_range=0.5, **kwargs)
        folders[name] = root / name
        model.save_pretrained(folders[name])
        AutoTokenizer.from_pretrained(tiny_models["text"]).save_pretrained(folders[name])
        AutoImageProcessor.from_pretrained(tiny_models["image"]).save_pretrained(folders[name])
    return folders


def test_the_heat_map_of_trained_models_compares_each_pairs_own_features_on_its_diagonal(tiny_models, tiny_dataset, tmp_path):
    from clfa.data.registry import load_dataset
    from clfa.predict import Predictor
    from clfa.visualize import model_heatmaps, pick_pairs

    folders = heatmap_models(tiny_models, tmp_path)
    records = load_dataset("jsonl", tiny_dataset)["test"]
    models = {"CLFA": folders["clfa"], "BERT+ViT": folders["no-alignment"]}
    panels = model_heatmaps(models, records, tmp_path / "one.png", samples=6, seed=3, device="cpu")
    again = model_heatmaps(models, records, tmp_path / "two.png", samples=6, seed=3, device="cpu")
    assert list(panels) == ["CLFA", "BERT+ViT"]
    for title in panels:
        np.testing.assert_array_equal(panels[title], again[title])
        assert panels[title].shape == (6, 6)
    assert not np.allclose(panels["CLFA"], panels["BERT+ViT"])
    other = model_heatmaps({"CLFA": folders["clfa"]}, records, tmp_path / "three.png", samples=6, seed=4, device="cpu")
    assert not np.allclose(other["CLFA"], panels["CLFA"])  # another seed, other pairs

    pairs = pick_pairs(records, 6, seed=3)
    assert pairs == pick_pairs(records, 6, seed=3) and len({pair.id for pair in pairs}) == 6
    for title, folder in models.items():
        features = Predictor.from_pretrained(folder, device="cpu").run(pairs, progress=False)
        own = [float(np.dot(t, i) / np.linalg.norm(t) / np.linalg.norm(i))
               for t, i in zip(features["text_features"], features["image_features"])]
        np.testing.assert_allclose(np.diag(panels[title]), own, rtol=1e-5, atol=1e-6)


def test_model_heatmaps_refuses_a_format_matplotlib_cannot_write_before_a_model_loads(tiny_dataset, tmp_path):
    from clfa.data.registry import load_dataset
    from clfa.visualize import model_heatmaps

    records = load_dataset("jsonl", tiny_dataset)["test"]
    with pytest.raises(OptionError, match=r"heat\.jpeg2: \.jpeg2 is no image format matplotlib writes; .*\.jpeg, .*\.png"):
        model_heatmaps({"CLFA": tmp_path / "no-model"}, records, tmp_path / "heat.jpeg2", samples=4, device="cpu")



def test_the_rows_can_read_the_images_captions_as_the_papers_figure_does(tiny_models, tiny_dataset, tmp_path, capsys):
    """Figure 4's rows are ClipCap's captions of the images; a record's caption field gives them, and records without
    one are not drawn."""
    from clfa.cli import main
    from clfa.data.registry import load_dataset
    from clfa.predict import Predictor
    from clfa.visualize import model_heatmaps, pick_pairs, row_records

    test_file = tiny_dataset / "test.jsonl"
    lines = [json.loads(line) for line in test_file.read_text().splitlines()]
    for line in lines[1::2]:
        line["caption"] = f"a photo of thing {line['id']}"
    test_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = load_dataset("jsonl", tiny_dataset)["test"]
    captioned = row_records(records, "caption")
    assert [r.id for r in captioned] == [line["id"] for line in lines[1::2]]
    assert all(r.text == f"a photo of thing {r.id}" and r.image == original.image
               for r, original in zip(captioned, records[1::2]))
    assert row_records(records, "text") == records

    folder = heatmap_models(tiny_models, tmp_path)["clfa"]
    panels = model_heatmaps({"CLFA": folder}, records, tmp_path / "captions.png", samples=5, seed=1, rows="caption",
                            device="cpu")
    pairs = [r for r in captioned if r.id in {p.id for p in pick_pairs(captioned, 5, seed=1)}]
    features = Predictor.from_pretrained(folder, device="cpu").run(pairs, progress=False)
    np.testing.assert_allclose(panels["CLFA"], cosine_matrix(features["text_features"], features["image_features"]),
                               rtol=1e-5, atol=1e-6)
    by_text = model_heatmaps({"CLFA": folder}, records, tmp_path / "texts.png", samples=5, seed=1, device="cpu")
    assert not np.allclose(panels["CLFA"], by_text["CLFA"])

    data = ["--dataset", "jsonl", "--data-dir", str(tiny_dataset), "--device", "cpu", "--progress", "false"]
    assert main(["heatmap", "--model", str(folder), "--rows", "caption", "--samples", "8", "--output",
                 str(tmp_path / "cli.png"), *data]) == 0
    assert (tmp_path / "cli.png").is_file()
    assert main(["heatmap", "--model", str(folder), "--rows", "caption", "--samples", "9", "--output",
                 str(tmp_path / "nine.png"), *data]) == 2
    assert "--samples 9: the test split of 'jsonl' has 16 pairs, 8 of them with a caption" in capsys.readouterr().err
    with pytest.raises(OptionError, match="rows 'captions': give one of text, caption"):
        row_records(records, "captions")


def test_a_blank_caption_is_no_caption(tmp_path):
    """A caption of spaces (a spreadsheet's cell, a captioner that gave up) has nothing for a row to read: its pair is
    not drawn, as one without a caption, and not counted among those that can be."""
    from clfa.data.records import Record
    from clfa.visualize import row_records

    records = [Record(id=str(i), text=f"tweet {i}", image=tmp_path / f"{i}.jpg", caption=caption)
               for i, caption in enumerate(["a dog", " \t", "", None, " a cat\n"])]
    assert [(r.id, r.text) for r in row_records(records, "caption")] == [("0", "a dog"), ("4", " a cat\n")]
