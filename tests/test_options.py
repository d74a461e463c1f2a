"""Options from a file are converted and checked as the command-line flags are, with errors naming file and option."""

import pytest

from clfa.errors import OptionError
from clfa.metrics import HEADLINE
from clfa.options import BUILT_IN_FUSIONS, METRICS, TrainOptions, options_from_args


def from_text(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return TrainOptions(**TrainOptions.from_file(path))


def test_file_values_are_converted_as_flags_convert_them(tmp_path):
    opts = from_text(tmp_path, 'learning_rate: 1e-5\ncompile: "no"\nepochs: 3\nbatch_size: "16"\neval_steps:\ncuda_graph: yes\n')
    assert opts.learning_rate == 1e-5 and isinstance(opts.learning_rate, float)  # YAML reads 1e-5 as text
    assert opts.compile is False  # the text "no" is false, not a non-empty string
    assert opts.cuda_graph is True and opts.batch_size == 16 and opts.eval_steps is None and opts.epochs == 3.0


@pytest.mark.parametrize("text, message", [
    ("epochs: abc", "run.yaml: epochs: expected a number, got 'abc'"),
    ("batch_size: 2.5", "run.yaml: batch_size: expected a whole number, got 2.5"),
    ("learning_rate: true", "run.yaml: learning_rate: expected a number, got True"),
    ("compile: maybe", "run.yaml: compile: expected true or false, got 'maybe'"),
    ("metric: f2", "run.yaml: metric: expected one of accuracy, precision"),
    ("cache_dir:", "run.yaml: cache_dir: a value is needed"),
    ("{epochs: [", "run.yaml: cannot read options: expected the node content, but found '<stream end>' (line 1, column 11)"),
    ("- 1\n- 2", "run.yaml: expected a mapping of option names to values"),
    ("batch_size: 0", "--batch-size must be at least 1, got 0"),
    ("gradient_accumulation_steps: 0", "--gradient-accumulation-steps must be at least 1, got 0"),
    ("num_workers: -1", "--num-workers must be 0 or more, got -1"),
    ("epochs: 0", "--epochs must be a finite number above 0 (or --max-steps set), got 0.0"),
    ("epochs: .nan", "--epochs must be a finite number above 0 (or --max-steps set), got nan"),
    ("seed: -1", "--seed must be from 0 to 2**32 - 1, got -1"),
    ("max_steps: -5", "--max-steps must be at least 1, or -1 (the default: --epochs decides), got -5"),
    ("max_steps: 0", "--max-steps must be at least 1, or -1 (the default: --epochs decides), got 0"),
    ("save_total_limit: -1", "--save-total-limit must be 0 (keep all) or more, got -1"),
    ("temperature: 0", "--temperature must be a finite number above 0 (the paper's is 0.1), got 0.0"),
    ("temperature: .nan", "--temperature must be a finite number above 0 (the paper's is 0.1), got nan"),
    ("learning_rate: -1e-5", "--learning-rate must be a finite number above 0, got -1e-05"),
    ("learning_rate: .inf", "--learning-rate must be a finite number above 0, got inf"),
    ("dropout: 1.5", "--dropout must be a probability from 0 up to (not including) 1, got 1.5"),
    ("warmup_ratio: 1", "--warmup-ratio must be a fraction of the steps, from 0 up to (not including) 1, got 1.0"),
    ("alignment_weight: -1", "--alignment-weight must be a finite number, 0 or more, got -1.0"),
    ("max_grad_norm: -1", "--max-grad-norm must be a finite number, 0 (no clipping) or more, got -1.0"),
    ("epochs: 1\nbatch_size: 4\nepochs: 5", "run.yaml: cannot read options: option 'epochs' given twice (line 3, column 1)"),
    ("epochz: 1\nteachr: x\nlearning-rate: 1", "run.yaml: unknown option(s) ['epochz', 'learning-rate', 'teachr']; keys are "
     "written with underscores: learning-rate (write learning_rate); did you mean: epochz (epochs?), teachr (teacher?)"),
    ("? [a, b]\n: 1", "run.yaml: cannot read options: found unhashable key (line 1, column 3)"),
    ("report_to: [none]", "run.yaml: report_to: expected text, got ['none'] (several values are one comma-separated text)"),
    ("epochs: {a: 1}", "run.yaml: epochs: expected a number, got {'a': 1}"),
    ("output_dir: ''", "--output-dir is empty: give a folder"),
    # Else read as the working folder, and named by its path: a message about a folder never given.
    ("text_model: ''", "--text-model is empty: give a folder or a hub name"),
    ("teacher: ' '", "--teacher is empty: give a folder or a hub name"),
])
def test_a_bad_value_names_the_file_and_the_option(tmp_path, text, message):
    with pytest.raises(OptionError) as err:
        from_text(tmp_path, text)
    assert message in str(err.value)


def test_a_value_out_of_range_in_the_file_is_named_where_it_is_written(tmp_path):
    import argparse

    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 0\nepochs: 2\n")
    with pytest.raises(OptionError, match=r"^\S*run.yaml: batch_size: must be at least 1, got 0$"):
        options_from_args(argparse.Namespace(), str(path))
    # Given on the command line as well, the flag's value is the one checked, and it is named as a flag.
    with pytest.raises(OptionError, match=r"^--batch-size must be at least 1, got -1$"):
        options_from_args(argparse.Namespace(batch_size=-1), str(path))
    assert options_from_args(argparse.Namespace(batch_size=4), str(path)).epochs == 2
    path.write_text("lr: 1e-4\nnum_train_epochs: 3\n")  # other tools' names for the options
    with pytest.raises(OptionError, match=r"did you mean: lr \(learning_rate\?\), num_train_epochs \(epochs\?\)$"):
        options_from_args(argparse.Namespace(), str(path))


def test_unreadable_files_are_option_errors(tmp_path):
    with pytest.raises(OptionError, match="nothere.yaml: cannot read options: .*No such file"):
        TrainOptions.from_file(tmp_path / "nothere.yaml")
    with pytest.raises(OptionError, match=r"run.json: cannot read options: Expecting property name .* column 14"):
        from_text(tmp_path, '{"epochs": 1,}', name="run.json")
    with pytest.raises(OptionError, match=r"run.json: cannot read options: option\(s\) given twice: epochs$"):
        from_text(tmp_path, '{"epochs": 1, "seed": 2, "epochs": 3}', name="run.json")


def test_options_grouped_under_headings_or_a_folder_as_the_file_are_named_so(tmp_path):
    """Other tools' files group their settings (training: {epochs: 3}); the headings were named as unknown options,
    and a folder given as the file by the system's "[Errno 21] Is a directory"."""
    with pytest.raises(OptionError, match=r"^\S*run.yaml: unknown option\(s\) \['model', 'training'\]; options are flat keys, "
                                          r"named as the command-line flags \(e.g. epochs: 3\), not grouped under headings: "
                                          r"write epochs, fusion_layers, learning_rate at the top level$"):
        from_text(tmp_path, "training:\n  epochs: 3\n  learning-rate: 1e-4\n  lr: 1\nmodel:\n  fusion_layers: 2\n")
    with pytest.raises(OptionError, match=r"^\S*run.yaml: unknown option\(s\) \['training'\]; options are flat keys, named "
                                          r"as the command-line flags \(e.g. epochs: 3\), not grouped under headings$"):
        from_text(tmp_path, "training:\n  lr: 1\n")
    (tmp_path / "options").mkdir()
    with pytest.raises(OptionError, match=r"^\S*options: a folder, not an options file \(a YAML or JSON file of options\)$"):
        TrainOptions.from_file(tmp_path / "options")


def test_an_options_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes("seed: 1\n# r\u00e9sum\u00e9\nepochs: 2\n".encode("latin-1"))
    with pytest.raises(OptionError, match=r"run.yaml: cannot read options: not UTF-8 text at line 2 \(byte 0xe9\); save the "
                                          r"file as UTF-8$"):
        TrainOptions.from_file(path)


def test_a_compile_mode_is_recorded_as_compiling():
    assert TrainOptions(compile_mode="default").compile and not TrainOptions().compile


def test_a_yaml_merge_may_override_what_it_merges(tmp_path):
    assert from_text(tmp_path, "<<: {epochs: 2, batch_size: 4}\nepochs: 3") == TrainOptions(epochs=3, batch_size=4)


def test_the_metric_choices_are_the_reported_metrics():
    assert set(METRICS) == set(HEADLINE)


def test_a_step_budget_may_stand_in_for_epochs():
    assert TrainOptions(epochs=0, max_steps=5).max_steps == 5  # without it, epochs 0 is refused


def test_fusions_are_checked_against_the_registry_once_clfa_fusion_is_imported(monkeypatch):
    # Before, against the built-in names alone (clfa.fusion imports torch): they must be those it registers.
    from clfa import fusion

    assert list(fusion.FUSIONS)[:len(BUILT_IN_FUSIONS)] == list(BUILT_IN_FUSIONS)
    monkeypatch.setitem(fusion.FUSIONS, "gated", fusion.FUSIONS["concat"])  # as @register_fusion("gated") does
    assert TrainOptions(fusion="gated").fusion == "gated"
    with pytest.raises(OptionError, match="^--fusion nope: unknown; choose from cross_attention, concat, co_attention, "
                                          "text_only, image_only, gated$"):
        TrainOptions(fusion="nope")


def test_an_empty_options_file_sets_nothing(tmp_path):
    assert from_text(tmp_path, "") == TrainOptions()


def test_counts_on_the_command_line_are_whole_numbers_of_at_least_one(capsys):
    from clfa.cli import main

    for argv in (["predict", "--model", "m", "--input", "x", "--batch-size", "0"], ["data", "check", "--dataset", "jsonl", "--workers", "-1"],
                 ["evaluate", "--model", "m", "--dataset", "jsonl", "--batch-size", "many"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size: must be at least 1, got 0" in err and "--workers: must be at least 1, got -1" in err
    assert "--batch-size: expected a whole number, got 'many'" in err


@pytest.mark.parametrize("given, message", [
    ({"metric": "auc"}, "--metric must be one of accuracy, precision, recall, f1, macro_precision, macro_recall, macro_f1, "
                        "weighted_f1, got 'auc'"),
    ({"compile_mode": "fast"}, "--compile-mode must be one of default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs, got 'fast'"),
    ({"precision": "fp64"}, "--precision must be one of auto, fp32, bf16, fp16, got 'fp64'"),
    ({"alignment_pooling": "max"}, "--alignment-pooling must be one of mean, cls, got 'max'"),
    ({"batch_size": "8"}, "--batch-size must be a whole number, got '8'"),
    ({"fusion_layers": 2.5}, "--fusion-layers must be a whole number, got 2.5"),
    ({"epochs": "3"}, "--epochs must be a number, got '3'"),
    ({"learning_rate": True}, "--learning-rate must be a number, got True"),
    ({"compile": 1}, "--compile must be true or false, got 1"),
    ({"report_to": ["none"]}, "--report-to must be text, got ['none'] (several values are one comma-separated text)"),
])
def test_options_made_in_python_are_checked_as_the_command_line_checks_them(given, message):
    with pytest.raises(OptionError) as err:
        TrainOptions(**given)
    assert str(err.value) == message


def test_options_made_in_python_hold_plain_values_that_json_writes(tmp_path):
    import json

    import numpy as np

    opts = TrainOptions(output_dir=tmp_path / "run", batch_size=np.int64(4), learning_rate=np.float32(0.5), fusion_layers=2.0, epochs=3,
                        compile=np.bool_(False))
    assert json.loads(json.dumps(opts.to_dict()))["output_dir"] == str(tmp_path / "run")  # as metrics.json is written
    assert opts.compile is False
    assert type(opts.batch_size) is int and type(opts.fusion_layers) is int and opts.fusion_layers == 2
    assert type(opts.learning_rate) is float and opts.epochs == 3.0 and opts.eval_steps is None


def test_the_cache_folder_follows_clfa_cache_as_it_is_when_the_options_are_made(tmp_path, monkeypatch):
    monkeypatch.setenv("CLFA_CACHE", str(tmp_path / "cache"))  # after clfa.options was imported, as in a notebook
    assert TrainOptions().cache_dir == str(tmp_path / "cache")


def test_a_home_folder_written_with_a_tilde_in_an_options_file_is_the_home_folder(tmp_path, monkeypatch):
    """No shell expands "~" in a --config file: the run went to a folder named "~" in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    opts = from_text(tmp_path, "output_dir: ~/runs/x\ncache_dir: ~/cache\ntext_model: ~/models/bert\nteacher: openai/clip-vit-base-patch32")
    home = str(tmp_path / "home")
    assert (opts.output_dir, opts.cache_dir, opts.text_model) == (f"{home}/runs/x", f"{home}/cache", f"{home}/models/bert")
    assert opts.teacher == "openai/clip-vit-base-patch32"
