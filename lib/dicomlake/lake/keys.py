"""Key rotation for a lake: re-wrap every pack's data key under the keyring's active key.

Packs are immutable, so the re-wrapped keys go to the ``packs`` table, which readers prefer
over the key in a pack's header. The chunks are never re-encrypted.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.lake import delta, schemas
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import latest_packs, read_table
from dicomlake.lake.parquet import write_table
from dicomlake.storage import filesystem_for, join


def rewrap_lake(lake: str, keyring: Keyring, config: Config) -> dict[str, int]:
    """Re-wrap all data keys; returns how many packs were re-wrapped."""
    layout = LakeLayout(lake)
    fs = filesystem_for(lake, config.hdfs)
    latest = latest_packs(read_table(fs, layout, "packs").to_pylist())
    now = datetime.now(timezone.utc)
    for row in latest.values():
        row["kek_id"], row["wrapped_key"] = keyring.rewrap(
            row["kek_id"], row["wrapped_key"], row["pack_id"].encode()
        )
        row["wrapped_at"] = now
    name = f"part-rewrap-{now.strftime('%Y%m%dT%H%M%S%fZ')}.parquet"
    tmp = join(layout.root, "_staging", "rewrap", name)
    write_table(fs, tmp, pa.Table.from_pylist(list(latest.values()), schema=schemas.PACKS))
    fs.publish(tmp, join(layout.table("packs"), name))
    delta.replace_rows(fs, layout, "packs", name)  # every row the table held is in the new file
    return {"packs_rewrapped": len(latest)}
