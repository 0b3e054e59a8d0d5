"""The signer's ledger: every edit, deletion, reordering or truncation is caught at start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from walletsvc.signer.ledger import Ledger, LedgerBroken

KEY = bytes(range(32))


def written(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.open(path, KEY)
    for i in range(n):
        ledger.append("signed", {"n": i, "withdrawal_id": f"w{i}"})
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_a_ledger_replays_what_was_appended(tmp_path: Path) -> None:
    path = written(tmp_path)
    again = Ledger.open(path, KEY)
    assert [r.body["n"] for r in again] == [0, 1, 2, 3]
    assert [r.seq for r in again] == [1, 2, 3, 4]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_edited_record_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    content = lines(path)
    record = json.loads(content[1])
    record["body"]["withdrawal_id"] = "someone-else"
    content[1] = json.dumps(record).encode() + b"\n"
    path.write_bytes(b"".join(content))
    with pytest.raises(LedgerBroken, match="record 2 fails its MAC"):
        Ledger.open(path, KEY)


def test_a_deleted_record_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    content = lines(path)
    del content[1]
    path.write_bytes(b"".join(content))
    with pytest.raises(LedgerBroken, match="sequence 3"):
        Ledger.open(path, KEY)


def test_swapped_records_are_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    content = lines(path)
    content[1], content[2] = content[2], content[1]
    path.write_bytes(b"".join(content))
    with pytest.raises(LedgerBroken):
        Ledger.open(path, KEY)


def test_a_truncated_tail_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    path.write_bytes(b"".join(lines(path)[:2]))  # the last two records dropped, chain still valid
    with pytest.raises(LedgerBroken, match="truncated or replaced"):
        Ledger.open(path, KEY)


def test_a_deleted_ledger_with_its_head_left_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    path.unlink()
    with pytest.raises(LedgerBroken, match="truncated or replaced"):
        Ledger.open(path, KEY)


def test_a_forged_head_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    head = path.with_name(path.name + ".head")
    obj = json.loads(head.read_text())
    obj["seq"] = 2
    head.write_text(json.dumps(obj))
    with pytest.raises(LedgerBroken, match="head file fails its MAC"):
        Ledger.open(path, KEY)


def test_another_key_cannot_read_or_extend_the_ledger(tmp_path: Path) -> None:
    path = written(tmp_path)
    with pytest.raises(LedgerBroken):
        Ledger.open(path, bytes(32))


def test_a_record_appended_without_the_key_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    forged = {
        "seq": 5,
        "at": "2026-11-29T00:00:00+00:00",
        "type": "signed",
        "body": {},
        "mac": "0" * 64,
    }
    with path.open("ab") as fh:
        fh.write(json.dumps(forged).encode() + b"\n")
    with pytest.raises(LedgerBroken, match="record 5 fails its MAC"):
        Ledger.open(path, KEY)


def test_a_torn_last_write_is_cut_off_and_the_ledger_goes_on(tmp_path: Path) -> None:
    """A crash in the middle of a write: its answer never left, so the half record goes."""
    path = written(tmp_path)
    with path.open("ab") as fh:
        fh.write(b'{"seq": 5, "at": "2026-')
    ledger = Ledger.open(path, KEY)
    assert len(ledger.records) == 4
    ledger.append("signed", {"n": 4})
    assert [r.seq for r in Ledger.open(path, KEY)] == [1, 2, 3, 4, 5]


def test_a_crash_between_the_record_and_its_head_keeps_the_record(tmp_path: Path) -> None:
    path = written(tmp_path, n=2)
    head = path.with_name(path.name + ".head")
    old_head = head.read_bytes()
    Ledger.open(path, KEY).append("signed", {"n": 2})
    head.write_bytes(old_head)  # as if the process died after the fsync, before the head
    assert [r.body["n"] for r in Ledger.open(path, KEY)] == [0, 1, 2]


def test_a_torn_write_cannot_hide_a_dropped_record(tmp_path: Path) -> None:
    """Truncating into the middle of a complete record is not a crash: the head knows."""
    path = written(tmp_path)
    data = path.read_bytes()
    os.truncate(path, len(data) - 10)
    with pytest.raises(LedgerBroken):
        Ledger.open(path, KEY)
