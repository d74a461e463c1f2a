"""What a training run is refused for before it loads a model or fills a cache (clfa.run_checks)."""

import dataclasses
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from clfa.data.registry import DatasetSplits
from clfa.errors import OptionError
from clfa.options import TrainOptions
from clfa.run_checks import _wrong_kind, check_task, check_text_student, experiment_trackers
from clfa.training import model_config, train
from conftest import tiny_options


def test_each_model_option_takes_the_kinds_of_model_that_can_serve_it():
    from transformers import (BartConfig, BertConfig, CLIPConfig, CLIPTextConfig, CLIPVisionConfig, ConvNextConfig, DeiTConfig,
                              Dinov2Config, MobileViTConfig, ResNetConfig, RobertaConfig, SiglipTextConfig, SwinConfig, T5Config,
                              T5GemmaConfig)


    serve = {"--text-model": [BertConfig(), RobertaConfig(), CLIPTextConfig(), T5Config()],
             "--image-model": [CLIPVisionConfig(), DeiTConfig(), Dinov2Config(), SwinConfig()],
             "--teacher": [CLIPConfig()]}
    for flag, configs in serve.items():
        assert [_wrong_kind(flag, config) for config in configs] == [None] * len(configs), flag
    # One CLIP tower "with projection" has a projection_dim, but nothing to pair texts with images.
    assert "not a CLIP-style dual encoder" in _wrong_kind("--teacher", CLIPTextConfig(projection_dim=64))
    assert "not a ViT-style image encoder" in _wrong_kind("--image-model", ResNetConfig())
    for convolutional in (ConvNextConfig(), MobileViTConfig()):  # an image_size, and a map of features, not tokens
        assert _wrong_kind("--image-model", convolutional).startswith(f"a {convolutional.model_type} model whose features come in "
                                                                      "several widths (a pyramid of feature maps")
    assert "several towers" in _wrong_kind("--text-model", CLIPConfig())
    assert _wrong_kind("--text-model", SiglipTextConfig()) == ("a siglip_text_model model, which transformers' AutoModel "
                                                             "cannot build; a student is an AutoModel encoder")
    assert _wrong_kind("--text-model", BartConfig()) == ("a bart encoder-decoder whose encoder transformers cannot load "
                                                       "alone (AutoModelForTextEncoding)")
    assert _wrong_kind("--text-model", T5GemmaConfig()).startswith("a t5gemma model without a hidden_size")


def test_cls_pooling_is_refused_for_a_causal_text_student_only_where_it_reads_the_text(tiny_models, other_students, tmp_path):
    from transformers import AutoModel


    student = AutoModel.from_pretrained(other_students["clip_text"])
    tokenizer = AutoTokenizer.from_pretrained(other_students["clip_text"])
    refused = {}
    for fusion in ("cross_attention", "concat", "text_only", "image_only", "co_attention"):
        for kind in ("classifier", "alignment"):
            for alignment in ("clfa", "none"):
                opts = tiny_options(tiny_models, tmp_path, text_model=other_students["clip_text"], fusion=fusion,
                                    alignment=alignment, **{f"{kind}_pooling": "cls"})
                try:
                    check_text_student(opts, model_config(opts, ["0", "1"], "1"), tokenizer, student)
                except OptionError as err:
                    assert "is a causal encoder, whose first token does not see the text after it; use mean" in str(err)
                    refused[fusion, kind, alignment] = True
    reads_first_text_token = {(f, "classifier", a) for f in ("cross_attention", "concat", "text_only") for a in ("clfa", "none")} | \
        {(f, "alignment", "clfa") for f in ("cross_attention", "concat", "text_only", "image_only", "co_attention")}
    assert set(refused) == reads_first_text_token


def test_a_task_that_cannot_be_learned_or_scored_is_refused_before_the_models_load(tmp_path, caplog):
    from clfa.data.records import DataError, Record

    def records(*labels):
        return [Record(id=str(i), text="t", image=tmp_path / "x.png", label=label) for i, label in enumerate(labels)]

    one_class = DatasetSplits("jsonl", {"train": records("pos", "pos")}, labels=["neg", "pos"], positive_label="pos")
    with pytest.raises(DataError, match=r"the train split has 2 record\(s\) and only the label 'pos'; a classifier needs at least two"):
        check_task(TrainOptions(), one_class)
    three = DatasetSplits("jsonl", {"train": records("a", "b", "c"), "dev": records("a")}, labels=["a", "b", "c"])
    with pytest.raises(OptionError, match=r"--metric recall is that of the positive class, and this task of 3 labels \(a, b, c\) "
                                          r"has none: use macro_recall$"):
        check_task(TrainOptions(metric="recall"), three)
    two = DatasetSplits("jsonl", {"train": records("a", "b"), "dev": records("a")}, labels=["a", "b"])
    with pytest.raises(OptionError, match=r"has none: name one with --positive-label, or use macro_precision$"):
        check_task(TrainOptions(metric="precision"), two)
    check_task(TrainOptions(metric="macro_recall"), three)
    assert "no train record" not in caplog.text and "a class of its own" not in caplog.text
    # A label on few records among many: most often a typo, said with the label it is near.
    typo = DatasetSplits("jsonl", {"train": records(*["sarcastic"] * 60, *["not_sarcastic"] * 60, "sarcastc")},
                         labels=["not_sarcastic", "sarcastc", "sarcastic"])
    check_task(TrainOptions(), typo)
    assert "the label 'sarcastc' is on 1 of the 121 train records: a class of its own (a typo of 'sarcastic'?)" in caplog.text
    caplog.clear()  # a label set given beforehand holds no typos (one outside it is an error), nor does a public dataset's
    check_task(TrainOptions(), dataclasses.replace(typo, options={"labels": typo.labels}))
    check_task(TrainOptions(), dataclasses.replace(typo, name="mvsa-single"))
    assert "a class of its own" not in caplog.text
    # A class given with --labels that training never shows is allowed (the test split may hold it), and said.
    check_task(TrainOptions(), DatasetSplits("jsonl", {"train": records("a", "b")}, labels=["a", "b", "c", "d"]))
    assert "no train record has the label(s) 'c', 'd': the model cannot learn to predict them" in caplog.text
    check_task(TrainOptions(metric="recall"), DatasetSplits("jsonl", {"train": records("a", "b", "c")}, labels=["a", "b", "c"]))  # no dev: unused
    # Splits made by hand may hold a label their list lacks, which would otherwise stop the run at a KeyError once the
    # models have loaded; and splits that are not a DatasetSplits are named as such.
    stray = DatasetSplits("mine", {"train": records("a", "b"), "dev": records("a", "c")}, labels=["a", "b"])
    with pytest.raises(DataError, match=r"^record '1' of the dev split has the label 'c', which is not one of the task's labels "
                                        r"\('a', 'b'\)$"):
        check_task(TrainOptions(), stray)
    with pytest.raises(TypeError, match=r"^data: a DatasetSplits \(from load_dataset, or DatasetSplits\(name, splits, labels\)\), "
                                        r"not dict$"):
        train(TrainOptions(), stray.splits)
    (tmp_path / "file").write_text("")
    for option in ("output_dir", "cache_dir"):
        with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} {tmp_path / 'file'}: a file, not a folder"):
            train(TrainOptions(**{option: str(tmp_path / "file")}), two)
        under = tmp_path / "file" / "sub" / "run"
        with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} {under}: {tmp_path / 'file'} is a file, so"):
            train(TrainOptions(**{option: str(under)}), two)
        # Permissions do not tell (the tests may run as root): a folder under /proc cannot be made all the same.
        if Path("/proc/self").is_dir():
            with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} /proc/clfa/run: it would be made in /proc, "
                                                  r"which cannot be written \(No such file or directory\)"):
                train(TrainOptions(**{option: "/proc/clfa/run"}), two)
            with pytest.raises(OptionError, match=f"--{option.replace('_', '-')} /proc/self: it cannot be written"):
                train(TrainOptions(**{option: "/proc/self"}), two)
    if Path("/proc/self").is_dir():  # a run that keeps no cache does not need the folder
        with pytest.raises(OptionError) as refused:
            train(TrainOptions(cache_dir="/proc/clfa", image_cache=False, alignment="none", text_model=str(tmp_path / "no-model")), two)
        assert str(refused.value).startswith("--text-model ")


def test_experiment_trackers_are_checked_before_any_work(monkeypatch):
    from transformers.integrations import integration_utils as hf

    assert experiment_trackers("none") == [] and experiment_trackers("all") == ["all"]
    assert experiment_trackers(" tensorboard ") == ["tensorboard"]
    for name in ("wandb", "azure_ml"):  # azure_ml is asked directly: the list of available trackers leaves it out
        monkeypatch.setattr(hf, {"wandb": "is_wandb_available", "azure_ml": "is_azureml_available"}[name], lambda: False)
        with pytest.raises(OptionError, match=rf"--report-to tensorboard,{name}: {name} cannot run here \(its package is not installed"):
            experiment_trackers(f"tensorboard,{name}")
    monkeypatch.setattr(hf, "is_wandb_available", lambda: True)
    assert experiment_trackers("wandb,tensorboard") == ["wandb", "tensorboard"]


