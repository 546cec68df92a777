"""AES-256-GCM sealing of chunks."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicomlake.crypto.envelope import new_data_key, open_sealed, seal
from dicomlake.errors import KeyringError, TamperedChunkError


def test_sealed_layout_is_nonce_ciphertext_tag_and_opens_with_plain_aes_gcm():
    key, plaintext, aad = new_data_key(), b"pixel bytes " * 10, b"pack-1|frame|0"
    sealed = seal(key, plaintext, aad)
    assert len(key) == 32 and len(sealed) == 12 + len(plaintext) + 16
    assert AESGCM(key).decrypt(sealed[:12], sealed[12:], aad) == plaintext  # independent
    assert open_sealed(key, sealed, aad, what="pack p chunk c") == plaintext
    assert seal(key, plaintext, aad)[:12] != sealed[:12]  # fresh nonce each time


@pytest.mark.parametrize(
    "change",
    [
        lambda k, s, a: (k, s[:20] + bytes([s[20] ^ 1]) + s[21:], a),  # flipped byte
        lambda k, s, a: (k, s, a + b"x"),  # other place (aad)
        lambda k, s, a: (new_data_key(), s, a),  # other key
        lambda k, s, a: (k, s[:27], a),  # too short
    ],
)
def test_any_change_fails_naming_the_chunk(change):
    key, aad = new_data_key(), b"aad"
    key, sealed, aad = change(key, seal(key, b"secret pixels", aad), aad)
    with pytest.raises(TamperedChunkError, match="pack P chunk 1.2.3/frame/4"):
        open_sealed(key, sealed, aad, what="pack P chunk 1.2.3/frame/4")


def test_data_key_length_is_checked():
    with pytest.raises(KeyringError, match="32 bytes"):
        seal(b"short", b"x", b"")
