"""The restricted table's column keys (PME) are wrapped by the keyring's KEKs: a public-only
keyring writes them and cannot read them; older files open with the full keyring only."""

from __future__ import annotations

import base64
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import IntegrityError, MissingKeyError, PrivateKeyRequiredError

TABLE = pa.table({"pseudonym": ["p1", "p2"], "original": ["Doe^Jane", "Roe^Rick"]})


def _write(props) -> bytes:
    out = io.BytesIO()
    pq.write_table(TABLE, out, encryption_properties=props)
    return out.getvalue()


def _read(data: bytes, keyring: Keyring) -> pa.Table:
    with kms.decrypting(keyring) as props:
        return pq.read_table(io.BytesIO(data), decryption_properties=props)


@pytest.mark.parametrize("mode", ["symmetric", "x25519"])
def test_what_wraps_and_what_reads(mode):
    full = Keyring.generate(mode)
    writer = full.public_only() if mode == "x25519" else full
    data = _write(kms.encryption_properties(writer, ["original"]))
    assert b"Doe^Jane" not in data
    assert _read(data, full).equals(TABLE)
    assert pq.read_table(io.BytesIO(data), columns=["pseudonym"]).column(0).to_pylist() == [
        "p1",
        "p2",
    ]
    with pytest.raises(MissingKeyError):
        _read(data, Keyring.generate(mode))


def test_a_public_keyring_cannot_read_what_it_wrote():
    public = Keyring.generate("x25519").public_only()
    data = _write(kms.encryption_properties(public, ["original"]))
    with pytest.raises(PrivateKeyRequiredError):
        _read(data, public)


def test_the_wrapped_column_key_opens_with_the_documented_algorithm():
    """The footer's wrapped key, opened by the format kms.py documents, written here again."""
    full = Keyring.generate("x25519")
    data = _write(kms.encryption_properties(full.public_only(), ["original"]))
    [(kek_id, secret, public)] = full.keks()
    wrapped = next(
        part for part in data.split(b'"') if part.startswith(b"k1:" + kek_id.encode() + b":")
    )
    raw = base64.b64decode(wrapped.split(b":", 2)[2])
    ephemeral, nonce, sealed = raw[:32], raw[32:44], raw[44:]
    context = b"dicomlake-pme\x00" + kms.COLUMN_KEY_ID.encode()
    shared = X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(ephemeral)
    )
    info = b"dicomlake-x25519-wrap-v1\x00" + kek_id.encode() + b"\x00" + context
    key = HKDF(hashes.SHA256(), 32, salt=ephemeral + public, info=info).derive(shared)
    aad = b"dicomlake-wrap-v1\x00" + kek_id.encode() + b"\x00" + context
    assert len(AESGCM(key).decrypt(nonce, sealed, aad)) == 32


class _LegacyClient(pe.KmsClient):
    """The wrapping of older versions: AES-GCM under a master key from the pseudonym secret."""

    def __init__(self, master: bytes) -> None:
        super().__init__()
        self.master = master

    def wrap_key(self, key_bytes, master_key_identifier):
        nonce = os.urandom(12)
        aad = b"dicomlake-pme-v1\x00" + master_key_identifier.encode()
        return base64.b64encode(nonce + AESGCM(self.master).encrypt(nonce, key_bytes, aad)).decode()

    def unwrap_key(self, wrapped_key, master_key_identifier):
        raise AssertionError("not used")


def test_older_files_open_with_the_full_keyring_only():
    full = Keyring.generate("x25519")
    master = full.secret_for("parquet-kms")
    factory = pe.CryptoFactory(lambda _config: _LegacyClient(master))
    props = factory.file_encryption_properties(
        pe.KmsConnectionConfig(key_access_token="legacy"),
        pe.EncryptionConfiguration(
            footer_key=kms.FOOTER_KEY_ID,
            column_keys={kms.COLUMN_KEY_ID: ["original"]},
            plaintext_footer=True,
            data_key_length_bits=256,
        ),
    )
    data = _write(props)
    assert _read(data, full).equals(TABLE)
    with pytest.raises(PrivateKeyRequiredError):
        _read(data, full.public_only())
    with pytest.raises(IntegrityError):
        _read(data, Keyring.generate("x25519"))
