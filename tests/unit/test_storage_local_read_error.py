"""A local file that opens but fails while it is read is a StorageError naming the file, as a
WebHDFS stream cut short is (test_storage_hdfs_cut.py): the ingest then records the landing
file as unreadable, and a restore names the snapshot and the file, instead of a bare OSError.

``/proc/self/mem`` is a real such file: it opens, and reading its first page (unmapped
address 0) fails with EIO. No disk can be made to fail on demand here.
"""

from __future__ import annotations

import pytest

from dicomlake.errors import StorageError
from dicomlake.storage.local import LocalFileSystem

FAILS_WHEN_READ = "/proc/self/mem"


def test_a_local_stream_whose_read_fails_is_a_storage_error_naming_the_file() -> None:
    with (
        pytest.raises(StorageError, match=f"cannot read {FAILS_WHEN_READ}: .*Input/output"),
        LocalFileSystem().open_read(FAILS_WHEN_READ) as src,
    ):
        src.read(4096)
