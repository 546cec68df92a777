"""Landing paths in the lake: keyed path ids, the ledger's anti-join on them, scrubbed messages."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import LakeError
from dicomlake.ingest.worker import without_path
from dicomlake.lake import schemas
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import read_ledger
from dicomlake.lake.paths import path_id, path_secret
from dicomlake.storage import filesystem_for

PATH = "/landing/77654033/Doe^Jane/1.2.840.113619.2.55.3.1234/1.2.840.113619.2.55.3.5678.dcm"


def test_path_id_is_the_documented_hmac_apart_from_uid_pseudonyms():
    keyring = Keyring.generate()
    secret = keyring.secret_for("pseudonym")
    assert path_secret(keyring) == secret
    # hex(HMAC-SHA256(secret, "dicomlake-path-v1\0" + path))[:32], as the README says
    mac = hmac.new(secret, b"dicomlake-path-v1\x00" + PATH.encode(), hashlib.sha256)
    assert path_id(secret, PATH) == mac.hexdigest()[:32]
    assert path_id(secret, PATH + "x") != path_id(secret, PATH)
    assert path_id(Keyring.generate().secret_for("pseudonym"), PATH) != path_id(secret, PATH)
    # a listed name that is not UTF-8 (os.fsdecode's surrogates) has an id all the same
    assert len(path_id(secret, "/landing/\udcff.dcm")) == 32


def _sources(rows: list[tuple[str, int, int, str]]) -> pa.Table:
    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return pa.Table.from_pylist(
        [
            {
                "source_path_id": pid,
                "source_size": size,
                "source_mtime": datetime.fromtimestamp(mtime / 1000, tz=timezone.utc),
                "source_sha256": sha,
                "outcome": "ingested",
                "ingest_run_id": "r1",
                "seen_at": ts,
            }
            for pid, size, mtime, sha in rows
        ],
        schema=schemas.SOURCES,
    )


def test_the_ledger_knows_paths_by_their_ids_only(tmp_path):
    keyring = Keyring.generate()
    secret = path_secret(keyring)
    layout = LakeLayout(str(tmp_path))
    (tmp_path / "tables" / "sources").mkdir(parents=True)
    rows = [(path_id(secret, PATH), 100, 1_700_000_000_000, "ab" * 32)]
    pq.write_table(_sources(rows), tmp_path / "tables" / "sources" / "part-r1.parquet")
    ledger = read_ledger(filesystem_for(str(tmp_path), None), layout, secret)
    assert PATH not in ledger.seen
    assert not ledger.is_new(PATH, 100, 1_700_000_000_000)
    assert ledger.is_new(PATH, 101, 1_700_000_000_000)  # changed
    assert ledger.is_new(PATH + ".2", 100, 1_700_000_000_000)  # another file
    # under another keyring's secret every path is new
    other = read_ledger(filesystem_for(str(tmp_path), None), layout, b"\1" * 32)
    assert other.is_new(PATH, 100, 1_700_000_000_000)
    assert ledger.stored_sha256 == {"ab" * 32}


def test_a_ledger_with_clear_paths_is_refused_by_name(tmp_path):
    (tmp_path / "tables" / "sources").mkdir(parents=True)
    old = _sources([("x", 1, 1, "s")]).rename_columns(["source_path", *schemas.SOURCES.names[1:]])
    pq.write_table(old, tmp_path / "tables" / "sources" / "part-r0.parquet")
    with pytest.raises(LakeError, match="source_path_id.*older dicomlake"):
        read_ledger(filesystem_for(str(tmp_path), None), LakeLayout(str(tmp_path)), b"\0" * 32)


def test_messages_lose_the_landing_path_and_its_names():
    message = f"cannot read {PATH}: [Errno 5] Input/output error: '{PATH}'"
    scrubbed = without_path(message, PATH)
    assert scrubbed == (
        "cannot read <landing path>: [Errno 5] Input/output error: '<landing path>'"
    )
    # a name of the path quoted on its own, with or without its extension
    names = without_path("element of 1.2.840.113619.2.55.3.5678 in Doe^Jane", PATH)
    assert names == "element of <name> in <name>"
    # words that merely contain a name are left alone; a message without the path is as it was
    assert without_path("tag (0010,0010) length 12 at offset 344", PATH) == (
        "tag (0010,0010) length 12 at offset 344"
    )
