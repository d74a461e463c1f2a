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
