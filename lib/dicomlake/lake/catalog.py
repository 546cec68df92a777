"""Registering the lake's tables in a Spark catalog, so analysts query ``imaging.instances``.

Each table is an external Delta table at its lake location (``CREATE TABLE ... USING DELTA
LOCATION``): the catalog holds a name and a path, the table's schema and history stay in its
log, so the entry never goes stale as runs, maintenance and schema changes commit. The session
needs Delta Lake's connector, and a persistent catalog (``spark.sql.catalogImplementation=hive``
with a metastore) for the names to outlive it.
"""

from __future__ import annotations

import re
from typing import Any

from dicomlake.errors import ConfigError
from dicomlake.lake.layout import TABLES, LakeLayout

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def register_tables(spark: Any, lake: str, database: str) -> list[str]:
    """Create ``database`` and an external Delta table per lake table in it (those already
    registered are left as they are); returns the qualified table names. ``spark`` is a
    SparkSession with Delta Lake's connector."""
    if not _IDENTIFIER.match(database):
        raise ConfigError(
            f"--database {database!r} is not a plain SQL identifier (letters, digits, _)"
        )
    layout = LakeLayout(lake)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    names = []
    for name in TABLES:
        location = layout.table(name).replace("'", "\\'")
        spark.sql(f"CREATE TABLE IF NOT EXISTS {database}.{name} USING DELTA LOCATION '{location}'")
        names.append(f"{database}.{name}")
    return names
