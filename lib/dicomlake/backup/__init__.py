"""Snapshots of a lake into a content-addressed backup: take, restore, verify, retention.

See :mod:`dicomlake.backup.scan` for what a snapshot copies and why, and
:mod:`dicomlake.backup.layout` for how a backup is laid out.
"""

from dicomlake.backup.manifest import SnapshotInfo
from dicomlake.backup.restore import RestoreResult, restore
from dicomlake.backup.retention import RetentionResult, apply_retention
from dicomlake.backup.snapshot import SnapshotResult, take_snapshot
from dicomlake.backup.verify import VerifyProblem, VerifyResult, list_snapshots, verify

__all__ = [
    "RestoreResult",
    "RetentionResult",
    "SnapshotInfo",
    "SnapshotResult",
    "VerifyProblem",
    "VerifyResult",
    "apply_retention",
    "list_snapshots",
    "restore",
    "take_snapshot",
    "verify",
]
