"""A WebHDFS read whose body stops short (a DataNode gone mid-read) is a StorageError naming
the path, like every other failure of the filesystem, not urllib3's own exception.

The server is a plain HTTP server on 127.0.0.1 that answers every OPEN with a Content-Length
it does not send: the real HDFS cannot be made to cut a response at a chosen byte, while the
client stack (HdfsCLI, requests, urllib3) is the real one.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from dicomlake.config import HdfsConfig
from dicomlake.errors import StorageError
from dicomlake.storage.hdfs import WebHdfsFileSystem

DECLARED, SENT = 10_000, 1_000


class _CutShort(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(DECLARED))
        self.end_headers()
        self.wfile.write(bytes(SENT))
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fs() -> Iterator[WebHdfsFileSystem]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebHdfsFileSystem(
            HdfsConfig(
                namenodes={"nn:8020": f"http://127.0.0.1:{server.server_port}"}, timeout_seconds=10
            )
        )
    finally:
        server.shutdown()
        server.server_close()


PATH = "hdfs://nn:8020/landing/IM0001.dcm"


def test_a_ranged_read_cut_short_is_a_storage_error(fs: WebHdfsFileSystem) -> None:
    with pytest.raises(StorageError, match=f"cannot read {PATH}"):
        fs.read(PATH, 0, DECLARED)


def test_a_streamed_read_cut_short_is_a_storage_error(fs: WebHdfsFileSystem) -> None:
    with pytest.raises(StorageError, match=f"cannot read {PATH}"), fs.open_read(PATH) as src:
        while src.read(4096):
            pass
