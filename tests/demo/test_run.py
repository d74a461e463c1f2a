"""``clfa demo --quick`` end to end: the table, the model, the metrics and the heat map, and that the
model it writes serves ``clfa evaluate`` and ``clfa predict``."""

import json

import pytest

from clfa.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_demo_shows_the_multimodal_models_ahead(demo):
    summary = json.loads((demo / "metrics.json").read_text())
    acc = {name: m["test"]["accuracy"] for name, m in summary["models"].items()}
    unimodal = max(acc["BERT (text only)"], acc["ViT (image only)"])
    # The label is decided by the pair only: one modality alone stays near chance.
    assert unimodal < 0.65
    assert acc["CLFA"] >= 0.85 and acc["CLFA"] >= unimodal + 0.25
    assert acc["BERT+ViT"] >= unimodal + 0.1
    assert (demo / "alignment_heatmap.png").stat().st_size > 10_000
    assert (demo / "model" / "model.safetensors").is_file()


def test_demo_model_serves_evaluate_and_predict(demo, tmp_path, capsys):
    assert main(["evaluate", "--model", str(demo / "model"), "--dataset", "jsonl", "--data-dir", str(demo / "data"), "--output", str(tmp_path / "eval.json")]) == 0
    summary = json.loads((demo / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["test"]["accuracy"] == pytest.approx(summary["models"]["CLFA"]["test"]["accuracy"])

    first = json.loads((demo / "data" / "test.jsonl").read_text().splitlines()[0])
    capsys.readouterr()
    assert main(["predict", "--model", str(demo / "model"), "--text", first["text"], "--image", str(demo / "data" / first["image"])]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("sarcastic", "not_sarcastic")
