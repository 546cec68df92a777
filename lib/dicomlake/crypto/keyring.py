"""Key-encryption keys (KEKs) that wrap per-pack data keys.

Two modes:

* ``symmetric``: each KEK is an AES-256 key; wrapping is AES-256-GCM.
* ``x25519``: each KEK is an X25519 key pair; wrapping is ephemeral X25519 -> HKDF-SHA256 ->
  AES-256-GCM, so ingest hosts can hold `public_only()` keyrings that wrap but never unwrap.

Every wrap binds the KEK id and a caller's context (the pack id) as associated data, so a
wrapped key copied to another pack, or relabelled with another KEK id, fails to open.

The keyring also carries a dedicated random secret from which `secret_for` derives
purpose-bound secrets (e.g. HMAC pseudonyms); it is kept in public-only keyrings too.

Serialized as JSON (`to_bytes`/`from_bytes`); the caller stores the bytes (mode 0600).

>>> ring = Keyring.generate("x25519")                    # doctest: +SKIP
>>> kek_id, wrapped = ring.public_only().wrap(key, b"pack-1")
>>> ring.unwrap(kek_id, wrapped, b"pack-1") == key
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dicomlake.errors import (
    IntegrityError,
    KeyringError,
    MissingKeyError,
    PrivateKeyRequiredError,
)

FORMAT = "dicomlake-keyring"
VERSION = 1
MODES = ("symmetric", "x25519")
_KEY = 32
_NONCE = 12
_TAG = 16
_WRAP_AAD = b"dicomlake-wrap-v1\0"
_X25519_INFO = b"dicomlake-x25519-wrap-v1\0"
_SECRET_INFO = b"dicomlake-secret-v1\0"
_FINGERPRINT_LABEL = b"dicomlake-keyring-fingerprint-v1"
_KEK_DIGEST_LABEL = b"dicomlake-kek-digest-v1\0"
_KEK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class _Kek:
    kek_id: str
    created: str
    secret: bytes | None  # AES key (symmetric) or raw X25519 private key; None if public-only
    public: bytes | None  # raw X25519 public key; None in symmetric mode


class Keyring:
    """An immutable set of KEKs with ids, one of them active for wrapping."""

    __slots__ = ("_active", "_keks", "_mode", "_secret")

    def __init__(self, mode: str, keks: list[_Kek], active_kek_id: str, secret: bytes) -> None:
        if mode not in MODES:
            raise KeyringError(f"keyring: mode must be one of {MODES}, got {mode!r}")
        ids = [k.kek_id for k in keks]
        for kek_id in ids:
            _check_kek_id(kek_id)
        if len(set(ids)) != len(ids):
            raise KeyringError(f"keyring: duplicate kek ids in {ids}")
        if active_kek_id not in ids:
            raise KeyringError(f"keyring: active kek {active_kek_id!r} is not among {ids}")
        if len(secret) != _KEY:
            raise KeyringError(f"keyring: secret must be {_KEY} bytes, got {len(secret)}")
        self._mode = mode
        self._keks = {k.kek_id: k for k in keks}
        self._active = active_kek_id
        self._secret = secret

    # -- construction and serialization ------------------------------------------------

    @classmethod
    def generate(cls, mode: str = "symmetric") -> Keyring:
        """A new keyring with one fresh KEK ("symmetric" or "x25519") and a fresh secret."""
        if mode not in MODES:
            raise KeyringError(f"keyring: mode must be one of {MODES}, got {mode!r}")
        kek = _new_kek(mode, existing=())
        return cls(mode, [kek], kek.kek_id, os.urandom(_KEY))

    @classmethod
    def from_bytes(cls, data: bytes) -> Keyring:
        """Parse `to_bytes` output; KeyringError naming the field that is wrong."""
        try:
            doc = json.loads(data)
        # ValueError: also a number of more digits than int() converts
        except (ValueError, RecursionError) as exc:
            raise KeyringError(f"keyring: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise KeyringError(f"keyring: expected a JSON object, got {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise KeyringError(
                f"keyring: field 'format' must be {FORMAT!r}, got {doc.get('format')!r}"
            )
        _check_version(doc)
        mode = _field(doc, "mode", str, "keyring")
        if mode not in MODES:
            raise KeyringError(f"keyring: mode must be one of {MODES}, got {mode!r}")
        keks_doc = _field(doc, "keks", list, "keyring")
        if not keks_doc:
            raise KeyringError("keyring: field 'keks' is empty")
        keks = [_kek_from_doc(mode, item, n) for n, item in enumerate(keks_doc)]
        secret = _b64(_field(doc, "secret", str, "keyring"), "keyring field 'secret'")
        return cls(mode, keks, _field(doc, "active_kek_id", str, "keyring"), secret)

    def to_bytes(self) -> bytes:
        """JSON serialization; contains secret key material unless `public_only()`."""
        keks = []
        for kek in self._keks.values():
            item: dict[str, str] = {"id": kek.kek_id, "created": kek.created}
            if self._mode == "symmetric":
                assert kek.secret is not None
                item["key"] = _b64e(kek.secret)
            else:
                assert kek.public is not None
                item["public"] = _b64e(kek.public)
                if kek.secret is not None:
                    item["private"] = _b64e(kek.secret)
            keks.append(item)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "mode": self._mode,
            "active_kek_id": self._active,
            "keks": keks,
            "secret": _b64e(self._secret),
        }
        return json.dumps(doc, indent=2).encode()

    # -- lifecycle ------------------------------------------------------------------------

    def rotate(self) -> Keyring:
        """A keyring with a new active KEK of the same mode; old KEKs stay for unwrapping."""
        if not self.can_unwrap:
            raise KeyringError(
                "keyring: cannot rotate a public-only keyring (the new private key would be "
                "lost); rotate the full keyring, then export public_only()"
            )
        kek = _new_kek(self._mode, existing=self._keks)
        return Keyring(self._mode, [*self._keks.values(), kek], kek.kek_id, self._secret)

    def without(self, kek_id: str) -> Keyring:
        """A keyring without the old KEK `kek_id`; the active KEK cannot be dropped."""
        self._kek(kek_id)
        if kek_id == self._active:
            raise KeyringError(
                f"keyring: {kek_id!r} is the active kek: make a new one first with `dicomlake "
                "keys rotate --lake <lake>` (which re-wraps the lake under it), then drop it"
            )
        rest = [k for k in self._keks.values() if k.kek_id != kek_id]
        return Keyring(self._mode, rest, self._active, self._secret)

    def public_only(self) -> Keyring:
        """x25519 mode: the same keyring with private halves removed (wraps, cannot unwrap)."""
        if self._mode != "x25519":
            raise KeyringError("keyring: a symmetric keyring has no public half; use mode x25519")
        keks = [replace(k, secret=None) for k in self._keks.values()]
        return Keyring(self._mode, keks, self._active, self._secret)

    @property
    def mode(self) -> str:
        """ "symmetric" or "x25519"."""
        return self._mode

    @property
    def active_kek_id(self) -> str:
        """Id of the KEK that `wrap` uses."""
        return self._active

    @property
    def kek_ids(self) -> list[str]:
        """All KEK ids, oldest first."""
        return list(self._keks)

    def keks(self) -> list[tuple[str, bytes | None, bytes | None]]:
        """(id, secret, public) of every KEK, oldest first: for the Java twin of the KMS
        (`dicomlake.crypto.kms.spark_options`). The secret is the AES key (symmetric) or the raw
        X25519 private key, None in a public-only keyring; public is None in symmetric mode."""
        return [(k.kek_id, k.secret, k.public) for k in self._keks.values()]

    @property
    def can_unwrap(self) -> bool:
        """False for a public-only keyring."""
        return all(k.secret is not None for k in self._keks.values())

    def require_private(self, needs: str) -> None:
        """Raise PrivateKeyRequiredError, saying what ``needs`` the private keys, for a
        public-only keyring."""
        if not self.can_unwrap:
            raise PrivateKeyRequiredError(
                f"{needs} needs the full keyring: this one holds only public keys (an ingest "
                "host's), which write what is encrypted but cannot read it"
            )

    # -- wrapping -------------------------------------------------------------------------

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap `data_key` with the active KEK, binding `context`; returns (kek_id, blob)."""
        if len(data_key) != _KEY:
            raise KeyringError(f"keyring: a data key must be {_KEY} bytes, got {len(data_key)}")
        kek = self._keks[self._active]
        aad = _wrap_aad(kek.kek_id, context)
        nonce = os.urandom(_NONCE)
        if self._mode == "symmetric":
            assert kek.secret is not None
            return kek.kek_id, nonce + AESGCM(kek.secret).encrypt(nonce, data_key, aad)
        assert kek.public is not None
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(kek.public))
        key = _x25519_key(shared, ephemeral_public, kek.public, kek.kek_id, context)
        return kek.kek_id, ephemeral_public + nonce + AESGCM(key).encrypt(nonce, data_key, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        """The data key inside `wrapped`.

        Raises MissingKeyError if `kek_id` is not here, PrivateKeyRequiredError for a
        public-only KEK, IntegrityError if the blob was altered or `context` differs.
        """
        kek = self._kek(kek_id)
        if kek.secret is None:
            raise PrivateKeyRequiredError(
                f"keyring holds only the public half of {kek_id!r}: unwrapping needs the "
                "full keyring with the private key"
            )
        aad = _wrap_aad(kek_id, context)
        fail = IntegrityError(
            f"wrapped data key for kek {kek_id!r} did not open: it was altered, or it "
            f"belongs to another context than {context!r}"
        )
        try:
            if self._mode == "symmetric":
                if len(wrapped) != _NONCE + _KEY + _TAG:
                    raise fail
                return AESGCM(kek.secret).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
            if len(wrapped) != _KEY + _NONCE + _KEY + _TAG:
                raise fail
            ephemeral_public, nonce, sealed = wrapped[:_KEY], wrapped[_KEY:44], wrapped[44:]
            assert kek.public is not None
            private = X25519PrivateKey.from_private_bytes(kek.secret)
            shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
            key = _x25519_key(shared, ephemeral_public, kek.public, kek_id, context)
            return AESGCM(key).decrypt(nonce, sealed, aad)
        except (InvalidTag, ValueError):  # ValueError: a low-order ephemeral point
            raise fail from None

    def rewrap(self, kek_id: str, wrapped: bytes, context: bytes) -> tuple[str, bytes]:
        """Unwrap with `kek_id` and wrap again with the active KEK (rotation, no re-encryption)."""
        return self.wrap(self.unwrap(kek_id, wrapped, context), context)

    def secret_for(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose` (e.g. "pseudonym"), derived by HKDF-SHA256."""
        if not purpose:
            raise KeyringError("keyring: secret_for() needs a non-empty purpose")
        hkdf = HKDF(hashes.SHA256(), _KEY, salt=None, info=_SECRET_INFO + purpose.encode())
        return hkdf.derive(self._secret)

    @property
    def fingerprint(self) -> str:
        """Names the keyring's secret without revealing it (HMAC of a fixed label under it);
        the same for the full keyring and its `public_only()` half."""
        return hmac.new(self._secret, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]

    @property
    def kek_digests(self) -> dict[str, str]:
        """Per KEK id, a SHA-256 of the key that wraps: the public key (x25519, the same for
        the full keyring and its public half) or the AES key (symmetric; one-way, it reveals
        nothing of a random 256-bit key). A lake records them, so a keyring whose key was
        replaced under a known id is refused before it wraps for someone else."""
        return {
            k.kek_id: hashlib.sha256(
                _KEK_DIGEST_LABEL
                + k.kek_id.encode()
                + b"\0"
                + (k.public if k.public is not None else k.secret or b"")
            ).hexdigest()
            for k in self._keks.values()
        }

    def __repr__(self) -> str:
        return (
            f"Keyring(mode={self._mode!r}, active_kek_id={self._active!r}, "
            f"keks={len(self._keks)}, can_unwrap={self.can_unwrap})"
        )

    def _kek(self, kek_id: str) -> _Kek:
        try:
            return self._keks[kek_id]
        except KeyError:
            raise MissingKeyError(
                f"kek {kek_id!r} is not in this keyring (it holds {list(self._keks)}): it was "
                "rotated out, or this is another keyring"
            ) from None


def _check_kek_id(kek_id: str) -> None:
    """A KEK id is written into wrapped PME keys (``k1:<id>:<base64>``, split at ':'), the
    associated data (after a NUL) and error messages: a conservative charset keeps all of them
    unambiguous."""
    if not _KEK_ID.fullmatch(kek_id):
        raise KeyringError(
            f"keyring: kek id {kek_id!r} is not a valid KEK id (1 to 64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit)"
        )


def _new_kek(mode: str, existing: Collection[str]) -> _Kek:
    now = datetime.now(timezone.utc)
    while True:  # 32 random bits: a clash with an existing id is possible, if unlikely
        kek_id = f"kek-{now:%Y%m%d}-{os.urandom(4).hex()}"
        if kek_id not in existing:
            break
    created = now.isoformat(timespec="seconds")
    if mode == "symmetric":
        return _Kek(kek_id, created, AESGCM.generate_key(256), None)
    private = X25519PrivateKey.generate()
    return _Kek(
        kek_id, created, private.private_bytes_raw(), private.public_key().public_bytes_raw()
    )


def _kek_from_doc(mode: str, item: Any, n: int) -> _Kek:
    where = f"keyring kek #{n}"
    if not isinstance(item, dict):
        raise KeyringError(f"{where}: expected a JSON object, got {type(item).__name__}")
    kek_id = _field(item, "id", str, where)
    created = _field(item, "created", str, where)
    where = f"keyring kek {kek_id!r}"
    if mode == "symmetric":
        return _Kek(kek_id, created, _b64(_field(item, "key", str, where), f"{where} 'key'"), None)
    public = _b64(_field(item, "public", str, where), f"{where} 'public'")
    try:  # a low-order point gives no shared secret: every wrap under it would fail
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise KeyringError(f"{where}: 'public' is no usable X25519 public key") from None
    private = None
    if "private" in item:
        private = _b64(_field(item, "private", str, where), f"{where} 'private'")
        derived = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
        if derived != public:
            raise KeyringError(f"{where}: 'private' does not match 'public'")
    return _Kek(kek_id, created, private, public)


def _check_version(doc: dict[str, Any]) -> None:
    """The version read here, as an integer (`_field`: not ``true`` or ``1.0``, which compare
    equal to 1 in Python); a huge one is named by its size, not its thousands of digits."""
    version = _field(doc, "version", int, "keyring")
    if version != VERSION:
        shown = version if version.bit_length() <= 64 else f"of {version.bit_length()} bits"
        raise KeyringError(f"keyring: version {shown} is not supported (this reads {VERSION})")


def _field(doc: dict[str, Any], name: str, kind: type, where: str) -> Any:
    """``doc[name]``, of type ``kind`` (a bool is not an int, though Python makes it one)."""
    if name not in doc:
        raise KeyringError(f"{where}: field {name!r} is missing")
    value = doc[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise KeyringError(
            f"{where}: field {name!r} must be {article} {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _b64(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: not valid base64") from None
    if len(raw) != _KEY:
        raise KeyringError(f"{where}: must decode to {_KEY} bytes, got {len(raw)}")
    return raw


def _b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _wrap_aad(kek_id: str, context: bytes) -> bytes:
    return _WRAP_AAD + kek_id.encode() + b"\0" + context


def _x25519_key(
    shared: bytes, ephemeral: bytes, recipient: bytes, kek_id: str, context: bytes
) -> bytes:
    info = _X25519_INFO + kek_id.encode() + b"\0" + context
    return HKDF(hashes.SHA256(), _KEY, salt=ephemeral + recipient, info=info).derive(shared)
