"""HDFS over WebHDFS (the ``hdfs`` package, HdfsCLI), for ``hdfs://`` URIs.

Python code on the driver and on executors talks to the WebHDFS address that
:class:`~dicomlake.config.HdfsConfig` ``namenodes`` gives for each URI's authority, so
``hdfs://a/x`` and ``hdfs://b/x`` are two clusters; Spark itself reads the same files through its
own Hadoop client. URIs keep their ``hdfs://authority`` prefix in and out; only the path goes over
the wire.

>>> from dicomlake.config import HdfsConfig
>>> fs = WebHdfsFileSystem(HdfsConfig(namenodes={"nn:8020": "http://127.0.0.1:19870"}))
>>> fs
WebHdfsFileSystem(namenodes={'nn:8020': 'http://127.0.0.1:19870'}, user=None, auth='simple')
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import posixpath
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar, cast

import requests
import urllib3
from hdfs import Client, HdfsError, InsecureClient

from dicomlake.config import HdfsConfig
from dicomlake.errors import ConfigError, PublishConflictError, StorageError
from dicomlake.storage.base import CALLS_AT_ONCE, FileInfo, FileSystem, ReadStream, failure
from dicomlake.storage.registry import remote_parts
from dicomlake.vocab import RejectReason

log = logging.getLogger(__name__)
_T = TypeVar("_T")

UPLOAD_PIECE = 1 << 20
UPLOAD_QUEUE = 8
"""Pieces an upload may have queued: what `open_write` holds beyond the caller's buffer."""

# A request that failed on the wire: requests' errors, and urllib3's, which HdfsCLI lets through
# while a response body is read from its raw stream (a DataNode gone mid-read).
_CONNECTION = (requests.RequestException, urllib3.exceptions.HTTPError)
_FAILED = (HdfsError, *_CONNECTION)

# WebHDFS RemoteException names (the Java simple class names) this module reacts to.
_NOT_FOUND = "FileNotFoundException"
_EXISTS = "FileAlreadyExistsException"
_SNAPSHOT_REFUSED = "SnapshotException"
_DENIED = "AccessControlException"


class WebHdfsFileSystem(FileSystem):
    """A :class:`FileSystem` over WebHDFS: each call goes to the cluster its URI names.

    The cluster is picked per call from the URI's authority rather than once per instance, so
    no caller can send a path to another cluster by reusing a filesystem object. Each cluster
    gets one client (one HTTP session, reused for every call), made at its first call:
    construction does no network I/O. Instances pickle as their config, so one can be shipped to
    Spark executors, where it opens its own sessions.
    """

    scheme = "hdfs"
    # A read is two HTTP round trips (NameNode, DataNode) and the transfer; a small file's
    # create mostly waits (~0.4 s on a stock DataNode) for the NameNode to complete it.
    remote = True

    def __init__(self, config: HdfsConfig) -> None:
        self._config = config
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"WebHdfsFileSystem(namenodes={self._config.namenodes!r}, "
            f"user={self._config.user or None!r}, auth={self._config.auth!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._config,))

    @property
    def config(self) -> HdfsConfig:
        return self._config

    def client(self, path: str) -> Client:
        """The HdfsCLI client of the cluster ``path`` names (a ConfigError if none is set)."""
        authority = _split(path)[0].partition("://")[2].lower()
        with self._lock:
            client = self._clients.get(authority)
            if client is None:
                urls = self._config.webhdfs_urls(authority)
                client = self._clients[authority] = _make_client(self._config, urls)
        return client

    def list_entries(self, path: str, follow_symlinks: bool = False) -> Iterator[FileInfo]:
        # HDFS keeps symbolic links off unless an administrator enables them; WebHDFS lists one
        # with type SYMLINK, and it is not followed. Every HDFS name is UTF-8.
        prefix, hpath = _split(path)
        st = self._status(path, hpath)
        if st is None:
            return
        if st["type"] != "DIRECTORY":
            yield _entry(path, st)
            return
        # One LISTSTATUS per directory: each directory's subdirectories are listed up to
        # CALLS_AT_ONCE ahead of the walk, which still yields in os.walk's order.
        pool = ThreadPoolExecutor(CALLS_AT_ONCE, thread_name_prefix="dicomlake-list")
        try:
            yield from self._walk(prefix, hpath, self._list(path, hpath), pool)
        finally:  # also when the caller stops early: listings not started are dropped
            pool.shutdown(cancel_futures=True)

    def _walk(
        self, prefix: str, hpath: str, entries: list[tuple[str, dict[str, Any]]], pool: Executor
    ) -> Iterator[FileInfo]:
        # A stack of levels, not recursion: directories may nest deeper than Python recurses.
        levels: list[Iterator[tuple[str, list[tuple[str, dict[str, Any]]] | None]]] = [
            iter([(hpath, entries)])
        ]
        while levels:
            level = next(levels[-1], None)
            if level is None:
                levels.pop()
                continue
            directory, listing = level
            if listing is None:
                yield FileInfo(prefix + directory, 0, 0, RejectReason.UNREADABLE_DIR)
                continue
            dirs = []
            # Files before subdirectories, each sorted by name, as LocalFileSystem's walk does.
            for name, st in listing:
                child = posixpath.join(directory, name)
                if st["type"] == "DIRECTORY":
                    dirs.append(child)
                else:
                    yield _entry(prefix + child, st)
            listings = _in_order(pool, lambda c: self._list_allowed(prefix + c, c), dirs)
            levels.append(zip(dirs, listings, strict=True))

    def _list_allowed(self, path: str, hpath: str) -> list[tuple[str, dict[str, Any]]] | None:
        """`_list`, or None for a directory this user may not list."""
        try:
            return self._list(path, hpath)
        except StorageError as exc:
            if isinstance(exc.__cause__, HdfsError) and exc.__cause__.exception == _DENIED:
                return None
            raise

    def list_dirs(self, path: str) -> list[str]:
        prefix, hpath = _split(path)
        return [
            prefix + posixpath.join(hpath, name)
            for name, st in self._list(path, hpath)
            if st["type"] == "DIRECTORY"
        ]

    def _list(self, path: str, hpath: str) -> list[tuple[str, dict[str, Any]]]:
        """Sorted (name, status) of a directory's entries; empty when it is gone."""
        try:
            return sorted(self.client(path).list(hpath, status=True))
        except HdfsError as exc:
            if exc.exception == _NOT_FOUND:  # missing, or deleted while we walked
                return []
            raise failure("list", path, exc) from exc
        except _CONNECTION as exc:
            raise failure("list", path, exc) from exc

    def status(self, path: str) -> FileInfo | None:
        st = self._status(path, _split(path)[1])
        return None if st is None else FileInfo(path, st["length"], st["modificationTime"])

    def _status(self, path: str, hpath: str) -> dict[str, Any] | None:
        try:
            return cast("dict[str, Any] | None", self.client(path).status(hpath, strict=False))
        except _FAILED as exc:
            raise failure("stat", path, exc) from exc

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range for {path}: offset={offset}, length={length}")
        if length == 0:
            return b""
        try:
            with self.client(path).read(_split(path)[1], offset=offset, length=length) as r:
                return cast(bytes, r.read())
        except HdfsError as exc:
            if self._past_end(exc, path, offset):
                return b""
            raise failure("read", path, exc) from exc
        except _CONNECTION as exc:
            raise failure("read", path, exc) from exc

    def _past_end(self, exc: HdfsError, path: str, offset: int) -> bool:
        """Whether WebHDFS refused ``offset`` for being at or past the file's end ("out of the
        range", an IOException): a local read there gives b"", and so do these."""
        if exc.exception != "IOException":
            return False
        st = self.status(path)
        return st is not None and offset >= st.size

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[ReadStream]:
        stack = contextlib.ExitStack()
        try:
            # A streaming urllib3 response; leaving the stack closes the connection.
            body = stack.enter_context(self.client(path).read(_split(path)[1], offset=offset))
        except HdfsError as exc:
            if not self._past_end(exc, path, offset):
                raise failure("open", path, exc) from exc
            body = io.BytesIO()
        except _CONNECTION as exc:
            raise failure("open", path, exc) from exc
        with stack:
            yield ReadStream(body, path, _CONNECTION)

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        # WebHDFS CREATE makes the parents; the body streams in chunks from a helper thread.
        client, hpath = self.client(path), _split(path)[1]
        with _Upload(path, lambda body: client.write(hpath, data=body, overwrite=True)) as up:
            yield cast(BinaryIO, up)

    def write_bytes(self, path: str, data: bytes) -> None:
        # One PUT with a body, no helper thread: the common case for small files.
        try:
            self.client(path).write(_split(path)[1], data=data, overwrite=True)
        except _FAILED as exc:
            raise failure("write", path, exc) from exc

    def write_private(self, path: str, data: bytes) -> None:
        # Created at mode 600 under a fresh name, then renamed over the target (rename2 with
        # OVERWRITE: atomic), so a reader never sees it partly written or open to others
        client, hpath = self.client(path), _split(path)[1]
        tmp = posixpath.join(
            posixpath.dirname(hpath), f".{posixpath.basename(hpath)}.{secrets.token_hex(8)}.tmp"
        )
        try:
            client.write(tmp, data=data, overwrite=False, permission="600")
            client._rename(tmp, destination=hpath, renameoptions="OVERWRITE")
        except _FAILED as exc:
            with contextlib.suppress(*_FAILED):
                client.delete(tmp)
            raise failure("write", path, exc) from exc

    def mode(self, path: str) -> int:
        st = self._status(path, _split(path)[1])
        if st is None:
            raise StorageError(f"cannot stat {path}: no such file", detail="FileNotFoundException")
        return int(st["permission"], 8)

    def publish(self, src: str, dst: str) -> None:
        (src_prefix, hsrc), (dst_prefix, hdst) = _split(src), _split(dst)
        if src_prefix.lower() != dst_prefix.lower():
            raise StorageError(f"cannot publish {src} to {dst}: a rename stays on one cluster")
        self.makedirs(dst_prefix + posixpath.dirname(hdst))
        try:
            # HdfsCLI's rename() uses the old RENAME, which returns false on an existing file and
            # moves src *into* an existing directory. With renameoptions=NONE the NameNode runs
            # rename2: atomic, and it refuses any existing target (FileAlreadyExistsException).
            self.client(src)._rename(hsrc, destination=hdst, renameoptions="NONE")
        except HdfsError as exc:
            # An existing directory target fails with a plain IOException, hence the status call.
            if exc.exception == _EXISTS or self.exists(dst):
                raise PublishConflictError(
                    f"cannot publish {src} to {dst}: target exists"
                ) from None
            raise failure(f"publish to {dst}:", src, exc) from exc
        except _CONNECTION as exc:
            raise failure(f"publish to {dst}:", src, exc) from exc

    def delete(self, path: str, recursive: bool = False) -> None:
        try:
            self.client(path).delete(_split(path)[1], recursive=recursive)
        except _FAILED as exc:
            raise failure("delete", path, exc) from exc

    def makedirs(self, path: str) -> None:
        try:
            self.client(path).makedirs(_split(path)[1])
        except _FAILED as exc:
            raise failure("make directory", path, exc) from exc

    def create_snapshot(self, path: str, name: str) -> str | None:
        """An HDFS snapshot of ``path`` (``<path>/.snapshot/<name>``), or None for a directory
        an administrator has not made snapshottable (``hdfs dfsadmin -allowSnapshot``)."""
        prefix, hpath = _split(path)
        try:
            self.client(path).create_snapshot(hpath, snapshotname=name)
        except HdfsError as exc:
            if exc.exception == _SNAPSHOT_REFUSED:
                log.info("%s is not snapshottable: %s", path, exc)
                return None
            raise failure("snapshot", path, exc) from exc
        except _CONNECTION as exc:
            raise failure("snapshot", path, exc) from exc
        return f"{prefix}{hpath}/.snapshot/{name}"

    def delete_snapshot(self, path: str, name: str) -> None:
        """Drop the HDFS snapshot ``name`` of ``path``."""
        try:
            self.client(path).delete_snapshot(_split(path)[1], name)
        except _FAILED as exc:
            raise failure(f"delete snapshot {name} of", path, exc) from exc


class _Upload:
    """A writer to ``path`` whose bytes ``send(body)`` uploads from a helper thread, ``body`` a
    generator of them.

    HdfsCLI's own writer queues every write until the upload takes it: a writer faster than the
    DataNode would hold a whole pack in memory. Here writes wait once `UPLOAD_QUEUE` pieces of
    `UPLOAD_PIECE` bytes are queued, and a failed upload fails the next write (a StorageError
    naming ``path``, like every other call of this filesystem).
    """

    def __init__(self, path: str, send: Callable[[Iterator[bytes]], object]) -> None:
        self._path = path
        self._queue: queue.Queue[bytes | None] = queue.Queue(UPLOAD_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)

    def _run(self, send: Callable[[Iterator[bytes]], object]) -> None:
        try:
            send(iter(self._queue.get, None))
        except BaseException as exc:  # raised in the writer's thread, by write() or on exit
            self._error = exc

    def _put(self, item: bytes | None) -> bool:
        """Queue ``item``; False when the upload has ended (a failed one takes nothing more)."""
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                pass
        return False

    def _raise_failure(self) -> None:
        if isinstance(self._error, _FAILED):
            raise failure("write", self._path, self._error) from self._error
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Upload:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._put(None)
        self._thread.join()
        if exc_info[0] is None:
            self._raise_failure()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for start in range(0, len(view), UPLOAD_PIECE):
            # A copy, so a queued piece does not keep the caller's whole buffer alive
            if not self._put(bytes(view[start : start + UPLOAD_PIECE])):
                self._raise_failure()
                raise StorageError(f"cannot write {self._path}: the upload ended early")
        return len(view)


def _make_client(config: HdfsConfig, urls: tuple[str, ...]) -> Client:
    """An HdfsCLI client for the NameNodes at ``urls``, on its own requests session.

    HdfsCLI takes them ';'-separated: a call that meets a connection error, a timeout or a
    StandbyException (or RetriableException) tries the next, and later calls start from the one
    that answered."""
    session = requests.Session()
    # Cluster traffic goes direct: no proxy or .netrc from the environment. requests would
    # otherwise read both again at every request (~0.2 ms each, two requests per read).
    session.trust_env = False
    # The one environment setting kept: a CA bundle for an HTTPS WebHDFS, read here once
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    if config.auth == "kerberos":
        try:
            from hdfs.ext.kerberos import KerberosClient
        except ImportError as exc:
            raise ConfigError(
                f"hdfs.auth='kerberos' needs requests-kerberos ({exc}): "
                "install the extra with `pip install dicomlake[kerberos]`"
            ) from None
        # The identity is the ticket's principal; ``user`` applies to simple auth only.
        client: Client = KerberosClient(
            ";".join(urls),
            principal=config.kerberos_principal or None,
            timeout=config.timeout_seconds,
            session=session,
        )
    else:
        # An empty user (neither hdfs.user nor HADOOP_USER_NAME: `hdfs_user.one_user`) means
        # the local login name (HdfsCLI's default), as Hadoop's own client takes it.
        client = InsecureClient(
            ";".join(urls),
            user=config.user or None,
            timeout=config.timeout_seconds,
            session=session,
        )
    client.resolve = _literal  # a name is a name, never a marker
    return client


def _in_order(pool: Executor, call: Callable[[str], _T], items: list[str]) -> Iterator[_T]:
    """``call(item)`` for each item, in order, started up to CALLS_AT_ONCE beyond the one being
    waited for: ahead of a slow caller (a retention deleting each file it is given), a walk
    holds a few listings per level, not the whole tree's."""
    window: collections.deque[Future[_T]] = collections.deque()
    for item in items:
        window.append(pool.submit(call, item))
        if len(window) > CALLS_AT_ONCE:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def _split(uri: str) -> tuple[str, str]:
    """(``hdfs://authority`` prefix, absolute path) of an ``hdfs://`` URI or a plain path.

    The path is every character after the authority, as HDFS names it: a listed name may hold
    '#', '?', '%', tabs or line breaks, which a URL parser would take as a fragment, a query or
    an escape, or drop, and so name another file."""
    prefix, path = remote_parts(uri) or ("", uri)
    if (prefix and not prefix.startswith("hdfs://")) or uri.startswith("file://"):
        raise StorageError(f"not an HDFS URI: {uri!r}")
    path = path or "/"
    if not path.startswith("/"):
        raise StorageError(f"HDFS paths must be absolute: {uri!r}")
    if len(path) > 1:
        path = path.rstrip("/")
    return prefix, path


def _literal(hdfs_path: str) -> str:
    """HdfsCLI's ``resolve`` without its markers: a name such as ``#LATEST`` names itself,
    not the newest entry of its folder."""
    if not hdfs_path.startswith("/"):
        raise StorageError(f"HDFS paths must be absolute: {hdfs_path!r}")
    return posixpath.normpath(hdfs_path)


def _entry(uri: str, st: dict[str, Any]) -> FileInfo:
    """A listed non-directory: a file, or a link (not followed)."""
    problem = RejectReason.SYMLINK if st["type"] == "SYMLINK" else None
    return FileInfo(uri, st["length"], st["modificationTime"], problem)
