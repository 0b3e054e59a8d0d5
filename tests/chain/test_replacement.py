"""Bitcoin Core 29's replacement policy in the embedded mempool, and mining chosen
transactions (Core's generateblock): the race the theft shield runs against a thief."""

from __future__ import annotations

import pytest
from bitcoin.core import CBlock, CTransaction, b2lx

from walletsvc.devchain import blocks
from walletsvc.devchain.embedded import MAX_REPLACEMENT_CANDIDATES, EmbeddedChain
from walletsvc.domain.errors import ChainRejected, NotFound

from .conftest import FINAL_SEQUENCE, Prevout, TestKey, fund, make_key, spend, txid_of

pytestmark = pytest.mark.kernel

THIEF = make_key(66)
COLD = make_key(77)


def pay(prevout: Prevout, to: TestKey, fee: int, *, sequence: int = FINAL_SEQUENCE) -> bytes:
    """A one-in, one-out spend (110 vB), unsignalled unless asked: full RBF needs no opt-in."""
    return spend([prevout], [(to.script_pubkey, prevout.amount_sat - fee)], sequence=sequence)


def pay_all(prevouts: list[Prevout], to: TestKey, fee: int) -> bytes:
    total = sum(p.amount_sat for p in prevouts)
    return spend(prevouts, [(to.script_pubkey, total - fee)], sequence=FINAL_SEQUENCE)


def vsize_of(raw: bytes) -> int:
    return blocks.tx_vsize(CTransaction.deserialize(raw))


def refusal(chain: EmbeddedChain, raw: bytes) -> ChainRejected:
    """The refusal of ``raw``: test_accept and broadcast agree, and the mempool is unchanged."""
    before = chain.mempool_txids()
    result = chain.test_accept(raw)
    assert not result.allowed
    with pytest.raises(ChainRejected) as info:
        chain.broadcast(raw)
    assert info.value.reason == result.reason
    assert chain.mempool_txids() == before
    return info.value


def block_txids(chain: EmbeddedChain, block_hash: str) -> list[str]:
    block = CBlock.deserialize(chain.block_bytes(block_hash))
    return [str(b2lx(tx.GetTxid())) for tx in block.vtx[1:]]


class TestFullRbf:
    def test_an_unsignalled_transaction_and_its_child_are_replaced(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        original = pay(coin, bob, fee=1_000)
        assert CTransaction.deserialize(original).vin[0].nSequence == 0xFFFFFFFF
        chain.broadcast(original)
        child = pay(Prevout(txid_of(original), 0, coin.amount_sat - 1_000, bob), alice, 1_000)
        chain.broadcast(child)

        replacement = pay(coin, COLD, fee=2_000 + vsize_of(original))
        assert chain.broadcast(replacement) == txid_of(replacement)
        assert chain.mempool_txids() == {txid_of(replacement)}
        chain.mine(1)
        assert chain.confirmations(txid_of(replacement)) == 1
        assert chain.get_transaction(txid_of(original)) is None

    def test_a_signalled_transaction_is_replaced_by_an_unsignalled_one(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        chain.broadcast(pay(coin, bob, fee=1_000, sequence=0xFFFFFFFD))
        replacement = pay(coin, COLD, fee=1_200)
        chain.broadcast(replacement)
        assert chain.mempool_txids() == {txid_of(replacement)}


class TestReplacementRules:
    def test_rule_6_feerate_above_each_direct_conflict(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        first, second = fund(chain, alice, 2)
        original = pay(first, bob, fee=5_000)
        assert vsize_of(original) == 110  # 45454 sat/kvB
        chain.broadcast(original)
        # More absolute fee, but spread over two inputs: a lower feerate.
        replacement = pay_all([first, second], COLD, fee=6_000)
        new_rate = 6_000 * 1000 // vsize_of(replacement)
        refused = refusal(chain, replacement)
        assert refused.reason == "insufficient fee"
        assert refused.message == (
            f"insufficient fee, rejecting replacement {txid_of(replacement)}; "
            f"new feerate 0.{new_rate:08d} BTC/kvB <= old feerate 0.00045454 BTC/kvB"
        )

    def test_rule_6_an_equal_feerate_is_not_enough(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        first, second = fund(chain, alice, 2)
        original = pay(first, bob, fee=11_000)
        assert vsize_of(original) == 110  # exactly 100 sat/vB
        chain.broadcast(original)
        vsize = vsize_of(pay_all([first, second], COLD, fee=20_000))
        same_rate = pay_all([first, second], COLD, fee=100 * vsize)
        assert vsize_of(same_rate) == vsize  # rules 3 and 4 would pass: more fee, more size
        refused = refusal(chain, same_rate)
        assert refused.reason == "insufficient fee" and "new feerate" in refused.message
        assert chain.test_accept(pay_all([first, second], COLD, fee=100 * vsize + 10)).allowed

    def test_rule_3_at_least_the_fees_of_everything_evicted(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        first, second = fund(chain, alice, 2)
        chain.broadcast(pay_all([first, second], bob, fee=3_000))  # ~17 sat/vB
        replacement = pay(first, COLD, fee=2_500)  # ~23 sat/vB, yet less in total
        refused = refusal(chain, replacement)
        assert refused.message == (
            f"insufficient fee, rejecting replacement {txid_of(replacement)}, "
            "less fees than conflicting txs; 0.000025 < 0.00003"
        )

    def test_rule_3_counts_the_descendants_too(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        original = pay(coin, bob, fee=1_000)
        chain.broadcast(original)
        chain.broadcast(pay(Prevout(txid_of(original), 0, coin.amount_sat - 1_000, bob), bob, 900))
        refused = refusal(chain, pay(coin, COLD, fee=1_800))  # more than 1,000, less than 1,900
        assert "less fees than conflicting txs; 0.000018 < 0.000019" in refused.message

    def test_rule_4_the_added_fee_pays_for_its_own_relay(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        chain.broadcast(pay(coin, bob, fee=1_000))
        # 5 sats more, a higher feerate, but 110 vB at 0.1 sat/vB (Core 29's incremental fee).
        short = pay(coin, COLD, fee=1_005)
        refused = refusal(chain, short)
        assert refused.message == (
            f"insufficient fee, rejecting replacement {txid_of(short)}, "
            "not enough additional fees to relay; 0.00000005 < 0.00000011"
        )
        assert refusal(chain, pay(coin, COLD, fee=1_010)).reason == "insufficient fee"
        assert chain.test_accept(pay(coin, COLD, fee=1_011)).allowed

    def test_rule_2_no_new_unconfirmed_inputs(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        first, second = fund(chain, alice, 2)
        unrelated = pay(second, alice, fee=1_000)
        chain.broadcast(unrelated)
        change = Prevout(txid_of(unrelated), 0, second.amount_sat - 1_000, alice)
        chain.broadcast(pay(first, bob, fee=1_000))
        replacement = pay_all([first, change], COLD, fee=20_000)
        refused = refusal(chain, replacement)
        assert refused.reason == "replacement-adds-unconfirmed"
        assert refused.message == (
            "replacement-adds-unconfirmed, "
            f"replacement {txid_of(replacement)} adds unconfirmed input, idx 1"
        )

    def test_rule_2_allows_unconfirmed_inputs_the_replaced_tx_spent(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        first, second = fund(chain, alice, 2)
        parent = pay(second, alice, fee=1_000)
        chain.broadcast(parent)
        change = Prevout(txid_of(parent), 0, second.amount_sat - 1_000, alice)
        chain.broadcast(pay_all([first, change], bob, fee=2_000))
        replacement = pay_all([first, change], COLD, fee=4_000)
        chain.broadcast(replacement)
        assert chain.mempool_txids() == {txid_of(parent), txid_of(replacement)}

    def test_spending_a_conflicting_transaction_is_refused(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        original = pay(coin, bob, fee=1_000)
        chain.broadcast(original)
        own_output = Prevout(txid_of(original), 0, coin.amount_sat - 1_000, bob)
        both = pay_all([coin, own_output], COLD, fee=50_000)
        refused = refusal(chain, both)
        assert refused.reason == "bad-txns-spends-conflicting-tx"
        assert refused.message.endswith(
            f"{txid_of(both)} spends conflicting transaction {txid_of(original)}"
        )

    def test_rule_5_at_most_100_evictions(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        count = MAX_REPLACEMENT_CANDIDATES + 1
        share = (coin.amount_sat - 10_000) // count
        fan_out = spend([coin], [(alice.script_pubkey, share)] * count)
        chain.broadcast(fan_out)
        chain.mine(1)
        outputs = [Prevout(txid_of(fan_out), i, share, alice) for i in range(count)]
        for output in outputs:
            chain.broadcast(pay(output, bob, fee=1_000))
        assert len(chain.mempool_txids()) == count

        too_many = pay_all(outputs, COLD, fee=500_000)
        refused = refusal(chain, too_many)
        assert refused.reason == "too many potential replacements"
        assert refused.message == (
            f"too many potential replacements, rejecting replacement {txid_of(too_many)}; "
            "too many potential replacements (101 > 100)"
        )
        hundred = pay_all(outputs[:MAX_REPLACEMENT_CANDIDATES], COLD, fee=500_000)
        chain.broadcast(hundred)
        assert chain.mempool_txids() == {txid_of(hundred), txid_of(pay(outputs[-1], bob, 1_000))}


def test_a_thief_race_in_rounds_keeps_only_the_last(chain: EmbeddedChain, alice: TestKey) -> None:
    """Thief's spend, our answer to cold storage, the thief's re-answer, ours again: each
    round evicts the one before; a stale round cannot come back; the last one confirms."""
    (coin,) = fund(chain, alice)
    rounds = [
        pay(coin, THIEF, fee=1_000),
        pay(coin, COLD, fee=2_000),
        pay(coin, THIEF, fee=4_000),
        pay(coin, COLD, fee=8_000),
    ]
    for raw in rounds:
        chain.broadcast(raw)
        assert chain.mempool_txids() == {txid_of(raw)}
    for stale in rounds[:-1]:
        assert refusal(chain, stale).reason == "insufficient fee"
    (block_hash,) = chain.mine(1)
    assert block_txids(chain, block_hash) == [txid_of(rounds[-1])]
    assert chain.utxos_for_script(COLD.script_pubkey)
    assert not chain.utxos_for_script(THIEF.script_pubkey)


class TestGenerateBlock:
    def test_the_replaced_original_confirms_and_evicts_the_replacement(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        """A miner who never saw our replacement mines the thief's original."""
        first, second = fund(chain, alice, 2)
        theft = pay(first, THIEF, fee=1_000)
        chain.broadcast(theft)
        shield = pay(first, COLD, fee=5_000)
        chain.broadcast(shield)
        bystander = pay(second, bob, fee=1_000)
        chain.broadcast(bystander)
        assert txid_of(theft) not in chain.mempool_txids()

        tip = chain.tip()
        block_hash, raw_block = chain.generate_block([theft], bob.script_pubkey)
        assert chain.tip() == tip.__class__(tip.height + 1, block_hash)
        assert chain.block_bytes(block_hash) == raw_block
        assert block_txids(chain, block_hash) == [txid_of(theft)]
        assert chain.confirmations(txid_of(theft)) == 1
        # The shield conflicts with the block: gone. The bystander was not chosen: kept.
        assert chain.mempool_txids() == {txid_of(bystander)}
        assert refusal(chain, shield).reason == "bad-txns-inputs-missingorspent"
        assert chain.utxos_for_script(THIEF.script_pubkey)

    def test_mempool_txids_in_the_order_given(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        first, second, third = fund(chain, alice, 3)
        chosen = [pay(first, bob, 1_000), pay(second, bob, 1_000)]
        left = pay(third, bob, 1_000)
        for raw in [*chosen, left]:
            chain.broadcast(raw)
        txids = [txid_of(chosen[1]), txid_of(chosen[0])]
        block_hash, _ = chain.generate_block(txids)
        assert block_txids(chain, block_hash) == txids
        assert chain.mempool_txids() == {txid_of(left)}
        empty, _ = chain.generate_block([])
        assert block_txids(chain, empty) == []
        assert chain.mempool_txids() == {txid_of(left)}

    def test_unknown_txids_and_invalid_blocks_are_refused(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        tip = chain.tip()
        with pytest.raises(NotFound, match="not in mempool"):
            chain.generate_block(["ab" * 32])
        orphan = pay(Prevout("cd" * 32, 0, 10_000, alice), bob, 1_000)
        with pytest.raises(ChainRejected) as invalid:
            chain.generate_block([orphan])
        assert invalid.value.reason == "bad-block"
        forged = spend([coin], [(bob.script_pubkey, coin.amount_sat - 1_000)], sign_with=[bob])
        with pytest.raises(ChainRejected):
            chain.generate_block([forged])
        assert chain.tip() == tip

    def test_without_submit_the_block_is_only_assembled(
        self, chain: EmbeddedChain, alice: TestKey, bob: TestKey
    ) -> None:
        (coin,) = fund(chain, alice)
        raw = pay(coin, bob, 1_000)
        chain.broadcast(raw)
        tip = chain.tip()
        block_hash, raw_block = chain.generate_block([txid_of(raw)], submit=False)
        assert chain.tip() == tip and chain.mempool_txids() == {txid_of(raw)}
        assert chain.submit_block(raw_block)
        assert chain.tip().hash == block_hash and chain.mempool_txids() == set()
