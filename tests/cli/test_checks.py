"""The checks the commands make before their work (clfa.cli.checks)."""

from __future__ import annotations

import pytest


def test_an_output_file_is_found_writable_before_the_work_and_nothing_is_left_or_opened(tmp_path):
    import os
    import stat
    import threading

    from clfa.cli.checks import make_parent
    from clfa.errors import OptionError

    make_parent(str(tmp_path / "new" / "out.json"))
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "out.json").exists()
    (tmp_path / "kept.json").write_text("earlier results")
    make_parent(str(tmp_path / "kept.json"))
    assert (tmp_path / "kept.json").read_text() == "earlier results"
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")  # dangling: the write will make the target
    make_parent(str(tmp_path / "link.json"))
    assert (tmp_path / "link.json").is_symlink() and not (tmp_path / "target.json").exists()
    os.mkfifo(tmp_path / "pipe")  # opening it here would block until a reader came
    check = threading.Thread(target=make_parent, args=(str(tmp_path / "pipe"),), daemon=True)
    check.start()
    check.join(timeout=30)
    assert not check.is_alive() and stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)
    with pytest.raises(OptionError, match="is a folder; give a file name"):
        make_parent(str(tmp_path))
