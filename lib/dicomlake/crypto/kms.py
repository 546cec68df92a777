"""Parquet Modular Encryption (PME) keys from the keyring, for pyarrow and for Spark.

PME encrypts chosen columns of a Parquet file with data keys; with double wrapping (the default
of both pyarrow and parquet-java) each data key is wrapped by a key-encryption key stored in the
file's footer, and *that* is wrapped by a "KMS" under a named master key. Our KMS is local: one
32-byte master key, ``Keyring.secret_for("parquet-kms")``, for every master key identifier.

Wrapping format (the same bytes from Python and Java, so either reads the other's files)::

    base64( nonce[12] || AES-256-GCM(master, key, aad=b"dicomlake-pme-v1\\x00" + identifier) )

- pyarrow: `crypto_factory` / `encryption_properties` / `decryption_properties` below.
- Spark (parquet-java's ``PropertiesDrivenCryptoFactory``): the Java twin
  ``org.dicomlake.kms.KeyringKmsClient`` (``java/``, built by ``dev/build_kms_jar.py`` into
  ``.cache/dicomlake-kms.jar``) reads the master key, base64, from the Hadoop property
  ``dicomlake.kms.master.secret``; `spark_options` gives every property a reader needs::

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
import os
from collections.abc import Callable, Iterator, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import IntegrityError

KMS_PURPOSE = "parquet-kms"  # Keyring.secret_for(KMS_PURPOSE) is the master key
FOOTER_KEY_ID = "dicomlake-footer"  # signs the plaintext footer
COLUMN_KEY_ID = "dicomlake-identities"  # encrypts the identified columns
JAVA_KMS_CLASS = "org.dicomlake.kms.KeyringKmsClient"
CRYPTO_FACTORY_CLASS = "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory"
SECRET_PROPERTY = "dicomlake.kms.master.secret"
ALGORITHM = "AES_GCM_V1"
_AAD = b"dicomlake-pme-v1\x00"
_NONCE = 12
_TOKEN_INFO = b"dicomlake-pme-token-v1\x00"


def master_key(keyring: Keyring) -> bytes:
    """The KMS master key of this keyring (32 bytes; available in public-only keyrings too)."""
    return keyring.secret_for(KMS_PURPOSE)


def access_token(master: bytes) -> str:
    """A non-secret fingerprint of the master key, used as PME's key access token.

    pyarrow and parquet-java cache KMS clients and unwrapped keys per access token: a token per
    master key keeps two keyrings in one process (or JVM) from sharing a cache entry.
    """
    return hmac.new(master, _TOKEN_INFO, hashlib.sha256).hexdigest()[:32]


def wrap_key(master: bytes, key: bytes, identifier: str) -> str:
    """Wrap a PME key under ``master`` for the master key ``identifier`` (base64 text)."""
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(master).encrypt(nonce, key, _AAD + identifier.encode("utf-8"))
    return base64.b64encode(nonce + sealed).decode("ascii")


def unwrap_key(master: bytes, wrapped: str, identifier: str) -> bytes:
    """The PME key inside ``wrapped``; IntegrityError for another master key or identifier."""
    try:
        raw = base64.b64decode(wrapped, validate=True)
        return AESGCM(master).decrypt(raw[:_NONCE], raw[_NONCE:], _AAD + identifier.encode("utf-8"))
    except (InvalidTag, ValueError, binascii.Error):
        raise IntegrityError(
            f"a Parquet encryption key wrapped for {identifier!r} did not open: the file was "
            "written with another keyring's secret, or it was altered"
        ) from None


def _kms_client_class() -> type:
    import pyarrow.parquet.encryption as pe

    class KeyringKmsClient(pe.KmsClient):
        """pyarrow's side of the KMS: wraps with the keyring's master key."""

        def __init__(self, master: bytes) -> None:
            super().__init__()
            self._master = master

        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            return wrap_key(self._master, key_bytes, master_key_identifier)

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            return unwrap_key(self._master, wrapped_key, master_key_identifier)

        def __repr__(self) -> str:
            return "KeyringKmsClient(master=<hidden>)"

    return KeyringKmsClient


def crypto_factory(keyring: Keyring):
    """(pyarrow ``CryptoFactory``, ``KmsConnectionConfig``) for this keyring's master key."""
    import pyarrow.parquet.encryption as pe

    master = master_key(keyring)
    client_class = _kms_client_class()
    factory: Callable[[object], object] = lambda _config: client_class(master)  # noqa: E731
    config = pe.KmsConnectionConfig(key_access_token=access_token(master))
    return pe.CryptoFactory(factory), config


def encryption_properties(keyring: Keyring, encrypted_columns: list[str]):
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
    )
    return factory.file_encryption_properties(config, encryption)


def decryption_properties(keyring: Keyring):
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
    Contains the master key: never log or print the result.
    """
    master = master_key(keyring)
    return {
        "parquet.crypto.factory.class": CRYPTO_FACTORY_CLASS,
        "parquet.encryption.kms.client.class": JAVA_KMS_CLASS,
        "parquet.encryption.key.access.token": access_token(master),
        SECRET_PROPERTY: base64.b64encode(master).decode("ascii"),
    }
