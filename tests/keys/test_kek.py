"""KEK file handling, subkeys and MACs."""

from __future__ import annotations

import copy
import os
import pickle
import stat
from pathlib import Path

import pytest

from walletsvc.keys.errors import KekFileError
from walletsvc.keys.kek import Kek, create_dev_kek, load_kek


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_create_dev_kek_writes_32_private_bytes_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    created = create_dev_kek(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    loaded = load_kek(path)
    assert loaded.key_id == created.key_id
    assert loaded.subkey("row-mac") == created.subkey("row-mac")


def test_create_dev_kek_refuses_to_overwrite(tmp_path: Path) -> None:
    path = _write(tmp_path / "kek", b"\x01" * 32, 0o600)
    with pytest.raises(KekFileError, match="refusing to overwrite"):
        create_dev_kek(path)
    assert path.read_bytes() == b"\x01" * 32


def test_two_dev_keks_differ(tmp_path: Path) -> None:
    assert create_dev_kek(tmp_path / "a").key_id != create_dev_kek(tmp_path / "b").key_id


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o602, 0o700 | 0o004])
def test_load_refuses_files_accessible_to_group_or_others(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "kek", os.urandom(32), mode)
    with pytest.raises(KekFileError, match="chmod 600") as info:
        load_kek(path)
    assert f"{mode:04o}" in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_accepts_owner_only_files(tmp_path: Path, mode: int) -> None:
    key = os.urandom(32)
    path = _write(tmp_path / "kek", key, mode)
    assert load_kek(path).key_id == Kek(key).key_id


@pytest.mark.parametrize("size", [0, 16, 31, 33, 48])
def test_load_refuses_wrong_size(tmp_path: Path, size: int) -> None:
    path = _write(tmp_path / "kek", b"\x07" * size, 0o600)
    with pytest.raises(KekFileError, match=f"exactly 32 bytes, found {size}"):
        load_kek(path)


def test_load_hints_at_hex_encoded_file_without_echoing_it(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = _write(tmp_path / "kek", key.hex().encode() + b"\n", 0o600)
    with pytest.raises(KekFileError, match="hex-encoded") as info:
        load_kek(path)
    assert key.hex() not in str(info.value)
    assert info.value.__cause__ is None


def test_load_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KekFileError, match="does not exist"):
        load_kek(tmp_path / "nope")
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KekFileError):
        load_kek(directory)


def test_load_follows_symlinks_but_checks_the_target(tmp_path: Path) -> None:
    target = _write(tmp_path / "real", os.urandom(32), 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert load_kek(link).key_id == load_kek(target).key_id
    target.chmod(0o644)
    with pytest.raises(KekFileError, match="group or others"):
        load_kek(link)


def test_repr_and_str_hide_key_bytes() -> None:
    key = os.urandom(32)
    kek = Kek(key)
    for text in (repr(kek), str(kek), f"{kek}", repr([kek])):
        assert key.hex() not in text
        assert f"Kek(id={kek.key_id})" in text
    assert len(kek.key_id) == 8


def test_kek_cannot_be_pickled_or_copied() -> None:
    kek = Kek(os.urandom(32))
    with pytest.raises(TypeError):
        pickle.dumps(kek)
    with pytest.raises(TypeError):
        copy.copy(kek)


def test_kek_requires_32_bytes() -> None:
    with pytest.raises(KekFileError):
        Kek(b"\x00" * 31)


def test_subkeys_are_stable_distinct_and_independent_of_the_key() -> None:
    key = os.urandom(32)
    kek = Kek(key)
    row, audit = kek.subkey("row-mac"), kek.subkey("audit-chain")
    assert len(row) == len(audit) == 32
    assert row != audit
    assert row == Kek(key).subkey("row-mac")
    assert key not in (row, audit)
    assert Kek(os.urandom(32)).subkey("row-mac") != row


@pytest.mark.parametrize("purpose", ["", "x" * 65, "naïve", "tab\there"])
def test_subkey_refuses_odd_purposes(purpose: str) -> None:
    with pytest.raises(ValueError):
        Kek(os.urandom(32)).subkey(purpose)


def test_mac_round_trip_and_rejections() -> None:
    kek = Kek(os.urandom(32))
    message = b"withdrawal:42:bcrt1q...:100000"
    tag = kek.mac("row-mac", message)
    assert len(tag) == 64 and int(tag, 16) >= 0
    assert kek.verify_mac("row-mac", message, tag)
    assert not kek.verify_mac("row-mac", message + b"0", tag)
    assert not kek.verify_mac("audit-chain", message, tag)
    assert not kek.verify_mac("row-mac", message, tag[:-1] + ("0" if tag[-1] != "0" else "1"))
    assert not kek.verify_mac("row-mac", message, tag.upper() if tag != tag.upper() else "")
    assert not kek.verify_mac("row-mac", message, "")
    assert not kek.verify_mac("row-mac", message, "é" * 64)
    assert not kek.verify_mac("row-mac", message, None)  # type: ignore[arg-type]
    assert not Kek(os.urandom(32)).verify_mac("row-mac", message, tag)


def test_wipe_zeroes_the_key() -> None:
    kek = Kek(b"\x05" * 32)
    kek.wipe()
    assert kek._key == bytearray(32)
