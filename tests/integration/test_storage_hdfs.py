"""The storage contract of ``storage/base.py``, held against every implementation.

The contract tests run on the local filesystem (plain paths and ``file://`` URIs) and on the real
HDFS over WebHDFS; the HDFS-only tests below them check what has no local counterpart.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import http.server
import ipaddress
import json
import os
import pickle
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dicomlake.config import HdfsConfig, load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import ConfigError, KeyringError, PublishConflictError, StorageError
from dicomlake.keyring_file import load_keyring, save_keyring
from dicomlake.storage.base import CALLS_AT_ONCE, FileInfo, FileSystem
from dicomlake.storage.hdfs import UPLOAD_PIECE, UPLOAD_QUEUE, WebHdfsFileSystem
from dicomlake.storage.local import LocalFileSystem


class Root(NamedTuple):
    fs: FileSystem
    uri: str  # an empty directory to work in, as the caller would spell it

    def __call__(self, *parts: str) -> str:
        return "/".join((self.uri, *parts))


@pytest.fixture(params=["local-path", "local-uri", pytest.param("hdfs", marks=pytest.mark.hdfs)])
def root(request: pytest.FixtureRequest, tmp_path) -> Iterator[Root]:
    if request.param == "hdfs":
        cluster = request.getfixturevalue("hdfs_cluster")
        yield Root(WebHdfsFileSystem(cluster.hdfs_config), request.getfixturevalue("hdfs_root"))
    elif request.param == "local-uri":
        yield Root(LocalFileSystem(), f"file://{tmp_path}")
    else:
        yield Root(LocalFileSystem(), str(tmp_path))


def now_ms() -> int:
    return int(time.time() * 1000)


# --- the contract ------------------------------------------------------------------------------


def test_write_then_read_whole_and_ranges(root: Root) -> None:
    data = bytes(range(256)) * 40
    root.fs.write_bytes(root("a", "b", "f.bin"), data)  # parents are made

    assert root.fs.read(root("a", "b", "f.bin")) == data
    assert root.fs.read(root("a", "b", "f.bin"), 1000, 17) == data[1000:1017]
    assert root.fs.read(root("a", "b", "f.bin"), 10_000) == data[10_000:]
    assert root.fs.read(root("a", "b", "f.bin"), 10_000, 1_000) == data[10_000:]  # clipped
    assert root.fs.read(root("a", "b", "f.bin"), len(data)) == b""


def test_write_private_replaces_a_file_whole_at_mode_600(root: Root) -> None:
    path = root("keys", "k.json")
    root.fs.write_bytes(path, b"made the ordinary way first")
    root.fs.write_private(path, b"secret")
    assert (root.fs.read(path), root.fs.mode(path)) == (b"secret", 0o600)
    root.fs.write_private(root("keys", "new.json"), b"new")  # and where nothing was
    assert root.fs.mode(root("keys", "new.json")) == 0o600
    names = sorted(f.path.rsplit("/", 1)[-1] for f in root.fs.list_files(root("keys")))
    assert names == ["k.json", "new.json"]  # no temporary file left
    with pytest.raises(StorageError, match="cannot stat"):
        root.fs.mode(root("keys", "missing.json"))


def test_a_keyring_open_to_every_user_is_refused_here_too(
    root: Root, request: pytest.FixtureRequest
) -> None:
    config = load_config(env={})
    if isinstance(root.fs, WebHdfsFileSystem):
        hdfs = request.getfixturevalue("hdfs_cluster").hdfs_config
        config = dataclasses.replace(config, hdfs=hdfs)
    path = root("k.json")
    save_keyring(path, Keyring.generate(), config)
    assert load_keyring(path, config).kek_ids
    if isinstance(root.fs, WebHdfsFileSystem):
        root.fs.client(path).set_permission(urlsplit(path).path, "644")
    else:
        os.chmod(path.removeprefix("file://"), 0o644)
    with pytest.raises(KeyringError, match="open to every user"):
        load_keyring(path, config)


def test_read_missing_file_raises_with_the_path(root: Root) -> None:
    with pytest.raises(StorageError, match="nope.bin"):
        root.fs.read(root("nope.bin"))
    with pytest.raises(StorageError, match="nope.bin"), root.fs.open_read(root("nope.bin")):
        pass


def test_streams_in_and_out(root: Root) -> None:
    chunks = [bytes([i]) * 100_000 for i in range(5)]
    with root.fs.open_write(root("s", "big.bin")) as out:
        for chunk in chunks:
            out.write(chunk)
    with root.fs.open_read(root("s", "big.bin")) as src:
        pieces = []
        while piece := src.read(65_536):
            pieces.append(piece)
    assert b"".join(pieces) == b"".join(chunks)


def test_open_read_from_an_offset(root: Root) -> None:
    data = bytes(range(256)) * 40
    root.fs.write_bytes(root("f.bin"), data)
    with root.fs.open_read(root("f.bin"), 10_000) as src:
        assert src.read(17) == data[10_000:10_017]
        assert src.read() == data[10_017:]
        assert src.read(5) == b""
    for at_or_past_end in (len(data), len(data) + 1):  # as a ranged read there: nothing
        with root.fs.open_read(root("f.bin"), at_or_past_end) as src:
            assert src.read(5) == b""
    root.fs.write_bytes(root("empty.bin"), b"")
    with root.fs.open_read(root("empty.bin")) as src:
        assert src.read() == b""


def test_open_write_replaces_an_existing_file(root: Root) -> None:
    root.fs.write_bytes(root("f"), b"old content")
    with root.fs.open_write(root("f")) as out:
        out.write(b"new")
    assert root.fs.read(root("f")) == b"new"


def test_list_files_is_recursive_with_size_and_mtime(root: Root) -> None:
    before = now_ms()
    root.fs.write_bytes(root("top.bin"), b"1")
    root.fs.write_bytes(root("d", "mid.bin"), b"22")
    root.fs.write_bytes(root("d", "e", "deep.bin"), b"333")
    root.fs.write_bytes(root("d", "e", "empty.bin"), b"")
    root.fs.makedirs(root("empty-dir"))

    listed = sorted(root.fs.list_files(root.uri))

    assert [(f.path, f.size) for f in listed] == [
        (root("d", "e", "deep.bin"), 3),
        (root("d", "e", "empty.bin"), 0),
        (root("d", "mid.bin"), 2),
        (root("top.bin"), 1),
    ]
    for f in listed:
        # The filesystem's clock (the NameNode's on HDFS) is this machine's clock here.
        assert before - 2_000 <= f.mtime_ms <= now_ms() + 2_000, f
        assert root.fs.status(f.path) == f


def test_names_a_url_would_read_otherwise_name_their_own_files(root: Root) -> None:
    """'#' starts a URL's fragment, '?' its query, '%' an escape; a URL parser drops tabs and
    line breaks; HdfsCLI expands a '#LATEST' component to the newest entry of its folder."""
    names = ["#LATEST", "z.dcm#b", "y.dcm?v=2", "pc%41.bin", "a\tb.dcm", "l\nf", "sub#/c.dcm"]
    names += ["z.dcm", "y.dcm", "pcA.bin", "ab.dcm", "lf"]  # what a parser would read instead
    for n, name in enumerate(names):  # '#LATEST' first: the others are newer
        root.fs.write_bytes(root(name), f"content {n}".encode())
    listed = {f.path: f for f in root.fs.list_files(root.uri)}
    assert set(listed) == {root(name) for name in names}
    for n, name in enumerate(names):
        assert root.fs.read(root(name)) == f"content {n}".encode(), name
        assert root.fs.status(root(name)) == listed[root(name)], name


def test_list_files_walks_in_order(root: Root) -> None:
    # os.walk's order, top down: a directory's files by name, then each subdirectory in turn
    for name in ("b/2", "b/1", "a/x/1", "a/2", "c", "a/1", "b/a/1"):
        root.fs.write_bytes(root(*name.split("/")), b"")
    listed = [f.path for f in root.fs.list_files(root.uri)]
    expected = ["c", "a/1", "a/2", "a/x/1", "b/1", "b/2", "b/a/1"]
    assert listed == [root(*name.split("/")) for name in expected]


def test_list_files_of_a_file_or_a_missing_path(root: Root) -> None:
    root.fs.write_bytes(root("one.bin"), b"abc")
    (only,) = root.fs.list_files(root("one.bin"))
    assert (only.path, only.size) == (root("one.bin"), 3)
    assert list(root.fs.list_files(root("missing"))) == []


def test_list_dirs_gives_sorted_immediate_subdirectories(root: Root) -> None:
    for name in ("b", "a", "c"):
        root.fs.makedirs(root("p", name, "inner"))
    root.fs.write_bytes(root("p", "file.bin"), b"x")
    assert root.fs.list_dirs(root("p")) == [root("p", "a"), root("p", "b"), root("p", "c")]
    assert root.fs.list_dirs(root("missing")) == []


def test_status_and_exists(root: Root) -> None:
    assert root.fs.status(root("missing")) is None
    assert not root.fs.exists(root("missing"))
    root.fs.write_bytes(root("f.bin"), b"12345")
    st = root.fs.status(root("f.bin"))
    assert st is not None and (st.path, st.size) == (root("f.bin"), 5)
    root.fs.makedirs(root("d"))
    assert root.fs.exists(root("d"))


def test_publish_moves_into_place_making_parents(root: Root) -> None:
    root.fs.write_bytes(root("staging", "x.bin"), b"payload")
    root.fs.publish(root("staging", "x.bin"), root("final", "deep", "x.bin"))
    assert root.fs.read(root("final", "deep", "x.bin")) == b"payload"
    assert not root.fs.exists(root("staging", "x.bin"))


def test_publish_moves_a_directory(root: Root) -> None:
    root.fs.write_bytes(root("staging", "run1", "part-0"), b"p0")
    root.fs.publish(root("staging", "run1"), root("tables", "run1"))
    assert root.fs.read(root("tables", "run1", "part-0")) == b"p0"


@pytest.mark.parametrize("target", ["file", "directory"])
def test_publish_never_replaces_an_existing_target(root: Root, target: str) -> None:
    root.fs.write_bytes(root("staging", "x.bin"), b"new")
    if target == "file":
        root.fs.write_bytes(root("final", "x.bin"), b"old")
    else:
        root.fs.makedirs(root("final", "x.bin"))

    with pytest.raises(PublishConflictError, match="x.bin"):
        root.fs.publish(root("staging", "x.bin"), root("final", "x.bin"))

    assert root.fs.read(root("staging", "x.bin")) == b"new"
    if target == "file":
        assert root.fs.read(root("final", "x.bin")) == b"old"
    else:  # not moved into the directory either
        assert list(root.fs.list_files(root("final", "x.bin"))) == []


def test_publish_of_a_missing_source_is_a_storage_error(root: Root) -> None:
    with pytest.raises(StorageError, match="ghost") as info:
        root.fs.publish(root("ghost"), root("final", "ghost"))
    assert not isinstance(info.value, PublishConflictError)


def test_delete(root: Root) -> None:
    root.fs.write_bytes(root("f.bin"), b"x")
    root.fs.write_bytes(root("tree", "a", "b.bin"), b"y")

    root.fs.delete(root("f.bin"))
    root.fs.delete(root("f.bin"))  # gone already: fine
    root.fs.delete(root("tree"), recursive=True)

    assert root.fs.status(root("f.bin")) is None
    assert root.fs.status(root("tree")) is None


def test_delete_of_a_non_empty_directory_needs_recursive(root: Root) -> None:
    root.fs.write_bytes(root("tree", "b.bin"), b"y")
    with pytest.raises(StorageError, match="tree"):
        root.fs.delete(root("tree"))
    assert root.fs.read(root("tree", "b.bin")) == b"y"


def test_makedirs_is_idempotent(root: Root) -> None:
    root.fs.makedirs(root("m", "n"))
    root.fs.makedirs(root("m", "n"))
    assert root.fs.list_dirs(root("m")) == [root("m", "n")]


def test_run_all_makes_the_calls_and_raises_the_first_failure(root: Root) -> None:
    def write(name: str):
        return lambda: root.fs.write_bytes(root(name), name.encode())

    def fail() -> None:
        raise StorageError("the second call failed")

    root.fs.run_all([write("a"), write("b")])
    assert [root.fs.read(root(n)) for n in "ab"] == [b"a", b"b"]

    with pytest.raises(StorageError, match="the second call failed"):
        root.fs.run_all([write("c"), fail, write("d")])
    assert root.fs.exists(root("c"))
    # Remote: the calls run at once, and each ends before the failure is raised; local: in
    # order, so nothing after the failure runs
    assert root.fs.exists(root("d")) == root.fs.remote


# --- HDFS only ---------------------------------------------------------------------------------


@pytest.mark.hdfs
def test_hdfs_run_all_makes_its_calls_at_once(hdfs_cluster, hdfs_root: str) -> None:
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    # Each call writes, then waits for all the others: only calls made at once can pass
    everyone = threading.Barrier(CALLS_AT_ONCE)

    def call(i: int):
        def write_and_wait() -> None:
            fs.write_bytes(f"{hdfs_root}/at-once/{i}", b"x")
            everyone.wait(timeout=60)

        return write_and_wait

    fs.run_all([call(i) for i in range(CALLS_AT_ONCE)])
    assert len(list(fs.list_files(f"{hdfs_root}/at-once"))) == CALLS_AT_ONCE


@pytest.mark.hdfs
def test_hdfs_list_files_lists_subdirectories_at_once(
    hdfs_cluster, hdfs_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    for i in range(CALLS_AT_ONCE):
        fs.write_bytes(f"{hdfs_root}/d{i}/f", b"x")
    listing = fs._list
    # Each listing of a subdirectory waits for all the others: only listings made at once pass
    everyone = threading.Barrier(CALLS_AT_ONCE)

    def list_and_wait(path: str, hpath: str):
        entries = listing(path, hpath)
        if path != hdfs_root:
            everyone.wait(timeout=60)
        return entries

    monkeypatch.setattr(fs, "_list", list_and_wait)
    listed = [f.path for f in fs.list_files(hdfs_root)]
    assert listed == [f"{hdfs_root}/d{i}/f" for i in range(CALLS_AT_ONCE)]


@pytest.mark.hdfs
def test_hdfs_list_files_lists_only_a_few_subdirectories_ahead(
    hdfs_cluster, hdfs_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller slow between files (retention deletes each one) must not have the whole tree
    # listed, and held, ahead of it
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    names = [f"d{i:02d}/f" for i in range(4 * CALLS_AT_ONCE)]
    fs.run_all(functools.partial(fs.write_bytes, f"{hdfs_root}/{n}", b"x") for n in names)
    listing, listed = fs._list, []

    def counted(path: str, hpath: str):
        listed.append(path)
        return listing(path, hpath)

    monkeypatch.setattr(fs, "_list", counted)
    walk = fs.list_files(hdfs_root)
    assert next(walk).path == f"{hdfs_root}/{names[0]}"
    time.sleep(1)  # listings started ahead have long been made by now (a few ms each)
    # The root, the first subdirectory and at most CALLS_AT_ONCE beyond it
    assert len(listed) <= 2 + CALLS_AT_ONCE
    assert [f.path for f in walk] == [f"{hdfs_root}/{n}" for n in names[1:]]
    assert len(listed) == 1 + len(names)


@pytest.mark.hdfs
def test_hdfs_listing_walks_directories_nested_deeper_than_python_recurses(
    hdfs_cluster, hdfs_root: str
) -> None:
    # HDFS refuses paths deeper than 1000 components: this is nearly as deep as it goes, and
    # deeper than a walk that recursed once per level could go (each level nests a generator)
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    deepest = hdfs_root + "/d" * 980
    fs.write_bytes(deepest + "/x.dcm", b"x")
    (listed,) = fs.list_entries(hdfs_root)
    assert (listed.path, listed.problem) == (deepest + "/x.dcm", None)


@pytest.mark.hdfs
def test_hdfs_uris_keep_their_authority(hdfs_cluster, hdfs_root: str) -> None:
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    fs.write_bytes(f"{hdfs_root}/x/y.bin", b"1")
    (listed,) = fs.list_files(hdfs_root)
    assert listed.path == f"{hdfs_root}/x/y.bin"
    assert listed.path.startswith(hdfs_cluster.uri + "/")
    assert fs.list_dirs(hdfs_root + "/") == [f"{hdfs_root}/x"]  # a trailing slash is no matter


@pytest.mark.hdfs
def test_hdfs_mtime_is_the_namenodes(hdfs_cluster, hdfs_root: str) -> None:
    from hdfs import InsecureClient

    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    fs.write_bytes(f"{hdfs_root}/f", b"abc")
    path = hdfs_root[len(hdfs_cluster.uri) :] + "/f"
    raw = InsecureClient(hdfs_cluster.webhdfs_url).status(path)
    st = fs.status(f"{hdfs_root}/f")
    assert st is not None and st.mtime_ms == raw["modificationTime"]


@pytest.mark.hdfs
def test_hdfs_filesystem_pickles_as_its_config(hdfs_cluster, hdfs_root: str) -> None:
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.config == fs.config and repr(clone) == repr(fs)
    clone.write_bytes(f"{hdfs_root}/p", b"from the clone")
    assert fs.read(f"{hdfs_root}/p") == b"from the clone"


@pytest.mark.hdfs
def test_hdfs_calls_go_direct_whatever_proxy_the_environment_names(
    hdfs_cluster, hdfs_root: str, monkeypatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    fs.write_bytes(f"{hdfs_root}/direct", b"not through a proxy")
    assert fs.read(f"{hdfs_root}/direct") == b"not through a proxy"


def _https_namenode(tmp_path) -> tuple[str, Path, Callable[[], None]]:
    """A WebHDFS stand-in over TLS on 127.0.0.1 that answers every GETFILESTATUS; its URL,
    the CA file that signs its certificate, and a stop function."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                {"FileStatus": {"type": "FILE", "length": 3, "modificationTime": 1000}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}", ca, server.shutdown


def test_an_https_webhdfs_still_trusts_the_ca_bundle_the_environment_names(
    tmp_path, monkeypatch
) -> None:
    url, ca, stop = _https_namenode(tmp_path)
    try:
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(StorageError, match="hdfs://nn/f"):  # its CA is nobody's
            WebHdfsFileSystem(HdfsConfig({"nn": url}, timeout_seconds=10)).status("hdfs://nn/f")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        fs = WebHdfsFileSystem(HdfsConfig({"nn": url}, timeout_seconds=10))
        assert fs.status("hdfs://nn/f") == FileInfo("hdfs://nn/f", 3, 1000)
    finally:
        stop()


def test_unreachable_webhdfs_is_a_storage_error_naming_the_path() -> None:
    fs = WebHdfsFileSystem(HdfsConfig({"nn:8020": "http://127.0.0.1:1"}, timeout_seconds=2))
    with pytest.raises(StorageError, match="hdfs://nn:8020/some/file"):
        fs.status("hdfs://nn:8020/some/file")


def test_repr_shows_the_namenodes() -> None:
    fs = WebHdfsFileSystem(HdfsConfig({"nn:8020": "http://nn.example:9870"}, user="etl"))
    assert repr(fs) == (
        "WebHdfsFileSystem(namenodes={'nn:8020': 'http://nn.example:9870'}, user='etl', "
        "auth='simple')"
    )


def test_non_hdfs_uri_is_refused() -> None:
    fs = WebHdfsFileSystem(HdfsConfig())
    with pytest.raises(StorageError, match="s3://bucket/x"):
        fs.status("s3://bucket/x")


def test_kerberos_without_the_extra_names_it() -> None:
    try:
        import requests_kerberos  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="requests-kerberos"):
            fs = WebHdfsFileSystem(HdfsConfig({"nn": "http://127.0.0.1:1"}, auth="kerberos"))
            fs.status("hdfs://nn/x")  # the client of a cluster is made at its first call
    else:
        pytest.skip("requests-kerberos is installed")


@pytest.mark.hdfs
def test_datanode_down_is_a_storage_error_and_recovers(hdfs_cluster, hdfs_root: str) -> None:
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    fs.write_bytes(f"{hdfs_root}/before", b"kept")
    hdfs_cluster.stop_datanode()
    try:
        with pytest.raises(StorageError, match="before"):
            fs.read(f"{hdfs_root}/before")
        with pytest.raises(StorageError, match="during"):
            fs.write_bytes(f"{hdfs_root}/during", b"lost")
        # More than the upload queue holds: the failed upload must fail a write, not block it
        with (
            pytest.raises(StorageError, match="streamed"),
            fs.open_write(f"{hdfs_root}/streamed") as out,
        ):
            for _ in range(3 * UPLOAD_QUEUE):
                out.write(bytes(UPLOAD_PIECE))
        assert fs.status(f"{hdfs_root}/before") is not None  # the NameNode still answers
    finally:
        hdfs_cluster.start_datanode()
    assert fs.read(f"{hdfs_root}/before") == b"kept"
    fs.write_bytes(f"{hdfs_root}/after", b"ok")
    assert fs.read(f"{hdfs_root}/after") == b"ok"
