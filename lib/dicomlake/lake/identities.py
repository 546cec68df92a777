"""The restricted identities table: identified values, their columns encrypted (PME).

``<lake>/restricted/identities/part-<run>-t<task>-a<attempt>.parquet``, one row per ingested
instance, outside ``tables/`` so analysts' globs never read it. Its footer is in clear (signed),
so the pseudonyms and bookkeeping columns (`schemas.IDENTITY_CLEAR`) read without a key; the
identified columns (`schemas.IDENTITY_ENCRYPTED`) need the private keyring (see
:mod:`dicomlake.lake.restricted`). Readers:

- Python: `read_identities` (pyarrow), or ``dicomlake reidentify --lake L --keyring K``;
- Spark: ``spark-submit --jars .cache/dicomlake-kms.jar``, then
  ``spark.read.options(**kms.spark_options(keyring)).parquet(L + "/restricted/identities")``
  (``kms`` is :mod:`dicomlake.crypto.kms`).

Mapping a pseudonym back: the row whose ``PatientID`` / ``AccessionNumber`` / ``*UID`` column
holds it, or, for any UID of the header (e.g. a ReferencedSOPInstanceUID), the
``original_uids`` JSON object (pseudonym -> original).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.lake import schemas
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.parquet import parquet_files
from dicomlake.lake.restricted import read_rows, write_rows
from dicomlake.storage import FileSystem, filesystem_for


def read_identities(
    lake: str, keyring: Keyring, config: Config, columns: list[str] | None = None
) -> pa.Table:
    """The whole identities table, identified columns decrypted with ``keyring``.

    Raises IntegrityError when the files were written with another keyring's secret.
    """
    fs = filesystem_for(lake, config.hdfs)
    files = parquet_files(fs, LakeLayout(lake).restricted("identities"))
    return read_rows(fs, files, "identities", keyring, columns)


def drop_instances(fs: FileSystem, uri: str, keyring: Keyring, instance_ids: set[str]) -> None:
    """Rewrite one (staged) identities file without the rows of ``instance_ids``.

    A keyring that cannot unwrap (an ingest host's public half) cannot read the file to rewrite
    it: the file then keeps those rows, each the same instance (same ``instance_id``, values and
    pseudonyms) as a row of the task that kept it.
    """
    if not keyring.can_unwrap:
        return
    table = read_rows(fs, [uri], "identities", keyring)
    keep = [i not in instance_ids for i in table.column("instance_id").to_pylist()]
    write_rows(fs, uri, "identities", table.filter(pa.array(keep)).to_pylist(), keyring)


def reidentify(table: pa.Table, pseudonym: str | None = None) -> list[dict[str, Any]]:
    """Rows of a decrypted identities table; with ``pseudonym``, only the rows it appears in.

    A pseudonym matches a row when it is one of the row's pseudonym columns or a key of its
    ``original_uids``; the matching UID's original is added as ``original`` to each row.
    """
    out = []
    for row in table.to_pylist():
        uids = json.loads(row.get("original_uids") or "{}")
        if pseudonym is not None:
            hit = [kw for kw in schemas.IDENTITY_CLEAR if row.get(kw) == pseudonym]
            if not hit and pseudonym not in uids:
                continue
            row["pseudonym"] = pseudonym
            row["original"] = uids.get(pseudonym) or (
                row.get(f"original_{hit[0]}") if hit else None
            )
        out.append(row)
    return out
