"""The fast path (keys unlocked once, wire parts serialised once) against an independent
reference: python-bitcoinlib builds the transaction and computes BIP143 with its own
``SignatureHash``, embit derives the keys from the mnemonic, coincurve signs (RFC 6979, so the
signatures are deterministic). The HotSigner must produce exactly those bytes, cold or warm,
and the kernel must accept them. Also: what the key cache keeps, and what it refuses.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import pytest
from bip_utils import Bip39SeedGenerator
from bitcoin.core import (
    CMutableTransaction,
    COutPoint,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    lx,
)
from bitcoin.core.script import (
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from coincurve import PrivateKey
from embit import bip32 as embit_bip32
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.hashes import hash160
from walletsvc.domain.ports import SpentOutput
from walletsvc.domain.transaction import ApprovedPayout, KeyPath, TransactionPlan
from walletsvc.keys.hd import HARDENED, AccountKeys, DerivedKey
from walletsvc.keys.signer import HotSigner

from .conftest import WALLET, KeysWallet
from .helpers import PlanSpec, build, foreign_script

CAP = 10**8


def _sign(
    signer: HotSigner, wallet: KeysWallet, plan: TransactionPlan, approved: list[ApprovedPayout]
) -> bytes:
    return signer.sign(
        wallet=WALLET,
        network=wallet.network,
        seeds=wallet.seeds,
        plan=plan,
        approved=approved,
        max_fee_sat=CAP,
    ).raw


def _reference_raw(wallet: KeysWallet, plan: TransactionPlan) -> bytes:
    """The same transaction built and signed with no walletsvc code at all."""
    roots = {
        epoch: embit_bip32.HDKey.from_seed(bytes(Bip39SeedGenerator(words).Generate()))
        for epoch, words in wallet.mnemonics.items()
    }
    vin = [CTxIn(COutPoint(lx(c.txid), c.vout), nSequence=plan.sequence) for c in plan.inputs]
    vout = [CTxOut(o.amount_sat, CScript(o.script_pubkey)) for o in plan.outputs]
    tx = CMutableTransaction(vin, vout, nLockTime=plan.locktime, nVersion=plan.version)
    witnesses = []
    for index, coin in enumerate(plan.inputs):
        path = coin.key_path
        node = roots[path.epoch].derive(f"m/84h/1h/0h/{path.chain}/{path.index}")
        key = PrivateKey(node.key.secret)
        pub = key.public_key.format(compressed=True)
        script_code = CScript(b"\x76\xa9\x14" + hash160(pub) + b"\x88\xac")
        digest = SignatureHash(
            script_code, tx, index, SIGHASH_ALL, coin.amount_sat, SIGVERSION_WITNESS_V0
        )
        signature = key.sign(digest, hasher=None) + bytes([SIGHASH_ALL])
        witnesses.append(CTxInWitness(CScriptWitness([signature, pub])))
    tx.wit = CTxWitness(witnesses)
    raw: bytes = tx.serialize()
    return raw


_input = st.tuples(
    st.sampled_from([1, 2]),  # epoch
    st.sampled_from([0, 1]),  # chain
    st.integers(0, 40),  # index: small, so that plans reuse keys the cache already holds
    st.integers(1_000, 5 * 10**8),
)


@st.composite
def _plans(draw: st.DrawFn, wallet: KeysWallet) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    inputs = draw(st.lists(_input, min_size=1, max_size=8))
    total = sum(i[3] for i in inputs)
    budget = total - draw(st.integers(0, min(CAP, total - 1)))
    kinds = st.sampled_from(["p2wpkh", "p2wsh", "p2tr", "p2pkh"])
    payouts = []
    for n in range(draw(st.integers(0, 6))):
        if budget <= 1:
            break
        amount = draw(st.integers(1, budget - 1))
        payouts.append((foreign_script(draw(st.integers(0, 50)) + 100 * n, draw(kinds)), amount))
        budget -= amount
    change = (draw(st.sampled_from([1, 2])), draw(st.integers(0, 40)), budget)
    plan, approved = build(
        wallet.xpubs,
        PlanSpec(
            inputs=inputs,
            payouts=payouts,
            change=change,
            # python-bitcoinlib hashes nLockTime as signed: keep below 2**31 for the reference.
            locktime=draw(st.integers(0, 2**31 - 1)),
            version=draw(st.sampled_from([1, 2])),
        ),
    )
    plan = replace(
        plan,
        outputs=tuple(draw(st.permutations(plan.outputs))),
        sequence=draw(st.integers(0, 0xFFFF_FFFD)),
    )
    return plan, approved


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_signs_exactly_what_the_reference_signs(
    data: st.DataObject, signer: HotSigner, wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    plan, approved = data.draw(_plans(wallet))
    warm = _sign(signer, wallet, plan, approved)  # the session signer: keys kept across examples
    cold = _sign(HotSigner(wallet.kek.seed_vault(), kernel), wallet, plan, approved)
    assert warm == cold == _reference_raw(wallet, plan)
    # The signer already ran the kernel; run it once more here, outside the signer.
    kernel.verify_transaction(
        warm, [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
    )


def test_a_thousand_inputs_match_the_reference(
    wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    n = 1_000
    plan, approved = build(
        wallet.xpubs,
        PlanSpec(
            inputs=[(1 + i % 2, i % 2, i, 20_000) for i in range(n)],
            payouts=[(foreign_script(i), 15_000) for i in range(n - 1)],
            change=(1, 7, n * 20_000 - (n - 1) * 15_000 - 50_000),
        ),
    )
    signer = HotSigner(wallet.kek.seed_vault(), kernel)
    assert _sign(signer, wallet, plan, approved) == _reference_raw(wallet, plan)


# --- the key cache ------------------------------------------------------------------------------
def _standard(wallet: KeysWallet) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    return build(
        wallet.xpubs,
        PlanSpec(
            inputs=[(1, 0, 0, 150_000), (2, 1, 4, 80_000)],
            payouts=[(foreign_script(1), 100_000)],
            change=(2, 5, 126_000),
        ),
    )


def test_a_swapped_seed_is_refused_even_when_the_epochs_are_unlocked(
    wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    signer = HotSigner(wallet.kek.seed_vault(), kernel)
    plan, approved = _standard(wallet)
    _sign(signer, wallet, plan, approved)  # both epochs unlocked now
    swapped = {1: wallet.seeds[2], 2: wallet.seeds[1]}
    with pytest.raises(SigningRefused, match="cannot use the seed of key epoch 1"):
        signer.sign(
            wallet=WALLET,
            network=wallet.network,
            seeds=swapped,
            plan=plan,
            approved=approved,
            max_fee_sat=CAP,
        )
    with pytest.raises(SigningRefused, match="does not authenticate"):
        signer.sign(
            wallet="another-wallet",
            network=wallet.network,
            seeds=wallet.seeds,
            plan=plan,
            approved=approved,
            max_fee_sat=CAP,
        )


def test_unlock_checks_the_seeds_and_wipe_forgets_them(
    wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    signer = HotSigner(wallet.kek.seed_vault(), kernel)
    signer.unlock(wallet=WALLET, network=wallet.network, seeds=wallet.seeds, derive={0: 3, 1: 2})
    assert signer._keys.unlocked_epochs == 2
    unlocked = signer._keys.epochs(WALLET, wallet.network, wallet.seeds, {1})[1]
    assert len(unlocked._keys) == 5
    plan, approved = _standard(wallet)
    before = _sign(signer, wallet, plan, approved)

    signer.wipe()
    assert signer._keys.unlocked_epochs == 0
    with pytest.raises(RuntimeError, match="after wipe"):
        unlocked.key(0, 30)  # a reference kept from before the wipe is dead
    assert _sign(signer, wallet, plan, approved) == before  # unlocks again on demand

    with pytest.raises(SigningRefused, match="cannot use the seed of key epoch 2"):
        signer.unlock(wallet=WALLET, network=wallet.network, seeds={2: wallet.seeds[1]})
    with pytest.raises(ValueError, match="chain 2"):
        signer.unlock(wallet=WALLET, network=wallet.network, seeds=wallet.seeds, derive={2: 1})
    with pytest.raises(ValueError):
        signer.unlock(
            wallet=WALLET, network=wallet.network, seeds=wallet.seeds, derive={0: HARDENED + 1}
        )


def test_unlocked_keys_reach_no_repr_and_no_pickle(
    wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    signer = HotSigner(wallet.kek.seed_vault(), kernel)
    plan, approved = _standard(wallet)
    _sign(signer, wallet, plan, approved)
    unlocked = signer._keys.epochs(WALLET, wallet.network, wallet.seeds, {1})[1]
    key = unlocked.key(0, 0)
    secret = key.private_key.secret
    for thing in (signer, signer._keys, unlocked, key):
        text = repr(thing)
        assert secret.hex() not in text and str(int.from_bytes(secret, "big")) not in text
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(thing)
        with pytest.raises(TypeError, match="cannot be pickled"):
            copy.copy(thing)
    assert repr(key) == f"SigningKey(public_key={key.public_key.hex()})"


def test_cached_keys_do_not_let_an_odd_key_path_through(
    signer: HotSigner, wallet: KeysWallet
) -> None:
    """The cache is keyed by (chain, index): a bool or out-of-range path must still be refused
    by the path checks, not answered from the cache."""
    plan, approved = _standard(wallet)
    _sign(signer, wallet, plan, approved)
    coin = plan.inputs[0]
    for bad, message in (
        (KeyPath(1, False, 0), "chain=False"),
        (KeyPath(True, 0, 0), "epoch=True"),
        (KeyPath(1, 0, HARDENED), "outside BIP84"),
        (KeyPath(1, 2, 0), "outside BIP84"),
    ):
        odd = replace(plan, inputs=(replace(coin, key_path=bad), *plan.inputs[1:]))
        with pytest.raises(SigningRefused, match=message):
            _sign(signer, wallet, odd, approved)


def test_each_key_is_derived_once_per_process(
    wallet: KeysWallet, kernel: KernelScriptVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    derived: list[tuple[int, int]] = []
    original = AccountKeys.key

    def counting(self: AccountKeys, chain: int, index: int) -> DerivedKey:
        derived.append((chain, index))
        return original(self, chain, index)

    monkeypatch.setattr(AccountKeys, "key", counting)
    signer = HotSigner(wallet.kek.seed_vault(), kernel)
    plan, approved = _standard(wallet)
    first = _sign(signer, wallet, plan, approved)
    assert sorted(derived) == [(0, 0), (1, 4), (1, 5)]
    assert _sign(signer, wallet, plan, approved) == first
    assert len(derived) == 3  # the second transaction derived nothing
