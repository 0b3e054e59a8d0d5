"""A database writer flips a confirmed payout back to `approved`: the signer pays nothing twice.

Before the signer kept its own ledger, each flip paid again (issue 9). Now the worker asks,
the signer refuses (it signed that withdrawal before), the refusal freezes the wallet, and
the chain shows one payment. Runs on SQLite and PostgreSQL (the ``funded`` fixture).
"""

from __future__ import annotations

from bitcoin.core import CBlock

from tests.conftest import WALLET
from tests.fakechain import FakeChain
from tests.helpers import external_destination
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.withdrawal import WithdrawalStatus
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.wallets.freezes import active_freezes

AMOUNT = 2_000_000


def paid_on_chain(chain: FakeChain, script: bytes) -> int:
    """Satoshis the active chain's blocks pay to ``script`` (what actually left)."""
    total = 0
    for height in range(chain.tip().height + 1):
        block_hash = chain.block_hash(height)
        assert block_hash is not None
        block = CBlock.deserialize(chain.block_bytes(block_hash))
        total += sum(
            o.nValue for tx in block.vtx for o in tx.vout if bytes(o.scriptPubKey) == script
        )
    return total


def mine(runtime: Runtime) -> None:
    runtime.chain.mine(1, external_destination("pool")[1])  # type: ignore[attr-defined]


def test_a_confirmed_payout_flipped_back_to_approved_is_not_paid_again(funded: Runtime) -> None:
    address, script = external_destination("miner paid once")
    withdrawal = request_withdrawal(
        funded.db,
        funded.tags,
        body=WithdrawalInput(WALLET, address, AMOUNT, "r1"),
        idempotency_key="k1",
        token_id="t1",
        actor="token:t1",
    )
    funded.tick()
    mine(funded)
    funded.tick()
    with funded.db.read() as uow:
        row = uow.withdrawals.get(withdrawal.withdrawal_id)
        assert row is not None and row.status == WithdrawalStatus.CONFIRMED.value

    with funded.db.write() as uow:  # the attacker: database write access, nothing else
        row = uow.withdrawals.get(withdrawal.withdrawal_id)
        assert row is not None
        row.status = WithdrawalStatus.APPROVED.value
        row.transaction_id = None

    funded.tick()  # the worker asks the signer again; the signer refuses; the hook freezes
    funded.tick()
    mine(funded)
    funded.tick()

    assert isinstance(funded.chain, FakeChain)
    assert paid_on_chain(funded.chain, script) == AMOUNT
    assert funded.chain.mempool_txids() == set()
    with funded.db.read() as uow:
        (frozen,) = active_freezes(uow)
        assert frozen.evidence["kind"] == "signer_failure"
        assert "never twice" in frozen.evidence["detail"]
    assert funded.signer.status()["signed_transactions"] == 1
