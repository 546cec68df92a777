"""A seeded generator of hostile landing zones, made from the real sample files.

`make_hostile_landing` writes ``count`` hostile inputs (plus a few good files) into a landing
directory: byte flips, truncations, huge declared lengths, unclosed undefined-length sequences
and items, sequences nested 1,200 deep, extreme NumberOfFrames, invalid VRs and character sets,
elements swallowing the ones after them, Modality values no directory can be named after,
deflate bombs, hostile names (not UTF-8, 250 bytes, control characters), symbolic links of every
kind, a FIFO, empty and sparse files. The same seed makes the same landing zone, byte for byte.

Every entry gets its own modification time (a second apart, in the past), so a test can match
what the lake records with what it finds on disk by (size, mtime) alone, whatever the lake does
with names. What each entry must become is for the test to work out from the disk, not from
this module: it only makes them.
"""

from __future__ import annotations

import io
import os
import random
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
from crafted import LONG_VRS
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement

from dicomlake.samples import sample_files

BASE_MTIME = 1_600_000_000  # 2020-09-13: long settled, whatever ingest.settle_seconds says
BOMB_BYTES = 1536 << 20
"""What the biggest deflate bomb inflates to: more than a worker may hold (1 GiB)."""

_DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {vr.encode() for vr in LONG_VRS}  # as the bytes of an element header


def _sample(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _meta_end(data: bytes) -> int:
    """Where the dataset starts, after the file meta group (its group length says where)."""
    return 132 + 12 + struct.unpack("<I", data[140:144])[0]


def _elements(data: bytes) -> list[int]:
    """Offsets of the top-level elements of an explicit VR little endian dataset, up to the
    pixel data (independent of dicomlake's parser)."""
    offsets, at = [], _meta_end(data)
    while at + 8 <= len(data):
        group, _ = struct.unpack("<HH", data[at : at + 4])
        vr = data[at + 4 : at + 6]
        offsets.append(at)
        if group == 0x7FE0:
            break
        if vr in _LONG_VRS:
            length = struct.unpack("<I", data[at + 8 : at + 12])[0]
            if length == _UNDEFINED:
                break
            at += 12 + length
        else:
            at += 8 + struct.unpack("<H", data[at + 6 : at + 8])[0]
    return offsets


def _sequence(depth: int, closed: bool) -> bytes:
    """(0008,1115) sequences of undefined length, each in an item of the one above."""
    opening = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return opening * depth + (closing * depth if closed else b"")


def _with_dataset_prefix(data: bytes, inserted: bytes) -> bytes:
    at = _meta_end(data)
    return data[:at] + inserted + data[at:]


def _written(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _deflate_bomb(inflated: int) -> bytes:
    """A deflated-syntax file whose dataset inflates to ``inflated`` bytes (mostly zeros).

    Each piece ends in a full flush, so its blocks refer to nothing before them: one piece of
    compressed zeros is repeated instead of compressing them all.
    """
    dfl = _sample("image_dfl.dcm")
    header = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", inflated - 12)
    piece = 16 << 20
    whole, rest = divmod(inflated - len(header), piece)

    def packed(data: bytes) -> bytes:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)

    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty last block
    stream = packed(header) + packed(bytes(piece)) * whole + packed(bytes(rest)) + end
    return dfl[: _meta_end(dfl)] + stream


def good_samples(limit: int = 40, max_bytes: int = 200_000) -> list[Path]:
    """Small real sample files, sorted: the good files mixed in, and the stock mutated."""
    paths = sorted(p for _, p in sample_files() if p.stat().st_size <= max_bytes)
    return [p for p in paths if p.suffix == ".dcm"][:limit]


class _Maker:
    def __init__(self, landing: Path, outside: Path, seed: int) -> None:
        self.landing, self.outside = landing, outside
        self.rng = random.Random(seed)
        self.made = 0
        self.stock = {
            "ct": _sample("CT_small.dcm"),
            "mr": _sample("MR_small.dcm"),
            "emri": _sample("emri_small.dcm"),
        }

    def put(self, name: str | bytes, content: bytes, directory: Path | None = None) -> Path:
        where = os.fsencode(directory or self.landing)
        path = os.path.join(where, os.fsencode(name))
        with open(path, "wb") as f:
            f.write(content)
        self.stamp(path)
        return Path(os.fsdecode(path))

    def stamp(self, path: str | bytes | Path) -> None:
        """A modification time of its own, a second after the last entry's."""
        self.made += 1
        when = BASE_MTIME + self.made
        os.utime(path, (when, when), follow_symlinks=False)

    def link(self, name: str, target: str | Path) -> None:
        path = self.landing / name
        os.symlink(target, path)
        self.stamp(path)

    def base(self) -> bytes:
        return self.stock[self.rng.choice(sorted(self.stock))]

    # -- the mutations: each returns the bytes of one hostile file

    def flips(self) -> bytes:
        data = bytearray(self.base())
        span = len(data) if self.rng.random() < 0.3 else min(len(data), 2048)
        for _ in range(self.rng.randint(1, 8)):
            data[self.rng.randrange(span)] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def truncated(self) -> bytes:
        data = self.base()
        return data[: self.rng.randrange(1, len(data))]

    def huge_length(self) -> bytes:
        data = bytearray(self.base())
        at = self.rng.choice(_elements(bytes(data))[1:])
        huge = self.rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0x10000000])
        if bytes(data[at + 4 : at + 6]) in _LONG_VRS:
            data[at + 8 : at + 12] = struct.pack("<I", huge)
        else:
            data[at + 6 : at + 8] = struct.pack("<H", huge & 0xFFFF)
        return bytes(data)

    def unclosed(self) -> bytes:
        depth = self.rng.randint(1, 40)
        data = _with_dataset_prefix(self.stock["ct"], _sequence(depth, closed=False))
        return data[: self.rng.randrange(_meta_end(data) + 16 * depth, len(data))]

    def deep(self) -> bytes:
        depth = self.rng.choice([1_200, 2_000, 5_000])
        return _with_dataset_prefix(self.stock["mr"], _sequence(depth, closed=True))

    def swallowing(self) -> bytes:
        """An element made to hold the next few elements: what a bad length does to a header
        that still parses (a code string, numbers or bytes holding a name and IDs, say)."""
        data = bytearray(self.base())
        offsets = _elements(bytes(data))
        first = self.rng.choice(
            [i for i, at in enumerate(offsets[1:-1], 1) if bytes(data[at + 4 : at + 6]) != b"SQ"]
        )
        at, end = offsets[first], offsets[min(first + self.rng.randint(1, 6), len(offsets) - 1)]
        if bytes(data[at + 4 : at + 6]) in _LONG_VRS:
            data[at + 8 : at + 12] = struct.pack("<L", end - at - 12)
        else:
            data[at + 6 : at + 8] = struct.pack("<H", min(end - at - 8, 0xFFFF))
        return bytes(data)

    def bytes_swallowing(self) -> bytes:
        """CT_small or MR_small given a RecordKey (OB, kept by the profile) whose length takes in
        every element up to PatientName: the name held as bytes, no text to see it in."""
        ds = pydicom.dcmread(io.BytesIO(self.stock[self.rng.choice(["ct", "mr"])]))
        ds.add_new(0x0008041B, "OB", self.rng.randbytes(8))
        data = bytearray(_written(ds))
        offsets = _elements(bytes(data))
        tags = [struct.unpack("<HH", data[at : at + 4]) for at in offsets]
        at, name = offsets[tags.index((0x0008, 0x041B))], tags.index((0x0010, 0x0010))
        data[at + 8 : at + 12] = struct.pack("<L", offsets[name + 1] - at - 12)
        return bytes(data)

    def modality(self, value: str) -> bytes:
        """CT_small with ``value`` written as its Modality, unchecked."""
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds[0x00080060] = DataElement(0x00080060, "CS", value, validation_mode=0)
        return _written(ds)

    def bad_vr(self) -> bytes:
        data = bytearray(self.base())
        at = self.rng.choice(_elements(bytes(data))[1:])
        vr = self.rng.choice([b"Q!", b"\x00\x00", b"zz", b"\xff\xfe", b"XX", b"S "])
        data[at + 4 : at + 6] = vr
        return bytes(data)

    def frames(self) -> bytes:
        ds = pydicom.dcmread(get_testdata_file(self.rng.choice(["JPEG2000.dcm", "emri_small.dcm"])))
        value = self.rng.choice(["2147483648", "4294967297", "99999999999", "-1", "0", "1e9"])
        ds[0x00280008] = DataElement(0x00280008, "IS", value, validation_mode=0)
        return _written(ds)

    def charset(self) -> bytes:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        charset = self.rng.choice(
            ["ISO_IR 999", "ISO 2022 IR 87", "\x1b$)C", "GB18030", "ISO_IR 192", "ISO 2022 IR 13"]
        )
        ds[0x00080005] = DataElement(0x00080005, "CS", charset, validation_mode=0)
        data = _written(ds)
        name = b"CompressedSamples^CT1"
        at = data.find(name)
        noise = bytes(self.rng.randrange(0x80, 0x100) for _ in name)
        return data[:at] + noise + data[at + len(name) :] if at >= 0 else data


def make_hostile_landing(landing: Path, outside: Path, count: int, seed: int = 1) -> None:
    """Write ``count`` hostile inputs and some good files into ``landing`` (made here);
    ``outside`` (also made here) holds what links point to beyond the landing zone."""
    landing.mkdir(parents=True)
    outside.mkdir(parents=True)
    m = _Maker(landing, outside, seed)
    mutations: list[Callable[[], bytes]] = [
        m.flips,
        m.flips,
        m.flips,
        m.truncated,
        m.truncated,
        m.huge_length,
        m.unclosed,
        m.bad_vr,
        m.swallowing,
        m.bytes_swallowing,
        m.frames,
        m.charset,
    ]
    # The rare kinds, each a few times
    for depth_file in range(3):
        m.put(f"deep-{depth_file}.dcm", m.deep())
    m.put("bomb-small.dcm", _deflate_bomb(64 << 20))
    m.put("bomb.dcm", _deflate_bomb(BOMB_BYTES))
    m.put("empty.dcm", b"")
    sparse = m.put("sparse.dcm", b"")
    os.truncate(sparse, 24 << 20)
    m.stamp(sparse)
    m.put(b"not-utf8-\xff\xfe.dcm", m.stock["mr"])
    m.put(b"latin1-\xe9t\xe9.dcm", m.flips())
    m.put("L" * 246 + ".dcm", m.stock["ct"])
    m.put("l" * 246 + ".bin", os.urandom(100))
    m.put("line\nbreak\t.dcm", m.truncated())
    m.put("-rf --quote\"'.dcm", m.flips())
    # Modality names a directory of the instances table: values no directory can be named
    m.put("modality-long.dcm", m.modality("CT" * 150))
    m.put("modality-control.dcm", m.modality("CT\x00\x1b/../\n"))
    m.put("modality-path.dcm", m.modality("CT/../MR"))  # no defined term: the null partition
    secret = outside / "secret.dcm"
    secret.write_bytes(m.stock["ct"][:-2] + b"\x01\x02")
    (landing / "sub").mkdir()
    m.put("inside.dcm", m.stock["emri"], landing / "sub")
    m.link("loop", "loop")
    m.link("dangling.dcm", "does-not-exist.dcm")
    m.link("zero.dcm", "/dev/zero")
    m.link("outside.dcm", secret)
    m.link("environ", "/proc/self/environ")
    m.link("to-dir", "sub")
    m.link("to-file.dcm", "sub/inside.dcm")
    m.link("to-outside-dir", outside)
    os.mkfifo(landing / "fifo.dcm")
    m.stamp(landing / "fifo.dcm")
    # Hidden and temporary names: never read, counted
    m.put(".hidden.dcm", m.stock["ct"])
    m.put("upload.dcm._COPYING_", m.stock["ct"])
    m.put("_SUCCESS", b"")
    for hidden in ("_temporary", ".Trash"):  # a directory of half-written output, a bin
        (landing / hidden).mkdir()
        m.put("left.dcm", m.stock["ct"], landing / hidden)
    for path in good_samples():
        m.put(f"good-{path.parent.name}-{path.name}", path.read_bytes())
    # Spread over nested directories, as a real landing zone is
    for made in range(count):
        mutate = mutations[made % len(mutations)]
        directory = landing / f"batch{made // 100:03d}"
        directory.mkdir(exist_ok=True)
        m.put(f"{mutate.__name__}-{made:05d}.dcm", mutate(), directory)
    for directory in sorted(landing.rglob("*"), reverse=True):
        if directory.is_dir() and not directory.is_symlink():
            m.stamp(directory)


def hostile_count(default: int = 1000) -> int:
    """How many hostile inputs to make: ``HOSTILE_LANDING_COUNT``, else ``default``."""
    return int(os.environ.get("HOSTILE_LANDING_COUNT", default))
