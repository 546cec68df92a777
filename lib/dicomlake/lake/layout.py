"""Where everything lives in a lake (the contract analysts and operators rely on).

::

    <lake>/tables/<table>/...      Delta Lake tables (instances partitioned by Modality/study_year);
                                   a file is part of a table once its _delta_log/ adds it
    <lake>/pixels/<run>/<pack>.pack  immutable encrypted pack files
    <lake>/quarantine/<run>/<error_id>.pack  encrypted copies of rejected inputs
    <lake>/restricted/identities/  identified values, columns encrypted (Parquet Modular
                                   Encryption); outside tables/ so analysts' globs never see it
    <lake>/restricted/paths/       landing paths behind the tables' source_path_id, encrypted
    <lake>/_staging/<run>/...      a run's work before its commit: never read, never backed up
    <lake>/_commits/<run>.json     a run's commit intent, present only while it is being published
    <lake>/keyring-binding.json    the keyring the lake is bound to (`keyring_binding`)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dicomlake.errors import LakeError, StorageError
from dicomlake.storage import (
    FileSystem,
    canonical_uri,
    join,
    os_path,
    remote_parts,
    self_and_parents,
)
from dicomlake.storage.local import LocalFileSystem

# What a URL path holds unescaped (RFC 3986 pchar, '/' included), letters and digits aside
_URL_SAFE = "/-._~!$&'()*+,;=:@"
TABLES = ("instances", "frames", "elements", "errors", "sources", "runs", "packs")
RESTRICTED = ("identities", "paths")
BINDING = "keyring-binding.json"
NEXT_BINDING = "keyring-binding.next.json"
"""A rotation's new record, in place once every data key is re-wrapped: the binding's roll
forward makes it the binding, so a crash while the binding is replaced never leaves the lake
unbound."""
PLACES = frozenset({"tables", "pixels", "quarantine", "restricted", BINDING, NEXT_BINDING})
"""The names directly under a lake's root that hold the lake (its hidden places aside)."""


@dataclass(frozen=True)
class LakeLayout:
    """Paths of one lake, all as URIs under ``root``."""

    root: str

    def __post_init__(self) -> None:
        # deltalake takes a table's URI as a URL: on HDFS a path it would escape (a space, '%',
        # '#', a non-ASCII letter) names another folder than WebHDFS writes, or none; a local
        # path's '%' it reads as an escape (a lake at /data/p%41 gets its tables at /data/pA)
        remote = remote_parts(self.root)
        if remote is not None and quote(remote[1], safe=_URL_SAFE) != remote[1]:
            raise LakeError(
                f"the lake {self.root}: on HDFS a lake's path may hold ASCII letters, digits and "
                f"{_URL_SAFE!r} only (the Delta Lake client reads it as a URL): rename it"
            )
        if remote is None and "%" in self.root:
            raise LakeError(
                f"the lake {self.root}: a lake's path may not hold '%' (the Delta Lake client "
                "reads it as an escape, and would make its tables elsewhere): rename it"
            )

    def table(self, name: str) -> str:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}: tables are {', '.join(TABLES)}")
        return join(self.root, "tables", name)

    def restricted(self, name: str) -> str:
        """A restricted table (identified values, encrypted columns), outside ``tables/``."""
        if name not in RESTRICTED:
            raise ValueError(f"unknown restricted table {name!r}: they are {', '.join(RESTRICTED)}")
        return join(self.root, "restricted", name)

    def pixels(self, run_id: str) -> str:
        return join(self.root, "pixels", run_id)

    def quarantine(self, run_id: str) -> str:
        return join(self.root, "quarantine", run_id)

    def staging(self, run_id: str) -> str:
        return join(self.root, "_staging", run_id)

    @property
    def staging_root(self) -> str:
        return join(self.root, "_staging")

    @property
    def commits(self) -> str:
        return join(self.root, "_commits")

    def commit_intent(self, run_id: str) -> str:
        return join(self.commits, f"{run_id}.json")

    def relative(self, uri: str) -> str:
        """``uri`` relative to the lake root (how tables refer to lake files)."""
        prefix = self.root.rstrip("/") + "/"
        if not uri.startswith(prefix):
            raise ValueError(f"{uri!r} is not inside the lake {self.root!r}")
        return uri[len(prefix) :]

    def absolute(self, relative: str) -> str:
        return join(self.root, relative)


def is_lake(fs: FileSystem, layout: LakeLayout) -> bool:
    """Whether ``layout.root`` holds a lake: its tables or its keyring record."""
    return _holds_lake(fs, layout.root)


def _holds_lake(fs: FileSystem, root: str) -> bool:
    return fs.exists(join(root, "tables")) or fs.exists(join(root, BINDING))


def lake_around(fs: FileSystem, uri: str) -> str | None:
    """The root of the lake ``uri`` is, or is inside (a local path by its real path, so a link
    does not hide it); None when no lake holds it. What a command writes there is copied by
    every snapshot of that lake."""
    canonical = canonical_uri(uri)
    local = os_path(canonical)
    for place in self_and_parents(canonical if local is None else os.path.realpath(local)):
        try:  # any place: not only one a lake could be made at (`LakeLayout`)
            if _holds_lake(fs, place):
                return place
        except StorageError:  # a file (ENOTDIR), or a folder not to be looked into
            continue
    return None


def check_outside_lakes(out: Path) -> None:
    """LakeError when a command's local ``--out`` is in a lake: the identified files it writes
    would be copied, in clear, by every snapshot of that lake."""
    lake = lake_around(LocalFileSystem(), str(out))
    if lake is not None:
        raise LakeError(f"--out {out} is in the lake at {lake}: write outside every lake")


def require_lake(fs: FileSystem, layout: LakeLayout) -> None:
    """LakeError unless ``layout.root`` holds a lake (`is_lake`): a command on a mistyped lake
    would otherwise find nothing, say it did nothing, and succeed."""
    if not is_lake(fs, layout):
        raise LakeError(f"no lake at {layout.root} (neither tables/ nor {BINDING} there)")
