"""The packed signing batch: it round-trips every field, its bytes are canonical, and the signer
refuses anything but the exact form (truncated, padded, bad flags, unsorted payouts)."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from walletsvc.config import Settings
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    TransactionPlan,
)
from walletsvc.shipped import development_policy_file
from walletsvc.signer import wire
from walletsvc.signer.server import SignerServer


def a_batch() -> tuple[TransactionPlan, list[ApprovedPayout]]:
    inputs = (
        Coin("ab" * 32, 3, 5_000_000, bytes(range(22)), KeyPath(2, 1, 7), 120, True),
        Coin("0f" * 32, 0, 1, b"\x00\x14" + bytes(20), KeyPath(1, 0, 2**31 - 1), 0),
    )
    approved = [
        ApprovedPayout("wd-é-2", b"\x51\x20" + bytes(32), 700),  # non-ASCII id, taproot
        ApprovedPayout("wd-1", b"\x00\x14" + bytes(20), 1_000),
    ]
    outputs = (
        PlannedOutput(b"\x00\x14" + bytes(20), 1_000, OutputPurpose.PAYOUT, "wd-1"),
        PlannedOutput(b"\x51\x20" + bytes(32), 700, OutputPurpose.PAYOUT, "wd-é-2"),
        PlannedOutput(b"\x00\x14" + bytes(20), 4_000_000, OutputPurpose.CHANGE, None,
                      KeyPath(2, 1, 8)),
        PlannedOutput(b"\x00\x20" + bytes(32), 900_000, OutputPurpose.SWEEP),
    )  # fmt: skip
    plan = TransactionPlan(inputs, outputs, 98_300, 800_000, 2, 0xFFFFFFFD, 12)
    return plan, approved


def test_a_batch_round_trips_every_field() -> None:
    plan, approved = a_batch()
    data = wire.pack_batch(plan, approved)
    again, payouts, raw = wire.decode_batch(data)
    assert raw == data
    assert again == plan
    assert payouts == sorted(approved, key=lambda a: a.withdrawal_id)  # the canonical order
    assert wire.pack_batch(again, payouts) == data  # canonical: one batch, one byte string


def test_fast_built_values_are_the_values() -> None:
    """unpack_batch builds its frozen values without their __init__: they must be the same
    values, and none of those classes may have a __post_init__ that this would skip."""
    plan, approved = a_batch()
    again, _ = wire.unpack_batch(wire.pack_batch(plan, approved))
    for cls in wire.BUILT_FAST:
        assert dataclasses.is_dataclass(cls) and not hasattr(cls, "__post_init__")
    coin = again.inputs[0]
    assert type(coin) is Coin and hash(coin) == hash(plan.inputs[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        coin.vout = 9  # type: ignore[misc]
    assert dataclasses.asdict(again) == dataclasses.asdict(plan)
    assert again.outputs[3].key_path is None and again.outputs[2].key_path == KeyPath(2, 1, 8)


def _flip(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


def malformed() -> dict[str, bytes]:
    plan, approved = a_batch()
    data = wire.pack_batch(plan, approved)
    header, first_input = struct.calcsize("<BQIIIQIII"), struct.calcsize("<32sIQIIIIB")
    coinbase_flag = header + first_input - 1
    first_output = header + 2 * struct.calcsize("<32sIQIIIIBH") + 22 + 22
    unsorted = TransactionPlan(plan.inputs, plan.outputs, plan.fee_sat)
    packed_unsorted = wire.pack_batch(unsorted, approved)
    # Swap the two approved payouts' order by packing them reversed by hand.
    tail_start = len(packed_unsorted) - sum(
        struct.calcsize("<QHH") + len(a.withdrawal_id.encode()) + len(a.script_pubkey)
        for a in approved
    )
    items = []
    for a in sorted(approved, key=lambda a: a.withdrawal_id, reverse=True):
        wid = a.withdrawal_id.encode()
        items.append(struct.pack("<QHH", a.amount_sat, len(wid), len(a.script_pubkey)))
        items.append(wid + a.script_pubkey)
    return {
        "truncated": data[:-1],
        "padded": data + b"\x00",
        "another version": _flip(data, 0, 2),
        "coinbase flag 2": _flip(data, coinbase_flag, 2),
        "unknown purpose": _flip(data, first_output, 3),
        "payouts unsorted": packed_unsorted[:tail_start] + b"".join(items),
        "empty": b"",
    }


@pytest.mark.parametrize("case", sorted(malformed()))
def test_anything_but_the_exact_form_is_refused(case: str) -> None:
    with pytest.raises(wire.WireError):
        wire.unpack_batch(malformed()[case])


@pytest.mark.parametrize("value", [None, 7, b"", "00" * 40, ["00"]])
def test_the_batch_parameter_is_the_attachments_bytes(value: object) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_batch(value)


def test_payout_amounts_below_one_are_refused() -> None:
    plan, _ = a_batch()
    data = wire.pack_batch(plan, [ApprovedPayout("wd-1", b"\x00", 0)])
    with pytest.raises(wire.WireError, match="amount_sat"):
        wire.unpack_batch(data)
    with pytest.raises(wire.WireError, match="does not fit"):
        wire.pack_batch(plan, [ApprovedPayout("wd-1", b"\x00", -1)])


# -- the attachment framing, against a real signer on a real socket ---------------------------


@pytest.fixture
def signer_socket(tmp_path: Path) -> Iterator[Callable[[], socket.socket]]:
    settings = Settings(data_dir=tmp_path, policy_file=development_policy_file())
    with SignerServer(settings):

        def connect() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(str(settings.signer_socket))
            return sock

        yield connect


def _send(stream: Any, envelope: dict[str, Any], attachment: bytes = b"") -> dict[str, Any]:
    stream.write(json.dumps(envelope).encode() + b"\n" + attachment)
    stream.flush()
    reply: dict[str, Any] = json.loads(stream.readline())
    return reply


def test_a_batch_is_read_whole_and_the_stream_stays_in_step(
    signer_socket: Callable[[], socket.socket],
) -> None:
    stream = signer_socket().makefile("rwb")
    plan, approved = a_batch()
    good = wire.pack_batch(plan, approved)
    sign = {"id": "a", "op": "sign", "params": {"wallet": "w", "kind": "payout"}}
    # A malformed batch, then the same one inside params: both refused, the stream in step.
    refused = _send(stream, {**sign, "attachment": len(good) + 1}, good + b"\x00")
    assert refused["error"]["code"] == "invalid_request" and "batch" in refused["error"]["message"]
    inline = _send(stream, {**sign, "id": "b", "params": {**sign["params"], "batch": "00"}})
    assert inline["id"] == "b" and "attachment" in inline["error"]["message"]
    missing = _send(stream, {**sign, "id": "c"})
    assert missing["id"] == "c" and "attachment" in missing["error"]["message"]
    # A well-formed batch reaches the signer's own rules (this wallet has no keys there).
    judged = _send(stream, {**sign, "id": "d", "attachment": len(good)}, good)
    assert judged["id"] == "d" and judged["error"]["code"] != "invalid_request"
    assert _send(stream, {"id": "e", "op": "status"})["ok"] is True


@pytest.mark.parametrize("size", [-1, 0, "12", True, wire.MAX_LINE_BYTES + 1])
def test_an_attachment_size_that_is_not_one_hangs_up(
    signer_socket: Callable[[], socket.socket], size: object
) -> None:
    stream = signer_socket().makefile("rwb")
    reply = _send(stream, {"id": "a", "op": "sign", "params": {}, "attachment": size})
    assert reply["error"]["code"] == "invalid_request"
    assert stream.readline() == b""  # the server hung up: what followed was not a request


def test_a_connection_closed_inside_the_attachment_is_survived(
    signer_socket: Callable[[], socket.socket],
) -> None:
    sock = signer_socket()
    sock.sendall(json.dumps({"id": "a", "op": "sign", "attachment": 1000}).encode() + b"\n")
    sock.sendall(b"\x01" * 10)
    sock.shutdown(socket.SHUT_WR)
    reply = json.loads(sock.makefile("rb").readline())
    assert "closed inside the attachment" in reply["error"]["message"]
    sock.close()
    stream = signer_socket().makefile("rwb")  # the signer still answers
    assert _send(stream, {"id": "b", "op": "status"})["ok"] is True
