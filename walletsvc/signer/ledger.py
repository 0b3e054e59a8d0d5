"""The signer's append-only ledger: one JSON record a line, each HMAC-chained to the last.

Every decision the signer makes (a seed created, a transaction signed, a freeze, the policy it
enforces) is a record here, written, flushed and fsynced before the answer leaves the
process; the signer's state is the fold of these records and nothing else. A record's MAC
covers its sequence number, its content and the previous record's MAC, under a key derived
from ``signer.key``; nobody without that key can edit, insert, reorder or drop a record
without the chain breaking.

Dropping records from the *end* leaves a valid shorter chain, so beside the ledger a small
head file (``ledger.head``: the last sequence number and MAC, itself MACed) is replaced
atomically after each append; a ledger shorter than its head is refused. A ledger one record
longer than its head is the crash between the two writes and is accepted (the head is
rewritten). A torn last line (a crash in the middle of a write, whose answer never left) is
cut off only when the head proves it was never completed. Anything else: ``LedgerBroken``,
and the signer refuses to start.

Whoever can replace *both* files with an older pair can roll the signer back; that needs
write access to the signer's own directory, which the production layout gives no one but the
signer's OS user (docs/runbook.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from walletsvc.domain.canonical import canonical_json

log = logging.getLogger(__name__)
GENESIS_MAC = "0" * 64


class LedgerBroken(RuntimeError):
    """The ledger fails its chain check: the signer must not serve from it."""


@dataclass(frozen=True)
class Record:
    seq: int
    at: datetime
    type: str
    body: dict[str, Any]
    mac: str


def _mac(key: bytes, seq: int, at: str, type_: str, body: dict[str, Any], prev: str) -> str:
    message = canonical_json({"seq": seq, "at": at, "type": type_, "body": body, "prev": prev})
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, canonical_json({"head": seq, "mac": mac}), hashlib.sha256).hexdigest()


class Ledger:
    """Open with :meth:`open` (which verifies the whole chain), then :meth:`append`."""

    def __init__(self, path: Path, key: bytes, records: list[Record]) -> None:
        self.path = path
        self._head_path = path.with_name(path.name + ".head")
        self._key = key
        self.records = records

    def __repr__(self) -> str:
        return f"Ledger({self.path}, {len(self.records)} records)"

    @property
    def last_mac(self) -> str:
        return self.records[-1].mac if self.records else GENESIS_MAC

    @classmethod
    def open(cls, path: Path, key: bytes) -> Ledger:
        """Read and verify every record; raise LedgerBroken on any break in the chain."""
        records: list[Record] = []
        head = _read_head(path.with_name(path.name + ".head"), key)
        data = path.read_bytes() if path.exists() else b""
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline, as every complete write does
        prev = GENESIS_MAC
        for number, line in enumerate(lines, start=1):
            record = _parse(line, number)
            if record.seq != number:
                raise LedgerBroken(f"ledger record {number} carries sequence {record.seq}")
            expected = _mac(key, record.seq, record.at.isoformat(), record.type, record.body, prev)
            if not hmac.compare_digest(expected, record.mac):
                raise LedgerBroken(f"ledger record {number} fails its MAC: edited or reordered")
            records.append(record)
            prev = record.mac
        ledger = cls(path, key, records)
        head_seq = head[0] if head is not None else 0
        if head is not None and (head_seq > len(records) or _mac_at(records, head_seq) != head[1]):
            raise LedgerBroken(
                f"the ledger head names record {head_seq}, which the ledger does not hold as "
                f"written: {len(records)} records remain (truncated or replaced)"
            )
        if len(records) > head_seq + 1:
            raise LedgerBroken(
                f"the ledger holds {len(records)} records but its head only {head_seq}"
            )
        if tail:
            if len(records) != head_seq:
                raise LedgerBroken("the ledger ends in a partial record after a complete one")
            # A write that never completed: its answer never left the signer. Cut it off.
            log.warning("signer ledger: cutting off a partial last record (crash mid-write)")
            ledger._truncate_to(len(data) - len(tail))
        if len(records) != head_seq:
            ledger._write_head()
        return ledger

    def append(self, type_: str, body: dict[str, Any], *, at: datetime | None = None) -> Record:
        """Write one record and make it durable (fsync) before returning it."""
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        seq = len(self.records) + 1
        # Round-trip through JSON so the MAC is over exactly what a replay will read back.
        clean: dict[str, Any] = json.loads(canonical_json(body))
        mac = _mac(self._key, seq, moment.isoformat(), type_, clean, self.last_mac)
        record = Record(seq, moment, type_, clean, mac)
        line = canonical_json(
            {"seq": seq, "at": moment.isoformat(), "type": type_, "body": clean, "mac": mac}
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(record)
        self._write_head()
        return record

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def _write_head(self) -> None:
        seq, mac = len(self.records), self.last_mac
        text = json.dumps({"seq": seq, "mac": mac, "tag": _head_mac(self._key, seq, mac)})
        tmp = self._head_path.with_name(self._head_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._head_path)
        dir_fd = os.open(self._head_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _truncate_to(self, size: int) -> None:
        with open(self.path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())


def _mac_at(records: list[Record], seq: int) -> str:
    return records[seq - 1].mac if seq > 0 else GENESIS_MAC


def _parse(line: bytes, number: int) -> Record:
    try:
        obj = json.loads(line)
        return Record(
            seq=int(obj["seq"]),
            at=datetime.fromisoformat(obj["at"]),
            type=str(obj["type"]),
            body=dict(obj["body"]),
            mac=str(obj["mac"]),
        )
    except (ValueError, KeyError, TypeError):
        raise LedgerBroken(f"ledger record {number} is not a valid record") from None


def _read_head(path: Path, key: bytes) -> tuple[int, str] | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
        seq, mac, tag = int(obj["seq"]), str(obj["mac"]), str(obj["tag"])
    except (ValueError, KeyError, TypeError):
        raise LedgerBroken("the ledger head file is not valid") from None
    if not hmac.compare_digest(_head_mac(key, seq, mac), tag):
        raise LedgerBroken("the ledger head file fails its MAC")
    return seq, mac
