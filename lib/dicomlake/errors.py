"""The project's exception types. Each docstring says what to do about it."""


class DicomLakeError(Exception):
    """Base of every dicomlake error; catch this to handle any of them."""


class ConfigError(DicomLakeError):
    """A config key or value is wrong: fix the named key in the YAML file or DICOMLAKE_* var."""


class StorageError(DicomLakeError):
    """A filesystem call failed: check the URI, permissions and that HDFS is reachable.

    ``detail`` says what failed without naming the path (an errno's name and text, a remote
    exception's class): what a record about a landing file may keep.
    """

    def __init__(self, message: str, *, detail: str = "a filesystem call failed") -> None:
        super().__init__(message)
        self.detail = detail


class LakeWriteError(StorageError):
    """Writing to the lake failed (space, permissions, HDFS): the run stops, nothing committed."""


class PublishConflictError(StorageError):
    """The publish target exists already: a file in the lake is never overwritten."""


class DicomParseError(DicomLakeError):
    """The input is not readable DICOM; it is quarantined with the reason code in `reason`."""

    def __init__(self, reason: str, message: str, *, over_limit: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        # ``too_large`` by the caller's limit on what is held at once, not a fixed one
        self.over_limit = over_limit


class CodecError(DicomLakeError):
    """A codec failed or did not round-trip; the chunk was not written."""


class UnknownCodecError(CodecError):
    """A chunk names a codec this version does not know: upgrade dicomlake to read it."""


class KeyringError(DicomLakeError):
    """The keyring is missing or unreadable: run `dicomlake keys init` or pass --keyring."""


class MissingKeyError(KeyringError):
    """The key that wrapped this data is not in the keyring (rotated out, or another keyring)."""


class PrivateKeyRequiredError(KeyringError):
    """This keyring holds only the public key: reading needs the private key file."""


class IntegrityError(DicomLakeError):
    """Stored bytes failed authentication or a hash check: tampered with or damaged."""


class TamperedChunkError(IntegrityError):
    """A chunk failed to open: flipped bytes, a moved or swapped chunk, or the wrong data key."""


class TruncatedPackError(IntegrityError):
    """A pack file ends early or lacks its footer: restore it from a backup."""


class LakeError(DicomLakeError):
    """The lake is not in the expected state (missing table, unknown instance, unfinished run)."""


class JobFailedError(DicomLakeError):
    """A Spark job failed after its retries; nothing was committed: fix the cause and re-run."""


class ErrorThresholdExceeded(DicomLakeError):
    """Too large a share of a run's inputs was quarantined; inspect the errors table."""


class BackupError(DicomLakeError):
    """A snapshot, restore or verify step failed; the message names the snapshot and object."""


class ManifestAuthError(BackupError):
    """A snapshot's manifest failed authentication (see the subclasses); nothing it lists is
    trusted: verify reports it, restore refuses it, a snapshot does not compare with it."""


class UnauthenticatedManifestError(ManifestAuthError):
    """The manifest has no authentication code: written before manifests were authenticated
    (format 1), or the code was removed. Take a full snapshot; restore it only with
    ``--trust-unauthenticated``, and only if nobody else could have written to the backup."""


class AlteredManifestError(ManifestAuthError):
    """The manifest's rows or record were changed after it was written, or it is another
    snapshot's manifest under this id: restore another snapshot and find who wrote to the backup."""


class ForeignManifestError(ManifestAuthError):
    """The manifest was authenticated by another keyring: pass the keyring the snapshot was
    taken with (its fingerprint is in the message)."""


class LockBusyError(DicomLakeError):
    """Another command holds the lake's or backup's lock (exit code 4): nothing was changed;
    run again once it has finished (a dead holder's lock is taken over after lock.stale_seconds)."""


class LockLostError(DicomLakeError):
    """This run's lock went stale and may have been taken over: it stopped before its commit."""


class KeyringMismatchError(KeyringError):
    """The keyring is not the one this lake was built with: use the lake's keyring."""
