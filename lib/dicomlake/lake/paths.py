"""Landing paths out of the analysts' tables: keyed path ids, and the restricted paths table.

PACS exports name folders and files after patient ids, names, accession numbers and UIDs, so a
landing path is an identifier. The tables under ``tables/`` name a landing file only by its
``source_path_id``::

    hex(HMAC-SHA256(secret, "dicomlake-path-v1\\0" + path as UTF-8))[:32]

with ``secret = Keyring.secret_for("pseudonym")`` (the secret of the header pseudonyms, in
another domain), over the URI the listing gives (``/landing/a/b.dcm``, ``hdfs://nn/landing/...``).
It is the same in every run, so the ingest's ledger anti-joins a listing against it, and
every key holder's keyring (public half included) computes it.

The path itself goes to ``<lake>/restricted/paths/part-<run>-t<task>-a<attempt>.parquet``, one
row per path a task saw, its ``source_path`` column encrypted with Parquet Modular Encryption
like the identified columns of ``restricted/identities``: `read_paths` (or
``dicomlake reidentify --path-id / --error-id / --instance-id``) gives it back to a key holder.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import pyarrow.compute as pc

from dicomlake.config import Config
from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.deid import PSEUDONYM_PURPOSE
from dicomlake.errors import LakeError
from dicomlake.lake import delta_read, restricted
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.parquet import parquet_files
from dicomlake.storage import filesystem_for

_PATH_DOMAIN = b"dicomlake-path-v1\x00"
PATH_ID_CHARS = 32


def path_secret(keyring: Keyring) -> bytes:
    """The secret path ids are keyed with (available in public-only keyrings too)."""
    return keyring.secret_for(PSEUDONYM_PURPOSE)


def path_id(secret: bytes, path: str) -> str:
    """The ``source_path_id`` of a landing URI: keyed, stable, one-way (128 bits, hex)."""
    # surrogateescape: a listed name that is not valid UTF-8 still has one id
    message = _PATH_DOMAIN + path.encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:PATH_ID_CHARS]


def path_text(path: str) -> str:
    """``path`` as Parquet can store it: a name that is not valid UTF-8 keeps its odd bytes as
    ``\\xNN`` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_paths(
    lake: str, keyring: Keyring, config: Config, path_ids: Iterable[str] | None = None
) -> dict[str, str]:
    """source_path_id -> landing path, decrypted with ``keyring`` (all, or ``path_ids``).

    Raises IntegrityError when the files were written with another keyring's secret, and
    fails when the keyring cannot open the encrypted column.
    """
    fs = filesystem_for(lake, config.hdfs)
    wanted = None if path_ids is None else set(path_ids)
    out: dict[str, str] = {}
    with kms.decrypting(keyring) as decryption:
        for uri in parquet_files(fs, LakeLayout(lake).restricted("paths")):
            with fs.open_read(uri) as f:
                data = f.read()
            # the clear id column first: files without a wanted id are never decrypted
            ids = restricted.parse(uri, data, ["source_path_id"])["source_path_id"]
            if wanted is not None and not wanted.intersection(ids.to_pylist()):
                continue
            columns = ["source_path_id", "source_path"]
            table = restricted.parse(uri, data, columns, decryption)
            for pid, path in zip(*(c.to_pylist() for c in table.columns), strict=True):
                if wanted is None or pid in wanted:
                    out[pid] = path
    return out


class PathRows:
    """The restricted path rows of one task, one per path."""

    def __init__(self, secret: bytes, run_id: str) -> None:
        self._secret, self._run_id = secret, run_id
        self._rows: dict[str, dict[str, Any]] = {}

    def id_of(self, path: str) -> str:
        """The path's id; its row is kept for the task's restricted file."""
        pid = path_id(self._secret, path)
        if pid not in self._rows:
            self._rows[pid] = {
                "source_path_id": pid,
                "ingest_run_id": self._run_id,
                "source_path": path_text(path),
            }
        return pid

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())


def find_paths(
    lake: str,
    keyring: Keyring,
    config: Config,
    *,
    path_id: str | None = None,
    error_id: str | None = None,
    instance_id: str | None = None,
) -> list[dict[str, Any]]:
    """The landing paths behind a path id, an ``errors`` row or an instance (every file whose
    content it is, ``sources`` rows), decrypted with ``keyring``; one row per path id."""
    fs, layout = filesystem_for(lake, config.hdfs), LakeLayout(lake)

    def rows(name: str, key: str, value: str | None, columns: list[str]) -> list[dict[str, Any]]:
        table = delta_read.read_snapshot(fs, layout, name, columns)
        found: list[dict[str, Any]] = table.filter(pc.equal(table[key], value)).to_pylist()
        return found

    if path_id is not None:
        found: list[dict[str, Any]] = [{"source_path_id": path_id}]
    elif error_id is not None:
        found = rows("errors", "error_id", error_id, ["error_id", "source_path_id", "reason"])
    else:
        columns = ["instance_id", "source_path_id", "outcome", "ingest_run_id"]
        found = rows("sources", "instance_id", instance_id, columns)
    if not found:
        asked = {"error_id": error_id, "instance_id": instance_id}
        what = " ".join(f"{k}={v}" for k, v in asked.items() if v is not None)
        raise LakeError(f"no row of {lake} has {what}")
    paths = read_paths(lake, keyring, config, {r["source_path_id"] for r in found})
    for row in found:
        row["source_path"] = paths.get(row["source_path_id"])
    if not any(r["source_path"] for r in found):
        raise LakeError(
            f"{layout.restricted('paths')} has no path for source_path_id "
            f"{', '.join(sorted({r['source_path_id'] for r in found}))}"
        )
    return found
