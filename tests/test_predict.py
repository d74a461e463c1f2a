"""Predictor: uint8 batches normalised on the device give what the model gives on the image processor's own output;
the precision and attention kernels asked for are those it computes with."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from clfa import CLFAModel
from clfa.data.records import Record
from clfa.predict import Predictor
from conftest import LABELS, make_model, on_a_fresh_process, two_gpus


def save_model(tiny_models, path):
    torch.manual_seed(0)
    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                                    fusion_heads=2, max_text_length=12, initializer_range=0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    processor = AutoImageProcessor.from_pretrained(tiny_models["image"])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    return model, tokenizer, processor


def records_of(tiny_dataset, count=6):
    texts = ["what a lovely day", "snow storm at night", "a photo of the sky", "great weather", "the cat", "rainy night"]
    return [Record(id=str(i), text=texts[i % len(texts)], image=tiny_dataset / "images" / f"{i}.png") for i in range(count)]


def test_predictions_equal_the_model_on_the_processors_pixels(tiny_models, tiny_dataset, tmp_path):
    model, tokenizer, processor = save_model(tiny_models, tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")

    texts = ["what a lovely day", "snow storm at night", "a photo of the sky"]
    images = [tiny_dataset / "images" / f"{i}.png" for i in (0, 5, 9)]
    enc = tokenizer(texts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    expected = model.eval()(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        pixel_values=processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"],
    ).logits.softmax(-1)
    assert (expected.max(-1).values - expected.min(-1).values).max() > 0.01  # the classes are told apart

    records = [Record(id=str(i), text=t, image=p) for i, (t, p) in enumerate(zip(texts, images))]
    batched = torch.from_numpy(predictor.run(records, batch_size=2, progress=False)["probabilities"])
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-6)
    for i, (text, image) in enumerate(zip(texts, images)):
        one = predictor.predict(text, image)
        assert one["label"] == ["negative", "positive"][int(expected[i].argmax())]
        torch.testing.assert_close(torch.tensor(list(one["probabilities"].values())), expected[i], rtol=0, atol=1e-5)


def test_predictions_come_batch_by_batch_in_the_records_order(tiny_models, tiny_dataset, tmp_path):
    save_model(tiny_models, tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    records = records_of(tiny_dataset, count=5)
    whole = predictor.run(records, batch_size=2, progress=False)
    assert {key: value.shape for key, value in whole.items()} == {"probabilities": (5, 2), "text_features": (5, 24), "image_features": (5, 24)}
    assert predictor.run([], progress=False)["text_features"].shape == (0, 24)

    batches = []
    forward = predictor._forward
    predictor._forward = lambda batch: batches.append(len(batch["input_ids"])) or forward(batch)
    stream = predictor.iter_predictions(records, batch_size=2, progress=False)
    first = next(stream)
    assert batches == [2]  # the first prediction is out before the second batch is computed
    rest = list(stream)
    assert batches == [2, 2, 1]
    assert [one["id"] for one in [first, *rest]] == ["0", "1", "2", "3", "4"]
    for one, probs in zip([first, *rest], whole["probabilities"]):
        assert one["label"] == ["negative", "positive"][int(probs.argmax())]
        assert list(one["probabilities"].values()) == pytest.approx(probs.tolist(), abs=1e-6)


class MatmulDtypes:
    """The dtypes the model's linear layers compute in."""

    def __init__(self, model):
        self.seen = set()
        self.handles = [m.register_forward_hook(self.hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def hook(self, module, inputs, output):
        self.seen.add(output.dtype)


def test_precision_auto_is_fp32_on_a_cpu_and_bf16_computes_in_bf16(tiny_models, tiny_dataset, tmp_path):
    save_model(tiny_models, tmp_path)
    records = records_of(tiny_dataset)
    results = {}
    for precision in ("auto", "fp32", "bf16"):
        predictor = Predictor.from_pretrained(tmp_path, device="cpu", precision=precision)
        dtypes = MatmulDtypes(predictor.model)
        results[precision] = predictor.run(records, batch_size=4, progress=False)["probabilities"]
        assert dtypes.seen == {torch.bfloat16 if precision == "bf16" else torch.float32}, precision
        assert results[precision].dtype == results["auto"].dtype  # probabilities come back as fp32 whatever the compute
    assert predictor.precision == "bf16"
    assert (results["auto"] == results["fp32"]).all()
    bf16, fp32 = torch.from_numpy(results["bf16"]), torch.from_numpy(results["fp32"])
    assert not torch.equal(bf16, fp32)  # another computation...
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0.03)  # ...of the same model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predictions_on_a_gpu_are_those_of_the_cpu(tiny_models, tiny_dataset, tmp_path):
    """The GPU path: pinned batches (from a loader worker) copied without blocking and normalised there, in fp32 and
    in auto's precision (bf16 autocast where the GPU computes it), on the last GPU: on a machine with several, not
    the current one."""
    save_model(tiny_models, tmp_path)
    records = records_of(tiny_dataset)
    on_cpu = Predictor.from_pretrained(tmp_path, device="cpu")
    expected = torch.from_numpy(on_cpu.run(records, batch_size=4, progress=False)["probabilities"])
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    for precision, atol in (("fp32", 1e-3), ("auto", 0.03)):
        predictor = Predictor.from_pretrained(tmp_path, device=device, precision=precision)
        assert {p.device for p in predictor.model.parameters()} == {device}
        batched = torch.from_numpy(predictor.run(records, batch_size=4, num_workers=1, progress=False)["probabilities"])
        torch.testing.assert_close(batched, expected, rtol=0, atol=atol, msg=precision)
        one = predictor.predict(records[0].text, records[0].image)["probabilities"]
        torch.testing.assert_close(torch.tensor(list(one.values())), expected[0], rtol=0, atol=atol, msg=precision)


@two_gpus
@pytest.mark.parametrize("num_workers", [0, 1], ids=["pinned-here", "pinned-by-the-loader-thread"])
def test_prediction_on_the_second_gpu_leaves_the_first_alone(tiny_models, tiny_dataset, tmp_path, num_workers):
    """cuda:1 in a process that never chose a GPU (its current one is the first): pinning batches, in the process or in
    the loader's pin-memory thread, bf16 autocast and the single pair open no context on GPU 0, which would cost some
    500 MB there; the results are those of cuda:0, and the caller's current GPU is left as it was."""
    save_model(tiny_models, tmp_path)
    records = records_of(tiny_dataset)
    expected = {}
    for precision in ("fp32", "auto"):
        on_first = Predictor.from_pretrained(tmp_path, device="cuda:0", precision=precision)
        expected[precision] = on_first.run(records, batch_size=4, progress=False)["probabilities"].tolist()
        one = on_first.predict(records[0].text, records[0].image)["probabilities"]
        expected[f"{precision}, one pair"] = list(one.values())
    pairs = [(record.text, str(record.image)) for record in records]
    result = on_a_fresh_process(
        "from clfa.data.records import Record\n"
        "from clfa.predict import Predictor\n"
        f"records = [Record(id=str(i), text=text, image=image) for i, (text, image) in enumerate({pairs!r})]\n"
        "result = {}\n"
        "for precision in ('fp32', 'auto'):\n"
        f"    predictor = Predictor.from_pretrained({str(tmp_path)!r}, device='cuda:1', precision=precision)\n"
        f"    result[precision] = predictor.run(records, batch_size=4, num_workers={num_workers}, progress=False)"
        "['probabilities'].tolist()\n"
        "    one = predictor.predict(records[0].text, records[0].image)['probabilities']\n"
        "    result[f'{precision}, one pair'] = list(one.values())\n")
    assert result["contexts"][:2] == [False, True] and result["reserved_on_first"] == 0
    assert result["current"] == 0
    # Another model of GPU may pick other kernels (and auto another precision): then as close as the CPU's results are.
    alike = torch.cuda.get_device_name(0) == torch.cuda.get_device_name(1)
    for key, values in expected.items():
        atol = 1e-6 if alike else (1e-3 if key.startswith("fp32") else 0.03)
        torch.testing.assert_close(torch.tensor(result[key]), torch.tensor(values), rtol=0, atol=atol, msg=key)


def test_prediction_runs_the_attention_backends_asked_for(tiny_models, tiny_dataset, tmp_path, fused_attention_kernels):
    save_model(tiny_models, tmp_path)
    records = records_of(tiny_dataset)
    results = {}
    for backends in (None, "math"):
        predictor = Predictor.from_pretrained(tmp_path, device="cpu", attention_backends=backends)
        with fused_attention_kernels() as kernels:
            results[backends] = predictor.run(records, batch_size=4, progress=False)["probabilities"]
            predictor.predict("what a lovely day", tiny_dataset / "images" / "0.png")
        assert (sum(kernels.calls.values()) > 0) == (backends is None), backends
    torch.testing.assert_close(torch.from_numpy(results["math"]), torch.from_numpy(results[None]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"unknown backend\(s\) \['fastest'\]"):
        Predictor.from_pretrained(tmp_path, device="cpu", attention_backends="math,fastest")


def test_a_wrong_model_folder_or_device_is_named(tiny_models, tmp_path, monkeypatch):
    from clfa.errors import OptionError

    with pytest.raises(OptionError, match="nowhere: no such folder"):
        Predictor.from_pretrained(tmp_path / "nowhere")
    # A typo in a relative path looks like a hub name ("org/model"); beside the folder it was meant for, it is not.
    save_model(tiny_models, tmp_path / "runs" / "my-task")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match=r"runs/my-tsk: no such folder in runs \(did you mean my-task\?\)"):
        Predictor.from_pretrained("runs/my-tsk")
    with pytest.raises(OptionError, match=r"^\./nowhere: no such folder;"):
        Predictor.from_pretrained("./nowhere")
    with pytest.raises(OptionError, match=r"^runs/my--task: no such folder in runs \(did you mean my-task\?\)"):
        Predictor.from_pretrained("runs/my--task")  # no hub name has "--": the hub's cache is not even asked
    assert Predictor.from_pretrained("runs/my-task", device="cpu").labels == ["negative", "positive"]


def test_a_folder_that_is_not_a_whole_clfa_model_is_refused_in_one_line(tiny_models, tmp_path):
    """Another model's folder would load as a CLFA model with random weights and predict LABEL_0/LABEL_1."""

    from clfa.errors import OptionError

    with pytest.raises(OptionError, match=r"bert: a 'bert' model, not a CLFA model"):
        Predictor.from_pretrained(tiny_models["text"])
    run = tmp_path / "run"
    save_model(tiny_models, run)
    checkpoint = run / "checkpoints" / "checkpoint-6"  # a Trainer checkpoint: weights, no tokenizer
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(run / name, checkpoint / name)
    assert Predictor.from_pretrained(checkpoint, device="cpu").labels == ["negative", "positive"]
    (run / "preprocessor_config.json").unlink()
    with pytest.raises(OptionError, match=r"checkpoint-6: not a trained model folder \(no preprocessor_config.json\)"):
        Predictor.from_pretrained(checkpoint)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    shutil.copy(Path(tiny_models["image"]) / "preprocessor_config.json", run)
    with pytest.raises(OptionError, match=r"checkpoint-6: cannot load the model \("):
        Predictor.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(OptionError, match=r"checkpoint-6: cannot read its config.json"):
        Predictor.from_pretrained(checkpoint)
    with pytest.raises(OptionError, match=r"not a trained model folder \(no config.json, model.safetensors, tokenizer_config.json, "
                                          r"preprocessor_config.json\)"):
        Predictor.from_pretrained(tmp_path)
    save_model(tiny_models, tmp_path / "model")
    with pytest.raises(OptionError, match="--device gpu: not a device"):
        Predictor.from_pretrained(tmp_path / "model", device="gpu")
    for kind in ("meta", "mps"):  # devices torch names, which prediction is not built for
        with pytest.raises(OptionError, match=f"--device {kind}: prediction runs on cpu or cuda"):
            Predictor.from_pretrained(tmp_path / "model", device=kind)
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="--device cuda: no CUDA GPU is available here"):
            Predictor.from_pretrained(tmp_path / "model", device="cuda")
    else:
        with pytest.raises(OptionError, match=f"--device cuda:{torch.cuda.device_count()}: this machine has"):
            Predictor.from_pretrained(tmp_path / "model", device=f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match="^empty text$"):
        Predictor.from_pretrained(tmp_path / "model", device="cpu").predict(" ", Image.new("RGB", (8, 8)))
    empty = Predictor.from_pretrained(tmp_path / "model", device="cpu").run([], progress=False)
    assert {key: value.shape for key, value in empty.items()} == {"probabilities": (0, 2), "text_features": (0, 24), "image_features": (0, 24)}


@pytest.mark.parametrize("edit, refused", [
    ({"fusion_layers": 4}, r"its config.json does not match its weights \(\d+ missing weight\(s\), e.g. fusion"),
    ({"fusion_layers": 1}, r"its config.json does not match its weights \(\d+ unexpected weight\(s\)"),
    ({"mapping_hidden_dim": 40}, r"model: its config.json does not match its weights \(\d+ mis-shaped weight\(s\), "
                                 r"e.g. image_mapping.0.bias, \[1536\] in the file, \[40\] by the config"),
    # Else a TypeError in building the layers, naming neither the file nor the setting.
    ({"fusion_layers": "2"}, r"model: its config.json: CLFAConfig.fusion_layers must be a whole number, got '2'$"),
    ({"dropout": None}, r"model: its config.json: CLFAConfig.dropout must be a number, got None$"),
    # Else an AttributeError in transformers, which reads a student's config as a mapping.
    ({"text_config": "bert"}, r"model: its config.json: CLFAConfig.text_config must be an object of the student's "
                              r"settings, got 'bert'$"),
    ({"image_config": 3}, r"model: its config.json: CLFAConfig.image_config must be an object of the student's settings, "
                          r"got 3$"),
])
def test_a_config_edited_after_training_is_refused_not_filled_with_random_weights(tiny_models, tmp_path, edit, refused):
    import json

    from clfa.errors import OptionError

    save_model(tiny_models, tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | edit))
    with pytest.raises(OptionError, match=refused):
        Predictor.from_pretrained(tmp_path / "model", device="cpu")


def test_labels_of_another_number_than_the_classifiers_scores_are_named(tiny_models, tmp_path):
    from clfa.errors import OptionError

    save_model(tiny_models, tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"id2label": {"0": "negative"}, "label2id": {"negative": 0}}))
    with pytest.raises(OptionError, match=r"model: its config.json names 1 label\(s\) \(negative\), and its classifier gives 2 "
                                          r"scores$"):
        Predictor.from_pretrained(tmp_path / "model", device="cpu")


@pytest.mark.parametrize("name, written, problem", [
    # A copy cut short: transformers' message gives a line and a column, and no file.
    ("tokenizer.json", None, r"tokenizer.json: not whole JSON \(.+: line \d+ column \d+\)"),
    ("tokenizer_config.json", "", r"tokenizer_config.json: not whole JSON \(Expecting value: line 1 column 1\)"),
    # JSON, but no object: an AttributeError in transformers.
    ("tokenizer_config.json", "[]", r"tokenizer_config.json: a JSON list, not an object of settings"),
    ("preprocessor_config.json", '"vit"', r"preprocessor_config.json: a JSON string, not an object of settings"),
])
def test_a_model_file_cut_short_or_not_json_settings_is_named(tiny_models, tmp_path, name, written, problem):
    from clfa.errors import OptionError

    save_model(tiny_models, tmp_path / "model")
    file = tmp_path / "model" / name
    file.write_text(file.read_text()[: len(file.read_text()) // 2] if written is None else written)
    with pytest.raises(OptionError, match=rf"^{tmp_path / 'model'}: cannot load the model \({tmp_path / 'model'}/{problem}"):
        Predictor.from_pretrained(tmp_path / "model", device="cpu")


def test_a_text_that_shows_nothing_or_an_image_of_no_pixels_is_no_pair_to_predict(tiny_models, tmp_path, capsys):
    from clfa.cli import main
    from clfa.data.records import DataError

    save_model(tiny_models, tmp_path / "model")
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    image = Image.new("RGB", (8, 8))
    with pytest.raises(DataError, match="^empty text$"):  # the tokenizer drops zero-width characters: no text is left
        predictor.predict("\u200b\u200d", image)
    with pytest.raises(ValueError, match=r"^an image of no pixels \(0 x 8\)$"):  # as a numpy array of none is refused
        predictor.predict("a sunny day", Image.new("RGB", (0, 8)))
    assert set(predictor.predict("\U0001F44D\u200d\U0001F525", image)["probabilities"]) == {"negative", "positive"}
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), "--text", "\u2060", "--image", str(tmp_path / "a.png")]) == 2
    assert capsys.readouterr().err == "clfa: error: --text is empty\n"


@pytest.mark.parametrize("name, at, value", [("classifier.4.bias", 0, float("nan")),  # as a diverged run leaves them
                                              ("text_model.embeddings.word_embeddings.weight", -1, float("inf")),
                                              ("image_mapping.2.weight", 7, -float("inf"))])
def test_a_model_whose_weights_are_not_numbers_is_refused(tiny_models, tmp_path, name, at, value):
    from safetensors.torch import load_file, save_file

    from clfa.errors import OptionError

    save_model(tiny_models, tmp_path / "model")
    weights = load_file(tmp_path / "model" / "model.safetensors")
    weights[name].view(-1)[at] = value
    save_file(weights, tmp_path / "model" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(OptionError, match=rf"model: its weights are not all numbers \(e.g. {name}\): the run that "
                                          r"wrote it diverged$"):
        Predictor.from_pretrained(tmp_path / "model", device="cpu")


def test_the_check_for_weights_that_are_not_numbers_writes_nothing_their_size(tiny_models, tmp_path):
    """Every load reads every weight: isfinite(weight).all() writes temporaries the size of each, which took 0.6 s of a
    paper-size model's 1 s load on one CPU thread (every model is loaded on the CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from clfa.modeling import first_non_finite_weight

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.largest = max([self.largest, *(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))])
            return out

    model, *_ = save_model(tiny_models, tmp_path)
    with LargestOutput() as ops:
        assert first_non_finite_weight(model) is None
    assert ops.largest == 1
    with torch.no_grad():
        model.text_mapping[0].weight[3, 5] = float("nan")
    assert first_non_finite_weight(model) == "text_mapping.0.weight"


def text_features(predictor, text, image):
    """What the model made of ``text``, unrounded: a saturated classifier may give two texts the same probabilities."""
    return predictor.run([Record(id="1", text=text, image=image)], progress=False)["text_features"][0]


def test_a_model_trained_on_rewritten_texts_rewrites_what_it_predicts(tiny_models, tiny_dataset, tmp_path):
    """--normalize-text turned MMSD's "<user>" into "@user" in training: raw tweets must reach the model the same way."""
    raw, rewritten = "thanks <user> for <num> hours # fun <url>", "thanks @user for 0 hours #fun http"
    image = tiny_dataset / "images" / "3.png"
    save_model(tiny_models, tmp_path / "plain")
    plain = Predictor.from_pretrained(tmp_path / "plain", device="cpu")
    # The rewriting changes what the model sees.
    assert not np.array_equal(text_features(plain, raw, image), text_features(plain, rewritten, image))
    model, tokenizer, processor = save_model(tiny_models, tmp_path / "rewriting")
    model.config.normalize_text = True
    model.save_pretrained(tmp_path / "rewriting")
    predictor = Predictor.from_pretrained(tmp_path / "rewriting", device="cpu")
    assert predictor.predict(raw, image) == predictor.predict(rewritten, image) == plain.predict(rewritten, image)
    records = [Record(id="1", text=raw, image=image), Record(id="2", text=rewritten, image=image)]
    features = predictor.run(records, progress=False)["text_features"]
    # Two rows of one batch agree to rounding, not always to the bit; the raw text read as given is far off.
    np.testing.assert_allclose(features[0], features[1], rtol=0, atol=1e-5)
    assert np.abs(plain.run(records, progress=False)["text_features"][0] - features[0]).max() > 1e-2
    assert records[0].text == raw  # the caller's records are left as they are


def test_a_model_that_predates_recording_rewritten_texts_learns_it_from_its_run(tiny_models, tiny_dataset, tmp_path, caplog):
    raw, rewritten = "thanks <user> for <num> hours # fun <url>", "thanks @user for 0 hours #fun http"
    image = tiny_dataset / "images" / "3.png"
    save_model(tiny_models, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["normalize_text"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "metrics.json").write_text(json.dumps({"data_options": {"normalize_text": True}}))
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    assert predictor.model.config.normalize_text is True
    assert predictor.predict(raw, image) == predictor.predict(rewritten, image)
    written = predictor.save_pretrained(tmp_path / "export")  # now recorded where it belongs
    assert json.loads((tmp_path / "export" / "config.json").read_text())["normalize_text"] is True
    assert written == sorted((tmp_path / "export").iterdir()) and tmp_path / "export" / "model.safetensors" in written
    (tmp_path / "metrics.json").unlink()
    unknown = Predictor.from_pretrained(tmp_path, device="cpu")
    assert "records whether its training texts were rewritten (--normalize-text)" in caplog.text
    assert unknown.model.config.normalize_text is None
    assert not np.array_equal(text_features(unknown, raw, image), text_features(unknown, rewritten, image))  # as given


def test_inputs_the_python_api_cannot_use_are_named(tiny_models, tiny_dataset, tmp_path, monkeypatch):

    from clfa.data.records import DataError

    save_model(tiny_models, tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    image = tiny_dataset / "images" / "2.png"
    as_array = np.asarray(Image.open(image).convert("RGB"))
    assert predictor.predict("the cat", as_array) == predictor.predict("the cat", image)
    gray = np.asarray(Image.open(image).convert("L"))
    assert predictor.predict("the cat", gray[..., None]) == predictor.predict("the cat", gray) \
        == predictor.predict("the cat", Image.open(image).convert("L"))
    with pytest.raises(TypeError, match=r"uint8 with values 0-255, not float32 \(values in \[0, 1\]: multiply by 255"):
        predictor.predict("the cat", as_array.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, 3\) or \(H, W, 4\), not \(3, 16, 16\); channels come last"):
        predictor.predict("the cat", np.ascontiguousarray(as_array.transpose(2, 0, 1)))
    with pytest.raises(ValueError, match=r"not \(0, 16, 3\)"):
        predictor.predict("the cat", as_array[:0])
    with pytest.raises(TypeError, match="text must be a string, not NoneType"):
        predictor.predict(None, image)
    with pytest.raises(TypeError, match="image must be a path, a PIL image or a numpy array, not bytes"):
        predictor.predict("the cat", image.read_bytes())
    with pytest.raises(DataError, match=r"URL instead of an image file https://example.com/x.jpg \(images are read from disk"):
        predictor.predict("the cat", "https://example.com/x.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # so that a small image counts as a decompression bomb
    with pytest.raises(DataError, match=r"2.png: unreadable image file \(DecompressionBombError"):
        predictor.predict("the cat", image)


def test_a_model_folder_without_its_vocabulary_is_refused(tiny_models, tmp_path):
    """Without tokenizer.json, transformers builds a tokenizer of special tokens only: every word would be [UNK]."""
    from clfa.errors import OptionError

    save_model(tiny_models, tmp_path)
    for name in ("tokenizer.json", "vocab.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(OptionError, match=r"not a trained model folder \(no tokenizer.json or other vocabulary file: its "
                                          r"tokenizer of 5 tokens holds no words\)"):
        Predictor.from_pretrained(tmp_path, device="cpu")
    # A SentencePiece tokenizer without its spiece.model keeps a word marker besides its special tokens.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 100}))
    with pytest.raises(OptionError, match=r"its tokenizer of 104 tokens holds no words"):
        Predictor.from_pretrained(tmp_path, device="cpu")
    # A tokenizer of bytes has no vocabulary file, and needs none.
    from transformers import ByT5Tokenizer

    (tmp_path / "tokenizer_config.json").unlink()
    ByT5Tokenizer().save_pretrained(tmp_path)
    assert len(Predictor.from_pretrained(tmp_path, device="cpu").tokenizer) == 384


def test_a_single_modality_baseline_predicts_with_the_features_of_its_modality(tiny_models, tiny_dataset, tmp_path):
    model = CLFAModel.from_encoders(tiny_models["text"], tiny_models["image"], labels=["negative", "positive"], align_dim=24,
                                    fusion_heads=2, max_text_length=12, fusion="image_only", alignment="none")
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_models["text"]).save_pretrained(tmp_path)
    AutoImageProcessor.from_pretrained(tiny_models["image"]).save_pretrained(tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    records = records_of(tiny_dataset, count=3)
    for got in (predictor.run(records, progress=False), predictor.run([], progress=False)):
        assert set(got) == {"probabilities", "image_features"}
    one = predictor.predict("a text the model does not read", tiny_dataset / "images" / "1.png")
    assert one == predictor.predict("another", tiny_dataset / "images" / "1.png")


def test_an_image_opened_from_a_file_that_cannot_be_read_is_named(tiny_models, tmp_path):
    from clfa.data.records import DataError

    save_model(tiny_models, tmp_path / "model")
    Image.effect_noise((64, 48), 60).convert("RGB").save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:-200])  # its pixels, not its header
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    with pytest.raises(DataError, match=r"cut.jpg: unreadable image file \(OSError: image file is truncated"):
        predictor.predict("a day", tmp_path / "cut.jpg")
    with pytest.raises(DataError, match=r"cut.jpg: unreadable image file \(OSError: image file is truncated"):
        predictor.predict("a day", Image.open(tmp_path / "cut.jpg"))


def test_batches_of_what_is_not_a_list_of_records_are_named(tiny_models, tiny_dataset, tmp_path):
    """One Record, tuples, in-memory images or a None text failed deep in the loader or in PIL ("'Record' object is not
    iterable", "'PngImageFile' object has no attribute 'read'"); a generator failed on len()."""
    save_model(tiny_models, tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    records = records_of(tiny_dataset, 3)
    with pytest.raises(TypeError, match=r"a list of Record, not one Record \(for one pair, use predict\(text, image\)\)"):
        predictor.run(records[0], progress=False)
    with pytest.raises(TypeError, match=r"records\[0\]: a Record\(id, text, image\), not tuple"):
        predictor.predict_records([(r.text, r.image) for r in records], progress=False)
    with Image.open(records[1].image) as image:
        in_memory = [records[0], Record("1", "the cat", image)]
        with pytest.raises(TypeError, match=r"records\[1\] \(id '1'\): image must be the path of an image file, not PngImageFile"):
            predictor.run(in_memory, progress=False)
    with pytest.raises(TypeError, match=r"records\[0\] \(id 'x'\): text must be a string, not NoneType"):
        list(predictor.iter_predictions([Record("x", None, records[0].image)], progress=False))
    assert list(predictor.iter_predictions(iter(records), progress=False)) == predictor.predict_records(records, progress=False)


def test_predictions_tokenize_each_batch_as_it_comes_not_every_record_first(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    """iter_predictions promises memory that does not grow with the records: tokenising them all before the first
    batch held ~6 KB a record (1.2 GB for 200,000) and made the first prediction wait for all of them."""
    import clfa.data.processing as processing

    save_model(tiny_models, tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    records = records_of(tiny_dataset, 10)
    expected = predictor.predict_records(records, batch_size=4, progress=False)
    tokenized, tokenize = [], processing.tokenize
    monkeypatch.setattr(processing, "tokenize", lambda tokenizer, texts, length: tokenized.append(len(texts)) or tokenize(tokenizer, texts, length))
    results = predictor.iter_predictions(records, batch_size=4, progress=False)
    first = next(results)
    assert sum(tokenized) == 4
    assert [first, *results] == expected


def test_a_model_folder_under_home_may_be_named_with_a_tilde(tiny_models, tmp_path, monkeypatch):
    save_model(tiny_models, tmp_path / "models" / "mine")
    monkeypatch.setenv("HOME", str(tmp_path))
    predictor = Predictor.from_pretrained("~/models/mine", device="cpu")
    assert predictor.labels == Predictor.from_pretrained(tmp_path / "models" / "mine", device="cpu").labels


def test_rewritten_texts_reach_loader_workers_without_the_model(tiny_models, tiny_dataset, tmp_path, monkeypatch):
    """Workers started by spawn (macOS, Windows) are sent the dataset pickled: a bound Predictor._text took the model."""
    import pickle

    import clfa.predict

    save_model(tiny_models, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"normalize_text": True}))
    predictor = Predictor.from_pretrained(tmp_path, device="cpu")
    sent = []
    real = clfa.predict.CLFADataset
    monkeypatch.setattr(clfa.predict, "CLFADataset", lambda records, *a, **k: sent.append(records) or real(records, *a, **k))
    predictor.run(records_of(tiny_dataset), progress=False)
    assert len(pickle.dumps(sent[0])) < 100_000


def test_an_image_pillow_warns_about_is_predicted_without_its_warnings(tiny_models, tmp_path, monkeypatch, capsys):
    """Pillow's warnings of a size past the one it warns at and of EXIF it cannot parse name no file, and the pixels
    are read all the same: by path, as the image opened from it, and through --image and --input alike."""
    import warnings

    from clfa.cli import main

    save_model(tiny_models, tmp_path / "model")
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    picture.save(tmp_path / "exif.jpg", exif=b"Exif\0\0II*\0\x08\0\0\0" + bytes(range(256)), quality=100)
    with pytest.warns(UserWarning, match=r"(?i)corrupt EXIF"):
        Image.open(tmp_path / "exif.jpg")
    picture.save(tmp_path / "large.png")
    pairs = [{"id": "exif", "text": "the cat", "image": "exif.jpg"}, {"id": "large", "text": "the cat", "image": "large.png"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: past the size Pillow warns at, not the one it refuses
    paths = (tmp_path / "exif.jpg", tmp_path / "large.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opened here: Pillow's own warnings, not the predictor's
        opened = [Image.open(path) for path in paths]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path, image in zip(paths, opened):
            by_path = predictor.predict("the cat", path)
            assert predictor.predict("the cat", image) == by_path
            assert main(["predict", "--model", str(tmp_path / "model"), "--text", "the cat", "--image", str(path)]) == 0
            said = json.loads(capsys.readouterr().out)
            assert said["label"] == by_path["label"]
            assert said["probabilities"] == pytest.approx(by_path["probabilities"], abs=1e-6)
        assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "pairs.jsonl"),
                     "--skip-invalid", "--progress", "false"]) == 0
    assert [str(warning.message) for warning in caught] == []
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["exif", "large"]
    for image in opened:
        image.close()


# Texts of 3 to 16 tokens, [CLS] and [SEP] included, for models that pad them to 24.
MIXED_TEXTS = ["cat", "what a lovely sunny day", "the snow storm of the night and the rainy weather of this great day", "dog",
               "a photo of the sky", "great", "love this weather"]


class TextShapes:
    """The shapes of the input_ids the model is called with, one per forward pass."""

    def __init__(self, model):
        self.seen = []
        self.handle = model.register_forward_pre_hook(
            lambda module, args, kwargs: self.seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)


def mixed_pairs(predictor):
    """MIXED_TEXTS as records with their preprocessed images, the images as given to predict(), and what the model
    computes on the texts padded to max_text_length, as training evaluates it."""
    from clfa.data.processing import tokenize

    arrays = np.random.default_rng(0).integers(0, 256, (len(MIXED_TEXTS), 20, 24, 3), dtype=np.uint8)
    pixels = np.stack([predictor.transform.load_image(Image.fromarray(array)) for array in arrays])
    records = [Record(id=str(i), text=text, image=Path(f"{i}.png")) for i, text in enumerate(MIXED_TEXTS)]
    tokens = tokenize(predictor.tokenizer, MIXED_TEXTS, predictor.model.config.max_text_length)
    with torch.inference_mode():
        out = predictor.model(**tokens, pixel_values=predictor.transform.normalize(torch.from_numpy(pixels)))
    static = {"probabilities": out.logits.softmax(-1)}
    static |= {f"{kind}_features": getattr(out, f"{kind}_features") for kind in predictor.model.config.modalities}
    return records, pixels, arrays, static


def check_static(predictor, batch_size: int) -> list[tuple[int, int]]:
    """Asserts that run() at ``batch_size`` and predict() give what the model gives on statically padded texts;
    returns the shapes of the input_ids of run()'s forward passes."""
    records, pixels, arrays, static = mixed_pairs(predictor)
    shapes = TextShapes(predictor.model)
    got = predictor.run(records, batch_size=batch_size, progress=False, images=pixels)
    shapes.handle.remove()
    assert got.keys() == static.keys()
    for key, expected in static.items():
        torch.testing.assert_close(torch.from_numpy(got[key]), expected, rtol=0, atol=1e-5, msg=key)
    for i, (text, array) in enumerate(zip(MIXED_TEXTS, arrays)):
        one = predictor.predict(text, array)["probabilities"]
        torch.testing.assert_close(torch.tensor(list(one.values())), static["probabilities"][i], rtol=0, atol=1e-5)
    return shapes.seen


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("fusion", ["cross_attention", "concat", "co_attention", "text_only", "image_only"])
def test_each_batch_is_cut_to_its_longest_text_and_computes_what_static_padding_does(tiny_models, fusion, pooling):
    model = make_model(tiny_models, fusion=fusion, classifier_pooling=pooling, alignment_pooling=pooling, max_text_length=24,
                       initializer_range=0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["text"])
    predictor = Predictor(model, tokenizer, AutoImageProcessor.from_pretrained(tiny_models["image"]), device="cpu")
    lengths = [len(ids) for ids in tokenizer(MIXED_TEXTS)["input_ids"]]
    assert sorted(set(lengths)) == [3, 5, 7, 16]  # every batch has padding to cut
    for batch_size in (1, 3, 7):
        parts = [lengths[start:start + batch_size] for start in range(0, len(lengths), batch_size)]
        assert check_static(predictor, batch_size) == [(len(part), max(part)) for part in parts]
    shapes = TextShapes(predictor.model)
    predictor.predict(MIXED_TEXTS[1], np.zeros((16, 16, 3), dtype=np.uint8))
    assert shapes.seen == [(1, lengths[1])]


@pytest.mark.parametrize("student", ["left_padded", "convbert"])
def test_texts_padded_on_the_left_or_read_with_their_padding_keep_the_full_length(tiny_models, other_students, student):
    """A left-padded text's tokens sit at positions that the padding before them sets, and ConvBERT's convolutions read
    the padded positions' states: both are given max_text_length tokens."""
    from transformers import ConvBertConfig, ConvBertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(other_students["left_padded"] if student == "left_padded" else tiny_models["text"])
    sizes = dict(align_dim=24, fusion_heads=2, max_text_length=24, initializer_range=0.5)
    if student == "convbert":
        text = ConvBertModel(ConvBertConfig(vocab_size=len(tokenizer), hidden_size=32, embedding_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
        model = CLFAModel.from_encoders(text, tiny_models["image"], labels=LABELS, **sizes)
    else:
        model = make_model(tiny_models, **sizes)
    predictor = Predictor(model, tokenizer, AutoImageProcessor.from_pretrained(tiny_models["image"]), device="cpu")
    assert check_static(predictor, 3) == [(3, 24), (3, 24), (1, 24)]
