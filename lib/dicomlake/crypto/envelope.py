"""AES-256-GCM sealing of chunks with a per-pack data key.

A sealed blob is nonce(12) || ciphertext || tag(16). The associated data is not stored: the
reader rebuilds it from where it expects the blob to be, so a moved blob fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicomlake.errors import KeyringError, TamperedChunkError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
"""Bytes a sealed blob adds to its plaintext."""


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(KEY_BYTES)


def seal(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate `plaintext`, binding `aad`; returns nonce || ciphertext || tag.

    Random 96-bit nonces are safe here: one data key seals one pack (far below 2**32 seals).
    """
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _aead(data_key).encrypt(nonce, plaintext, aad)


def open_sealed(data_key: bytes, sealed: bytes, aad: bytes, *, what: str) -> bytes:
    """Decrypt a blob made by `seal` with the same `aad`.

    Raises TamperedChunkError naming `what` (e.g. "pack P chunk I/frame/3") if the blob is
    too short, was altered, moved, or the data key is wrong.
    """
    if len(sealed) < OVERHEAD:
        raise TamperedChunkError(
            f"{what}: sealed blob is {len(sealed)} bytes, shorter than the {OVERHEAD}-byte minimum"
        )
    try:
        return _aead(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise TamperedChunkError(
            f"{what} failed authentication: altered or moved bytes, or the wrong data key"
        ) from None


def _aead(data_key: bytes) -> AESGCM:
    if len(data_key) != KEY_BYTES:
        raise KeyringError(f"a data key must be {KEY_BYTES} bytes, got {len(data_key)}")
    return AESGCM(data_key)
