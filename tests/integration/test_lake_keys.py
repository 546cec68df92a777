"""Keys that mean what they say: an x25519 lake's restricted table opens only with the private
keyring (pyarrow and Spark), and a lake refuses any keyring but its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ingest_helpers import table
from pydicom.data import get_testdata_file

from dicomlake.backup import restore, take_snapshot
from dicomlake.cli import EXIT_ERROR, main
from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import KeyringMismatchError, PrivateKeyRequiredError
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring
from dicomlake.lake import restricted
from dicomlake.lake.identities import read_identities
from dicomlake.lake.ledger import latest_packs
from dicomlake.lake.paths import read_paths
from dicomlake.storage.local import LocalFileSystem

pytestmark = pytest.mark.spark

FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"]


def _landing(root: Path, names: list[str]) -> Path:
    landing = root / "landing"
    landing.mkdir(parents=True)
    for name in names:
        shutil.copy(get_testdata_file(name), landing / name)
    return landing


def _fingerprint(keyring: Keyring) -> str:
    """HMAC-SHA256 of the documented label under the keyring file's "secret", first 32 hex."""
    secret = base64.b64decode(json.loads(keyring.to_bytes())["secret"])
    return hmac.new(secret, b"dicomlake-keyring-fingerprint-v1", hashlib.sha256).hexdigest()[:32]


def _kek_digests(keyring: Keyring) -> dict[str, str]:
    """SHA-256 of the documented label, each KEK's id, a NUL and its key as the keyring file
    holds it: the public key (x25519) or the AES key (symmetric)."""
    out = {}
    for kek in json.loads(keyring.to_bytes())["keks"]:
        key = base64.b64decode(kek.get("public") or kek["key"])
        label = b"dicomlake-kek-digest-v1\0" + kek["id"].encode() + b"\0"
        out[kek["id"]] = hashlib.sha256(label + key).hexdigest()
    return out


@pytest.fixture
def x25519_lake(tmp_path, sc, config):
    full = Keyring.generate("x25519")
    lake = tmp_path / "lake"
    summary = run_ingest(sc, str(_landing(tmp_path, FILES)), str(lake), config, full.public_only())
    assert summary.ingested == len(FILES)
    return lake, full


def test_public_keyring_writes_but_cannot_read_identities(x25519_lake, config, spark, tmp_path):
    lake, full = x25519_lake
    public = full.public_only()
    rows = read_identities(str(lake), full, config).to_pylist()
    assert len(rows) == len(FILES)
    originals = {r["original_SOPInstanceUID"] for r in rows}
    assert len(originals) == len(FILES)
    with pytest.raises(PrivateKeyRequiredError):
        read_identities(str(lake), public, config)

    path = str(lake / "restricted" / "identities")
    got = spark.read.options(**kms.spark_options(full)).parquet(path).collect()
    assert {r["original_SOPInstanceUID"] for r in got} == originals
    with pytest.raises(Exception, match="only the public half"):
        spark.read.options(**kms.spark_options(public)).parquet(path).collect()

    public_path = tmp_path / "public.json"
    save_keyring(str(public_path), public, config)
    argv = ["reidentify", "--lake", str(lake), "--keyring", str(public_path)]
    assert main(argv) == EXIT_ERROR


def test_spark_wraps_with_the_public_half_and_pyarrow_unwraps(tmp_path, spark):
    full = Keyring.generate("x25519")
    df = spark.createDataFrame([("i1", "Doe^Jane")], "instance_id string, original string")
    out = str(tmp_path / "spark")
    (
        df.coalesce(1)
        .write.options(**kms.spark_options(full.public_only()))
        .option("parquet.encryption.column.keys", f"{kms.COLUMN_KEY_ID}:original")
        .option("parquet.encryption.footer.key", kms.FOOTER_KEY_ID)
        .option("parquet.encryption.plaintext.footer", "true")
        .parquet(out)
    )
    [part] = list(Path(out).glob("*.parquet"))
    assert b"Doe^Jane" not in part.read_bytes()
    with kms.decrypting(full) as props:
        got = pq.read_table(part, decryption_properties=props)
    assert got.to_pylist() == [{"instance_id": "i1", "original": "Doe^Jane"}]


def test_the_lake_refuses_another_keyring_and_follows_rotation(
    tmp_path, sc, config, keyring, capsys, caplog
):
    lake = tmp_path / "lake"
    run_ingest(sc, str(_landing(tmp_path, FILES[:1])), str(lake), config, keyring)
    bound = json.loads((lake / "keyring-binding.json").read_text())
    assert bound == {
        "fingerprint": _fingerprint(keyring),
        "active_kek_id": keyring.active_kek_id,
        "kek_ids": keyring.kek_ids,
        "kek_digests": _kek_digests(keyring),
    }
    assert keyring.to_bytes().decode().count(bound["fingerprint"]) == 0

    more = _landing(tmp_path / "more", FILES[1:])
    before = sorted(p.relative_to(lake) for p in lake.rglob("*") if "_lock" not in str(p))
    with pytest.raises(KeyringMismatchError, match="fingerprint mismatch"):
        run_ingest(sc, str(more), str(lake), config, Keyring.generate("symmetric"))
    after = sorted(p.relative_to(lake) for p in lake.rglob("*") if "_lock" not in str(p))
    assert after == before

    keyring_path = tmp_path / "keyring.json"
    save_keyring(str(keyring_path), keyring, config)
    other_path = tmp_path / "other.json"
    other = Keyring.generate("symmetric")
    save_keyring(str(other_path), other, config)
    rotate = ["keys", "rotate", "--lake", str(lake), "--keyring"]
    assert main([*rotate, str(other_path)]) == EXIT_ERROR
    assert other_path.read_bytes() == other.to_bytes()  # refused before the keyring changed

    capsys.readouterr()
    assert main([*rotate, str(keyring_path)]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["identities_rewrapped"] == 1 and result["packs_rewrapped"] >= 1
    assert result["paths_rewrapped"] == 2  # the task's file, and the run's (its landing zone)
    rotated = Keyring.from_bytes(keyring_path.read_bytes())
    bound = json.loads((lake / "keyring-binding.json").read_text())
    assert bound["active_kek_id"] == rotated.active_kek_id
    assert bound["kek_digests"] == _kek_digests(rotated)  # the new KEK pinned, the old kept
    # The keyring from before the rotation is now an older one: refused, naming the KEKs.
    with pytest.raises(KeyringMismatchError, match="unknown KEK.*older KEK"):
        run_ingest(sc, str(more), str(lake), config, keyring)
    # Dropping a KEK names the lake it checks first; the old KEK, re-wrapped away, goes
    drop = ["keys", "drop", "--keyring", str(keyring_path), "--kek-id", keyring.active_kek_id]
    with pytest.raises(SystemExit):
        main(drop)
    assert main([*drop, "--lake", str(lake)]) == 0
    only_new = rotated.without(keyring.active_kek_id)
    assert Keyring.from_bytes(keyring_path.read_bytes()).kek_ids == only_new.kek_ids
    # A keyring rotated without its lake: the lake's KEK still wraps every pack, and is kept
    elsewhere = tmp_path / "rotated-alone.json"
    save_keyring(str(elsewhere), only_new, config)
    assert main(["keys", "rotate", "--keyring", str(elsewhere)]) == 0
    before_drop = elsewhere.read_bytes()
    capsys.readouterr()
    refused = ["keys", "drop", "--keyring", str(elsewhere), "--kek-id", rotated.active_kek_id]
    caplog.clear()
    assert main([*refused, "--lake", str(lake)]) == EXIT_ERROR
    assert "still needs" in caplog.text
    assert elsewhere.read_bytes() == before_drop
    # The old KEK dropped: the identities were rewritten under the new one.
    assert read_identities(str(lake), only_new, config).num_rows == 1
    landing = tmp_path / "landing"
    paths = sorted(read_paths(str(lake), only_new, config).values())
    assert paths == [str(landing), str(landing / FILES[0])]  # the run's landing zone, its file
    summary = run_ingest(sc, str(more), str(lake), config, only_new)
    assert summary.ingested == len(FILES) - 1
    assert table(lake, "runs").num_rows == 2

    # A snapshot carries the record; the restored lake refuses another keyring too. Another
    # keyring's secret would authenticate manifests no reader with the lake's could check.
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    with pytest.raises(KeyringMismatchError, match="fingerprint mismatch"):
        take_snapshot(str(lake), str(backup), "full", keyring=other, config=config)
    assert not backup.exists()
    snap = take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=config)
    restore(str(backup), snap.snapshot_id, str(restored), keyring=keyring, config=config)
    assert (restored / "keyring-binding.json").read_bytes() == (
        lake / "keyring-binding.json"
    ).read_bytes()
    with pytest.raises(KeyringMismatchError, match="fingerprint mismatch"):
        run_ingest(sc, str(more), str(restored), config, other)


def _rows_stored(lake: Path, table: str) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in lake.glob(f"restricted/{table}/*"))


def test_a_rotation_stopped_before_it_deleted_the_replaced_files_leaves_no_row_twice(
    x25519_lake, config, tmp_path, capsys
):
    lake, full = x25519_lake
    fs = LocalFileSystem()
    stored = {t: _rows_stored(lake, t) for t in restricted.TABLES}
    # As a rotation leaves it when stopped after it published each new file: the new file
    # (every row, under the new KEK) beside the files it replaces
    rotated = full.rotate()
    for name in restricted.TABLES:
        old = sorted(str(p) for p in lake.glob(f"restricted/{name}/*.parquet"))
        rows = restricted.read_rows(fs, old, name, full).to_pylist()
        new = str(lake / "restricted" / name / "part-rewrap-20261201T000000000000Z.parquet")
        restricted.write_rows(fs, new, name, rows, rotated)
    assert {t: _rows_stored(lake, t) for t in restricted.TABLES} == {
        t: 2 * n for t, n in stored.items()
    }
    assert read_identities(str(lake), rotated, config).num_rows == len(FILES)
    keyring_path = tmp_path / "keyring.json"
    save_keyring(str(keyring_path), rotated, config)
    capsys.readouterr()
    assert main(["keys", "rotate", "--lake", str(lake), "--keyring", str(keyring_path)]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["identities_rewrapped"] == len(FILES)
    assert {t: _rows_stored(lake, t) for t in restricted.TABLES} == stored


def _ingest(sc, config, lake: Path, keyring_path: Path, names: list[str], tmp: Path) -> int:
    landing = _landing(tmp, names)
    keyring = Keyring.from_bytes(keyring_path.read_bytes())
    return run_ingest(sc, str(landing), str(lake), config, keyring).ingested


def test_lakes_sharing_a_keyring_rotated_for_one_are_rewrapped_not_rotated_again(
    tmp_path, sc, config, capsys
):
    full, pub = tmp_path / "keyring.json", tmp_path / "keyring.public.json"
    init = ["keys", "init", "--mode", "x25519", "--keyring", str(full)]
    assert main([*init, "--public-out", str(pub)]) == 0
    first = Keyring.from_bytes(full.read_bytes()).active_kek_id
    lakes = {name: tmp_path / name for name in ("a", "b")}
    for name, lake in lakes.items():
        assert _ingest(sc, config, lake, pub, FILES[:1], tmp_path / f"in-{name}") == 1
    keys = ["keys", "--keyring", str(full), "--public-out", str(pub)]
    assert main([keys[0], "rotate", *keys[1:], "--lake", str(lakes["a"])]) == 0
    second = Keyring.from_bytes(full.read_bytes()).active_kek_id
    assert second != first
    # Lake b's keys are still wrapped under the first KEK: the new public half is refused,
    # saying what re-wraps b under the keyring's active KEK
    says = f"run `dicomlake keys rewrap --lake {lakes['b']}` with the full keyring"
    with pytest.raises(KeyringMismatchError, match=re.escape(says)):
        _ingest(sc, config, lakes["b"], pub, FILES[1:2], tmp_path / "refused")
    capsys.readouterr()
    assert main([keys[0], "rewrap", *keys[1:], "--lake", str(lakes["b"])]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["active_kek_id"] == second and result["kek_created"] is False
    assert result["packs_rewrapped"] >= 1 and result["identities_rewrapped"] == 1
    assert Keyring.from_bytes(full.read_bytes()).kek_ids == [first, second]  # no new KEK
    for name, lake in lakes.items():
        bound = json.loads((lake / "keyring-binding.json").read_text())
        assert bound["active_kek_id"] == second
        packs = latest_packs(table(lake, "packs").to_pylist()).values()
        assert {r["kek_id"] for r in packs} == {second}
        assert _ingest(sc, config, lake, pub, FILES[1:2], tmp_path / f"more-{name}") == 1
    # The first KEK is needed by neither lake now: it goes, and both still read
    drop = ["keys", "drop", "--keyring", str(full), "--kek-id", first, "--lake", str(lakes["b"])]
    assert main(drop) == 0
    dropped = Keyring.from_bytes(full.read_bytes())
    for lake in lakes.values():
        assert read_identities(str(lake), dropped, config).num_rows == 2


def test_a_rotation_that_failed_after_it_kept_its_new_kek_is_finished_by_the_next(
    x25519_lake, config, tmp_path, capsys
):
    lake, full = x25519_lake
    keyring_path, pub = tmp_path / "keyring.json", tmp_path / "keyring.public.json"
    save_keyring(str(keyring_path), full, config)
    rotate = ["keys", "rotate", "--lake", str(lake), "--keyring", str(keyring_path)]
    rotate += ["--public-out", str(pub)]
    damaged = sorted((lake / "restricted" / "paths").glob("*.parquet"))[0]
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[:100])
    capsys.readouterr()
    assert main(rotate) == EXIT_ERROR
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(last) == {"command", "error", "exit_code"} and last["exit_code"] == EXIT_ERROR
    assert f"{damaged} is not a readable Parquet file" in last["error"]
    # The new KEK was kept before anything was wrapped under it; the lake never got it
    stopped = Keyring.from_bytes(keyring_path.read_bytes())
    assert stopped.kek_ids == [full.active_kek_id, stopped.active_kek_id]
    bound = json.loads((lake / "keyring-binding.json").read_text())
    assert bound["active_kek_id"] == full.active_kek_id
    damaged.write_bytes(intact)  # restored from a snapshot
    assert main(rotate) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["kek_created"] is False and result["active_kek_id"] == stopped.active_kek_id
    assert Keyring.from_bytes(keyring_path.read_bytes()).kek_ids == stopped.kek_ids
    assert Keyring.from_bytes(pub.read_bytes()).active_kek_id == stopped.active_kek_id
    bound = json.loads((lake / "keyring-binding.json").read_text())
    assert bound["active_kek_id"] == stopped.active_kek_id
    # The lake uses that KEK now: the next rotation makes a new one
    assert main(rotate) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["kek_created"] is True
    assert Keyring.from_bytes(keyring_path.read_bytes()).kek_ids[:2] == stopped.kek_ids
