"""Parquet Modular Encryption (PME) keys from the keyring, for pyarrow and for Spark.

PME encrypts chosen columns of a Parquet file with data keys, each wrapped by a "KMS" under a
named master key and stored in the file's footer (single wrapping: our writers turn off the
default double wrapping). Our KMS is the keyring: `Keyring.wrap` with its active KEK, as for a
pack's data key, so what decrypts the identified columns is exactly what decrypts the pixels.
In x25519 mode an ingest host's public-only keyring writes the restricted table but cannot
read it.

Wrapping format (the same bytes from Python and Java, so either reads the other's files)::

    "k1:" + kek_id + ":" + base64(Keyring.wrap(key, context=b"dicomlake-pme\x00" + identifier))

Files of older versions hold ``base64(nonce || AES-256-GCM(master, key))`` under a master key
derived from the keyring's pseudonym secret, which public-only keyrings hold too: they are read
only with a keyring that can unwrap, and `dicomlake keys rotate --lake` rewrites them.

- pyarrow: `crypto_factory` / `encryption_properties` / `decryption_properties` below.
- Spark (parquet-java's ``PropertiesDrivenCryptoFactory``): the Java twin
  ``org.dicomlake.kms.KeyringKmsClient`` (``java/``, built by ``dev/build_kms_jar.py`` into
  ``.cache/dicomlake-kms.jar``) reads the KEKs from the Hadoop property
  ``dicomlake.kms.keyring.secret``; `spark_options` gives every property a reader needs::

      spark-submit --jars .cache/dicomlake-kms.jar ...
      spark.read.options(**spark_options(keyring)).parquet(f"{lake}/restricted/identities")

  The property name contains "secret", so Spark's default ``spark.redaction.regex`` hides its
  value in the UI and event logs. Never log the options themselves.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import IntegrityError

LEGACY_PURPOSE = "parquet-kms"  # Keyring.secret_for(LEGACY_PURPOSE): older files' master key
FOOTER_KEY_ID = "dicomlake-footer"  # signs the plaintext footer
COLUMN_KEY_ID = "dicomlake-identities"  # encrypts the identified columns
JAVA_KMS_CLASS = "org.dicomlake.kms.KeyringKmsClient"
CRYPTO_FACTORY_CLASS = "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory"
SECRET_PROPERTY = "dicomlake.kms.keyring.secret"
ALGORITHM = "AES_GCM_V1"
_PREFIX = "k1:"
_CONTEXT = b"dicomlake-pme\x00"
_LEGACY_AAD = b"dicomlake-pme-v1\x00"
_NONCE = 12
_TOKEN_INFO = b"dicomlake-pme-token-v2\x00"


def access_token(keyring: Keyring) -> str:
    """A non-secret name of this keyring's KEKs and whether it can unwrap, used as PME's key
    access token.

    pyarrow and parquet-java cache KMS clients and unwrapped keys per access token: a token per
    keyring keeps two keyrings (a full one and its public half, or a rotated one) in one
    process (or JVM) from sharing a cache entry.
    """
    state = f"{keyring.fingerprint}\0{','.join(keyring.kek_ids)}\0{keyring.can_unwrap}"
    return hmac.new(_TOKEN_INFO, state.encode(), hashlib.sha256).hexdigest()[:32]


def wrap_key(keyring: Keyring, key: bytes, identifier: str) -> str:
    """Wrap a PME key with the keyring's active KEK for the master key ``identifier``."""
    kek_id, wrapped = keyring.wrap(key, _CONTEXT + identifier.encode("utf-8"))
    return f"{_PREFIX}{kek_id}:{base64.b64encode(wrapped).decode('ascii')}"


def unwrap_key(keyring: Keyring, wrapped: str, identifier: str) -> bytes:
    """The PME key inside ``wrapped``: PrivateKeyRequiredError for a public-only keyring,
    MissingKeyError when its KEK is not in the keyring, IntegrityError when altered."""
    if not wrapped.startswith(_PREFIX):
        return _unwrap_legacy(keyring, wrapped, identifier)
    kek_id, _, text = wrapped[len(_PREFIX) :].partition(":")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise IntegrityError(
            f"a Parquet encryption key wrapped for {identifier!r} is not base64"
        ) from None
    return keyring.unwrap(kek_id, raw, _CONTEXT + identifier.encode("utf-8"))


def _unwrap_legacy(keyring: Keyring, wrapped: str, identifier: str) -> bytes:
    keyring.require_private("reading the restricted table")
    master = keyring.secret_for(LEGACY_PURPOSE)
    try:
        raw = base64.b64decode(wrapped, validate=True)
        aad = _LEGACY_AAD + identifier.encode("utf-8")
        return AESGCM(master).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (InvalidTag, ValueError, binascii.Error):
        raise IntegrityError(
            f"a Parquet encryption key wrapped for {identifier!r} did not open: the file was "
            "written with another keyring's secret, or it was altered"
        ) from None


def _kms_client_class() -> type:
    import pyarrow.parquet.encryption as pe

    class KeyringKmsClient(pe.KmsClient):  # type: ignore[misc]  # pyarrow ships no types
        """pyarrow's side of the KMS: wraps with the keyring's active KEK."""

        def __init__(self, keyring: Keyring) -> None:
            super().__init__()
            self._keyring = keyring

        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            return wrap_key(self._keyring, key_bytes, master_key_identifier)

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            return unwrap_key(self._keyring, wrapped_key, master_key_identifier)

        def __repr__(self) -> str:
            return f"KeyringKmsClient({self._keyring!r})"

    return KeyringKmsClient


def crypto_factory(keyring: Keyring) -> tuple[Any, Any]:
    """(pyarrow ``CryptoFactory``, ``KmsConnectionConfig``) for this keyring's KEKs."""
    import pyarrow.parquet.encryption as pe

    client_class = _kms_client_class()
    factory: Callable[[object], object] = lambda _config: client_class(keyring)  # noqa: E731
    config = pe.KmsConnectionConfig(key_access_token=access_token(keyring))
    return pe.CryptoFactory(factory), config


def encryption_properties(keyring: Keyring, encrypted_columns: list[str]) -> Any:
    """pyarrow ``FileEncryptionProperties``: ``encrypted_columns`` under `COLUMN_KEY_ID`,
    the other columns and the footer in clear (the footer signed with `FOOTER_KEY_ID`)."""
    import pyarrow.parquet.encryption as pe

    factory, config = crypto_factory(keyring)
    encryption = pe.EncryptionConfiguration(
        footer_key=FOOTER_KEY_ID,
        column_keys={COLUMN_KEY_ID: list(encrypted_columns)},
        encryption_algorithm=ALGORITHM,
        plaintext_footer=True,
        data_key_length_bits=256,
        # Each 32-byte data key wrapped by the keyring itself (no 16-byte key-encryption key
        # in between, which Keyring.wrap does not take).
        double_wrapping=False,
    )
    return factory.file_encryption_properties(config, encryption)


def decryption_properties(keyring: Keyring) -> Any:
    """pyarrow ``FileDecryptionProperties`` that open files written by either side."""
    factory, config = crypto_factory(keyring)
    import pyarrow.parquet.encryption as pe

    return factory.file_decryption_properties(config, pe.DecryptionConfiguration())


@contextlib.contextmanager
def decrypting(keyring: Keyring) -> Iterator[object]:
    """`decryption_properties` whose factory's key caches are dropped on exit.

    The caches hold the Python KMS client; releasing them while the interpreter is alive
    keeps them out of process teardown.
    """
    import pyarrow.parquet.encryption as pe

    factory, config = crypto_factory(keyring)
    props = factory.file_decryption_properties(config, pe.DecryptionConfiguration())
    try:
        yield props
    finally:
        del props
        factory.remove_cache_entries_for_all_tokens()


def spark_options(keyring: Keyring) -> Mapping[str, str]:
    """Hadoop properties for Spark's Parquet reader/writer to use this keyring's PME keys.

    Pass them as data source options (``spark.read.options(**...)``) or prefix each with
    ``spark.hadoop.`` as session conf. The KMS jar must be on the classpath (``--jars``).
    Contains the keyring's KEKs: never log or print the result.
    """
    return {
        "parquet.crypto.factory.class": CRYPTO_FACTORY_CLASS,
        "parquet.encryption.kms.client.class": JAVA_KMS_CLASS,
        "parquet.encryption.key.access.token": access_token(keyring),
        "parquet.encryption.double.wrapping": "false",
        "parquet.encryption.data.key.length.bits": "256",
        SECRET_PROPERTY: java_keyring(keyring),
    }


def java_keyring(keyring: Keyring) -> str:
    """The keyring as the Java twin reads it: ``mode;active;legacy;id,key,public;...``
    (base64 fields, empty when absent: a public-only KEK has no key; ``legacy`` is the older
    files' master key, given only to a keyring that can unwrap)."""

    def b64(raw: bytes | None) -> str:
        return base64.b64encode(raw).decode("ascii") if raw else ""

    keks = ";".join(f"{k},{b64(secret)},{b64(public)}" for k, secret, public in keyring.keks())
    legacy = b64(keyring.secret_for(LEGACY_PURPOSE)) if keyring.can_unwrap else ""
    return f"{keyring.mode};{keyring.active_kek_id};{legacy};{keks}"
