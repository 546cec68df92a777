"""Listing a local landing zone: every entry comes out, as a file or with its problem, and
nothing is opened, followed out of the zone, or allowed to stop the listing."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dicomlake.errors import StorageError
from dicomlake.storage import ENTRY_PROBLEMS
from dicomlake.storage.local import LocalFileSystem


def _landing(tmp_path: Path) -> tuple[Path, Path]:
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    (landing / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"secret")
    (landing / "a.dcm").write_bytes(b"a")
    (landing / "sub" / "b.dcm").write_bytes(b"bb")
    os.mkfifo(landing / "fifo")
    (landing / os.fsdecode(b"bad-\xff.dcm")).write_bytes(b"c")
    for name, target in {
        "loop": "loop",
        "dangling": "nowhere",
        "outside": str(outside / "secret.dcm"),
        "zero": "/dev/zero",
        "alias.dcm": "a.dcm",
        "subdir": "sub",
        "outdir": str(outside),
    }.items():
        os.symlink(target, landing / name)
    return landing, outside


def _listed(landing: Path, follow: bool) -> dict[str, str | None]:
    entries = list(LocalFileSystem().list_entries(str(landing), follow))
    listed = {e.path[len(str(landing)) + 1 :]: e.problem for e in entries}
    assert len(listed) == len(entries), "an entry was listed twice"
    return listed


def test_links_are_entries_of_their_own_when_not_followed(tmp_path):
    landing, _ = _landing(tmp_path)
    links = ("loop", "dangling", "outside", "zero", "alias.dcm", "subdir", "outdir")
    assert _listed(landing, follow=False) == {
        "a.dcm": None,
        "sub/b.dcm": None,
        "fifo": "not_regular_file",
        "bad-\\xff.dcm": "bad_name",
        **dict.fromkeys(links, "symlink"),
    }


def test_followed_links_stay_inside_and_lead_to_each_file_once(tmp_path):
    landing, _ = _landing(tmp_path)
    assert _listed(landing, follow=True) == {
        "a.dcm": None,  # alias.dcm leads here: listed once
        "sub/b.dcm": None,  # subdir leads here: walked once
        "fifo": "not_regular_file",
        "bad-\\xff.dcm": "bad_name",
        "loop": "symlink_loop",
        "dangling": "dangling_symlink",
        "outside": "symlink_outside",
        "zero": "symlink_outside",
        "outdir": "symlink_outside",
    }


def test_a_link_is_listed_as_its_target_inside_the_zone(tmp_path):
    landing = tmp_path / "landing"
    (landing / "hidden-away").mkdir(parents=True)
    (landing / "hidden-away" / "x.dcm").write_bytes(b"x")
    os.symlink("hidden-away/x.dcm", landing / "a-link.dcm")
    # The link comes first in the walk: the file is listed under its real path, then not again
    assert _listed(landing, follow=True) == {"hidden-away/x.dcm": None}


def _nest(root: Path, name: str, levels: int, file: str | None = None) -> None:
    """``levels`` directories ``name`` one in the other below ``root`` (and ``file`` in the
    deepest), made relative to each one's parent: the whole path may be too long to name."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        if file:
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def nested(tmp_path):
    """A directory for `_nest`, removed by ``rm``: Python's own removal recurses once per
    level, and pytest's clean-up of old temporary directories would fail on it."""
    yield tmp_path / "nested"
    subprocess.run(["rm", "-rf", str(tmp_path / "nested")], check=True)


def test_a_path_too_long_for_the_os_is_an_entry_not_an_error(nested):
    nested.mkdir()
    _nest(nested, "d" * 250, 20)  # 20 x 250 bytes: beyond PATH_MAX (4096)
    listed = list(LocalFileSystem().list_entries(str(nested)))
    assert [e.problem for e in listed] == ["name_too_long"]
    assert len(listed[0].path.encode()) > 4096


def test_a_directory_that_cannot_be_listed_is_an_entry(tmp_path):
    # Root reads any directory: the listing runs as nobody then, on a zone nobody may enter
    # except one directory.
    zone = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        (zone / "open").mkdir()
        (zone / "open" / "a.dcm").write_bytes(b"a")
        (zone / "locked").mkdir()
        (zone / "locked" / "b.dcm").write_bytes(b"b")
        zone.chmod(0o755)
        (zone / "open").chmod(0o755)
        (zone / "open" / "a.dcm").chmod(0o644)
        (zone / "locked").chmod(0o700 if os.geteuid() == 0 else 0o000)
        out = _listed_as_nobody(zone)
        assert out.splitlines() == [f"{zone}/locked unreadable_dir", f"{zone}/open/a.dcm None"]
    finally:
        (zone / "locked").chmod(0o700)
        subprocess.run(["rm", "-rf", str(zone)], check=True)


def _listed_as_nobody(zone: Path) -> str:
    """The listing of ``zone`` as printed by a forked child that runs as user nobody when
    this process is root (nobody may not run this virtualenv's interpreter: no exec)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setuid(65534)
            lines = [f"{e.path} {e.problem}" for e in LocalFileSystem().list_entries(str(zone))]
            os.write(write, "\n".join(lines).encode())
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    assert os.waitpid(pid, 0)[1] == 0, "the listing failed in the child"
    return out


def test_a_landing_read_opens_regular_files_only_and_never_waits(tmp_path):
    landing, _ = _landing(tmp_path)
    fs = LocalFileSystem(beneath=str(landing))
    started = time.monotonic()
    for name in ("fifo", "zero", "alias.dcm", "loop"):
        with pytest.raises(StorageError, match=name):
            fs.read(str(landing / name))
        with pytest.raises(StorageError, match=name):
            fs.open_read(str(landing / name)).__enter__()
    assert time.monotonic() - started < 5  # a FIFO with no writer would block an open for good
    assert fs.read(str(landing / "a.dcm")) == b"a"
    # The lake's own reads (a keyring may be a link) still follow links
    assert LocalFileSystem().read(str(landing / "alias.dcm")) == b"a"


def test_a_directory_swapped_for_a_link_after_the_listing_is_not_read_through(tmp_path):
    landing, outside = _landing(tmp_path)
    (outside / "b.dcm").write_bytes(b"outside")
    (tmp_path / "b.dcm").write_bytes(b"outside")
    fs = LocalFileSystem(beneath=str(landing))
    assert fs.read(str(landing / "sub" / "b.dcm")) == b"bb"
    # Listed as sub/b.dcm, then sub is moved away and a link to a directory outside put in
    # its place, a link to the landing zone's own parent in another case
    (landing / "sub").rename(landing / "moved")
    for target in (outside, tmp_path):
        (landing / "sub").unlink(missing_ok=True)
        os.symlink(target, landing / "sub")
        path = str(landing / "sub" / "b.dcm")
        assert LocalFileSystem().read(path) == b"outside"  # what a plain open would read
        with pytest.raises(StorageError, match="ELOOP|ENOTDIR") as raised:
            fs.read(path)
        assert "b.dcm" not in raised.value.detail and "sub" not in raised.value.detail
        with pytest.raises(StorageError, match="ELOOP|ENOTDIR"):
            fs.open_read(path).__enter__()
        with pytest.raises(StorageError, match="ELOOP|ENOTDIR"):
            fs.status(path)
    # Nor a path that is not plainly below the root
    for path in (f"{landing}/../outside/secret.dcm", str(outside / "secret.dcm")):
        with pytest.raises(StorageError):
            fs.read(path)


def test_a_landing_zone_that_is_one_file_is_read_by_its_name(tmp_path):
    (tmp_path / "one.dcm").write_bytes(b"one")
    assert LocalFileSystem(beneath=str(tmp_path / "one.dcm")).read(str(tmp_path / "one.dcm")) == (
        b"one"
    )


def test_every_problem_has_a_message_naming_nothing_of_the_entry():
    assert all(message and "{" not in message for message in ENTRY_PROBLEMS.values())


def test_directories_nested_deeper_than_python_recurses_are_walked(nested):
    nested.mkdir()
    levels = sys.getrecursionlimit() + 200
    _nest(nested, "d", levels, "x.dcm")
    (listed,) = LocalFileSystem().list_entries(str(nested))
    assert (listed.path, listed.problem) == (str(nested) + "/d" * levels + "/x.dcm", None)


def test_hard_links_are_files_of_their_own_when_links_are_followed(tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"a")
    os.link(tmp_path / "a.dcm", tmp_path / "b.dcm")
    assert _listed(tmp_path, follow=True) == {"a.dcm": None, "b.dcm": None}
