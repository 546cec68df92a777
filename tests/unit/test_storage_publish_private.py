"""A private file (`private_file`) published (`LocalFileSystem.publish`), as `quarantine get`
gives a copy back: it takes its name only if nothing has it, whatever appeared there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dicomlake.errors import PublishConflictError
from dicomlake.storage.local import LocalFileSystem, private_file


def _written(target: Path, data: bytes) -> str:
    with private_file(target) as (tmp, f):
        f.write(data)
    return tmp


def test_a_new_name_gets_the_file_private(tmp_path):
    target = tmp_path / "copy.dcm"
    tmp = _written(target, b"PHI")
    LocalFileSystem().publish(tmp, str(target))
    assert target.read_bytes() == b"PHI"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["copy.dcm"]  # the temporary name is gone


@pytest.mark.parametrize("what", ["file", "directory", "dangling symlink", "symlink to a file"])
def test_what_appeared_at_the_name_is_left_alone(tmp_path, what):
    target, elsewhere = tmp_path / "copy.dcm", tmp_path / "elsewhere"
    tmp = _written(target, b"PHI")
    # Appears after the caller looked and before the file is published
    if what == "file":
        target.write_bytes(b"theirs")
    elif what == "directory":
        target.mkdir()
    elif what == "dangling symlink":
        target.symlink_to(elsewhere)
    else:
        elsewhere.write_bytes(b"theirs")
        target.symlink_to(elsewhere)
    with pytest.raises(PublishConflictError):
        LocalFileSystem().publish(tmp, str(target))
    assert Path(tmp).read_bytes() == b"PHI"  # left to the caller, who removes it
    if what == "file":
        assert target.read_bytes() == b"theirs"
    elif what == "directory":
        assert target.is_dir() and not any(target.iterdir())
    else:
        assert target.is_symlink() and os.readlink(target) == str(elsewhere)
        assert not elsewhere.exists() or elsewhere.read_bytes() == b"theirs"
