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

from dataclasses import dataclass

from dicomlake.errors import LakeError
from dicomlake.storage import FileSystem, join

TABLES = ("instances", "frames", "elements", "errors", "sources", "runs", "packs")
RESTRICTED = ("identities", "paths")
BINDING = "keyring-binding.json"


@dataclass(frozen=True)
class LakeLayout:
    """Paths of one lake, all as URIs under ``root``."""

    root: str

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
    return fs.exists(join(layout.root, "tables")) or fs.exists(layout.absolute(BINDING))


def require_lake(fs: FileSystem, layout: LakeLayout) -> None:
    """LakeError unless ``layout.root`` holds a lake (`is_lake`): a command on a mistyped lake
    would otherwise find nothing, say it did nothing, and succeed."""
    if not is_lake(fs, layout):
        raise LakeError(f"no lake at {layout.root} (neither tables/ nor {BINDING} there)")
