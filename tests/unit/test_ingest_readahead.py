"""Read-ahead of landing files: the right bytes for each file, errors where they belong, and
never more than the limit read ahead."""

from __future__ import annotations

import threading

import pytest

from dicomlake.errors import StorageError
from dicomlake.ingest.readahead import ReadAhead
from dicomlake.storage import FileInfo
from dicomlake.storage.local import LocalFileSystem


class _Watched(LocalFileSystem):
    """The local filesystem, saying when each whole-file read starts (to see what runs ahead)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, path: str) -> threading.Event:
        with self._lock:
            return self.started.setdefault(path, threading.Event())

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        self.event(path).set()
        return super().read(path, offset, length)


def _files(tmp_path, sizes: list[int]) -> list[FileInfo]:
    infos = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * size)
        infos.append(FileInfo(str(path), size, 0))
    return infos


def test_every_file_gets_its_own_bytes_in_order(tmp_path) -> None:
    files = _files(tmp_path, [10, 300, 10, 10, 50])  # 300 and 50 are over the limit: read now
    with ReadAhead(LocalFileSystem(), files, 40) as reads:
        got = [reads.read(f) for f in files]
    assert got == [bytes([i]) * f.size for i, f in enumerate(files)]


def test_reads_ahead_no_more_than_the_limit(tmp_path) -> None:
    fs = _Watched()
    files = _files(tmp_path, [10, 10, 10, 30, 10])
    never = 0.3  # a read that must not start would start within microseconds
    with ReadAhead(fs, files, 25) as reads:
        # 10 + 10 fit in 25 bytes; a third 10 does not, and 30 is never read ahead
        assert fs.event(files[0].path).wait(5) and fs.event(files[1].path).wait(5)
        assert not fs.event(files[2].path).wait(never)
        reads.read(files[0])  # handed over: now 10 (f1) + 10 (f2) are ahead
        assert fs.event(files[2].path).wait(5)
        assert not fs.event(files[4].path).wait(never)
        reads.read(files[1])  # f2 + f4 are ahead; f3, too big, does not hold the queue up
        assert fs.event(files[4].path).wait(5)
        assert not fs.event(files[3].path).is_set()
        assert [reads.read(f) for f in files[2:]] == [bytes([i]) * files[i].size for i in (2, 3, 4)]
    assert fs.event(files[3].path).is_set()  # read when its turn came


def test_a_failed_read_is_raised_for_its_own_file_only(tmp_path) -> None:
    files = _files(tmp_path, [10, 10, 10])
    (tmp_path / "f1").unlink()  # gone after listing
    with ReadAhead(LocalFileSystem(), files, 100) as reads:
        assert reads.read(files[0]) == bytes([0]) * 10
        with pytest.raises(StorageError, match="f1"):
            reads.read(files[1])
        assert reads.read(files[2]) == bytes([2]) * 10
