"""The keys commands write whole results or nothing, the public half whenever asked; commands
on a lake refuse a --lake that is no lake; a bad keyring file or --out is named."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from dicomlake.cli import EXIT_ERROR, main
from dicomlake.crypto.keyring import Keyring


def _logged(caplog) -> str:
    text = caplog.text
    caplog.clear()
    return text


def test_a_symmetric_init_asked_for_a_public_half_writes_nothing(tmp_path, caplog):
    keyring, public = tmp_path / "k.json", tmp_path / "pub.json"
    argv = ["keys", "init", "--keyring", str(keyring), "--public-out", str(public)]
    assert main(argv) == EXIT_ERROR
    assert "no public half" in _logged(caplog)
    assert not keyring.exists() and not public.exists()
    assert main([*argv, "--mode", "x25519"]) == 0
    assert not Keyring.from_bytes(public.read_bytes()).can_unwrap


def test_the_public_half_is_written_again_and_after_a_rotation(tmp_path, caplog):
    keyring, public = tmp_path / "k.json", tmp_path / "pub.json"
    assert main(["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]) == 0
    assert main(["keys", "public", "--keyring", str(keyring), "--public-out", str(public)]) == 0
    full = Keyring.from_bytes(keyring.read_bytes())
    first = Keyring.from_bytes(public.read_bytes())
    assert (first.kek_ids, first.can_unwrap) == (full.kek_ids, False)
    assert main(["keys", "rotate", "--keyring", str(keyring), "--public-out", str(public)]) == 0
    rotated, half = (Keyring.from_bytes(p.read_bytes()) for p in (keyring, public))
    assert half.active_kek_id == rotated.active_kek_id != full.active_kek_id
    assert half.kek_ids == rotated.kek_ids and not half.can_unwrap
    with pytest.raises(SystemExit):
        main(["keys", "public", "--keyring", str(keyring)])


@pytest.mark.parametrize(
    "spelling",
    [
        lambda k: k,
        lambda k: k.parent / "." / k.name,
        lambda k: k.parent / "linked" / k.name,  # a link to the keyring's folder
    ],
)
@pytest.mark.parametrize("action", [["public"], ["rotate"], ["init", "--force"]])
def test_a_public_out_that_is_the_keyring_itself_is_refused(tmp_path, caplog, spelling, action):
    keyring = tmp_path / "k.json"
    (tmp_path / "linked").symlink_to(tmp_path)
    assert main(["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]) == 0
    before = keyring.read_bytes()
    out = str(spelling(keyring))
    argv = ["keys", *action, "--keyring", str(keyring), "--public-out", out]
    assert main(argv) == EXIT_ERROR
    assert "its public half would replace the private keys" in _logged(caplog)
    assert keyring.read_bytes() == before  # the private keys, unrotated


@pytest.mark.parametrize("victim", ["x25519", "symmetric", "notes"])
@pytest.mark.parametrize("action", [["init", "--mode", "x25519"], ["public"], ["rotate"]])
def test_a_public_out_that_holds_private_keys_or_no_keyring_is_refused(
    tmp_path, caplog, action, victim
):
    keyring, out = tmp_path / "k.json", tmp_path / "victim.json"
    if action[0] != "init":
        assert main(["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]) == 0
    held = Keyring.generate(victim).to_bytes() if victim != "notes" else b"my notes\n"
    out.write_bytes(held)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    argv = ["keys", *action, "--keyring", str(keyring), "--public-out", str(out)]
    caplog.clear()
    assert main(argv) == EXIT_ERROR
    assert f"--public-out {str(out)!r}" in _logged(caplog)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written


def test_a_public_out_linked_to_the_keyring_replaces_the_link(tmp_path, caplog):
    keyring, link = tmp_path / "k.json", tmp_path / "pub.json"
    assert main(["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]) == 0
    link.symlink_to(keyring)
    assert main(["keys", "public", "--keyring", str(keyring), "--public-out", str(link)]) == 0
    assert not link.is_symlink() and not Keyring.from_bytes(link.read_bytes()).can_unwrap
    assert Keyring.from_bytes(keyring.read_bytes()).can_unwrap


@pytest.mark.parametrize("action", [["public"], ["rotate"]])
def test_a_public_out_that_is_a_directory_is_refused_before_a_rotation(tmp_path, caplog, action):
    keyring, folder = tmp_path / "k.json", tmp_path / "out"
    folder.mkdir()
    assert main(["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]) == 0
    before = keyring.read_bytes()
    argv = ["keys", *action, "--keyring", str(keyring), "--public-out", str(folder)]
    assert main(argv) == EXIT_ERROR
    assert "is a directory" in _logged(caplog)
    assert keyring.read_bytes() == before and not any(folder.iterdir())


def test_an_empty_keyring_path_is_named(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DICOMLAKE_KEYS_KEYRING", "")
    assert main(["keys", "init", "--force"]) == EXIT_ERROR
    assert "--keyring (keys.keyring) is empty" in _logged(caplog)
    assert not any(tmp_path.iterdir())


def test_dropping_the_active_kek_names_the_command_that_makes_a_new_one(tmp_path, caplog):
    keyring = tmp_path / "k.json"
    assert main(["keys", "init", "--keyring", str(keyring)]) == 0
    before = keyring.read_bytes()
    active = Keyring.from_bytes(before).active_kek_id
    drop = ["keys", "drop", "--keyring", str(keyring), "--kek-id", active]
    caplog.clear()
    assert main([*drop, "--lake", str(tmp_path / "lake")]) == EXIT_ERROR
    text = _logged(caplog)
    assert f"'{active}' is the active kek" in text and "`dicomlake keys rotate --lake" in text
    assert "rotate()" not in text and keyring.read_bytes() == before


@pytest.mark.parametrize(
    "command",
    [
        ["maintain", "--lake", "LAKE"],
        ["export", "--where", "true", "--out", "OUT", "--lake", "LAKE", "--keyring", "KEYRING"],
        ["reidentify", "--pseudonym", "x", "--lake", "LAKE", "--keyring", "KEYRING"],
        [
            "quarantine",
            "get",
            "--error-id",
            "e",
            "--out",
            "OUT/q",
            "--lake",
            "LAKE",
            "--keyring",
            "KEYRING",
        ],
        ["keys", "rotate", "--lake", "LAKE", "--keyring", "KEYRING"],
    ],
)
def test_a_lake_that_is_not_there_is_named_and_nothing_made(tmp_path, caplog, command):
    keyring = tmp_path / "k.json"
    assert main(["keys", "init", "--keyring", str(keyring)]) == 0
    before = sorted(tmp_path.rglob("*"))
    nolake = tmp_path / "nolake"
    places = {"LAKE": str(nolake), "KEYRING": str(keyring), "OUT": str(tmp_path / "out")}
    argv = [places.get(c, c).replace("OUT", places["OUT"]) for c in command]
    caplog.clear()
    assert main(argv) == EXIT_ERROR
    assert f"no lake at {nolake}" in _logged(caplog)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"{not json", "not valid JSON"), (b"", "not valid JSON"), (b"[1]", "")],
)
def test_a_damaged_keyring_is_named(tmp_path, caplog, content, says):
    keyring = tmp_path / "k.json"
    keyring.write_bytes(content)
    keyring.chmod(0o600)
    lake = tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    argv = ["export", "--lake", str(lake), "--where", "true", "--out", str(tmp_path / "o")]
    assert main([*argv, "--keyring", str(keyring)]) == EXIT_ERROR
    err = _logged(caplog)
    assert f"keyring '{keyring}'" in err and says in err
    assert not (tmp_path / "o").exists()


def test_export_to_a_file_or_with_the_public_half_makes_no_out(tmp_path, caplog):
    keyring, public = tmp_path / "k.json", tmp_path / "pub.json"
    assert main(["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]) == 0
    assert main(["keys", "public", "--keyring", str(keyring), "--public-out", str(public)]) == 0
    lake = tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    export = ["export", "--lake", str(lake), "--where", "true"]
    caplog.clear()
    assert main([*export, "--out", str(afile), "--keyring", str(keyring)]) == EXIT_ERROR
    assert "is not a directory" in _logged(caplog)
    assert main([*export, "--out", str(afile / "sub"), "--keyring", str(keyring)]) == EXIT_ERROR
    assert "cannot make --out" in _logged(caplog)
    out = tmp_path / "out"
    assert main([*export, "--out", str(out), "--keyring", str(public)]) == EXIT_ERROR
    assert "needs the full keyring" in _logged(caplog)
    assert not out.exists() and Path(afile).read_bytes() == b"x"


def test_a_keyring_open_to_every_user_is_refused_one_open_to_its_group_is_used(tmp_path, caplog):
    keyring = tmp_path / "k.json"
    assert main(["keys", "init", "--keyring", str(keyring)]) == 0
    lake = tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    reidentify = ["reidentify", "--lake", str(lake), "--pseudonym", "x", "--keyring", str(keyring)]
    for mode in (0o644, 0o606, 0o602):
        keyring.chmod(mode)
        caplog.clear()
        assert main(reidentify) == EXIT_ERROR
        assert f"open to every user (mode {mode:04o})" in caplog.text
        assert f"chmod 600 {keyring}" in caplog.text
    keyring.chmod(0o640)
    caplog.clear()
    assert main(reidentify) == 0
    assert "open to its group (mode 0640)" in caplog.text


def _bound_lake(tmp_path: Path) -> Path:
    """A lake of no rows bound to a keyring of its own."""
    from dicomlake.config import LockConfig
    from dicomlake.lake.keyring_binding import bind_keyring
    from dicomlake.lake.layout import LakeLayout
    from dicomlake.lake.lock import holding
    from dicomlake.storage.local import LocalFileSystem

    lake, fs = tmp_path / "lake", LocalFileSystem()
    (lake / "tables").mkdir(parents=True)
    with holding(fs, str(lake), None, "test", LockConfig()) as lock:
        bind_keyring(fs, LakeLayout(str(lake)), Keyring.generate("symmetric"), lock)
    return lake


@pytest.mark.parametrize("asked", [["--pseudonym", "2.25.1"], ["--path-id", "0" * 32], []])
def test_reidentify_with_another_keyrings_secret_names_the_keyring(tmp_path, caplog, asked):
    lake, other = _bound_lake(tmp_path), tmp_path / "other.json"
    assert main(["keys", "init", "--keyring", str(other)]) == 0
    caplog.clear()
    assert main(["reidentify", "--lake", str(lake), "--keyring", str(other), *asked]) == EXIT_ERROR
    assert "keyring fingerprint mismatch" in caplog.text


def test_export_with_another_keyrings_secret_names_the_keyring(tmp_path, caplog):
    lake, other = _bound_lake(tmp_path), tmp_path / "other.json"
    assert main(["keys", "init", "--keyring", str(other)]) == 0
    out = tmp_path / "out"
    argv = ["export", "--lake", str(lake), "--where", "true", "--out", str(out)]
    caplog.clear()
    assert main([*argv, "--keyring", str(other)]) == EXIT_ERROR
    assert "keyring fingerprint mismatch" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("where", ["/dev/null", "folder"])
def test_a_keyring_path_that_is_no_file_is_named_as_such(tmp_path, caplog, where):
    path = where if where.startswith("/") else str(tmp_path / where)
    if not where.startswith("/"):
        Path(path).mkdir(mode=0o755)
    lake = tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    argv = ["export", "--where", "true", "--out", str(tmp_path / "out"), "--lake", str(lake)]
    assert main([*argv, "--keyring", path]) == EXIT_ERROR
    text = _logged(caplog)
    assert f"keyring {path!r} is not a regular file" in text and "chmod" not in text


def test_quarantine_get_refuses_a_public_half_before_it_looks_up_the_error(tmp_path, caplog):
    keyring, public = tmp_path / "k.json", tmp_path / "pub.json"
    init = ["keys", "init", "--mode", "x25519", "--keyring", str(keyring)]
    assert main([*init, "--public-out", str(public)]) == 0
    lake = tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    get = ["quarantine", "get", "--error-id", "no-such-error", "--out", str(tmp_path / "q")]
    assert main([*get, "--lake", str(lake), "--keyring", str(public)]) == EXIT_ERROR
    assert "quarantine get needs the full keyring" in _logged(caplog)
    assert not (tmp_path / "q").exists()


def test_pydicom_never_prints_a_files_values_through_the_commands_log(tmp_path, caplog):
    assert main(["keys", "init", "--keyring", str(tmp_path / "k.json")]) == 0  # logging set up
    caplog.clear()
    with warnings.catch_warnings():  # what the lake's reading does; pydicom logs it too
        warnings.simplefilter("ignore")
        ds = pydicom.Dataset()
        ds.SeriesInstanceUID = "1.2.840.0113619.2.55"  # an original UID, odd for its VR
    assert "0113619" not in caplog.text


def test_an_ingest_that_would_make_a_lake_around_its_keyring_is_refused(tmp_path, caplog):
    """The folder is no lake yet: its first ingest would make one holding the keys."""
    folder, landing = tmp_path / "E", tmp_path / "landing"
    landing.mkdir()
    ring, public = folder / "k.json", folder / "p.json"
    init = ["keys", "init", "--mode", "x25519", "--keyring", str(ring)]
    assert main([*init, "--public-out", str(public)]) == 0
    argv = ["ingest", "--landing", str(landing), "--lake", str(folder), "--keyring", str(public)]
    assert main(argv) == EXIT_ERROR
    assert f"keyring '{public}' is in the lake at {folder}" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["k.json", "p.json"]  # nothing made


def test_a_keyring_under_a_folder_no_lake_could_be_made_in_is_read(tmp_path):
    """Looking for a lake around a keyring looks at any folder, '%' in its name too."""
    ring = tmp_path / "keys%41" / "k.json"
    assert main(["keys", "init", "--mode", "x25519", "--keyring", str(ring)]) == 0
    public = tmp_path / "p.json"
    assert main(["keys", "public", "--keyring", str(ring), "--public-out", str(public)]) == 0
