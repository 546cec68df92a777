"""Reading chunks back from a lake's packs: whole instances byte for byte, or one frame.

One frame costs one ranged read of the pack header (cached per pack) and one of the chunk:
the other chunks of the pack are never touched.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pydicom

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.frames import encapsulated_frame_array, frame_array
from dicomlake.dicom.split import FrameSpec, header_from_prefix
from dicomlake.errors import LakeError
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import latest_packs, read_table
from dicomlake.pixels.pack import (
    HEADER_READ_BYTES,
    ChunkRecord,
    data_key_for,
    open_chunk,
    read_header,
)
from dicomlake.storage import filesystem_for

ORDER = {"prefix": 0, "frame": 1, "suffix": 2}


class PixelStore:
    """Decrypting reader of one lake's pixel store (needs a keyring that can unwrap)."""

    def __init__(self, lake: str, keyring: Keyring, config: Config) -> None:
        self.layout = LakeLayout(lake)
        self.fs = filesystem_for(lake, config.hdfs)
        self.keyring = keyring
        self._keys: dict[str, bytes] = {}
        self._rewrapped: dict[str, tuple[str, bytes]] | None = None
        self._frames: pa.Table | None = None

    def __repr__(self) -> str:
        return f"PixelStore({self.layout.root!r})"

    def frames_of(self, instance_ids: Iterable[str]) -> pa.Table:
        """The frames-table rows of the given instances, in rebuild order."""
        if self._frames is None:  # read once: every frame() or rebuild() looks it up
            self._frames = read_table(self.fs, self.layout, "frames")
        wanted = pa.array(sorted(set(instance_ids)), pa.string())
        table = self._frames.filter(pc.is_in(self._frames["instance_id"], value_set=wanted))
        order = pa.array([ORDER[k] for k in table["chunk_kind"].to_pylist()], pa.int8())
        table = table.append_column("_order", order)
        return table.sort_by(
            [("instance_id", "ascending"), ("_order", "ascending"), ("frame_number", "ascending")]
        ).drop_columns(["_order"])

    def chunk(self, row: dict[str, Any], spec: FrameSpec | None = None) -> bytes:
        """The raw bytes of one stored chunk (a frames-table row), decrypted and verified.

        Frames stored with an image codec need the instance's ``spec`` to decode.
        """
        pack_path = row["pack_path"]
        key = self._data_key(pack_path)
        sealed = self.fs.read(self.layout.absolute(pack_path), row["offset"], row["length"])
        record = ChunkRecord(
            instance=row["instance_id"],
            kind=row["chunk_kind"],
            index=row["frame_number"],
            offset=row["offset"],
            length=row["length"],
            codec=row["codec"],
            raw_length=row["raw_length"],
            raw_sha256=row["raw_sha256"],
        )
        return open_chunk(
            sealed, data_key=key, pack_id=_pack_id(pack_path), record=record, spec=spec
        )

    def rebuild(
        self, instance_id: str, rows: list[dict[str, Any]] | None = None
    ) -> Iterator[bytes]:
        """The original file's bytes, one chunk at a time: prefix, frames, suffix.

        Each chunk is read from its own pack (a streamed instance spans several), so joining
        them is the file and writing them one by one never holds it whole.
        """
        if rows is None:
            rows = self.frames_of([instance_id]).to_pylist()
        if not rows or rows[0]["chunk_kind"] != "prefix":
            raise LakeError(
                f"instance {instance_id} has no chunks in {self.layout.table('frames')}"
            )
        prefix = self.chunk(rows[0])
        yield prefix
        has_frames = any(r["chunk_kind"] == "frame" for r in rows)
        spec = header_from_prefix(prefix)[1] if has_frames else None
        for row in rows[1:]:
            yield self.chunk(row, spec)

    def frame(self, instance_id: str, frame_number: int) -> np.ndarray:
        """One frame (1-based) as pydicom's ``pixel_array`` would give it."""
        rows = self.frames_of([instance_id]).to_pylist()
        if not rows or rows[0]["chunk_kind"] != "prefix":
            raise LakeError(f"instance {instance_id} is not in {self.layout.table('frames')}")
        dataset, spec = header_from_prefix(self.chunk(rows[0]))
        frames = [r for r in rows if r["chunk_kind"] == "frame"]
        count = _frames_in(dataset)
        if not frames or not 1 <= frame_number <= count:
            raise LakeError(f"instance {instance_id} has no frame {frame_number}")
        if len(frames) == count:  # one chunk per frame: read just that one
            target = frames[frame_number - 1]
            if spec is not None:
                return frame_array(self.chunk(target, spec), spec)
            if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
                return encapsulated_frame_array(self.chunk(target), dataset)
        # Frames that could not be cut apart (bit-packed, odd big-endian words, fragments of
        # unknown frame) are stored as one chunk: pydicom decodes the rebuilt instance.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = pydicom.dcmread(
                io.BytesIO(b"".join(self.rebuild(instance_id, rows))), force=True
            ).pixel_array
        return pixels if count == 1 else pixels[frame_number - 1]

    def _data_key(self, pack_path: str) -> bytes:
        if pack_path not in self._keys:
            if self._rewrapped is None:
                self._rewrapped = latest_wraps(self.layout, self.fs)
            uri = self.layout.absolute(pack_path)
            header = read_header(self.fs.read(uri, 0, HEADER_READ_BYTES))
            self._keys[pack_path] = data_key_for(
                header, self.keyring, self._rewrapped.get(pack_path)
            )
        return self._keys[pack_path]


def _frames_in(dataset: pydicom.Dataset) -> int:
    try:
        return int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def _pack_id(pack_path: str) -> str:
    return pack_path.rsplit("/", 1)[-1].removesuffix(".pack")


def latest_wraps(layout: LakeLayout, fs) -> dict[str, tuple[str, bytes]]:
    """Per pack path, the newest (kek id, wrapped data key) of the packs table."""
    latest = latest_packs(read_table(fs, layout, "packs").to_pylist())
    return {path: (r["kek_id"], r["wrapped_key"]) for path, r in latest.items()}
