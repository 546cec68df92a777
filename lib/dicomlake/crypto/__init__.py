"""Envelope encryption: per-pack data keys (AES-256-GCM) wrapped by key-encryption keys.

Pure: bytes in, bytes out; keyring files are read and written by the caller.
"""
