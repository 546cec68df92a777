"""The pack file: many encrypted frame chunks in one immutable, self-describing file.

Layout (all integers little-endian)::

    header   b"DLPACK1\\0" | u32 header_len | header JSON (UTF-8)
             {"format_version": 1, "pack_id", "kek_id", "wrapped_key": base64, "created": ISO-8601}
    chunks   seal(data_key, encoded, aad=chunk_aad(pack_id, record)), back to back
    footer   seal(data_key, index JSON, aad=pack_id | "index" | sha256(header bytes))
             | u64 sealed_index_len | b"DLPACKEND"

Each pack has its own random AES-256 data key, wrapped by the keyring's active KEK with the
pack id as context. A chunk's associated data binds pack id, instance, kind, index, codec and
raw length, so a chunk moved to another place, pack or record fails to open. The index binds
the header bytes, so an edited header is caught when the index is read.

Reading one frame needs the header (`read_header` on the first `HEADER_READ_BYTES` bytes) and
one read of `record.length` bytes at `record.offset`; never the other chunks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from dicomlake.crypto.envelope import OVERHEAD, new_data_key, open_sealed, seal
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import CodecError, IntegrityError, TruncatedPackError
from dicomlake.pixels import codecs
from dicomlake.pixels.spec import FrameSpec
from dicomlake.vocab import ChunkKind

MAGIC = b"DLPACK1\0"
END_MAGIC = b"DLPACKEND"
FORMAT_VERSION = 1
HEADER_READ_BYTES = 64 * 1024
"""Reading this many bytes from the start of a pack always suffices for `read_header`."""

_KINDS = frozenset(ChunkKind)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MAX_HEADER_JSON = HEADER_READ_BYTES - len(MAGIC) - _U32.size
_TRAILER = _U64.size + len(END_MAGIC)


@dataclass(frozen=True)
class ChunkRecord:
    """Where one chunk lives in its pack and how to turn it back into raw bytes."""

    instance: str
    kind: str  # a ChunkKind
    index: int
    offset: int
    length: int
    codec: str
    raw_length: int
    raw_sha256: str  # hex


@dataclass(frozen=True)
class PackHeader:
    """The clear-text header of a pack; `data_start` is the offset of the first chunk."""

    format_version: int
    pack_id: str
    kek_id: str
    wrapped_key: bytes
    created: str
    data_start: int


@dataclass(frozen=True)
class PackInfo:
    """Summary of a closed pack, for the lake's tables."""

    pack_id: str
    kek_id: str
    wrapped_key: bytes
    chunks: int
    size: int


class Sink(Protocol):
    """Where a pack is written: a binary stream, or anything with its ``write``."""

    def write(self, data: bytes, /) -> int: ...


class PackWriter:
    """Writes one pack sequentially to `out` (never seeks): header now, chunks, then footer.

    >>> writer = PackWriter(out, "pack-1", keyring)                           # doctest: +SKIP
    >>> record = writer.add(instance="1.2.3", kind="frame", index=0, raw=raw, spec=spec)
    >>> info = writer.close()
    """

    def __init__(self, out: Sink, pack_id: str, keyring: Keyring) -> None:
        if not pack_id:
            raise ValueError("pack_id must be a non-empty string")
        self._out = out
        self._pack_id = pack_id
        self._data_key: bytes | None = new_data_key()
        self._kek_id, self._wrapped = keyring.wrap(self._data_key, pack_id.encode())
        header = json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "pack_id": pack_id,
                "kek_id": self._kek_id,
                "wrapped_key": base64.b64encode(self._wrapped).decode("ascii"),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        ).encode()
        if len(header) > _MAX_HEADER_JSON:
            raise ValueError(f"pack header is {len(header)} bytes; pack_id {pack_id!r} too long?")
        self._header = MAGIC + _U32.pack(len(header)) + header
        self._records: list[ChunkRecord] = []
        self._seen: set[tuple[str, str, int]] = set()
        self._written = 0
        self._write(self._header)

    @property
    def bytes_written(self) -> int:
        """Bytes written to `out` so far (the pack's size once closed)."""
        return self._written

    def add(
        self,
        *,
        instance: str,
        kind: str,
        index: int,
        raw: bytes,
        spec: FrameSpec | None = None,
        codec: str = "auto",
        verify: bool = True,
    ) -> ChunkRecord:
        """Encode (see `codecs.encode`), seal and append one chunk; returns its record."""
        encoded = codecs.encode(raw, spec, codec=codec, verify=verify)
        return self.add_encoded(instance=instance, kind=kind, index=index, raw=raw, encoded=encoded)

    def add_encoded(
        self, *, instance: str, kind: str, index: int, raw: bytes, encoded: tuple[str, bytes]
    ) -> ChunkRecord:
        """`add` for a chunk already encoded: ``encoded`` is `codecs.encode`'s result for
        ``raw``."""
        if self._data_key is None:
            raise ValueError(f"pack {self._pack_id} is closed")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
        if not instance or index < 0:
            raise ValueError(f"need a non-empty instance and index >= 0, got {instance!r}, {index}")
        if (instance, kind, index) in self._seen:
            raise ValueError(f"pack {self._pack_id} already has chunk {instance}/{kind}/{index}")
        codec_id, data = encoded
        record = ChunkRecord(
            instance=instance,
            kind=kind,
            index=index,
            offset=self._written,
            length=len(data) + OVERHEAD,
            codec=codec_id,
            raw_length=len(raw),
            raw_sha256=hashlib.sha256(raw).hexdigest(),
        )
        self._write(seal(self._data_key, data, chunk_aad(self._pack_id, record)))
        self._records.append(record)
        self._seen.add((instance, kind, index))
        return record

    def close(self) -> PackInfo:
        """Write the sealed index and trailer; the writer accepts nothing afterwards."""
        if self._data_key is None:
            raise ValueError(f"pack {self._pack_id} is closed")
        # vars(), not asdict(): the records are flat, and asdict copies every value deeply
        index = json.dumps([vars(r) for r in self._records]).encode()
        sealed = seal(self._data_key, index, _index_aad(self._pack_id, self._header))
        self._write(sealed + _U64.pack(len(sealed)) + END_MAGIC)
        self._data_key = None
        return PackInfo(
            self._pack_id, self._kek_id, self._wrapped, len(self._records), self._written
        )

    def __repr__(self) -> str:
        state = "closed" if self._data_key is None else "open"
        return (
            f"PackWriter(pack_id={self._pack_id!r}, kek_id={self._kek_id!r}, "
            f"chunks={len(self._records)}, bytes_written={self._written}, {state})"
        )

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)


def chunk_aad(pack_id: str, record: ChunkRecord) -> bytes:
    """Associated data of a chunk: everything that says what and where it is, except offsets."""
    fields = [pack_id, record.instance, record.kind, record.index, record.codec, record.raw_length]
    return b"DLPACK1 chunk\0" + json.dumps(fields, separators=(",", ":")).encode()


def read_header(head: bytes, *, name: str | None = None) -> PackHeader:
    """Parse the header from the first bytes of a pack (`HEADER_READ_BYTES` always suffice).

    `name` (e.g. the pack's path) is used in error messages. Raises TruncatedPackError if
    `head` ends before the header does, IntegrityError if it is not a valid pack header.
    """
    label = name or "pack"
    if len(head) < len(MAGIC) + _U32.size:
        raise TruncatedPackError(f"{label}: {len(head)} bytes is too short for a pack header")
    if not head.startswith(MAGIC):
        raise IntegrityError(f"{label}: not a dicomlake pack (starts with {bytes(head[:8])!r})")
    (length,) = _U32.unpack_from(head, len(MAGIC))
    start = len(MAGIC) + _U32.size
    if length > _MAX_HEADER_JSON:
        raise IntegrityError(f"{label}: header length {length} is implausible; damaged pack")
    if len(head) < start + length:
        raise TruncatedPackError(f"{label}: header needs {start + length} bytes, got {len(head)}")
    try:
        doc = json.loads(head[start : start + length])
        header = PackHeader(
            format_version=int(doc["format_version"]),
            pack_id=str(doc["pack_id"]),
            kek_id=str(doc["kek_id"]),
            wrapped_key=base64.b64decode(doc["wrapped_key"], validate=True),
            created=str(doc["created"]),
            data_start=start + length,
        )
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        raise IntegrityError(f"{label}: header is not valid pack JSON ({exc!r})") from None
    if header.format_version != FORMAT_VERSION:
        raise IntegrityError(
            f"{label}: pack {header.pack_id} has format_version {header.format_version}; "
            f"this dicomlake reads {FORMAT_VERSION}: upgrade dicomlake"
        )
    return header


def data_key_for(
    header: PackHeader,
    keyring: Keyring,
    wrapped_override: tuple[str, bytes] | None = None,
) -> bytes:
    """The pack's data key, unwrapped from the header, or from `wrapped_override`
    (kek_id, wrapped) when the lake holds a re-wrapped key after KEK rotation."""
    kek_id, wrapped = wrapped_override or (header.kek_id, header.wrapped_key)
    return keyring.unwrap(kek_id, wrapped, header.pack_id.encode())


def open_chunk(
    sealed: bytes,
    *,
    data_key: bytes,
    pack_id: str,
    record: ChunkRecord,
    spec: FrameSpec | None = None,
    verify_hash: bool = True,
) -> bytes:
    """Raw bytes of one chunk read from `record.offset`, `record.length` bytes long.

    Raises TruncatedPackError if `sealed` is short, TamperedChunkError if it fails to open
    (flipped, moved or swapped bytes, wrong key), UnknownCodecError/CodecError if it cannot
    be decoded, IntegrityError if the result's SHA-256 differs from the record's.
    """
    what = f"pack {pack_id} chunk {record.instance}/{record.kind}/{record.index}"
    if len(sealed) != record.length:
        raise TruncatedPackError(f"{what}: read {len(sealed)} bytes, expected {record.length}")
    encoded = open_sealed(data_key, sealed, chunk_aad(pack_id, record), what=what)
    try:
        raw = codecs.decode(record.codec, encoded, spec, record.raw_length)
    except CodecError as exc:
        raise type(exc)(f"{what}: {exc}") from exc
    if verify_hash and hashlib.sha256(raw).hexdigest() != record.raw_sha256:
        raise IntegrityError(f"{what}: decoded bytes do not match the recorded SHA-256")
    return raw


def read_index(pack: bytes, data_key: bytes, pack_id: str) -> list[ChunkRecord]:
    """The chunk records of a whole pack, from its footer.

    Raises TruncatedPackError if the trailer or index is missing, TamperedChunkError if the
    index or header was altered, IntegrityError if the pack is another pack than `pack_id`.
    """
    header = read_header(pack, name=f"pack {pack_id}")
    if header.pack_id != pack_id:
        raise IntegrityError(f"pack {pack_id}: the file's header names pack {header.pack_id}")
    if len(pack) < header.data_start + _TRAILER or not pack.endswith(END_MAGIC):
        raise TruncatedPackError(f"pack {pack_id}: no footer (file ends early, {len(pack)} bytes)")
    (length,) = _U64.unpack_from(pack, len(pack) - _TRAILER)
    start = len(pack) - _TRAILER - length
    if start < header.data_start:
        raise TruncatedPackError(f"pack {pack_id}: index length {length} exceeds the file")
    index = open_sealed(
        data_key,
        pack[start : len(pack) - _TRAILER],
        _index_aad(pack_id, pack[: header.data_start]),
        what=f"pack {pack_id} index",
    )
    return [ChunkRecord(**item) for item in json.loads(index)]


def _index_aad(pack_id: str, header_bytes: bytes) -> bytes:
    return pack_id.encode() + b"\0index\0" + hashlib.sha256(header_bytes).digest()
