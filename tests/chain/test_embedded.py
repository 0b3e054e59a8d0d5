"""The embedded regtest chain against the real libbitcoinkernel: no fakes anywhere."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from bitcoin.core import CBlock, b2lx

from walletsvc.devchain import blocks
from walletsvc.devchain.embedded import ChainLocked, EmbeddedChain
from walletsvc.domain.errors import ChainRejected, NotFound
from walletsvc.domain.network import Network

from .conftest import Prevout, TestKey, fund, make_key, spend, txid_of

pytestmark = pytest.mark.kernel

FEE = 1_000


def pay(prevout: Prevout, to: TestKey, *, fee: int = FEE, **kwargs: object) -> bytes:
    return spend([prevout], [(to.script_pubkey, prevout.amount_sat - fee)], **kwargs)  # type: ignore[arg-type]


def reason_of(chain: EmbeddedChain, raw: bytes) -> str | None:
    result = chain.test_accept(raw)
    assert not result.allowed
    with pytest.raises(ChainRejected) as info:
        chain.broadcast(raw)
    assert info.value.reason == result.reason
    return result.reason


def test_fresh_chain_is_regtest_genesis(chain: EmbeddedChain) -> None:
    assert chain.network is Network.REGTEST
    tip = chain.tip()
    assert tip.height == 0
    assert tip.hash == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    assert chain.block_hash(0) == tip.hash
    assert chain.block_hash(1) is None
    assert chain.fee_rate_sat_per_vb(6) == 3
    assert CBlock.deserialize(chain.block_bytes(tip.hash)).GetHash()[::-1].hex() == tip.hash
    with pytest.raises(NotFound):
        chain.block_bytes("00" * 32)


def test_mined_blocks_follow_consensus_rules(chain: EmbeddedChain, alice: TestKey) -> None:
    hashes = chain.mine(151, alice.script_pubkey)
    assert chain.tip() == chain.tip().__class__(151, hashes[-1])
    assert [chain.block_hash(h) for h in range(1, 152)] == hashes
    # Regtest halves every 150 blocks; the kernel accepted every coinbase amount.
    assert chain.utxos_for_script(alice.script_pubkey)  # coinbases are tracked
    first = CBlock.deserialize(chain.block_bytes(hashes[0])).vtx[0]
    last = CBlock.deserialize(chain.block_bytes(hashes[-1])).vtx[0]
    assert first.vout[0].nValue == 50 * blocks.COIN
    assert last.vout[0].nValue == 25 * blocks.COIN


def test_spend_a_matured_coinbase(chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
    (coin,) = fund(chain, alice)
    raw = pay(coin, bob)
    txid = txid_of(raw)

    accepted = chain.test_accept(raw)
    assert accepted.allowed and accepted.txid == txid
    assert chain.broadcast(raw) == txid
    assert chain.mempool_txids() == {txid}
    assert chain.get_transaction(txid) == raw
    assert chain.confirmations(txid) == 0

    (block_hash,) = chain.mine(1)
    assert chain.mempool_txids() == set()
    assert chain.confirmations(txid) == 1
    assert chain.get_transaction(txid) == raw
    located = chain.transaction_block(txid)
    assert located is not None and located.hash == block_hash
    # The UTXO view moved: the coinbase is spent, bob's output exists.
    assert chain.utxo(coin.txid, coin.vout) is None
    out = chain.utxo(txid, 0)
    assert out is not None and out.amount_sat == coin.amount_sat - FEE
    assert out.script_pubkey == bob.script_pubkey and not out.coinbase
    # The miner collected subsidy + fee, and the block carries the tx.
    block = CBlock.deserialize(chain.block_bytes(block_hash))
    assert [b2lx(tx.GetTxid()) for tx in block.vtx[1:]] == [txid]
    assert block.vtx[0].vout[0].nValue == 50 * blocks.COIN + FEE


def test_parent_and_child_in_one_block(chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
    (coin,) = fund(chain, alice)
    parent = pay(coin, bob)
    parent_txid = txid_of(parent)
    child = pay(Prevout(parent_txid, 0, coin.amount_sat - FEE, bob), alice)
    chain.broadcast(parent)
    chain.broadcast(child)
    assert chain.mempool_txids() == {parent_txid, txid_of(child)}
    (block_hash,) = chain.mine(1)
    block = CBlock.deserialize(chain.block_bytes(block_hash))
    assert [b2lx(tx.GetTxid()) for tx in block.vtx[1:]] == [parent_txid, txid_of(child)]
    assert chain.mempool_txids() == set()


class TestRefusals:
    def test_spend_of_a_confirmed_spent_output(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        chain.broadcast(pay(coin, bob))
        chain.mine(1)
        assert reason_of(chain, pay(coin, alice, fee=2_000)) == "bad-txns-inputs-missingorspent"

    def test_signature_by_the_wrong_key(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        forged = pay(coin, bob, sign_with=[bob])
        assert reason_of(chain, forged) == "mandatory-script-verify-flag-failed"

    def test_wrong_amount_in_the_sighash(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        raw = pay(coin, bob, sign_amounts=[coin.amount_sat + 1])
        assert reason_of(chain, raw) == "mandatory-script-verify-flag-failed"

    def test_immature_coinbase(self, chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
        chain.mine(1, alice.script_pubkey)
        chain.mine(98)  # depth 99 for the next block: one short
        [(op, utxo)] = chain.utxos_for_script(alice.script_pubkey).items()
        raw = pay(Prevout(op[0], op[1], utxo.amount_sat, alice), bob)
        assert reason_of(chain, raw) == "bad-txns-premature-spend-of-coinbase"
        chain.mine(1)
        assert chain.broadcast(raw) == txid_of(raw)

    def test_unknown_input(self, chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
        chain.mine(1)
        raw = pay(Prevout("ab" * 32, 0, 50 * blocks.COIN, alice), bob)
        assert reason_of(chain, raw) == "bad-txns-inputs-missingorspent"

    def test_fee_below_relay(self, chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
        (coin,) = fund(chain, alice)
        assert reason_of(chain, pay(coin, bob, fee=50)) == "min relay fee not met"
        assert chain.test_accept(pay(coin, bob, fee=110)).allowed  # ~110 vB: 1 sat/vB is enough

    def test_outputs_above_inputs(self, chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
        (coin,) = fund(chain, alice)
        assert reason_of(chain, pay(coin, bob, fee=-1)) == "bad-txns-in-belowout"

    def test_garbage(self, chain: EmbeddedChain) -> None:
        result = chain.test_accept(b"\x02\x00\x00")
        assert result == result.__class__(txid="", allowed=False, reason="TX decode failed")
        with pytest.raises(ChainRejected):
            chain.broadcast(b"")

    def test_lock_time_in_the_future(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        height = chain.tip().height
        assert reason_of(chain, pay(coin, bob, locktime=height + 2)) == "non-final"
        # Anti-fee-sniping (lock time = tip height) is final for the next block.
        assert chain.broadcast(pay(coin, bob, locktime=height))
        chain.mine(1)
        assert chain.mempool_txids() == set()


class TestReplacement:
    def test_bip125_replacement(self, chain: EmbeddedChain, alice: TestKey, bob: TestKey) -> None:
        (coin,) = fund(chain, alice)
        original = pay(coin, bob, fee=1_000)
        chain.broadcast(original)
        child = pay(Prevout(txid_of(original), 0, coin.amount_sat - 1_000, bob), alice)
        chain.broadcast(child)

        # More absolute fee than the original but not than original + child.
        assert reason_of(chain, pay(coin, alice, fee=1_500)) == "insufficient fee"
        replacement = pay(coin, alice, fee=3_000)
        assert chain.broadcast(replacement) == txid_of(replacement)
        # The original and its descendant are evicted.
        assert chain.mempool_txids() == {txid_of(replacement)}

        chain.mine(2)
        assert chain.confirmations(txid_of(replacement)) == 2
        assert chain.confirmations(txid_of(original)) == 0
        assert chain.get_transaction(txid_of(original)) is None
        assert reason_of(chain, original) == "bad-txns-inputs-missingorspent"

    def test_replacement_pays_for_its_own_relay(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        chain.broadcast(pay(coin, bob, fee=1_000))  # ~9 sat/vB at ~110 vB
        # Core 29's incremental relay fee is 0.1 sat/vB: 11 sats more for ~110 vB.
        assert reason_of(chain, pay(coin, alice, fee=1_005)) == "insufficient fee"
        assert chain.test_accept(pay(coin, alice, fee=1_050)).allowed


class TestIdempotence:
    def test_rebroadcast_from_mempool(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        raw = pay(coin, bob)
        assert chain.broadcast(raw) == chain.broadcast(raw) == txid_of(raw)
        assert chain.mempool_txids() == {txid_of(raw)}
        assert chain.test_accept(raw).reason == "txn-already-in-mempool"

    def test_rebroadcast_after_confirmation(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        raw = pay(coin, bob)
        chain.broadcast(raw)
        chain.mine(1)
        assert chain.broadcast(raw) == txid_of(raw)
        assert chain.mempool_txids() == set()
        assert chain.test_accept(raw).reason == "txn-already-known"


def test_restart_keeps_blocks_and_mempool(chain_dir: Path, alice: TestKey, bob: TestKey) -> None:
    first = EmbeddedChain(chain_dir, fee_rate_sat_per_vb=2)
    (coin,) = fund(first, alice)
    raw = pay(coin, bob)
    first.broadcast(raw)
    tip = first.tip()
    first.close()
    first.close()  # idempotent

    second = EmbeddedChain(chain_dir, fee_rate_sat_per_vb=2)
    try:
        assert second.tip() == tip
        assert second.mempool_txids() == {txid_of(raw)}
        assert second.utxo(coin.txid, coin.vout) is not None
        second.mine(1)
        assert second.confirmations(txid_of(raw)) == 1
    finally:
        second.close()


_HOLDER = """
import sys
from pathlib import Path
from walletsvc.devchain.embedded import EmbeddedChain
chain = EmbeddedChain(Path(sys.argv[1]), fee_rate_sat_per_vb=1)
print("ready", flush=True)
sys.stdin.read()
chain.close()
"""


def test_second_process_gets_chain_locked(chain_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(chain_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(ChainLocked):
            EmbeddedChain(chain_dir, fee_rate_sat_per_vb=1)
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    # Released with the holder: we can open it now, and a second opener here is locked out.
    chain = EmbeddedChain(chain_dir, fee_rate_sat_per_vb=1)
    try:
        with pytest.raises(ChainLocked):
            EmbeddedChain(chain_dir, fee_rate_sat_per_vb=1)
    finally:
        chain.close()


class TestReorg:
    def test_longer_branch_wins_and_dropped_txs_return(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        kept, conflicted = fund(chain, alice, coins=2)
        fork_height = chain.tip().height
        fork_parent = chain.tip().hash
        tx_kept = pay(kept, bob)
        tx_conflicted = pay(conflicted, bob)
        chain.broadcast(tx_kept)
        chain.broadcast(tx_conflicted)
        (a1,) = chain.mine(1)
        assert chain.confirmations(txid_of(tx_kept)) == 1

        # Branch B spends `conflicted` differently; same length first: no switch.
        double_spend = pay(conflicted, alice, fee=4_000)
        miner = make_key(9).script_pubkey
        b1 = chain.build_block(fork_parent, [double_spend], coinbase_script_pubkey=miner)
        assert chain.submit_block(b1) is False
        assert chain.block_hash(fork_height + 1) == a1
        b1_hash = str(b2lx(CBlock.deserialize(b1).GetHash()))
        assert chain.block_height(b1_hash) == fork_height + 1 and not chain.is_active(b1_hash)

        b2 = chain.build_block(b1_hash, [], coinbase_script_pubkey=miner)
        assert chain.submit_block(b2) is True
        assert chain.tip().height == fork_height + 2
        assert chain.block_hash(fork_height + 1) == b1_hash
        assert not chain.is_active(a1)

        # tx_kept returns to the mempool; tx_conflicted lost to the double spend.
        assert chain.mempool_txids() == {txid_of(tx_kept)}
        assert chain.confirmations(txid_of(tx_kept)) == 0
        assert chain.confirmations(txid_of(double_spend)) == 2
        assert chain.utxo(txid_of(tx_kept), 0) is None
        assert chain.utxo(kept.txid, kept.vout) is not None
        assert chain.utxo(conflicted.txid, conflicted.vout) is None

        chain.mine(1)
        assert chain.confirmations(txid_of(tx_kept)) == 1
        assert chain.mempool_txids() == set()

    def test_kernel_refuses_an_invalid_block(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        tip = chain.tip()
        forged = pay(coin, bob, sign_with=[bob])
        raw = chain.build_block(tip.hash, [forged], coinbase_script_pubkey=bob.script_pubkey)
        with pytest.raises(ChainRejected):
            chain.submit_block(raw)
        assert chain.tip() == tip


_CRASHER = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.chain.conftest import fund, make_key, spend
from walletsvc.devchain.embedded import EmbeddedChain
chain = EmbeddedChain(Path(sys.argv[1]), fee_rate_sat_per_vb=1)
(coin,) = fund(chain, make_key(1))
raw = spend([coin], [(make_key(2).script_pubkey, coin.amount_sat - 1000)])
chain.broadcast(raw)
print(chain.tip().height, chain.tip().hash, raw.hex(), flush=True)
os._exit(0)  # no close(): the kernel never flushes its block index
"""


def test_unclean_stop_loses_nothing(chain_dir: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _CRASHER, str(chain_dir), str(repo)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    height, tip_hash, raw_hex = int(out[0]), out[1], out[2]
    chain = EmbeddedChain(chain_dir, fee_rate_sat_per_vb=1)
    try:
        assert chain.tip().height == height == 101
        assert chain.tip().hash == tip_hash
        assert chain.mempool_txids() == {txid_of(bytes.fromhex(raw_hex))}
        chain.mine(1)
        assert chain.confirmations(txid_of(bytes.fromhex(raw_hex))) == 1
    finally:
        chain.close()


def test_auto_mining_and_concurrent_callers(
    chain: EmbeddedChain, alice: TestKey, bob: TestKey
) -> None:
    import threading

    coins = fund(chain, alice, coins=4)
    errors: list[BaseException] = []

    def worker(coin: Prevout) -> None:
        try:
            for _ in range(20):
                chain.tip()
                chain.mempool_txids()
            chain.broadcast(pay(coin, bob))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    chain.start_auto_mining(0.05)
    threads = [threading.Thread(target=worker, args=(c,)) for c in coins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    deadline = time.monotonic() + 10
    while chain.mempool_txids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert chain.mempool_txids() == set()
    for coin in coins:
        assert chain.confirmations(txid_of(pay(coin, bob))) >= 1
    height = chain.tip().height
    time.sleep(0.2)
    assert chain.tip().height == height  # an empty mempool mines nothing
    chain.stop_auto_mining()
