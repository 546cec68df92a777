"""The keyring a lake is bound to, and key rotation, which moves the binding to a new key.

``<lake>/keyring-binding.json`` records the keyring a lake was built with: its KEK ids, the
active one, its fingerprint (`Keyring.fingerprint`, never the secret) and a digest of each KEK's
wrapping key (`Keyring.kek_digests`: the public key in x25519 mode). The first run writes it
(exclusively); every command that uses a keyring on the lake compares it with the record before
any work, so a wrong keyring cannot write packs the lake's keyring cannot open, or pseudonyms
that do not join, and a keyring file whose public key was replaced under the same KEK id (its
secret is in the public half too) cannot wrap the lake's data keys for someone else. A record
written before the digests were kept has none; the next rotation adds them.
It is an ordinary lake file, so snapshots carry it.

Rotation re-wraps every pack's data key under the keyring's active key. Packs are immutable, so
the re-wrapped keys go to the ``packs`` table (one Delta commit replacing all its rows), which
readers prefer over the key in a pack's header. The chunks are never re-encrypted. The
restricted tables (identities, landing paths; small, plain Parquet) are rewritten under the new
key, so the old one can be dropped once ``dicomlake maintain`` has vacuumed the older versions
of ``packs``.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import KeyringMismatchError, LakeError, PublishConflictError
from dicomlake.lake import delta, restricted, schemas
from dicomlake.lake.layout import BINDING, NEXT_BINDING, LakeLayout
from dicomlake.lake.ledger import latest_packs, read_table
from dicomlake.lake.lock import Lock
from dicomlake.lake.parquet import parquet_files, write_table
from dicomlake.storage import FileSystem, join


def _record(keyring: Keyring) -> dict[str, object]:
    return {
        "fingerprint": keyring.fingerprint,
        "active_kek_id": keyring.active_kek_id,
        "kek_ids": keyring.kek_ids,
        "kek_digests": keyring.kek_digests,
    }


def _publish_record(
    fs: FileSystem, layout: LakeLayout, keyring: Keyring, run_id: str, name: str = BINDING
) -> None:
    tmp = join(layout.staging(run_id), name)
    fs.write_bytes(tmp, json.dumps(_record(keyring), indent=2).encode())
    fs.publish(tmp, layout.absolute(name))
    fs.delete(layout.staging(run_id), recursive=True)  # holds nothing else at these points


def _roll_forward(fs: FileSystem, layout: LakeLayout) -> None:
    """Finish a rotation that stopped while it replaced the binding (`NEXT_BINDING`)."""
    pending = layout.absolute(NEXT_BINDING)
    if fs.exists(pending):
        fs.delete(layout.absolute(BINDING))
        fs.publish(pending, layout.absolute(BINDING))


def _read_record(fs: FileSystem, uri: str) -> dict[str, Any]:
    return parse_record(fs.read(uri), uri)


def parse_record(data: bytes, uri: str) -> dict[str, Any]:
    """The keyring record in ``data``, the bytes of ``uri`` (a lake's, or a snapshot's copy);
    a LakeError names ``uri`` when it is none."""
    try:
        bound = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise LakeError(f"{uri} is not valid JSON ({exc}): restore it from a snapshot") from None
    if (
        not isinstance(bound, dict)
        or not {"fingerprint", "active_kek_id", "kek_ids"} <= set(bound)
        or not isinstance(bound.get("kek_digests", {}), dict)
    ):
        raise LakeError(f"{uri} is not a keyring record: restore it from a snapshot")
    return bound


def bind_keyring(
    fs: FileSystem, layout: LakeLayout, keyring: Keyring, lock: Lock, *, rotating: bool = False
) -> dict[str, Any]:
    """The lake's record: ``keyring``'s, written on the lake's first run; else raise
    KeyringMismatchError unless ``keyring`` is the lake's: the same fingerprint and, for an
    ingest, the same active KEK (for a rotation or a rewrap, one that still holds the lake's
    active KEK)."""
    _roll_forward(fs, layout)
    uri = layout.absolute(BINDING)
    if not fs.exists(uri):
        _check_unbound(fs, layout, keyring)
        try:
            _publish_record(fs, layout, keyring, lock.run_id)
            return _record(keyring)
        except PublishConflictError:
            pass  # written meanwhile (a lake without a lock file): compare with it
    bound = check_fingerprint(fs, layout, keyring)
    assert bound is not None  # there is a record: it was published or found above
    active = bound["active_kek_id"]
    if rotating and active not in keyring.kek_ids:
        raise KeyringMismatchError(
            f"unknown KEK: {layout.root}'s active KEK {active} is not in this keyring "
            f"(it holds {keyring.kek_ids})"
        )
    if not rotating and keyring.active_kek_id != active:
        raise KeyringMismatchError(_not_active(layout, keyring.active_kek_id, bound))
    return bound


def _check_unbound(fs: FileSystem, layout: LakeLayout, keyring: Keyring) -> None:
    """A lake with packs but no record (the record lost, or a lake from before records) is
    bound only by a keyring that holds the KEK of each pack's newest key: another would take
    over a lake whose packs it cannot open."""
    rows = read_table(fs, layout, "packs", ["pack_path", "kek_id", "wrapped_at"]).to_pylist()
    keks = {row["kek_id"] for row in latest_packs(rows).values()}
    foreign = sorted(keks - set(keyring.kek_ids))
    if foreign:
        raise KeyringMismatchError(
            f"{layout.root} has no {BINDING}, yet its packs are wrapped under KEK "
            f"{', '.join(foreign)}, which this keyring does not hold: use the lake's keyring, "
            f"or restore {BINDING} from a snapshot"
        )


def _not_active(layout: LakeLayout, kek_id: str, bound: dict[str, Any]) -> str:
    """Why an ingest with a keyring whose active KEK is ``kek_id`` is refused, and what to do."""
    active = bound["active_kek_id"]
    if kek_id in bound["kek_ids"]:
        return (
            f"unknown KEK: this keyring's active KEK {kek_id} is an older KEK of {layout.root}, "
            f"whose active KEK is {active} (rotated since): use the lake's current keyring "
            "(or its public half)"
        )
    # A KEK the lake never used: the keyring was rotated for another lake sharing it, or a
    # rotation of this lake stopped before it re-wrapped the lake
    return (
        f"unknown KEK: {layout.root}'s keys are wrapped under KEK {active}, this keyring's "
        f"active KEK is {kek_id}, an unknown KEK of the lake: run `dicomlake keys rewrap "
        f"--lake {layout.root}` with the full keyring (it re-wraps the lake under its active "
        "KEK), then run this again"
    )


def check_fingerprint(
    fs: FileSystem, layout: LakeLayout, keyring: Keyring
) -> dict[str, Any] | None:
    """The lake's record, once ``keyring`` has its secret and, for the KEK ids both name, the
    keys recorded (KeyringMismatchError otherwise); None for a lake without one. Readers check
    this much: any of the lake's keyrings, older or newer, passes."""
    uri = layout.absolute(BINDING)
    if not fs.exists(uri):
        return None
    bound = _read_record(fs, uri)
    if bound["fingerprint"] != keyring.fingerprint:
        raise KeyringMismatchError(
            f"keyring fingerprint mismatch: {layout.root} belongs to the keyring with fingerprint "
            f"{bound['fingerprint']}, this one has {keyring.fingerprint} (another keyring's "
            f"secret: its packs and pseudonyms would not match the lake's); see {uri}"
        )
    recorded, held = bound.get("kek_digests", {}), keyring.kek_digests
    replaced = sorted(k for k in held.keys() & recorded.keys() if held[k] != recorded[k])
    if replaced:
        raise KeyringMismatchError(
            f"keyring KEK mismatch: the key of {', '.join(replaced)} in this keyring is not the "
            f"one {layout.root} recorded for that id (a key replaced in the keyring file would "
            f"wrap the lake's data keys for whoever holds its private half); see {uri}"
        )
    return bound


def rewrap_lake(fs: FileSystem, layout: LakeLayout, keyring: Keyring, lock: Lock) -> dict[str, int]:
    """Re-wrap all data keys under ``keyring``'s active KEK, rewrite the restricted tables
    under it, and record it as the lake's, under the lake's ``lock`` (`bind_keyring` with
    ``rotating`` checked the keyring first); returns how many packs and restricted rows."""
    latest = latest_packs(read_table(fs, layout, "packs").to_pylist())
    now = datetime.now(timezone.utc)
    for row in latest.values():
        row["kek_id"], row["wrapped_key"] = keyring.rewrap(
            row["kek_id"], row["wrapped_key"], row["pack_id"].encode()
        )
        row["wrapped_at"] = now
    name = f"part-rewrap-{now.strftime('%Y%m%dT%H%M%S%fZ')}.parquet"
    staged = functools.partial(join, layout.staging(lock.run_id))
    packs = staged("packs", name)
    write_table(fs, packs, pa.Table.from_pylist(list(latest.values()), schema=schemas.PACKS))
    counts = {"packs_rewrapped": len(latest)}
    # The restricted tables are plain Parquet (no log): (staged file, where it goes, the files
    # it replaces)
    replacements = []
    for table in restricted.TABLES:
        old = parquet_files(fs, layout.restricted(table))
        rows = restricted.read_rows(fs, old, table, keyring).to_pylist()
        counts[f"{table}_rewrapped"] = len(rows)
        if old:
            replacements.append((staged(table, name), join(layout.restricted(table), name), old))
            restricted.write_rows(fs, replacements[-1][0], table, rows, keyring)
    lock.check()
    fs.publish(packs, join(layout.table("packs"), name))
    delta.replace_rows(fs, layout, "packs", name)  # every row the table held is in the new file
    # Each new file first, then the files it replaces: a crash in between leaves rows twice
    # (the same rows), never none; readers and the next rewrite take each once (`read_rows`).
    for new, target, old in replacements:
        fs.publish(new, target)
        for uri in old:
            fs.delete(uri)
    _publish_record(fs, layout, keyring, lock.run_id, NEXT_BINDING)
    _roll_forward(fs, layout)
    return counts


def needs_keys(fs: FileSystem, layout: LakeLayout, keyring: Keyring) -> list[str]:
    """What of the lake ``keyring`` lacks the KEK for: its active KEK, the data keys of packs.
    (The restricted tables are rewritten under the active KEK by the rotation that re-wraps
    the packs, and before it records the new KEK as active.)"""
    needs = []
    uri = layout.absolute(BINDING)
    if fs.exists(uri) and (active := _read_record(fs, uri)["active_kek_id"]) not in keyring.kek_ids:
        needs.append(f"its active KEK {active} ({BINDING})")
    latest = latest_packs(read_table(fs, layout, "packs").to_pylist()).values()
    wrapped = sum(1 for row in latest if row["kek_id"] not in keyring.kek_ids)
    if wrapped:
        needs.append(f"the data keys of {wrapped} packs")
    return needs
