"""Keyrings: wrapping data keys in both modes, rotation, public-only keyrings, parsing."""

from __future__ import annotations

import base64
import json
import re

import pytest

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import (
    IntegrityError,
    KeyringError,
    MissingKeyError,
    PrivateKeyRequiredError,
)

MODES = ["symmetric", "x25519"]
DATA_KEY = bytes(range(32))


@pytest.mark.parametrize("mode", MODES)
def test_wrap_unwrap_and_serialization_round_trip(mode):
    ring = Keyring.generate(mode)
    assert re.fullmatch(r"kek-\d{8}-[0-9a-f]{8}", ring.active_kek_id)
    assert ring.kek_ids == [ring.active_kek_id]
    kek_id, wrapped = ring.wrap(DATA_KEY, b"pack-1")
    assert kek_id == ring.active_kek_id and DATA_KEY not in wrapped
    assert ring.unwrap(kek_id, wrapped, b"pack-1") == DATA_KEY
    reloaded = Keyring.from_bytes(ring.to_bytes())
    assert reloaded.unwrap(kek_id, wrapped, b"pack-1") == DATA_KEY
    assert ring.wrap(DATA_KEY, b"pack-1")[1] != wrapped  # randomized
    material = json.loads(ring.to_bytes())
    assert material["secret"] not in repr(ring)
    assert all(k.get("key", k.get("private")) not in repr(ring) for k in material["keks"])


def test_public_only_keyring_wraps_but_cannot_unwrap():
    ring = Keyring.generate("x25519")
    public = Keyring.from_bytes(ring.public_only().to_bytes())
    assert not public.can_unwrap and b"private" not in public.to_bytes()
    kek_id, wrapped = public.wrap(DATA_KEY, b"pack-9")
    with pytest.raises(PrivateKeyRequiredError):
        public.unwrap(kek_id, wrapped, b"pack-9")
    assert ring.unwrap(kek_id, wrapped, b"pack-9") == DATA_KEY
    with pytest.raises(KeyringError, match="public-only"):
        public.rotate()
    with pytest.raises(KeyringError, match="symmetric"):
        Keyring.generate("symmetric").public_only()


@pytest.mark.parametrize("mode", MODES)
def test_another_keyring_lacks_the_key(mode):
    kek_id, wrapped = Keyring.generate(mode).wrap(DATA_KEY, b"p")
    with pytest.raises(MissingKeyError, match=kek_id):
        Keyring.generate(mode).unwrap(kek_id, wrapped, b"p")


@pytest.mark.parametrize("mode", MODES)
def test_rotate_rewrap_then_drop_the_old_kek(mode):
    ring = Keyring.generate(mode)
    old_id, wrapped = ring.wrap(DATA_KEY, b"pack-1")
    rotated = ring.rotate()
    assert rotated.kek_ids == [old_id, rotated.active_kek_id] and rotated.active_kek_id != old_id
    new_id, rewrapped = rotated.rewrap(old_id, wrapped, b"pack-1")
    assert new_id == rotated.active_kek_id
    with pytest.raises(KeyringError, match="active"):
        rotated.without(new_id)
    trimmed = Keyring.from_bytes(rotated.without(old_id).to_bytes())
    assert trimmed.kek_ids == [new_id]
    assert trimmed.unwrap(new_id, rewrapped, b"pack-1") == DATA_KEY
    with pytest.raises(MissingKeyError):
        trimmed.unwrap(old_id, wrapped, b"pack-1")
    assert trimmed.secret_for("pseudonym") == ring.secret_for("pseudonym")


@pytest.mark.parametrize("mode", MODES)
def test_tampered_blob_context_or_kek_label_fails(mode):
    ring = Keyring.generate(mode).rotate()
    kek_id, wrapped = ring.wrap(DATA_KEY, b"pack-1")
    flipped = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    for bad_id, blob, context in [
        (kek_id, flipped, b"pack-1"),
        (kek_id, wrapped, b"pack-2"),
        (kek_id, wrapped[:-1], b"pack-1"),
        (ring.kek_ids[0], wrapped, b"pack-1"),  # relabelled with the other KEK's id
    ]:
        with pytest.raises(IntegrityError):
            ring.unwrap(bad_id, blob, context)


def test_secret_for_is_stable_purpose_bound_and_kept_public_only():
    ring = Keyring.generate("x25519")
    secret = ring.secret_for("pseudonym")
    assert len(secret) == 32 and secret != ring.secret_for("other")
    assert ring.public_only().secret_for("pseudonym") == secret
    assert Keyring.generate("x25519").secret_for("pseudonym") != secret
    with pytest.raises(KeyringError):
        ring.secret_for("")


def _doc(mode="symmetric"):
    return json.loads(Keyring.generate(mode).to_bytes())


def _renamed(doc, kek_id: str):
    """The keyring document with its only KEK, the active one, under ``kek_id``."""
    return {**doc, "active_kek_id": kek_id, "keks": [{**doc["keks"][0], "id": kek_id}]}


def test_a_kek_id_of_letters_digits_dots_dashes_and_underscores_is_read():
    kek_id = "K" + "e.k_-9" * 10 + "abc"  # 64 characters
    doc = _renamed(_doc(), kek_id)
    assert Keyring.from_bytes(json.dumps(doc).encode()).kek_ids == [kek_id]


def _version_digits(doc, digits: int) -> bytes:
    """The keyring file with a version of that many nines."""
    return json.dumps(doc).replace('"version": 1,', f'"version": {"9" * digits},').encode()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"{not json", "not valid JSON"),
        (lambda d: b"[1, 2]", "JSON object"),
        (lambda d: {**d, "format": "x"}, "'format'"),
        (lambda d: {**d, "version": 99}, "version 99"),
        (lambda d: {**d, "version": True}, "'version' must be an int, got bool"),
        (lambda d: {**d, "version": 1.0}, "'version' must be an int, got float"),
        (lambda d: {**d, "version": "1"}, "'version' must be an int, got str"),
        (lambda d: {k: v for k, v in d.items() if k != "version"}, "'version' is missing"),
        (lambda d: _version_digits(d, 4000), r"version of 13288 bits is not supported \("),
        (lambda d: _version_digits(d, 5000), "not valid JSON.*4300 digits"),
        (lambda d: {**d, "mode": "rsa"}, "mode"),
        (lambda d: {k: v for k, v in d.items() if k != "keks"}, "'keks' is missing"),
        (lambda d: {**d, "keks": []}, "'keks' is empty"),
        (lambda d: {**d, "active_kek_id": "kek-nope"}, "kek-nope"),
        (lambda d: {**d, "secret": "***"}, "'secret'.*base64"),
        (lambda d: {**d, "keks": [{**d["keks"][0], "key": "AAAA"}]}, "32 bytes, got 3"),
        (lambda d: {**d, "keks": [{**d["keks"][0], "id": 7}]}, "'id' must be a str"),
        (lambda d: {**d, "keks": d["keks"] * 2}, "duplicate"),
        (lambda d: _renamed(d, "kek:colon"), "kek id 'kek:colon' is not a valid KEK id"),
        (lambda d: _renamed(d, ""), "kek id '' is not a valid KEK id"),
        (lambda d: _renamed(d, "kek\0nul"), r"kek id 'kek\\x00nul' is not a valid KEK id"),
        (lambda d: _renamed(d, "../kek"), "kek id '../kek' is not a valid KEK id"),
        (lambda d: _renamed(d, "kek-1\n"), r"kek id 'kek-1\\n' is not a valid KEK id"),
        (lambda d: _renamed(d, "k" * 65), f"kek id '{'k' * 65}' is not a valid KEK id"),
    ],
)
def test_malformed_keyring_bytes_name_the_problem(mutate, message):
    changed = mutate(_doc())
    data = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
    with pytest.raises(KeyringError, match=message):
        Keyring.from_bytes(data)


def test_x25519_private_must_match_public():
    doc = _doc("x25519")
    doc["keks"][0]["private"] = base64.b64encode(bytes(32)).decode()
    with pytest.raises(KeyringError, match="does not match"):
        Keyring.from_bytes(json.dumps(doc).encode())


# Low-order points of Curve25519 (RFC 7748 section 6.1 says a shared secret of zeros must be
# refused): the zero point, the point 1, and a point of order 8
@pytest.mark.parametrize(
    "point",
    [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
)
def test_a_public_key_that_gives_no_shared_secret_is_refused_when_read(point):
    doc = _doc("x25519")
    del doc["keks"][0]["private"]
    doc["keks"][0]["public"] = base64.b64encode(point).decode()
    with pytest.raises(KeyringError, match="'public' is no usable X25519 public key"):
        Keyring.from_bytes(json.dumps(doc).encode())
