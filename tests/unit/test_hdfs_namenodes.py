"""hdfs.namenodes: each hdfs:// authority has its own WebHDFS address(es), or the URI is refused.

The standby test's first NameNode is a plain HTTP server on 127.0.0.1 answering as a standby
NameNode's WebHDFS does (403, RemoteException StandbyException): a real standby needs a
two-NameNode HA cluster with shared edits, more than a unit test can start. The second
NameNode is the same kind of server answering as an active one; the client stack (HdfsCLI,
requests) is the real one.
"""

from __future__ import annotations

import http.server
import json
import pickle
import threading
from collections.abc import Iterator

import pytest

from dicomlake.config import HdfsConfig, load_config
from dicomlake.errors import ConfigError, StorageError
from dicomlake.storage import filesystem_for
from dicomlake.storage.hdfs import WebHdfsFileSystem

STATUS = {"type": "FILE", "length": 7, "modificationTime": 1234}


def _namenode(standby: bool) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        seen: list[str] = []

        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            Handler.seen.append(self.path)
            if standby:
                body = {
                    "RemoteException": {
                        "exception": "StandbyException",
                        "javaClassName": "org.apache.hadoop.ipc.StandbyException",
                        "message": "Operation category READ is not supported in state standby",
                    }
                }
                code = 403
            else:
                body, code = {"FileStatus": STATUS}, 200
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def namenodes() -> Iterator[tuple[str, type, str, type]]:
    """(url, handler) of a standby NameNode, then of an active one."""
    servers = []
    out: list[object] = []
    for standby in (True, False):
        handler = _namenode(standby)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out += [f"http://127.0.0.1:{server.server_port}", handler]
    try:
        yield tuple(out)  # type: ignore[misc]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_standby_namenode_passes_the_call_to_the_next(namenodes) -> None:
    standby, standby_handler, active, active_handler = namenodes
    fs = WebHdfsFileSystem(HdfsConfig({"ns1": f"{standby};{active}"}, timeout_seconds=5))
    st = fs.status("hdfs://ns1/lake/f")
    assert (st.size, st.mtime_ms) == (7, 1234)
    assert [p.split("?")[0] for p in standby_handler.seen] == ["/webhdfs/v1/lake/f"]
    assert [p.split("?")[0] for p in active_handler.seen] == ["/webhdfs/v1/lake/f"]


def test_each_authority_goes_to_its_own_namenode(namenodes) -> None:
    standby, standby_handler, active, active_handler = namenodes
    fs = WebHdfsFileSystem(HdfsConfig({"lake-nn:8020": active, "Backup-NN": standby}))
    fs.status("hdfs://lake-nn:8020/a")
    with pytest.raises(StorageError, match="hdfs://backup-nn/b"):  # only a standby there
        fs.status("hdfs://backup-nn/b")
    assert [p.split("?")[0] for p in active_handler.seen] == ["/webhdfs/v1/a"]
    assert [p.split("?")[0] for p in standby_handler.seen] == ["/webhdfs/v1/b"]
    # Shipped to an executor, it still routes by authority.
    again = pickle.loads(pickle.dumps(fs))
    again.status("hdfs://lake-nn:8020/c")
    assert len(active_handler.seen) == 2


@pytest.mark.parametrize(
    "uri", ["hdfs://backup-nn/dicomlake", "hdfs://nn:8021/x", "hdfs:///lake", "/lake"]
)
def test_an_unlisted_authority_is_a_config_error_naming_it(uri) -> None:
    config = HdfsConfig({"nn:8020": "http://127.0.0.1:1"})
    authority = uri.split("/")[2] if uri.startswith("hdfs:") else ""
    if uri.startswith("hdfs:"):
        with pytest.raises(ConfigError, match=rf"hdfs://{authority}/.*hdfs\.namenodes.*nn:8020"):
            filesystem_for(uri, config)
    with pytest.raises(ConfigError, match=rf"hdfs://{authority}/"):
        WebHdfsFileSystem(config).write_bytes(uri + "/f", b"x")


def test_the_default_config_has_no_cluster() -> None:
    with pytest.raises(ConfigError, match="hdfs.namenodes"):
        filesystem_for("hdfs://127.0.0.1:9000/lake")


def test_namenodes_from_yaml_and_from_the_environment(tmp_path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "hdfs:\n  namenodes:\n    ns1: http://nn1:9870;http://nn2:9870\n    a:8020: http://a:9870/\n"
    )
    cfg = load_config(conf, env={})
    assert cfg.hdfs.webhdfs_urls("ns1") == ("http://nn1:9870", "http://nn2:9870")
    assert cfg.hdfs.webhdfs_urls("A:8020") == ("http://a:9870",)
    env = {"DICOMLAKE_HDFS_NAMENODES": "{b:8020: 'https://b1:9871;https://b2:9871'}"}
    cfg = load_config(conf, env=env)
    assert cfg.hdfs.namenodes == {"b:8020": "https://b1:9871;https://b2:9871"}


def test_the_old_single_webhdfs_url_is_refused_with_what_to_write(tmp_path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("hdfs:\n  webhdfs_url: http://nn:9870\n")
    with pytest.raises(ConfigError, match=r"hdfs\.webhdfs_url.*hdfs\.namenodes"):
        load_config(conf, env={})
    with pytest.raises(ConfigError, match=r"hdfs\.webhdfs_url.*DICOMLAKE_HDFS_NAMENODES"):
        load_config(env={"DICOMLAKE_HDFS_WEBHDFS_URL": "http://nn:9870"})


@pytest.mark.parametrize(
    ("namenodes", "match"),
    [
        ({"nn:8020": "nn:9870"}, r"hdfs\.namenodes\.nn:8020 has a bad value 'nn:9870'"),
        ({"nn": "http://a:9870;"}, r"hdfs\.namenodes\.nn has a bad value"),
        ({"nn": "http://a:9870/webhdfs/v1"}, r"hdfs\.namenodes\.nn has a bad value"),
        ({"hdfs://nn": "http://a:9870"}, r"hdfs\.namenodes\.hdfs://nn names a bad authority"),
        ({"": "http://a:9870"}, r"names a bad authority ''"),
    ],
)
def test_bad_namenodes_name_the_key(namenodes, match) -> None:
    with pytest.raises(ConfigError, match=match):
        HdfsConfig(namenodes)


def test_a_rename_across_clusters_is_refused() -> None:
    fs = WebHdfsFileSystem(HdfsConfig({"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:1"}))
    with pytest.raises(StorageError, match="one cluster"):
        fs.publish("hdfs://a/x", "hdfs://b/x")
