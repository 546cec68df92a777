"""The ``dicomlake`` command. The only place that configures logging.

Every subcommand prints a JSON summary as its last line and returns 0 on success, 1 on an
error (the message says what to do), 2 on bad usage, 3 when a run quarantined more than
``ingest.error_threshold`` of its inputs (the run is still committed), 4 when another command
holds the lake's or backup's lock (nothing was changed: run it again later). A command that
fails with 1 or 4 prints ``{"command", "error", "exit_code"}`` as that line, for a scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from dicomlake import progress
from dicomlake.config import Config, load_config
from dicomlake.errors import (
    BackupError,
    DicomLakeError,
    ErrorThresholdExceeded,
    KeyringError,
    LakeError,
    LockBusyError,
    StorageError,
)
from dicomlake.keyring_file import check_targets, in_lake, load_keyring, save_keyring
from dicomlake.storage import canonical_uri, overlap
from dicomlake.storage.hdfs_user import one_user
from dicomlake.vocab import SnapshotMode

if TYPE_CHECKING:
    from dicomlake.backup.keks import BackupNeeds
    from dicomlake.crypto.keyring import Keyring
    from dicomlake.lake.layout import LakeLayout
    from dicomlake.lake.lock import Lock
    from dicomlake.storage import FileSystem

log = logging.getLogger("dicomlake")

EXIT_ERROR, EXIT_USAGE, EXIT_THRESHOLD, EXIT_BUSY = 1, 2, 3, 4


def existing_lake(lake: str, config: Config) -> str:
    """``lake`` canonical (`canonical_uri`), once it is a lake (`layout.require_lake`)."""
    from dicomlake.lake.layout import LakeLayout, require_lake
    from dicomlake.storage import filesystem_for

    uri = canonical_uri(lake)
    require_lake(filesystem_for(uri, config.hdfs), LakeLayout(uri))
    return uri


def _keyring(args: argparse.Namespace, config: Config) -> Keyring:
    """The keyring a command was given with ``--keyring``, else the config's keys.keyring;
    never one inside the command's ``--lake``, even a lake its first ingest is about to make
    (`load_keyring` refuses one in an existing lake)."""
    uri, lake = args.keyring or config.keys.keyring, getattr(args, "lake", None)
    if lake and overlap(canonical_uri(lake), canonical_uri(uri)):
        raise in_lake(uri, lake)
    return load_keyring(uri, config)


def _print(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, default=str, sort_keys=True))


@contextlib.contextmanager
def _spark(
    args: argparse.Namespace, config: Config, *, python_tasks: bool = False
) -> Iterator[Any]:
    """spark-submit's Spark context (left running for it to stop), or one of our own.

    With ``python_tasks``, the executors' Python workers start while the command plans
    (`start_python_workers`)."""
    from dicomlake.spark.context import spark_context
    from dicomlake.spark.workers import finish_starting, start_python_workers

    sc = spark_context(config, submitted=args.submitted)
    starting = start_python_workers(sc) if python_tasks else None
    try:
        yield sc
    finally:
        if starting is not None:
            finish_starting(sc, starting)
        if not args.submitted:
            sc.stop()


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.ingest.job import run_ingest

    keyring = _keyring(args, config)
    with _spark(args, config, python_tasks=True) as sc:
        summary = run_ingest(sc, args.landing, args.lake, config, keyring)
    print_ingest_report(summary.as_dict(), sys.stderr)
    _print(summary.as_dict())
    if summary.error_share > config.ingest.error_threshold:
        raise ErrorThresholdExceeded(
            f"{summary.quarantined + summary.failed} of {summary.files_seen} inputs "
            f"({summary.error_share:.0%}) were rejected, over ingest.error_threshold="
            f"{config.ingest.error_threshold}; see the errors table at {summary.tables['errors']}"
        )
    return 0


def print_ingest_report(s: dict[str, Any], out: TextIO) -> None:
    """A few lines a person reads; the JSON line after it is for machines."""
    mb = s["bytes_read"] / 1e6
    print(
        f"run {s['run_id']}: {s['files_seen']} new of {s['files_listed']} listed -> "
        f"{s['ingested']} ingested, {s['duplicates']} duplicates, "
        f"{s['quarantined']} quarantined, {s['failed']} failed",
        file=out,
    )
    if s["bytes_read"]:
        ratio = s["bytes_read"] / s["bytes_stored"] if s["bytes_stored"] else 0.0
        print(
            f"read {mb:.1f} MB in {s['seconds']:.1f} s ({s['mb_per_s']} MB/s), "
            f"stored {s['bytes_stored'] / 1e6:.1f} MB (x{ratio:.2f}) in "
            f"{s['packs_written']} pack(s)",
            file=out,
        )
    if s["reasons"]:
        print(
            "rejected: " + ", ".join(f"{k}={v}" for k, v in sorted(s["reasons"].items())), file=out
        )
    if s["skipped"] or s["files_settling"] or s["files_hidden"]:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(s["skipped_reasons"].items()))
        print(
            f"not read: {s['skipped']} skipped ({skipped or 'none'}), {s['files_settling']} "
            f"still settling (next run), {s['files_hidden']} hidden or temporary",
            file=out,
        )
    if any(s["deid_removed"].values()):
        removed = ", ".join(f"{k}={v}" for k, v in sorted(s["deid_removed"].items()) if v)
        print(f"de-identification removed what no rule keeps: {removed}", file=out)
    if s["sop_uid_from_meta"]:
        print(
            f"{s['sop_uid_from_meta']} instance(s) without SOPInstanceUID (0008,0018), named "
            "by the file meta's MediaStorageSOPInstanceUID (0002,0003)",
            file=out,
        )
    if s["header_paths"].get("reference"):
        paths = s["header_paths"]
        print(
            f"headers: {paths.get('fast', 0)} by the compiled core, {paths['reference']} by "
            "pydicom (declined by the core, or the core is not installed)",
            file=out,
        )
    for name, path in s["tables"].items():
        print(f"  table {name:<10} {path}", file=out)


def cmd_keys(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.crypto.keyring import Keyring

    path = args.keyring or config.keys.keyring
    check_targets(path, args.public_out, config)
    public: Keyring | None = None  # written at the end, where one is asked for
    if args.action == "init":
        if Path(path).exists() and not args.force:
            _print({"keyring": path, "created": False, "note": "exists; --force replaces it"})
            return 0
        keyring = Keyring.generate(args.mode)
        public = keyring.public_only() if args.public_out else None  # refused before any write
        save_keyring(path, keyring, config)
        out = {
            "keyring": path,
            "created": True,
            "mode": args.mode,
            "active_kek_id": keyring.active_kek_id,
        }
    elif args.action == "public":
        keyring = load_keyring(path, config)
        public = keyring.public_only()
        out = {"keyring": path, "active_kek_id": keyring.active_kek_id}
    elif args.action in ("rotate", "rewrap"):
        keyring = load_keyring(path, config)
        if args.public_out:
            keyring.public_only()  # a symmetric keyring has none: refused before any write
        if args.lake:
            lake = existing_lake(args.lake, config)
            keyring, counts = _rekey_lake(lake, path, keyring, config, args.action == "rotate")
        else:  # rewrap needs --lake (main)
            keyring, counts = keyring.rotate(), {"kek_created": True}
            save_keyring(path, keyring, config)
        public = keyring.public_only() if args.public_out else None
        out = {"keyring": path, "active_kek_id": keyring.active_kek_id, **counts}
    elif args.action == "drop":
        held = load_keyring(path, config)
        keyring = held.without(args.kek_id)
        lake = existing_lake(args.lake, config)
        _check_unused(lake, keyring, args.kek_id, config)
        backups = [canonical_uri(b) for b in args.backup]
        snapshots = _check_backups(lake, backups, held, args.kek_id, config)
        save_keyring(path, keyring, config)  # once every check has passed
        out = {
            "keyring": path,
            "kek_ids": keyring.kek_ids,
            "backups_checked": backups,
            "snapshots_read": snapshots,
        }
    else:
        raise AssertionError(args.action)
    if public is not None:
        save_keyring(args.public_out, public, config)
        out["public_keyring"] = args.public_out
    _print(out)
    return 0


@contextlib.contextmanager
def _lake_locked(
    lake: str, command: str, config: Config
) -> Iterator[tuple[FileSystem, LakeLayout, Lock]]:
    """The lake's lock held for ``command``, the runs committed but not finished finished
    first (their packs are wrapped by the keys of then)."""
    from dicomlake.lake.commit import recover
    from dicomlake.lake.layout import LakeLayout
    from dicomlake.lake.lock import holding
    from dicomlake.storage import filesystem_for

    fs, layout = filesystem_for(lake, config.hdfs), LakeLayout(lake)
    with holding(fs, lake, None, command, config.lock) as lock:
        recover(fs, layout, lock)
        yield fs, layout, lock


def _check_unused(lake: str, keyring: Keyring, kek_id: str, config: Config) -> None:
    """KeyringError unless ``keyring`` (the keyring without ``kek_id``) still opens every data
    key of the lake."""
    from dicomlake.lake.keyring_binding import needs_keys

    with _lake_locked(lake, "keys drop", config) as (fs, layout, _):
        needs = needs_keys(fs, layout, keyring)
    if needs:
        raise KeyringError(
            f"keys drop: {lake} still needs {kek_id} for {'; '.join(needs)}: run "
            f"`dicomlake keys rewrap --lake {lake}` first (it re-wraps the lake under the "
            "keyring's active KEK; then `dicomlake maintain`); the keyring is unchanged"
        )


def _check_backups(
    lake: str, backups: list[str], keyring: Keyring, kek_id: str, config: Config
) -> int:
    """KeyringError unless no snapshot of ``backups`` needs ``kek_id`` of ``keyring``; the
    number of snapshots read. Without backups, a warning: their snapshots go unchecked."""
    from dicomlake.backup.keks import snapshots_needing

    if not backups:
        log.warning(
            "keys drop: no --backup given, so no snapshot was checked: a snapshot of %s "
            "taken before its rotation needs %s to be restored; give each backup of the "
            "lake with --backup",
            lake,
            kek_id,
        )
        return 0
    found = []
    for backup in backups:
        try:
            found.append(snapshots_needing(backup, keyring, kek_id, "keys drop", config))
        except (BackupError, LakeError, StorageError) as exc:  # a snapshot's file unread
            raise KeyringError(
                f"keys drop: cannot tell whether {backup} needs {kek_id}: {exc} (`dicomlake "
                f"verify --backup {backup}` reports it); the keyring is unchanged"
            ) from exc
    refusals = [_still_needed(lake, needs, kek_id) for needs in found if needs.needing]
    if refusals:
        raise KeyringError(f"keys drop: {' '.join(refusals)} The keyring is unchanged.")
    return sum(needs.snapshots_read for needs in found)


def _still_needed(lake: str, found: BackupNeeds, kek_id: str) -> str:
    """Which snapshots of a backup need ``kek_id``, and what to do."""
    oldest, newest = found.needing[0], found.needing[-1]
    return (
        f"{len(found.needing)} of the {found.snapshots_read} snapshots of {found.backup} "
        f"still need {kek_id} (oldest {oldest.snapshot_id}, newest {newest.snapshot_id}, "
        f"which needs it for {'; '.join(newest.needs)}): keep the key until `dicomlake "
        f"retention --backup {found.backup}` has removed them, or take a new full snapshot "
        f"(`dicomlake snapshot --lake {lake} --backup {found.backup} --mode full`) and let "
        "retention remove the older ones."
    )


def _rekey_lake(
    lake: str, path: str, keyring: Keyring, config: Config, rotate: bool
) -> tuple[Keyring, dict[str, int | bool]]:
    """Under the lake's lock, once the keyring is the lake's: with ``rotate``, a new active KEK
    kept in the keyring file, then the lake re-wrapped under the keyring's active KEK (a
    rewrap: no new KEK). A rotation whose keyring already has an active KEK the lake never
    used (made by a rotation that stopped before the lake was re-wrapped, or by one for
    another lake sharing the keyring) re-wraps under it: a new one would leave that KEK's
    lake, or the public half handed out with it, behind."""
    from dicomlake.lake.keyring_binding import bind_keyring, rewrap_lake

    command = f"keys {'rotate' if rotate else 'rewrap'} --lake"
    keyring.require_private(command)  # the lake's data keys are unwrapped
    with _lake_locked(lake, command, config) as (fs, layout, lock):
        bound = bind_keyring(fs, layout, keyring, lock, rotating=True)
        created = rotate and keyring.active_kek_id in bound["kek_ids"]
        if created:
            keyring = keyring.rotate()
            save_keyring(path, keyring, config)  # before anything is wrapped under its new KEK
        return keyring, {**rewrap_lake(fs, layout, keyring, lock), "kek_created": created}


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    """Export the selection; exit 1, the summary still printed, when a requested UID or id has
    no row (the others are written)."""
    from dicomlake.lake.delta_read import parse_as_of
    from dicomlake.lake.export import export_instances, read_manifest

    as_of = parse_as_of(args.as_of) if args.as_of else None  # a bad value before any work
    keyring = _keyring(args, config)
    result = export_instances(
        existing_lake(args.lake, config),
        keyring,
        config,
        Path(args.out),
        sop=args.sop,
        series=args.series,
        study=args.study,
        instance_ids=args.instance_id,
        manifest=read_manifest(Path(args.manifest)) if args.manifest else (),
        where=args.where,
        all_versions=args.all_versions,
        as_of=as_of,
    )
    _print(result)
    return EXIT_ERROR if result["not_found"] else 0


def cmd_maintain(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.lake.lock import holding
    from dicomlake.lake.maintain import maintain_lake
    from dicomlake.storage import filesystem_for

    lake = existing_lake(args.lake, config)
    with holding(filesystem_for(lake, config.hdfs), lake, None, "maintain", config.lock) as lock:
        _print(maintain_lake(lake, config, lock))
    return 0


def cmd_register(args: argparse.Namespace, config: Config) -> int:
    from pyspark.sql import SparkSession

    from dicomlake.lake.catalog import register_tables

    lake = existing_lake(args.lake, config)  # before Spark starts
    with _spark(args, config) as sc:
        spark = SparkSession(sc)
        names = register_tables(spark, lake, args.database)
    _print({"lake": lake, "database": args.database, "tables": names})
    return 0


def cmd_reidentify(args: argparse.Namespace, config: Config) -> int:
    """Map pseudonyms back to identified values, or path ids, errors rows and instances back to
    their landing paths (needs the private keyring; prints JSON rows)."""
    from dicomlake.lake.identities import read_identities, reidentify
    from dicomlake.lake.keyring_binding import check_fingerprint
    from dicomlake.lake.layout import LakeLayout
    from dicomlake.lake.paths import find_paths
    from dicomlake.storage import filesystem_for

    keyring = _keyring(args, config)
    keyring.require_private("reidentify")
    lake = existing_lake(args.lake, config)
    check_fingerprint(filesystem_for(lake, config.hdfs), LakeLayout(lake), keyring)
    by_path = {"path_id": args.path_id, "error_id": args.error_id, "instance_id": args.instance_id}
    if any(by_path.values()):
        found = find_paths(lake, keyring, config, **by_path)
        for row in found:
            _print(row)
        asked = {k: v for k, v in by_path.items() if v}
        _print({"lake": lake, **asked, "rows": len(found)})
        return 0
    rows = reidentify(read_identities(lake, keyring, config), args.pseudonym)
    for row in rows:
        _print(row)
    _print({"lake": lake, "pseudonym": args.pseudonym, "rows": len(rows)})
    return 0


def cmd_quarantine(args: argparse.Namespace, config: Config) -> int:
    """A quarantined input back in clear (needs the private keyring)."""
    from dicomlake.lake.quarantine import get_copy

    keyring = _keyring(args, config)
    lake = existing_lake(args.lake, config)
    _print(get_copy(lake, keyring, config, args.error_id, Path(args.out)))
    return 0


def cmd_samples(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.samples import build_sample_landing

    count = build_sample_landing(Path(args.out))
    _print({"landing": os.path.abspath(args.out), "files": count})
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    """Sample landing zone + keyring + ingest, in ``--workdir``: the README's first command."""
    from dicomlake.crypto.keyring import Keyring
    from dicomlake.samples import build_sample_landing

    work = Path(args.workdir).resolve()
    landing, lake, keyring_path = work / "landing", work / "lake", work / "keyring.json"
    if not landing.exists():
        count = build_sample_landing(landing)
        print(f"sample landing zone: {count} files in {landing}", file=sys.stderr)
    if not keyring_path.exists():
        save_keyring(str(keyring_path), Keyring.generate("symmetric"), config)
        print(
            f"new keyring: {keyring_path} (keep it safe: it decrypts the pixels)", file=sys.stderr
        )
    args.landing, args.lake, args.keyring = str(landing), str(lake), str(keyring_path)
    return cmd_ingest(args, config)


def cmd_snapshot(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.backup import take_snapshot

    keyring = _keyring(args, config)
    with _spark(args, config, python_tasks=True) as sc:
        result = take_snapshot(
            existing_lake(args.lake, config),
            canonical_uri(args.backup),
            args.mode,
            config=config,
            keyring=keyring,
            sc=sc,
            now_label=args.label,
        )
    _print(result.summary())
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.backup import restore

    result = restore(
        canonical_uri(args.backup),
        args.snapshot,
        canonical_uri(args.target),
        keyring=_keyring(args, config),
        config=config,
        trust_unauthenticated=args.trust_unauthenticated,
    )
    _print(result.summary())
    return 0


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.backup import verify

    keyring = _keyring(args, config)
    result = verify(
        canonical_uri(args.backup), args.snapshot, deep=args.deep, keyring=keyring, config=config
    )
    for problem in result.problems:
        label = "UNCHECKED" if problem.unchecked else "BAD"
        print(
            f"{label} {problem.snapshot_id} {problem.path} ({problem.object}): {problem.reason}",
            file=sys.stderr,
        )
    _print(result.summary())
    if not result.ok:
        unchecked = sum(p.unchecked for p in result.problems)
        found = [
            f"{count} {what}"
            for count, what in (
                (
                    len(result.problems) - unchecked,
                    "bad entries (damaged or missing objects, rows a restore refuses, "
                    "unreadable or unauthenticated manifests)",
                ),
                (unchecked, "pack(s) this keyring cannot open (their key is not in it)"),
            )
            if count
        ]
        raise BackupError(
            f"{' and '.join(found)} in {args.backup}; each is listed above. To repair damaged "
            "or missing objects, delete the damaged ones and take a --mode full snapshot: it "
            "stores every lake file whose object is missing or not of its size again"
        )
    return 0


def cmd_snapshots(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.backup import list_snapshots

    snapshots = list_snapshots(canonical_uri(args.backup), config=config)
    for info in snapshots:
        s = info.summary()
        print(
            f"{s['snapshot_id']:<40} base={s['base'] or '-':<40} files={s['files']:<8} "
            f"bytes={s['bytes_total']:<14} copied={s['bytes_copied']:<14} "
            f"keyring={s['keyring_fingerprint'] or 'none (format 1: not authenticated)'}",
            file=sys.stderr,
        )
    _print({"backup": canonical_uri(args.backup), "snapshots": [i.summary() for i in snapshots]})
    return 0


def cmd_retention(args: argparse.Namespace, config: Config) -> int:
    from dicomlake.backup import apply_retention

    keyring = _keyring(args, config)
    _print(apply_retention(canonical_uri(args.backup), keyring=keyring, config=config).summary())
    return 0


Command = Callable[[argparse.Namespace, Config], int]
KEYRING_DEFAULT = "keyring file (default: keys.keyring)"
KEYRING_PRIVATE = "keyring file with the private/secret key"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomlake", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", help="YAML config file (default: $DICOMLAKE_CONF, else built-in)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str,
        func: Command,
        help: str,
        *,
        lake: bool = False,
        backup: bool = False,
        keyring: str | None = None,
        submitted: bool = False,
    ) -> argparse.ArgumentParser:
        """A subcommand running ``func``, with the options several commands share."""
        p = sub.add_parser(name, parents=[common], help=help)
        p.set_defaults(func=func, submitted=False)
        if lake:
            p.add_argument("--lake", required=True, help="lake URI (path, file://, hdfs://)")
        if backup:
            p.add_argument("--backup", required=True, help="backup URI (path, file://, hdfs://)")
        if keyring is not None:
            p.add_argument("--keyring", help=keyring)
        if submitted:
            # Set by jobs/*.py: Spark's master and resources come from spark-submit.
            p.add_argument("--submitted", action="store_true", help=argparse.SUPPRESS)
        return p

    p = command(
        "ingest",
        cmd_ingest,
        "ingest new files of a landing zone into a lake",
        lake=True,
        keyring=KEYRING_DEFAULT,
        submitted=True,
    )
    p.add_argument("--landing", required=True, help="landing zone URI (path, file://, hdfs://)")

    p = command("demo", cmd_demo, "build the sample landing zone and ingest it")
    p.add_argument(
        "--workdir", default="data/demo", help="where landing/, lake/ and the keyring go"
    )

    p = command(
        "keys", cmd_keys, "create, rotate, rewrap or prune the keyring", keyring=KEYRING_DEFAULT
    )
    p.add_argument("action", choices=["init", "public", "rotate", "rewrap", "drop"])
    p.add_argument(
        "--mode",
        choices=["symmetric", "x25519"],
        default="symmetric",
        help="init: x25519 lets ingest hosts hold only the public key",
    )
    p.add_argument(
        "--public-out",
        help="init, rotate, rewrap: also write the public-only keyring here; public: write it here",
    )
    p.add_argument("--force", action="store_true", help="init: replace an existing keyring")
    p.add_argument(
        "--lake",
        help="rotate: re-wrap this lake's pack keys under the new key; rewrap: under the "
        "keyring's active key, no new one (a lake sharing a keyring rotated for another); "
        "drop: the lake whose keys must no longer need the dropped one",
    )
    p.add_argument("--kek-id", help="drop: the key to remove")
    p.add_argument(
        "--backup",
        action="append",
        default=[],
        help="drop: a backup of the lake (path, file://, hdfs://; repeatable) none of whose "
        "snapshots may still need the dropped key; without it, snapshots go unchecked",
    )

    p = command(
        "export",
        cmd_export,
        "write ingested instances back as their original files",
        lake=True,
        keyring=KEYRING_PRIVATE,
    )
    # The union of what the selection options name. The UIDs are the pseudonymised ones
    # analysts see; `dicomlake reidentify` maps them to the originals.
    p.add_argument("--sop", help="SOPInstanceUID (as in the instances table)")
    p.add_argument("--series", help="SeriesInstanceUID (as in the instances table)")
    p.add_argument("--study", help="StudyInstanceUID (as in the instances table)")
    p.add_argument(
        "--instance-id", action="append", default=[], help="one stored version (repeatable)"
    )
    p.add_argument(
        "--manifest", help="file of SOPInstanceUIDs or instance ids, one a line, # comments"
    )
    p.add_argument("--where", help="SQL predicate on the instances table, e.g. \"Modality = 'CT'\"")
    p.add_argument(
        "--all-versions",
        action="store_true",
        help="every stored version of the selected instances, not only the latest",
    )
    p.add_argument("--out", required=True, help="directory for the files")
    p.add_argument(
        "--as-of",
        help="the instances table as of a version (digits 0-9) or an ISO 8601 time (UTC "
        "unless it has a zone; by the commit times in the log), e.g. 2026-11-28T00:00:00Z; "
        "digits that are also a date (20261128) are refused as ambiguous",
    )

    command(
        "maintain",
        cmd_maintain,
        "compact the lake's tables, checkpoint their logs, vacuum replaced files",
        lake=True,
    )

    p = command(
        "register",
        cmd_register,
        "register the lake's tables in the Spark catalog (needs Delta Lake's connector)",
        lake=True,
        submitted=True,
    )
    p.add_argument("--database", required=True, help="catalog database, created if missing")

    p = command(
        "snapshot",
        cmd_snapshot,
        "back the lake up (Spark copies)",
        lake=True,
        backup=True,
        keyring="keyring whose secret authenticates the manifests (the public half is "
        "enough; default: keys.keyring)",
        submitted=True,
    )
    p.add_argument("--mode", choices=list(SnapshotMode), required=True)
    p.add_argument(
        "--label",
        help="snapshot time label YYYYMMDDTHHMMSSZ (default: the "
        "backup filesystem's clock); a scheduler passes its data interval end",
    )

    p = command(
        "restore",
        cmd_restore,
        "rebuild a lake from a snapshot",
        backup=True,
        keyring="keyring the snapshot's manifest is authenticated with (default: keys.keyring)",
    )
    p.add_argument("--snapshot", required=True, help="snapshot id (see `dicomlake snapshots`)")
    p.add_argument("--target", required=True, help="an empty or missing directory")
    p.add_argument(
        "--trust-unauthenticated",
        action="store_true",
        help="restore a manifest without an authentication code (format 1, written before "
        "manifests had one); never admits an altered one",
    )

    p = command(
        "verify",
        cmd_verify,
        "re-read and check a backup",
        backup=True,
        keyring="keyring the manifests are authenticated with (default: keys.keyring); "
        "--deep: one that can unwrap the pack keys",
    )
    p.add_argument("--snapshot", help="one snapshot (default: all)")
    p.add_argument(
        "--deep",
        action="store_true",
        help="also open every encrypted chunk and check the frame hashes",
    )

    command("snapshots", cmd_snapshots, "list a backup's snapshots", backup=True)
    command(
        "retention",
        cmd_retention,
        "drop snapshots past snapshot.keep_daily/keep_weekly, then GC",
        backup=True,
        keyring="keyring whose secret authenticates the manifests counted (the public half is "
        "enough; default: keys.keyring)",
    )

    p = command(
        "reidentify",
        cmd_reidentify,
        "map pseudonyms back to the identified values (key holders only)",
        lake=True,
        keyring=KEYRING_DEFAULT,
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--pseudonym",
        help="a pseudonymised PatientID, AccessionNumber or UID (default: every row)",
    )
    group.add_argument("--path-id", help="a source_path_id: its landing path")
    group.add_argument("--error-id", help="an errors row's error_id: its landing path")
    group.add_argument(
        "--instance-id", help="an instance_id: the landing path of every file with its content"
    )

    p = command(
        "quarantine",
        cmd_quarantine,
        "get a quarantined input back (key holders only)",
        lake=True,
        keyring=KEYRING_PRIVATE,
    )
    p.add_argument("action", choices=["get"])
    p.add_argument("--error-id", required=True, help="the errors row's error_id")
    p.add_argument("--out", required=True, help="file to write (must not exist)")

    p = command("samples", cmd_samples, "build a landing zone of real sample DICOM files")
    p.add_argument("--out", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    progress.enable(sys.stderr.isatty())
    # py4j says goodbye at exit, after the summary line (spark-submit merges stderr into stdout).
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # pydicom logs what it warns of, quoting the values it found odd (a name, an original UID):
    # never printed, -v or not, as a file's values are PHI; the code catches what matters.
    logging.getLogger("pydicom").disabled = True
    try:
        config = load_config(args.conf)
        config = dataclasses.replace(config, hdfs=one_user(config.hdfs))
        if args.command == "keys" and args.action == "drop" and not (args.kek_id and args.lake):
            parser.error("keys drop needs --kek-id, and --lake: the lake it checks first")
        if args.command == "keys" and args.action == "public" and not args.public_out:
            parser.error("keys public needs --public-out")
        if args.command == "keys" and args.action == "rewrap" and not args.lake:
            parser.error("keys rewrap needs --lake: the lake it re-wraps")
        selection = ("sop", "series", "study", "instance_id", "manifest", "where")
        if args.command == "export" and not any(getattr(args, s) for s in selection):
            parser.error(
                "export needs --sop, --series, --study, --instance-id, --manifest or --where"
            )
        code: int = args.func(args, config)
        return code
    except ErrorThresholdExceeded as exc:  # its summary is printed
        log.error("%s", exc)
        return EXIT_THRESHOLD
    except LockBusyError as exc:
        return _failed(args.command, exc, EXIT_BUSY)
    except DicomLakeError as exc:
        return _failed(args.command, exc, EXIT_ERROR)
    except OSError as exc:  # a filesystem's or a library's, not wrapped on its way: named
        return _failed(args.command, exc, EXIT_ERROR)


def _failed(command: str, exc: Exception, code: int) -> int:
    """Log the error and print it as the command's summary line; returns ``code``."""
    log.error("%s", exc)
    _print({"command": command, "error": str(exc), "exit_code": code})
    return code


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry point (the ``dicomlake`` command and ``jobs/*.py``): `main`, then
    `exit_now` with its code."""
    exit_now(main(argv))


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once logs and standard streams are flushed, skipping the
    interpreter's teardown.

    Once a Parquet read has started pyarrow's thread pool, destroying that pool at exit
    sometimes aborts the process (SIGABRT, "terminate called without an active exception";
    apache/arrow#34314): about 1 exit in 12 here after a few reads, long after the work was
    committed, and a scheduler would count the run as failed. Nothing is left to tear down:
    every file is closed and the Spark context stopped (or left to spark-submit) by then.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
