"""docs/FORMATS.md is enough to read what dicomlake writes.

Each test reads dicomlake's output with a second implementation written from FORMATS.md alone
(`struct`, `json`, `hashlib`, `hmac` and the `cryptography` primitives, no dicomlake reader), so
a change of format that the document does not follow fails here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import struct
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydicom.data import get_testdata_file

from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.split import split_instance
from dicomlake.pixels.pack import PackWriter

PACK_ID = "20261205T160205Z-0a1b2c-t00003-a0-001"


def _hkdf(ikm: bytes, info: bytes, salt: bytes = bytes(32)) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=salt, info=info).derive(ikm)


def _gcm_open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:12], blob[12:], aad)


def _unwrap(keyring_doc: dict, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
    """FORMATS.md "Key wrapping (wrap v1)", from the keyring file's JSON."""
    kek = next(k for k in keyring_doc["keks"] if k["id"] == kek_id)
    aad = b"dicomlake-wrap-v1\0" + kek_id.encode() + b"\0" + context
    if keyring_doc["mode"] == "symmetric":
        assert len(wrapped) == 60
        return _gcm_open(base64.b64decode(kek["key"]), wrapped, aad)
    assert len(wrapped) == 92
    ephemeral, public = wrapped[:32], base64.b64decode(kek["public"])
    private = X25519PrivateKey.from_private_bytes(base64.b64decode(kek["private"]))
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
    info = b"dicomlake-x25519-wrap-v1\0" + kek_id.encode() + b"\0" + context
    return _gcm_open(_hkdf(shared, info, salt=ephemeral + public), wrapped[32:], aad)


def _decode(codec: str, encoded: bytes, raw_length: int) -> bytes:
    if codec == "store":
        return encoded
    assert codec == "zstd", f"this reader knows store and zstd, not {codec}"
    return zstandard.ZstdDecompressor().decompress(encoded, max_output_size=raw_length)


@pytest.mark.parametrize("mode", ["symmetric", "x25519"])
def test_a_pack_reads_back_as_formats_md_describes_it(mode):
    original = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    split = split_instance(original)
    instance = hashlib.sha256(original).hexdigest()
    keyring = Keyring.generate(mode)
    writer_ring = keyring.public_only() if mode == "x25519" else keyring
    out = io.BytesIO()
    writer = PackWriter(out, PACK_ID, writer_ring)
    writer.add(instance=instance, kind="prefix", index=0, raw=split.prefix)
    for n, frame in enumerate(split.frames, 1):
        writer.add(instance=instance, kind="frame", index=n, raw=frame, codec="zstd")
    writer.add(instance=instance, kind="suffix", index=0, raw=split.suffix)
    writer.close()
    pack = out.getvalue()

    assert pack[:8] == b"DLPACK1\0"
    (header_len,) = struct.unpack_from("<I", pack, 8)
    data_start = 12 + header_len
    header = json.loads(pack[12:data_start])
    assert header_len <= 65524
    assert header["format_version"] == 1 and header["pack_id"] == PACK_ID
    data_key = _unwrap(
        json.loads(keyring.to_bytes()),
        header["kek_id"],
        base64.b64decode(header["wrapped_key"]),
        PACK_ID.encode(),
    )

    assert pack[-9:] == b"DLPACKEND"
    (index_len,) = struct.unpack_from("<Q", pack, len(pack) - 17)
    sealed_index = pack[len(pack) - 17 - index_len : len(pack) - 17]
    index_aad = PACK_ID.encode() + b"\0index\0" + hashlib.sha256(pack[:data_start]).digest()
    index = json.loads(_gcm_open(data_key, sealed_index, index_aad))
    fields = ["instance", "kind", "index", "offset", "length", "codec", "raw_length", "raw_sha256"]
    assert [list(record) for record in index] == [fields] * len(index)
    assert [(r["kind"], r["index"]) for r in index] == [
        ("prefix", 0),
        *(("frame", n) for n in range(1, len(split.frames) + 1)),
        ("suffix", 0),
    ]

    rebuilt = b""
    for r in index:
        sealed = pack[r["offset"] : r["offset"] + r["length"]]
        described = [PACK_ID, r["instance"], r["kind"], r["index"], r["codec"], r["raw_length"]]
        aad = b"DLPACK1 chunk\0" + json.dumps(described, separators=(",", ":")).encode()
        raw = _decode(r["codec"], _gcm_open(data_key, sealed, aad), r["raw_length"])
        assert len(raw) == r["raw_length"]
        assert hashlib.sha256(raw).hexdigest() == r["raw_sha256"]
        rebuilt += raw
    assert rebuilt == original  # prefix + frames + suffix is the file, byte for byte
    assert index[-1]["offset"] + index[-1]["length"] == len(pack) - 17 - index_len


def test_the_keyring_file_and_its_derived_secrets_are_as_formats_md_describes():
    keyring = Keyring.generate("x25519")
    doc = json.loads(keyring.public_only().to_bytes())
    assert (doc["format"], doc["version"], doc["mode"]) == ("dicomlake-keyring", 1, "x25519")
    assert doc["active_kek_id"] == doc["keks"][0]["id"]
    assert set(doc["keks"][0]) == {"id", "created", "public"}  # no private half
    secret = base64.b64decode(doc["secret"])
    for purpose in ("pseudonym", "parquet-kms"):
        expected = _hkdf(secret, b"dicomlake-secret-v1\0" + purpose.encode())
        assert keyring.secret_for(purpose) == expected


@pytest.mark.parametrize("mode", ["symmetric", "x25519"])
def test_pme_keys_wrap_as_formats_md_describes(mode):
    keyring = Keyring.generate(mode)
    writer = keyring.public_only() if mode == "x25519" else keyring
    text = kms.wrap_key(writer, b"k" * 32, "dicomlake-identities")
    prefix, kek_id, wrapped = text.split(":")
    assert (prefix, kek_id) == ("k1", keyring.active_kek_id)
    context = b"dicomlake-pme\0dicomlake-identities"
    doc = json.loads(keyring.to_bytes())
    assert _unwrap(doc, kek_id, base64.b64decode(wrapped), context) == b"k" * 32
    state = f"{keyring.fingerprint}\0{','.join(keyring.kek_ids)}\0{keyring.can_unwrap}"
    token = hmac.new(b"dicomlake-pme-token-v2\0", state.encode(), hashlib.sha256).hexdigest()
    assert kms.spark_options(keyring)["parquet.encryption.key.access.token"] == token[:32]
    secret = base64.b64decode(doc["secret"])
    fingerprint = hmac.new(secret, b"dicomlake-keyring-fingerprint-v1", hashlib.sha256)
    assert keyring.fingerprint == fingerprint.hexdigest()[:32]
