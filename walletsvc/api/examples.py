"""One example per operation in the OpenAPI document: each success response's body, and each
request body, by schema name.

Kept apart from the models so that they read as one consistent story (one wallet, one payout,
one approver) and are checked as a whole: tests/api/test_openapi.py validates every example
against the schema it illustrates, so an example cannot drift from the real shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

T0 = "2026-11-29T12:00:00.000000+00:00"
T1 = "2026-11-29T12:00:05.250000+00:00"
T2 = "2026-11-29T12:14:31.000000+00:00"
WALLET = "pool-hot"
PAYOUT_ID = "0d0c8a4e-6a53-4a53-9f53-5f1f3b0c2a11"
REQUEST_ID = "7b1e0c52-1f4a-4d7e-8f43-2ad1c5b9e0aa"
FREEZE_ID = "c2f1d9a0-3c55-4e0b-9d8e-0e7a7d1b6f42"
OWNER_ID = "e8a1b2c3-d4e5-4f60-8a9b-0c1d2e3f4a5b"
WEBHOOK_ID = "4a5b6c7d-8e9f-4a0b-9c1d-2e3f4a5b6c7d"
DELIVERY_ID = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
EVENT_ID = "5f1e2d3c-4b5a-4697-8877-665544332211"
ROUND_ID = "aef3806b-23d5-46f5-8e11-fc03fada3dc8"
HELD_ID = "78ef62d9-5d36-49e4-b499-b4bae0e6274d"
REFILL_ID = "758e6682-5a6c-469b-a880-00f3933c99bd"
INCIDENT_ID = "252638a8-666b-4412-91d2-3289c40ff747"
SHIELD_FREEZE_ID = "a8a98a0d-2243-46ce-8303-883fcf258eab"
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
DEPOSIT = "bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk"
TXID = "a3b1c2d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"
REFILL_TXID = "b8ce56f9f4a6ada7b23e75141baad7bddd4920fd3c22c4228e59c8fedc0ca542"
COLD_COIN_TXID = "4d2e4570b13abf7ae324b7360994552b1648a93ca879e9ab2a1788141eb048f6"
THIEF_TXID = "8cdc18f3f7f3a3f2033568021a13e3a538b2d0acd6e9fd67d5e49e68b340e028"
ANSWER_TXID = "2f5da13a9e0ef020ca32290502ebb0042bd44f00516cfbc0fafca1cb08ce1e48"
MINERS = {
    "round-812/miner-78": "bcrt1qqcf629kr23xdlqewm6kuskkldsfjcumhc7yj29",
    "round-812/miner-79": "bcrt1q5l7uugl0m6a5dmjlfhcyvnzjhln58rdczefmxk",
    "round-812/miner-80": "bcrt1q3fsg3qsq32gqq6edeslqyfhnncggcxjra783ye",
}
REFILL_ADDRESS = "bcrt1q58mgevkfg5adaw9kwlmmlu9z6v4xgn790zwkt0"
SHA = "9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab"
XPUB = (
    "tpubDD4QasysWBhWTGU7gqXrnr2WSMZ9XhyLsZT6qQiH3rBbsncjgXQUAGVyC2uicBrH7RvczFoHDJ5uxpV"
    "bod1AdMKGnCSAQuTkTay5SXjEH1t"
)

REQUIRED: dict[str, Any] = {"group": "treasury", "m": 2}
RULES: list[dict[str, Any]] = [
    {"rule": "max_per_payout", "result": "pass", "detail": "150000 <= 50000000"},
    {"rule": "approval_tier", "result": "pass", "detail": "below 10000000: no approval"},
    {"rule": "velocity_wallet_24h", "result": "pass", "detail": "1150000 of 500000000"},
]
DECISION: dict[str, Any] = {"outcome": "allow", "rules": RULES, "required": None}
DECISION_VIEW: dict[str, Any] = {
    "staff": "alice",
    "decision": "approve",
    "comment": "round 812 checked",
    "digest": SHA,
    "counts": True,
    "created_at": T1,
}
WITHDRAWAL: dict[str, Any] = {
    "id": PAYOUT_ID,
    "wallet": WALLET,
    "destination": ADDRESS,
    "amount_sat": 150_000,
    "reference": "round-812/miner-77",
    "status": "broadcast",
    "decision": DECISION,
    "approval_request_id": None,
    "approvals": [],
    "txid": TXID,
    "raw_tx": "02000000000101…",
    "fee_sat": 141,
    "transaction_fee_sat": 564,
    "confirmations": 0,
    "failure_reason": None,
    "created_at": T0,
    "updated_at": T1,
}
FREEZE: dict[str, Any] = {
    "id": FREEZE_ID,
    "scope": "all",
    "wallet": None,
    "reason": "suspicious payout pattern",
    "source": "manual",
    "evidence": {},
    "created_by": "staff:carol",
    "created_at": T0,
    "lifted_at": None,
}
# A payout approved after the freeze began: it waits, and leaves when the freeze lifts.
HELD_PAYOUT: dict[str, Any] = {
    "id": HELD_ID,
    "wallet": WALLET,
    "status": "approved",
    "destination": MINERS["round-812/miner-79"],
    "amount_sat": 95_000,
    "reference": "round-813/miner-79",
    "created_at": T1,
}
FREEZE_STATE: dict[str, Any] = {
    "frozen": True,
    "freezes": [FREEZE],
    "held_payouts": [HELD_PAYOUT],
}
# Round 812: four payouts in one transaction (the 564 sat fee shared, 141 sat each).
ROUND_PAYOUTS: list[dict[str, Any]] = [
    {
        "id": PAYOUT_ID,
        "index": 0,
        "destination": ADDRESS,
        "amount_sat": 150_000,
        "reference": "round-812/miner-77",
        "status": "broadcast",
        "txid": TXID,
    },
    *(
        {
            "id": payout_id,
            "index": index,
            "destination": MINERS[reference],
            "amount_sat": amount_sat,
            "reference": reference,
            "status": "broadcast",
            "txid": TXID,
        }
        for index, (payout_id, reference, amount_sat) in enumerate(
            [
                ("7c7d3b28-ee6d-4da0-8aab-44536355057b", "round-812/miner-78", 210_000),
                ("6bc9b7be-5a23-4d82-a5be-ca275cfbae87", "round-812/miner-79", 95_000),
                ("b8c14248-019f-4011-becc-99edd35e0e5d", "round-812/miner-80", 1_320_000),
            ],
            start=1,
        )
    ),
]
ROUND_SUMMARY: dict[str, Any] = {
    "id": ROUND_ID,
    "wallet": WALLET,
    "reference": "round-812",
    "payout_count": 4,
    "total_sat": 1_775_000,
    "counts": {"broadcast": 4},
    "created_at": T0,
}
# Hot below its floor: a PSBT bringing it back to its 5_000_000_000 sat target, one cold coin
# in, the rest back to the next cold address, waiting for the cold key's holder to sign.
REFILL: dict[str, Any] = {
    "id": REFILL_ID,
    "wallet": WALLET,
    "status": "awaiting_signatures",
    "complete": False,
    "signatures": [0],
    "cold_kind": "wpkh",
    "txid": REFILL_TXID,
    "amount_sat": 4_100_000_000,
    "fee_sat": 564,
    "change_sat": 899_999_436,
    "hot_address": REFILL_ADDRESS,
    "inputs": [f"{COLD_COIN_TXID}:0"],
    "cold_balance_sat": 9_800_000_000,
    "psbt": "cHNidP8BAHECAAAAAf…",
    "requested_by": "staff:carol",
    "created_at": T1,
    "completed_at": None,
}
# A coinbase's key leaked: the shield froze everything and outbid the thief to cold storage.
SHIELD_INCIDENT: dict[str, Any] = {
    "id": INCIDENT_ID,
    "wallet": WALLET,
    "status": "saved",
    "first_theft_txid": THIEF_TXID,
    "stolen": [f"{TXID}:4"],
    "stolen_sat": 312_500_000,
    "max_fee_sat": 156_250_000,
    "cap_reached": False,
    "freeze_id": SHIELD_FREEZE_ID,
    "saved_sat": 312_495_600,
    "lost_sat": 0,
    "fees_spent_sat": 4_400,
    "resolved_txid": ANSWER_TXID,
    "resolved_height": 812_346,
    "evidence": {},
    "created_at": T0,
    "resolved_at": T2,
    "rounds": [
        {
            "number": 1,
            "thief_txid": THIEF_TXID,
            "thief_fee_sat": 1_410,
            "thief_vsize": 141,
            "evicted_fees_sat": 1_410,
            "outcome": "answered",
            "answer_txid": ANSWER_TXID,
            "answer_fee_sat": 4_400,
            "answer_rate": 40,
            "answered_in_ms": 38,
            "detail": "312495600 sat to cold address #3 at 40 sat/vB (fee 4400 sat) "
            "against the thief's 1410 sat / 141 vB",
        }
    ],
}
APPROVAL: dict[str, Any] = {
    "id": REQUEST_ID,
    "kind": "withdrawal",
    "subject_id": PAYOUT_ID,
    "status": "pending",
    "required": REQUIRED,
    "approvals_counted": 1,
    "digest": SHA,
    "content": {"kind": "withdrawal", "destination": ADDRESS, "amount_sat": 20_000_000},
    "requester": "token:payout-engine",
    "created_at": T0,
    "expires_at": "2026-11-30T12:00:00.000000+00:00",
    "decided_at": None,
    "decisions": [DECISION_VIEW],
}
COLD: dict[str, Any] = {"kind": "wpkh", "fingerprint": "d34db33f", "next_index": 3}
WALLET_VIEW: dict[str, Any] = {
    "name": WALLET,
    "network": "regtest",
    "current_epoch": 1,
    "account_xpub": XPUB,
    "balances": {
        "confirmed_sat": 4_850_000_000,
        "immature_sat": 500_000_000,
        "unconfirmed_sat": 0,
        "in_flight_sat": 150_705,
        "reserved_sat": 20_000_000,
        "total_sat": 5_350_150_705,
    },
    "created_at": T0,
    "freezes": [],
    "cold_destination": COLD,
    "hot_thresholds": {
        "ceiling_sat": 10_000_000_000,
        "target_sat": 5_000_000_000,
        "floor_sat": 1_000_000_000,
    },
}
DEPOSIT_ADDRESS: dict[str, Any] = {
    "address": DEPOSIT,
    "wallet": WALLET,
    "epoch": 1,
    "index": 4,
    "label": "coinbase 2026-11-29",
    "issued_at": T0,
    "retired": False,
}
ALLOWLIST_ENTRY: dict[str, Any] = {
    "id": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "wallet": WALLET,
    "address": ADDRESS,
    "label": "exchange deposit",
    "source": "treasury",
    "status": "pending",
    "proposed_by": "staff:alice",
    "created_at": T0,
    "active_since": None,
    "usable_from": None,
    "removed_at": None,
    "approval_request_id": REQUEST_ID,
    "integrity_ok": True,
}
PROPOSAL: dict[str, Any] = {
    "id": "2d3e4f5a-6b7c-4d8e-9fa0-b1c2d3e4f5a6",
    "wallet": None,
    "status": "pending_approval",
    "sha256": SHA,
    "base_sha256": "1" * 64,
    "direction": "tighten",
    "assessment": {"tightens": ["max_per_payout_sat"], "loosens": []},
    "timelock_s": 0,
    "proposed_by": "staff:alice",
    "approval_request_id": REQUEST_ID,
    "approval_status": "pending",
    "required": REQUIRED,
    "created_at": T0,
    "effective_at": None,
    "effective_height": None,
    "applied_at": None,
    "vetoed_by": None,
    "document": {"version": 1, "max_per_payout_sat": 40_000_000},
}
SWEEP: dict[str, Any] = {
    "id": "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7",
    "wallet_id": "6b7c8d9e-0f1a-4b2c-8d3e-4f5a6b7c8d9e",
    "txid": TXID,
    "status": "broadcast",
    "trigger": "ceiling",
    "address": "bcrt1qcoldaddress0000000000000000000000000000",
    "cold_index": 2,
    "amount_sat": 5_000_000_000,
    "kept_sat": 5_000_000_000,
    "fee_sat": 282,
    "requested_by": "system:sweeper",
    "created_at": T1,
    "wallet": WALLET,
}
ROTATION: dict[str, Any] = {
    "id": "4f5a6b7c-8d9e-4f0a-b1c2-d3e4f5a6b7c8",
    "wallet": WALLET,
    "status": "pending_approval",
    "reason": "laptop with a backup lost",
    "from_epoch": 1,
    "to_epoch": None,
    "new_xpub": None,
    "requested_by": "staff:carol",
    "approval_request_id": REQUEST_ID,
    "created_at": T0,
    "rotated_at": None,
}
UNFREEZE: dict[str, Any] = {
    "id": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
    "status": "pending_approval",
    "freeze_ids": [FREEZE_ID],
    "held_payouts": [HELD_PAYOUT],
    "reason": "pattern explained: a new miner",
    "requested_by": "staff:carol",
    "approval_request_id": REQUEST_ID,
    "created_at": T1,
    "decided_at": None,
}
WEBHOOK: dict[str, Any] = {
    "id": WEBHOOK_ID,
    "token_id": OWNER_ID,
    "url": "https://pool.example/walletsvc-events",
    "event_types": ["withdrawal.status_changed"],
    "active": True,
    "created_by": "token:payout-engine",
    "created_at": T0,
}
DELIVERY: dict[str, Any] = {
    "id": DELIVERY_ID,
    "webhook_id": WEBHOOK_ID,
    "event_id": EVENT_ID,
    "event_type": "withdrawal.status_changed",
    "status": "delivered",
    "attempts": 2,
    "next_attempt_at": None,
    "last_attempt_at": T1,
    "last_status_code": 200,
    "last_error": None,
    "replay_of": None,
    "created_at": T0,
    "delivered_at": T1,
}

RESPONSES: dict[str, Any] = {
    "Health": {"status": "ok"},
    "Readiness": {
        "ready": True,
        "checks": {
            "database": "ok",
            "chain": {"status": "ok", "height": 812_345, "hash": "00" * 32},
            "signer": "ok",
        },
        "freeze": {"frozen": False, "freezes": [], "held_payouts": []},
    },
    "WalletList": {"wallets": [WALLET_VIEW]},
    "WalletView": WALLET_VIEW,
    "DepositAddress": DEPOSIT_ADDRESS,
    "DepositAddressList": {"addresses": [DEPOSIT_ADDRESS]},
    "WithdrawalView": WITHDRAWAL,
    "WithdrawalPage": {"withdrawals": [WITHDRAWAL], "next_cursor": "MjAyNi0xMS0yOVQxMjowMDow"},
    "WithdrawalPreview": {
        "wallet": WALLET,
        "destination": ADDRESS,
        "amount_sat": 150_000,
        "reference": "round-812/miner-77",
        "status": "approved",
        "decision": DECISION,
        "policy_sha256": SHA,
    },
    "FeeEstimate": {
        "target_blocks": 6,
        "fee_rate_sat_per_vb": 4,
        "single_payout_vsize": 141,
        "single_payout_fee_sat": 564,
        "max_fee_sat": 200_000,
    },
    "FreezeView": FREEZE,
    "FreezeState": FREEZE_STATE,
    "SessionCreated": {
        "token": "wsst_…",
        "expires_at": T2,
        "staff": {"username": "alice", "role": "approver", "groups": ["treasury"]},
    },
    "PasskeyList": {
        "passkeys": [
            {
                "id": "5b7e2c1d-8f4a-4c3e-9b1a-2d6f0e4c8a71",
                "label": "YubiKey 5C",
                "created_at": T2,
                "last_used_at": None,
            }
        ]
    },
    "ApprovalRequestList": {"approvals": [APPROVAL]},
    "ApprovalRequestView": APPROVAL,
    "AllowlistEntryView": ALLOWLIST_ENTRY,
    "AllowlistEntryList": {"entries": [ALLOWLIST_ENTRY]},
    "ActivePolicy": {
        "version": 3,
        "sha256": SHA,
        "wallet_scoped": False,
        "rules": {"version": 1, "max_per_payout_sat": 50_000_000},
    },
    "PolicyProposalView": PROPOSAL,
    "PolicyProposalList": {"proposals": [PROPOSAL]},
    "AuditPage": {
        "events": [
            {
                "seq": 42,
                "created_at": T0,
                "actor": "token:payout-engine",
                "action": "withdrawal.requested",
                "subject_type": "withdrawal",
                "subject_id": PAYOUT_ID,
                "data": {"amount_sat": 150_000, "status": "approved"},
                "prev_hash": "2" * 64,
                "hash": "3" * 64,
            }
        ],
        "next_after": 42,
    },
    "SweepView": SWEEP,
    "SweepList": {"sweeps": [SWEEP]},
    "ColdDestinationState": {
        "current": COLD,
        "changes": [
            {
                "id": "6b7c8d9e-0f1a-4b2c-8d3e-4f5a6b7c8d90",
                "kind": "wsh-sortedmulti",
                "fingerprint": "c0ffee00",
                "descriptor": "wsh(sortedmulti(2,tpub…/0/*,tpub…/0/*,tpub…/0/*))",
                "reason": "move to 2-of-3",
                "status": "pending_approval",
                "requested_by": "staff:carol",
                "approval_request_id": REQUEST_ID,
                "created_at": T0,
                "decided_at": None,
            }
        ],
    },
    "ColdDestinationChangeView": {
        "id": "6b7c8d9e-0f1a-4b2c-8d3e-4f5a6b7c8d90",
        "kind": "wsh-sortedmulti",
        "fingerprint": "c0ffee00",
        "descriptor": "wsh(sortedmulti(2,tpub…/0/*,tpub…/0/*,tpub…/0/*))",
        "reason": "move to 2-of-3",
        "status": "pending_approval",
        "requested_by": "staff:carol",
        "approval_request_id": REQUEST_ID,
        "created_at": T0,
        "decided_at": None,
    },
    "UnfreezeRequestList": {"unfreeze_requests": [UNFREEZE]},
    "UnfreezeRequestDetail": {**UNFREEZE, "approval": APPROVAL},
    "RotationDetail": {
        **ROTATION,
        "approval": APPROVAL,
        "old_epoch_coins_left": None,
        "old_epoch_sat_left": None,
        "old_epoch_immature_coins_left": None,
        "old_epoch_immature_sat_left": None,
        "old_epoch_immature_coins": None,
    },
    "WalletRotations": {
        "wallet": WALLET,
        "current_epoch": 2,
        "current_address": DEPOSIT,
        "old_epoch_coins_left": 0,
        "old_epoch_sat_left": 0,
        "old_epoch_immature_coins_left": 1,
        "old_epoch_immature_sat_left": 312_500_000,
        "old_epoch_immature_coins": [
            {"txid": TXID, "vout": 0, "amount_sat": 312_500_000, "matures_at_height": 812_400}
        ],
        "payouts_waiting_to_be_resigned": False,
        "rotation_sweeps": [
            {"txid": TXID, "status": "confirmed", "amount_sat": 4_800_000_000, "to": "cold"}
        ],
        "rotations": [{**ROTATION, "status": "applied", "to_epoch": 2, "new_xpub": XPUB}],
    },
    "WebhookCreated": {**WEBHOOK, "secret": "whsec_…"},
    "WebhookList": {"webhooks": [WEBHOOK]},
    "DeliveryView": {
        **DELIVERY,
        "id": "0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": T2,
        "last_attempt_at": None,
        "last_status_code": None,
        "replay_of": DELIVERY_ID,
        "created_at": T2,
        "delivered_at": None,
    },
    "DeliveryList": {"deliveries": [DELIVERY]},
    "PayoutRoundView": {**ROUND_SUMMARY, "payouts": ROUND_PAYOUTS},
    "PayoutRoundPage": {"payout_rounds": [ROUND_SUMMARY], "next_cursor": None},
    "RefillView": REFILL,
    "ShieldIncidentList": {"incidents": [SHIELD_INCIDENT]},
}

REQUESTS: dict[str, Any] = {
    "WithdrawalCreate": {
        "wallet": WALLET,
        "destination": ADDRESS,
        "amount_sat": 150_000,
        "reference": "round-812/miner-77",
    },
    "DepositAddressCreate": {"label": "coinbase 2026-11-29"},
    "FreezeRequest": {"reason": "suspicious payout pattern", "scope": "all"},
    "SessionCreate": {"username": "alice", "password": "…", "totp": "492039"},
    "DecisionBody": {"decision": "approve", "digest": SHA, "totp": "492039", "comment": None},
    "AllowlistCreate": {"wallet": WALLET, "address": ADDRESS, "label": "exchange deposit"},
    "ProposalCreate": {"document": {"version": 1, "max_per_payout_sat": 40_000_000}},
    "VetoBody": {"totp": "492039", "comment": "not during the audit"},
    "ColdDestinationProposal": {
        "descriptor": "wsh(sortedmulti(2,tpub…/0/*,tpub…/0/*,tpub…/0/*))",
        "reason": "move to 2-of-3",
    },
    "UnfreezeBody": {"reason": "pattern explained: a new miner", "freeze_id": FREEZE_ID},
    "RotateBody": {"reason": "laptop with a backup lost"},
    "WebhookCreate": {
        "url": "https://pool.example/walletsvc-events",
        "event_types": ["withdrawal.status_changed"],
    },
    "PayoutRoundCreate": {
        "wallet": WALLET,
        "reference": "round-812",
        "payouts": [
            {key: payout[key] for key in ("destination", "amount_sat", "reference")}
            for payout in ROUND_PAYOUTS
        ],
    },
    "SignedPsbt": {"psbt": "cHNidP8BAHECAAAAAf…"},
}


def _schema_name(content: dict[str, Any]) -> str | None:
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] or None


def add_examples(document: dict[str, Any]) -> dict[str, Any]:
    """Put the examples into a generated document (in place), and return it."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("requestBody", {}).get("content", {})
            name = _schema_name(body)
            if name in REQUESTS:
                body["application/json"]["example"] = REQUESTS[name]
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                name = _schema_name(content)
                if status.startswith("2") and name in RESPONSES:
                    content["application/json"]["example"] = RESPONSES[name]
    return document


def install_examples(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_examples(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
