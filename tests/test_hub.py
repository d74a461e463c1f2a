"""Model names told apart before the hub is asked: a mistyped folder, or a name the hub cannot be reached for."""

import pytest

import clfa.hub
from clfa.hub import lookup_problem


def test_a_folder_or_a_name_the_hub_may_have_is_no_problem_and_a_typo_is_named(tmp_path, monkeypatch):
    (tmp_path / "runs" / "bert-student").mkdir(parents=True)
    (tmp_path / "runs" / "bert-student" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert lookup_problem("runs/bert-student") is None
    assert lookup_problem("runs/bert-studnet") == "no such folder in runs (did you mean bert-student?)"
    assert lookup_problem(str(tmp_path / "elsewhere" / "bert")) == "no such folder"
    monkeypatch.setattr(clfa.hub, "_hub_resolves", lambda: True)
    assert lookup_problem("bert-base-uncased") is None  # the hub answers for itself


@pytest.mark.parametrize("offline, resolves, problem", [
    (True, True, "no such folder, and not in the hub cache (HF_HUB_OFFLINE is set)"),
    (False, False, "no such folder, and the hub (huggingface.co) cannot be reached from here to look it up"),
])
def test_a_hub_name_that_cannot_be_looked_up_is_named_at_once(tmp_path, monkeypatch, offline, resolves, problem):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(clfa.hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(clfa.hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(clfa.hub.constants, "ENDPOINT", "https://huggingface.co")
    monkeypatch.setattr(clfa.hub, "_hub_resolves", lambda: resolves)
    assert lookup_problem("bert-base-uncased") == problem


def test_the_hub_is_unreachable_when_its_host_name_does_not_resolve(monkeypatch):
    """The lookup every check of a hub name rests on, made for hosts that need no network to answer."""
    import socket

    def ask(endpoint: str) -> bool:
        monkeypatch.setattr(clfa.hub.constants, "ENDPOINT", endpoint)
        clfa.hub._hub_resolves.cache_clear()  # the answer is kept for the process
        try:
            return clfa.hub._hub_resolves()
        finally:
            clfa.hub._hub_resolves.cache_clear()

    assert ask("https://localhost")
    assert not ask("https://" + "x" * 64 + ".example")  # a label too long for a host name: UnicodeError, not OSError
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args: (_ for _ in ()).throw(socket.gaierror(socket.EAI_AGAIN, "offline")))
    assert not ask("https://huggingface.co")


def test_a_runs_folder_of_checkpoints_names_the_models_to_give_instead(tmp_path, monkeypatch, capsys):
    """OUTPUT_DIR/checkpoints holds checkpoint-N folders and no model: it was named "not a trained model folder (no
    config.json, ...)", as if nothing in it could be given."""
    from PIL import Image

    from clfa.cli import main
    from clfa.errors import OptionError
    from clfa.hub import trained_model_location

    checkpoints = tmp_path / "run" / "checkpoints"
    for step in (6, 12, 18):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        (checkpoints / f"checkpoint-{step}" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match=r"^run/checkpoints: a folder of 3 checkpoint\(s\), not a model: give one of them, "
                                          r"run/checkpoints/checkpoint-18 \(the latest\)$"):
        trained_model_location("run/checkpoints")
    # The run's record of its best checkpoint, and its folder once it holds the model the run kept.
    (checkpoints / "checkpoint-18" / "trainer_state.json").write_text('{"best_global_step": 6}')
    (tmp_path / "run" / "config.json").write_text("{}")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["predict", "--model", "run/checkpoints", "--text", "a day", "--image", "a.png"]) == 2
    assert capsys.readouterr().err == ("clfa: error: run/checkpoints: a folder of 3 checkpoint(s), not a model: give one of "
                                       "them, run/checkpoints/checkpoint-6 (the best) or run/checkpoints/checkpoint-18 "
                                       "(the latest), or the run's folder, run (the model the run kept)\n")
    assert trained_model_location("run/checkpoints/checkpoint-6") == ("run/checkpoints/checkpoint-6", True)
