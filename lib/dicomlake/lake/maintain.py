"""Upkeep of the lake's Delta tables: compaction, checkpoints and vacuum (``dicomlake maintain``).

Every run adds a few small files per table (one per task and partition); compaction rewrites
each partition's small files into files of about ``maintain.target_file_bytes``, in one commit
per table that adds the new files and removes the old ones from the log (readers of older
versions still find them). A checkpoint then sums the log up, so readers need not replay
every commit. Vacuum deletes the files removed from the log more than
``maintain.retention_hours`` ago (to the second, rounded up): time travel reaches back that far,
and every reader (a query, an export, a live snapshot's copy) must finish within it. The tables
carry that retention as their Delta properties (`delta.retention`), set here on tables made
before or with another setting, so their checkpoints keep the tombstones vacuum goes by, and
other Delta writers (Spark's VACUUM) keep the same retention.

A table whose log does not read, or whose latest version holds a file that is not there, stops
maintenance before it changes anything (`delta_read.require_readable`).

Maintenance writes to the tables, so it runs under the lake's lock, when no ingest does (the
scheduler runs it in the ingest DAG, after the night's ingest).
"""

from __future__ import annotations

import logging
from typing import Any

from deltalake import PostCommitHookProperties, WriterProperties

from dicomlake.config import Config
from dicomlake.lake import delta, delta_read
from dicomlake.lake.commit import recover
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.lake.lock import Lock
from dicomlake.lake.parquet import COMPRESSION
from dicomlake.storage import filesystem_for

log = logging.getLogger(__name__)


def maintain_lake(lake: str, config: Config, lock: Lock) -> dict[str, Any]:
    """Compact, checkpoint and vacuum every table, holding the lake's ``lock``; returns what was
    done, per table."""
    fs, layout = filesystem_for(lake, config.hdfs), LakeLayout(lake)
    rolled, abandoned = recover(fs, layout, lock)
    delta_read.require_readable(fs, layout)
    out: dict[str, Any] = {"lake": layout.root, "recovered": rolled, "discarded": abandoned}
    for name in TABLES:
        table = delta_read.open_table(fs, layout, name)
        if table is None:
            continue
        lock.check()
        delta.keep_retention(table, config.maintain.retention_hours)
        before = len(table.file_uris())
        metrics = table.optimize.compact(
            target_size=config.maintain.target_file_bytes,
            # delta-rs types the codec as an upper-case Literal
            writer_properties=WriterProperties(compression=COMPRESSION.upper()),  # type: ignore[arg-type]
            post_commithook_properties=PostCommitHookProperties(
                create_checkpoint=False, cleanup_expired_logs=False
            ),
        )
        table.create_checkpoint()
        deleted = table.vacuum(dry_run=False)  # by the table's retention, kept above
        out[name] = {
            "version": table.version(),
            "files_before": before,
            "files_after": len(table.file_uris()),
            "files_compacted": metrics["numFilesRemoved"],
            "files_vacuumed": len(deleted),
        }
        log.info("table %s: %s", name, out[name])
    return out
