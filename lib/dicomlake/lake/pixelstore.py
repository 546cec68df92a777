"""Reading chunks back from a lake's packs: whole instances byte for byte, one frame, or the
frames of many instances.

One frame costs one ranged read of the pack header (cached per pack) and one of the chunk:
the other chunks of the pack are never touched. `PixelStore.iter_frames` reads chunks that lie
one after another with one read.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.frames import encapsulated_frame_array, frame_array
from dicomlake.dicom.split import FrameSpec, header_from_prefix, inflated_dataset, split_instance
from dicomlake.errors import CodecError, DicomLakeError, LakeError
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import latest_packs, read_table
from dicomlake.pixels.pack import (
    HEADER_READ_BYTES,
    ChunkRecord,
    data_key_for,
    open_chunk,
    read_header,
)
from dicomlake.storage import FileSystem, filesystem_for
from dicomlake.vocab import ChunkKind

log = logging.getLogger(__name__)

ORDER = {ChunkKind.PREFIX: 0, ChunkKind.FRAME: 1, ChunkKind.SUFFIX: 2}
# The most bytes `PixelStore.iter_frames` fetches with one read, and the most between two of
# its chunks that it reads and drops rather than start another read (an instance's header and
# trailing chunks lie between its frames and the next instance's)
BULK_READ_BYTES = 64 << 20
BULK_GAP = 1 << 20


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
        sealed = self.fs.read(self.layout.absolute(row["pack_path"]), row["offset"], row["length"])
        return self._open(row, sealed, spec)

    def _open(self, row: dict[str, Any], sealed: bytes, spec: FrameSpec | None) -> bytes:
        pack_path = row["pack_path"]
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
            sealed,
            data_key=self._data_key(pack_path),
            pack_id=_pack_id(pack_path),
            record=record,
            spec=spec,
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
        if not rows or rows[0]["chunk_kind"] != ChunkKind.PREFIX:
            raise LakeError(
                f"instance {instance_id} has no chunks in {self.layout.table('frames')}"
            )
        prefix = self.chunk(rows[0])
        yield prefix
        has_frames = any(r["chunk_kind"] == ChunkKind.FRAME for r in rows)
        spec = header_from_prefix(prefix)[1] if has_frames else None
        for row in rows[1:]:
            yield self.chunk(row, spec)

    def frame(self, instance_id: str, frame_number: int) -> np.ndarray:
        """One frame (1-based) as pydicom's ``pixel_array`` would give it."""
        rows = self.frames_of([instance_id]).to_pylist()
        if not rows or rows[0]["chunk_kind"] != ChunkKind.PREFIX:
            raise LakeError(f"instance {instance_id} is not in {self.layout.table('frames')}")
        prefix = self.chunk(rows[0])
        layout = _Layout.of(prefix, rows)
        if not 1 <= frame_number <= layout.count:
            raise LakeError(f"instance {instance_id} has no frame {frame_number}")
        if layout.per_chunk:  # one chunk per frame: read just that one
            target = layout.frames[frame_number - 1]
            chunk = self.chunk(target, layout.spec)
            with _decoding(instance_id, frame_number):
                return layout.decode(chunk)
        frame: np.ndarray = self._whole(instance_id, rows, prefix, layout)[frame_number - 1]
        return frame

    def iter_frames(
        self, instance_ids: Iterable[str], *, undecodable: list[CodecError] | None = None
    ) -> Iterator[tuple[str, int, np.ndarray]]:
        """Every frame of the given instances as ``(instance_id, frame_number, array)``, each
        array as `frame` gives it, in storage order: pack by pack, chunks by offset.

        A frame no decoder here reads is a CodecError naming it; given an ``undecodable``
        list, it is left out instead, its error appended there (and logged), and the other
        frames still come. A chunk that fails its integrity checks always raises.

        Chunks that lie one after another in a pack (an instance's frames are written so, and
        the instances of a run next to each other), at most `BULK_GAP` bytes apart, come with
        one ranged read of up to `BULK_READ_BYTES`, so a series costs a few reads rather than
        one per frame. Frames not stored one per chunk (deflated files, frames that could
        not be cut apart) follow, a whole instance at a time. Instances without pixel data
        give nothing; an unknown instance id is a LakeError.
        """
        wanted = sorted(set(instance_ids))
        by_instance: dict[str, list[dict[str, Any]]] = {i: [] for i in wanted}
        for row in self.frames_of(wanted).to_pylist():
            by_instance[row["instance_id"]].append(row)
        missing = [
            i
            for i, rows in by_instance.items()
            if not rows or rows[0]["chunk_kind"] != ChunkKind.PREFIX
        ]
        if missing:
            raise LakeError(f"instance {missing[0]} is not in {self.layout.table('frames')}")
        prefixes = {
            row["instance_id"]: data
            for row, data in self._bulk([r[0] for r in by_instance.values()], {})
        }
        layouts = {i: _Layout.of(prefixes[i], rows) for i, rows in by_instance.items()}
        specs = {i: lay.spec for i, lay in layouts.items()}
        # 1-based frame numbers by (instance, stored index), as `frame` counts them
        number = {
            (row["instance_id"], row["frame_number"]): n
            for lay in layouts.values()
            if lay.per_chunk
            for n, row in enumerate(lay.frames, 1)
        }
        per_chunk = [row for lay in layouts.values() if lay.per_chunk for row in lay.frames]
        for row, data in self._bulk(per_chunk, specs):
            i, n = row["instance_id"], number[row["instance_id"], row["frame_number"]]
            try:
                with _decoding(i, n):
                    frame = layouts[i].decode(data)
            except CodecError as exc:
                _left_out(exc, undecodable)
                continue
            yield i, n, frame
        for i, lay in layouts.items():
            if lay.count and not lay.per_chunk:
                try:
                    frames = self._whole(i, by_instance[i], prefixes[i], lay)
                except CodecError as exc:
                    _left_out(exc, undecodable)
                    continue
                for n, frame in enumerate(frames, 1):
                    yield i, n, frame

    def _bulk(
        self, rows: list[dict[str, Any]], specs: dict[str, FrameSpec | None]
    ) -> Iterator[tuple[dict[str, Any], bytes]]:
        """``(row, chunk)`` for the chunks of ``rows`` in storage order, chunks that follow one
        another in a pack (gaps up to `BULK_GAP`) fetched by one read; ``specs`` per instance
        id, for image codecs."""
        ordered = sorted(rows, key=lambda r: (r["pack_path"], r["offset"]))
        run: list[dict[str, Any]] = []
        for row in [*ordered, None]:
            if run and (
                row is None
                or row["pack_path"] != run[0]["pack_path"]
                or not 0 <= row["offset"] - (run[-1]["offset"] + run[-1]["length"]) <= BULK_GAP
                or row["offset"] + row["length"] - run[0]["offset"] > BULK_READ_BYTES
            ):
                start = run[0]["offset"]
                end = run[-1]["offset"] + run[-1]["length"]
                sealed = self.fs.read(self.layout.absolute(run[0]["pack_path"]), start, end - start)
                for r in run:
                    piece = sealed[r["offset"] - start : r["offset"] - start + r["length"]]
                    yield r, self._open(r, piece, specs.get(r["instance_id"]))
                run = []
            if row is not None:
                run.append(row)

    def _whole(
        self, instance_id: str, rows: list[dict[str, Any]], prefix: bytes, layout: _Layout
    ) -> np.ndarray:
        """All frames of an instance whose frames are not stored one per chunk, as an array of
        shape (frames, ...)."""
        if layout.deflated:  # stored whole as its prefix: split the inflated dataset
            split = split_instance(inflated_dataset(prefix))
            if split.frame_spec is not None and len(split.frames) == layout.count:
                return np.stack([frame_array(f, split.frame_spec) for f in split.frames])
            whole = prefix
        else:
            whole = b"".join(self.rebuild(instance_id, rows))
        # Frames that could not be cut apart (bit-packed, odd big-endian words, fragments of
        # unknown frame) are stored as one chunk: pydicom decodes the whole instance.
        with warnings.catch_warnings(), _decoding(instance_id, None):
            warnings.simplefilter("ignore")
            pixels = pydicom.dcmread(io.BytesIO(whole), force=True).pixel_array
        return pixels[np.newaxis] if layout.count == 1 else pixels

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


@dataclass(frozen=True)
class _Layout:
    """How one instance's frames are stored, from its prefix chunk and frames-table rows."""

    dataset: pydicom.Dataset
    spec: FrameSpec | None
    frames: list[dict[str, Any]]  # its frame chunks' rows, in frame order
    count: int  # frames of pixel data (0 without)
    deflated: bool  # stored whole as its prefix chunk

    @classmethod
    def of(cls, prefix: bytes, rows: list[dict[str, Any]]) -> _Layout:
        dataset, spec = header_from_prefix(prefix)
        frames = [r for r in rows if r["chunk_kind"] == ChunkKind.FRAME]
        deflated = dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        has_pixels = bool(frames) or (deflated and "Rows" in dataset)
        return cls(dataset, spec, frames, _frames_in(dataset) if has_pixels else 0, deflated)

    @property
    def per_chunk(self) -> bool:
        """Whether each frame is a chunk of its own that decodes alone."""
        syntax = self.dataset.file_meta.get("TransferSyntaxUID")
        decodable = self.spec is not None or (syntax is not None and syntax.is_encapsulated)
        return bool(self.frames) and len(self.frames) == self.count and decodable

    def decode(self, chunk: bytes) -> np.ndarray:
        """One frame chunk (of a `per_chunk` layout) as an array."""
        if self.spec is not None:
            return frame_array(chunk, self.spec)
        return encapsulated_frame_array(chunk, self.dataset)


def _left_out(error: CodecError, undecodable: list[CodecError] | None) -> None:
    """`PixelStore.iter_frames`' undecodable frames: raised, or kept in ``undecodable``."""
    if undecodable is None:
        raise error
    log.warning("%s: left out", error)
    undecodable.append(error)


@contextlib.contextmanager
def _decoding(instance_id: str, frame_number: int | None) -> Iterator[None]:
    """A stored frame that no decoder here reads (a JPEG process neither imagecodecs nor
    pydicom has, say) is a CodecError naming it, not the decoder's own error type."""
    try:
        yield
    except DicomLakeError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        which = f"frame {frame_number}" if frame_number else "its frames"
        raise CodecError(
            f"instance {instance_id}, {which}: the stored pixel data does not decode here "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _frames_in(dataset: pydicom.Dataset) -> int:
    try:
        return int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def _pack_id(pack_path: str) -> str:
    return pack_path.rsplit("/", 1)[-1].removesuffix(".pack")


def latest_wraps(layout: LakeLayout, fs: FileSystem) -> dict[str, tuple[str, bytes]]:
    """Per pack path, the newest (kek id, wrapped data key) of the packs table."""
    latest = latest_packs(read_table(fs, layout, "packs").to_pylist())
    return {path: (r["kek_id"], r["wrapped_key"]) for path, r in latest.items()}
