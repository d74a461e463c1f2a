"""Files written whole, shared as the umask allows, and killed writers' temporary files removed (clfa.files)."""

import os
import stat
import threading
import time

import pytest

from clfa.files import remove_abandoned, shared_as_umask_allows, temporary_name, write_whole


def test_a_file_is_written_whole_or_left_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_whole(path, '{"accuracy": 0.5}')
    assert path.read_text() == '{"accuracy": 0.5}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]

    def power_loss(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", power_loss)
    with pytest.raises(OSError, match="Input/output error"):
        write_whole(path, '{"accuracy": 0.9}')
    assert path.read_text() == '{"accuracy": 0.5}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_temporary_names_are_hidden_beside_the_file_and_each_writers_own(tmp_path):
    names = {temporary_name(tmp_path / "cache.npy") for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and n.name.startswith(".cache.npy.") and n.name.endswith(".tmp") for n in names)


def test_a_file_is_shared_as_the_umask_allows(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    path.chmod(0o600)
    old = os.umask(0o027)
    try:
        shared_as_umask_allows(path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_only_temporary_files_untouched_for_an_hour_are_removed(tmp_path):
    old, recent, other = tmp_path / ".a.tmp", tmp_path / ".b.tmp", tmp_path / "a.npy"
    (old_folder := tmp_path / ".model.partial-1").mkdir()
    (old_folder / "config.json").write_text("{}")
    (tmp_path / ".model.partial-2").mkdir()  # an export still writing
    for path in (old, recent, other):
        path.write_bytes(b"x")
    for path in (old, other, old_folder):
        os.utime(path, (time.time() - 3700,) * 2)
    remove_abandoned(tmp_path, ".*.tmp")
    remove_abandoned(tmp_path, ".model.partial-*")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.tmp", ".model.partial-2", "a.npy"]


def test_an_output_is_written_whole_under_its_name_and_a_pipe_as_it_comes(tmp_path):
    from clfa.files import whole_output

    target, link = tmp_path / "kept.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    with pytest.raises(KeyboardInterrupt), whole_output(link) as path:
        path.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "link.json"]
    with whole_output(link) as path:
        path.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"

    os.mkfifo(tmp_path / "pipe")  # cannot be replaced: written straight to its reader
    read = []
    reader = threading.Thread(target=lambda: read.append((tmp_path / "pipe").read_text()))
    reader.start()
    with whole_output(tmp_path / "pipe") as path:
        path.write_text("through")
    reader.join(10)
    assert read == ["through"] and stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)
