"""HotSigner against the real libbitcoinkernel: valid signatures, and every refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bip_utils import Bip39SeedGenerator
from bitcoin.core import CTransaction
from bitcoin.core.script import SIGHASH_ALL, SIGVERSION_WITNESS_V0, CScript, SignatureHash
from coincurve import PublicKey
from embit import bip32 as embit_bip32
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.domain.errors import SigningRefused, VerificationFailed
from walletsvc.domain.network import Network
from walletsvc.domain.ports import SpentOutput
from walletsvc.domain.transaction import (
    ApprovedPayout,
    KeyPath,
    OutputPurpose,
    PlannedOutput,
    SignedTransaction,
    TransactionPlan,
)
from walletsvc.keys.kek import Kek
from walletsvc.keys.keystore import EncryptedSeed
from walletsvc.keys.signer import HotSigner

from .conftest import WALLET, KeysWallet, make_wallet
from .helpers import PlanSpec, build, foreign_script

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
CAP = 100_000


def _sign(
    signer: HotSigner,
    wallet: KeysWallet,
    plan: TransactionPlan,
    approved: list[ApprovedPayout],
    *,
    sweep_scripts: frozenset[bytes] = frozenset(),
    max_fee_sat: int = CAP,
    seeds: dict[int, EncryptedSeed] | None = None,
) -> SignedTransaction:
    return signer.sign(
        wallet=WALLET,
        network=wallet.network,
        seeds=wallet.seeds if seeds is None else seeds,
        plan=plan,
        approved=approved,
        sweep_scripts=sweep_scripts,
        max_fee_sat=max_fee_sat,
    )


def _standard(wallet: KeysWallet) -> tuple[TransactionPlan, list[ApprovedPayout]]:
    return build(
        wallet.xpubs,
        PlanSpec(
            inputs=[(1, 0, 0, 150_000), (1, 1, 4, 80_000), (2, 0, 9, 40_000)],
            payouts=[
                (foreign_script(1), 100_000),
                (foreign_script(2, "p2tr"), 60_000),
                (foreign_script(3, "p2pkh"), 30_000),
            ],
            change=(2, 5, 76_000),
            locktime=321,
        ),
    )


def _private_key_hexes(wallet: KeysWallet, plan: TransactionPlan) -> list[str]:
    """Independently derived (embit) private keys of the plan's inputs: must never leak."""
    out = []
    for coin in plan.inputs:
        seed = Bip39SeedGenerator(wallet.mnemonics[coin.key_path.epoch]).Generate()
        node = embit_bip32.HDKey.from_seed(bytes(seed)).derive(
            f"m/84h/1h/0h/{coin.key_path.chain}/{coin.key_path.index}"
        )
        out.append(node.key.secret.hex())
    return out


def _der_s(der: bytes) -> int:
    assert der[0] == 0x30 and der[1] == len(der) - 2
    r_len = der[3]
    s_len = der[5 + r_len]
    return int.from_bytes(der[6 + r_len : 6 + r_len + s_len], "big")


# --- valid signing ----------------------------------------------------------------------------
def test_signs_a_plan_the_kernel_accepts(
    signer: HotSigner, wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    plan, approved = _standard(wallet)
    signed = _sign(signer, wallet, plan, approved)
    assert signed.fee_sat == plan.fee_sat == 4_000
    spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
    kernel.verify_transaction(signed.raw, spent)  # again, explicitly

    tx = CTransaction.deserialize(signed.raw)
    assert tx.GetTxid()[::-1].hex() == signed.txid
    assert (tx.nVersion, tx.nLockTime) == (2, 321)
    assert all(txin.nSequence == 0xFFFFFFFD for txin in tx.vin)  # BIP125
    assert [(o.nValue, bytes(o.scriptPubKey)) for o in tx.vout] == [
        (o.amount_sat, o.script_pubkey) for o in plan.outputs
    ]
    assert [(txin.prevout.hash[::-1].hex(), txin.prevout.n) for txin in tx.vin] == [
        c.outpoint for c in plan.inputs
    ]
    assert signed.vsize == (tx.calc_weight() + 3) // 4
    for index, (coin, wit) in enumerate(zip(plan.inputs, tx.wit.vtxinwit, strict=True)):
        sig, pubkey = wit.scriptWitness.stack
        assert len(pubkey) == 33 and pubkey[0] in (2, 3)
        assert pubkey == wallet.xpubs[coin.key_path.epoch].pubkey(
            coin.key_path.chain, coin.key_path.index
        )
        assert sig[-1] == SIGHASH_ALL
        assert _der_s(sig[:-1]) <= SECP256K1_N // 2  # low-S
        # Cross-check our sighash with python-bitcoinlib's reference implementation.
        script_code = CScript(b"\x76\xa9\x14" + coin.script_pubkey[2:] + b"\x88\xac")
        digest = SignatureHash(
            script_code, tx, index, SIGHASH_ALL, coin.amount_sat, SIGVERSION_WITNESS_V0
        )
        assert PublicKey(pubkey).verify(sig[:-1], digest, hasher=None)


def test_signing_is_deterministic(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    first = _sign(signer, wallet, plan, approved)
    second = _sign(signer, wallet, plan, approved)
    assert first == second
    # A signer with a freshly loaded copy of the KEK gives byte-identical output too.
    again = HotSigner(Kek(bytes(range(32))).seed_vault(), KernelScriptVerifier())
    assert _sign(again, wallet, plan, approved).raw == first.raw


def test_sweep_and_many_inputs_of_one_key(signer: HotSigner, wallet: KeysWallet) -> None:
    cold = foreign_script(99, "p2wsh")
    plan, approved = build(
        wallet.xpubs,
        PlanSpec(
            inputs=[(1, 0, 3, 10_000)] * 1 + [(1, 0, 3, 20_000), (1, 1, 0, 30_000)],
            sweeps=[(cold, 59_000)],
        ),
    )
    signed = _sign(signer, wallet, plan, approved, sweep_scripts=frozenset({cold}))
    assert signed.fee_sat == 1_000


def test_mainnet_wallet_signs_with_coin_type_0(kernel: KernelScriptVerifier) -> None:
    main = make_wallet(Network.MAINNET)
    plan, approved = build(
        main.xpubs,
        PlanSpec(
            inputs=[(1, 0, 0, 50_000)], payouts=[(foreign_script(5), 20_000)], change=(1, 0, 29_000)
        ),
    )
    assert main.xpubs[1].xpub.startswith("xpub")
    signed = HotSigner(main.kek.seed_vault(), kernel).sign(
        wallet=WALLET,
        network=Network.MAINNET,
        seeds=main.seeds,
        plan=plan,
        approved=approved,
        max_fee_sat=CAP,
    )
    assert signed.fee_sat == 1_000


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_plans_always_verify(
    data: st.DataObject, signer: HotSigner, wallet: KeysWallet
) -> None:
    inputs = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([1, 2]),
                st.sampled_from([0, 1]),
                st.integers(0, 2**31 - 1),
                st.integers(1_000, 5 * 10**8),
            ),
            min_size=1,
            max_size=6,
        )
    )
    total = sum(i[3] for i in inputs)
    fee = data.draw(st.integers(0, min(CAP, total - 1)))
    budget = total - fee
    n_payouts = data.draw(st.integers(0, 5))
    kinds = st.sampled_from(["p2wpkh", "p2wsh", "p2tr", "p2pkh"])
    payouts = []
    for n in range(n_payouts):
        if budget <= 1:
            break
        amount = data.draw(st.integers(1, budget - 1))
        script = foreign_script(data.draw(st.integers(0, 3)) + 10 * n, data.draw(kinds))
        payouts.append((script, amount))
        budget -= amount
    change = (data.draw(st.sampled_from([1, 2])), data.draw(st.integers(0, 2**31 - 1)), budget)
    plan, approved = build(
        wallet.xpubs,
        PlanSpec(
            inputs=inputs,
            payouts=payouts,
            change=change,
            locktime=data.draw(st.integers(0, 2**32 - 1)),
            version=data.draw(st.sampled_from([1, 2])),
        ),
    )
    plan = replace(plan, outputs=tuple(data.draw(st.permutations(plan.outputs))))
    signed = _sign(signer, wallet, plan, list(data.draw(st.permutations(approved))))
    assert signed.fee_sat == fee
    assert _sign(signer, wallet, plan, approved).raw == signed.raw


# --- the kernel is the last word ---------------------------------------------------------------
def test_kernel_catches_a_corrupted_signature(
    signer: HotSigner, wallet: KeysWallet, kernel: KernelScriptVerifier
) -> None:
    plan, approved = _standard(wallet)
    signed = _sign(signer, wallet, plan, approved)
    spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
    tx = CTransaction.deserialize(signed.raw)
    sig = tx.wit.vtxinwit[1].scriptWitness.stack[0]
    at = signed.raw.index(sig) + 10  # a byte inside r of input 1's signature
    corrupted = bytearray(signed.raw)
    corrupted[at] ^= 0x01
    with pytest.raises(VerificationFailed, match="input 1"):
        kernel.verify_transaction(bytes(corrupted), spent)
    # The same tx checked against a different spent amount fails as well (BIP143 commits to it).
    wrong_amount = list(spent)
    wrong_amount[0] = SpentOutput(spent[0].script_pubkey, spent[0].amount_sat + 1)
    with pytest.raises(VerificationFailed, match="input 0"):
        kernel.verify_transaction(signed.raw, wrong_amount)


class _TamperingKernel:
    """The real kernel, handed a transaction with one signature byte flipped on the way."""

    def __init__(self) -> None:
        self.kernel = KernelScriptVerifier()

    def verify_transaction(self, raw_tx: bytes, spent_outputs: list[SpentOutput]) -> None:
        tx = CTransaction.deserialize(raw_tx)
        sig = tx.wit.vtxinwit[0].scriptWitness.stack[0]
        raw = bytearray(raw_tx)
        raw[raw_tx.index(sig) + 8] ^= 0x40
        self.kernel.verify_transaction(bytes(raw), spent_outputs)


def test_signer_raises_when_the_kernel_refuses(wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    with pytest.raises(VerificationFailed):
        _sign(HotSigner(wallet.kek.seed_vault(), _TamperingKernel()), wallet, plan, approved)


# --- refusals --------------------------------------------------------------------------------
def _refused(
    signer: HotSigner,
    wallet: KeysWallet,
    plan: TransactionPlan,
    approved: list[ApprovedPayout],
    match: str,
    **kwargs: object,
) -> SigningRefused:
    with pytest.raises(SigningRefused, match=match) as info:
        _sign(signer, wallet, plan, approved, **kwargs)  # type: ignore[arg-type]
    text = str(info.value) + repr(info.value)
    for secret in _private_key_hexes(wallet, plan) if plan.inputs else []:
        assert secret not in text
    for words in wallet.mnemonics.values():
        assert words.split()[0] + " " + words.split()[1] not in text
    return info.value


def _with_outputs(plan: TransactionPlan, outputs: list[PlannedOutput]) -> TransactionPlan:
    fee = plan.input_total - sum(o.amount_sat for o in outputs)
    return replace(plan, outputs=tuple(outputs), fee_sat=fee)


def test_refuses_an_extra_output(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    extra = PlannedOutput(foreign_script(66), 1_000, OutputPurpose.PAYOUT, withdrawal_id="wd-x")
    plan = _with_outputs(plan, [*plan.outputs, extra])
    _refused(
        signer,
        wallet,
        plan,
        approved,
        r"output 4 pays 1000 sat to bcrt1q\w+, which no "
        "approved payout names",
    )


def test_refuses_a_duplicated_payout(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    o = plan.outputs
    outputs = [o[0], o[1], o[2], o[2], replace(o[3], amount_sat=o[3].amount_sat - o[2].amount_sat)]
    _refused(
        signer,
        wallet,
        _with_outputs(plan, outputs),
        approved,
        r"output 3 pays 30000 sat to script 76a914\w+, but the approved amount\(s\) for that "
        r"destination are \[30000\] sat \(or were already used by other outputs\)",
    )


def test_refuses_a_changed_amount(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    outputs[1] = replace(outputs[1], amount_sat=61_000)
    outputs[3] = replace(outputs[3], amount_sat=outputs[3].amount_sat - 1_000)
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        r"output 1 pays 61000 sat to bcrt1p\w+, but the approved amount\(s\) for that "
        r"destination are \[60000\] sat",
    )


def test_refuses_a_missing_payout(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    dropped = outputs.pop(2)
    outputs[-1] = replace(outputs[-1], amount_sat=outputs[-1].amount_sat + dropped.amount_sat)
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        r"approved withdrawal wd-2 \(30000 sat to script 76a914\w+\) has no matching output",
    )


def test_refuses_a_redirected_payout(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    outputs[0] = replace(outputs[0], script_pubkey=foreign_script(666))
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        "output 0 pays 100000 sat to .* which no approved payout names",
    )


def test_refuses_a_sweep_to_an_unknown_script(signer: HotSigner, wallet: KeysWallet) -> None:
    allowed = foreign_script(1, "p2wsh")
    plan, approved = build(
        wallet.xpubs,
        PlanSpec(inputs=[(1, 0, 0, 10_000)], sweeps=[(foreign_script(2, "p2wsh"), 9_000)]),
    )
    _refused(
        signer,
        wallet,
        plan,
        approved,
        "sweep output 0 pays to bcrt1q\\w+, which is not an allowed sweep destination",
        sweep_scripts=frozenset({allowed}),
    )


def test_refuses_change_on_the_receive_chain(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    receive = KeyPath(2, 0, 5)
    outputs[3] = replace(
        outputs[3], key_path=receive, script_pubkey=wallet.xpubs[2].script_pubkey(0, 5)
    )
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        "change output 3 uses chain 0; change must be on chain 1",
    )


def test_refuses_change_whose_script_is_not_at_its_path(
    signer: HotSigner, wallet: KeysWallet
) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    outputs[3] = replace(outputs[3], key_path=KeyPath(2, 1, 6))  # script still that of index 5
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        r"change output 3 pays to bcrt1q\w+, but our change key at epoch 2 chain 1 index 6",
    )
    outputs[3] = replace(outputs[3], key_path=KeyPath(2, 1, 5), script_pubkey=foreign_script(7))
    _refused(
        signer, wallet, replace(plan, outputs=tuple(outputs)), approved, "change output 3 pays to"
    )
    outputs[3] = replace(outputs[3], key_path=None)
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        "change output 3 has no key path",
    )


def test_refuses_change_of_the_other_epoch_key(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    outputs[3] = replace(outputs[3], key_path=KeyPath(1, 1, 5))  # script is epoch 2's
    _refused(
        signer, wallet, replace(plan, outputs=tuple(outputs)), approved, "change output 3 pays to"
    )


def test_refuses_an_input_script_that_is_not_ours(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    inputs = list(plan.inputs)
    inputs[1] = replace(inputs[1], script_pubkey=foreign_script(8))
    _refused(
        signer,
        wallet,
        replace(plan, inputs=tuple(inputs)),
        approved,
        rf"input 1 \({inputs[1].txid}:1\) has scriptPubKey 0014\w+, but our key at "
        "epoch 1 chain 1 index 4 pays to 0014",
    )
    # Our own script, but recorded at another path: the signer derives, it does not look up.
    inputs[1] = replace(plan.inputs[1], key_path=KeyPath(1, 1, 5))
    _refused(
        signer,
        wallet,
        replace(plan, inputs=tuple(inputs)),
        approved,
        "input 1 .* but our key at epoch 1 chain 1 index 5",
    )


def test_refuses_a_fee_over_the_cap(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    _refused(
        signer,
        wallet,
        plan,
        approved,
        "fee 4000 sat exceeds the cap of 3999 sat",
        max_fee_sat=3_999,
    )
    assert _sign(signer, wallet, plan, approved, max_fee_sat=4_000).fee_sat == 4_000


def test_refuses_a_negative_fee(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    outputs[3] = replace(outputs[3], amount_sat=outputs[3].amount_sat + 5_000)
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs), fee_sat=-1_000),
        approved,
        "outputs total 271000 sat but inputs only 270000 sat",
    )


def test_refuses_a_plan_whose_stated_fee_is_wrong(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    _refused(
        signer,
        wallet,
        replace(plan, fee_sat=3_000),
        approved,
        "plan states a fee of 3000 sat but inputs minus outputs is 4000 sat",
    )


def test_refuses_duplicate_inputs(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    dup = replace(plan.inputs[0], txid=plan.inputs[0].txid.upper())
    plan = replace(plan, inputs=(*plan.inputs, dup), fee_sat=plan.fee_sat + dup.amount_sat)
    _refused(
        signer,
        wallet,
        plan,
        approved,
        "input 3 spends .* which an earlier input already spends",
        max_fee_sat=10**9,
    )


def test_refuses_a_plan_without_inputs(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    _refused(signer, wallet, replace(plan, inputs=()), approved, "no inputs")


def test_refuses_non_rbf_sequences_and_bad_versions(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    _refused(signer, wallet, replace(plan, sequence=0xFFFFFFFF), approved, "BIP125")
    _refused(signer, wallet, replace(plan, version=3), approved, "version 3")
    _refused(signer, wallet, replace(plan, locktime=2**32), approved, "locktime")


def test_refuses_bad_amounts(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    outputs = list(plan.outputs)
    outputs[0] = replace(outputs[0], amount_sat=0)
    _refused(
        signer,
        wallet,
        replace(plan, outputs=tuple(outputs)),
        approved,
        "output 0 has an invalid amount 0",
    )
    inputs = list(plan.inputs)
    inputs[0] = replace(inputs[0], amount_sat=True)
    _refused(
        signer,
        wallet,
        replace(plan, inputs=tuple(inputs)),
        approved,
        "input 0 has an invalid amount True",
    )


def test_refuses_twice_approved_withdrawals(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    _refused(signer, wallet, plan, [*approved, approved[0]], "withdrawal wd-0 is approved twice")


def test_cheap_checks_run_before_any_seed_is_touched(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    # With no seeds at all, a fee or payout problem is still reported as such.
    _refused(signer, wallet, plan, approved, "exceeds the cap", max_fee_sat=1, seeds={})
    _refused(signer, wallet, plan, approved[:2], "has no matching output|no approved", seeds={})
    _refused(signer, wallet, plan, approved, r"no seed for key epoch\(s\) \[1, 2\]", seeds={})


def test_refuses_swapped_or_foreign_seeds(signer: HotSigner, wallet: KeysWallet) -> None:
    plan, approved = _standard(wallet)
    swapped = {1: wallet.seeds[2], 2: wallet.seeds[1]}
    _refused(
        signer,
        wallet,
        plan,
        approved,
        r"cannot use the seed of key epoch \d: .* does not "
        "authenticate",
        seeds=swapped,
    )
    other = make_wallet(Network.REGTEST, Kek(bytes(32)))
    _refused(
        signer,
        wallet,
        plan,
        approved,
        r"cannot use the seed of key epoch \d: .* KEK",
        seeds=other.seeds,
    )
    with pytest.raises(SigningRefused, match="does not authenticate"):
        signer.sign(
            wallet="another-wallet",
            network=Network.REGTEST,
            seeds=wallet.seeds,
            plan=plan,
            approved=approved,
            max_fee_sat=CAP,
        )


def test_signer_repr_shows_no_key(signer: HotSigner, wallet: KeysWallet) -> None:
    assert repr(signer) == f"HotSigner(kek=Kek(id={wallet.kek.key_id}))"


@pytest.mark.parametrize("bad_input", [0, 77, 149])
def test_parallel_kernel_check_catches_any_corrupted_input(
    signer: HotSigner, wallet: KeysWallet, kernel: KernelScriptVerifier, bad_input: int
) -> None:
    """Above PARALLEL_FROM_INPUTS the kernel checks run on a pool: every chunk must count."""
    n = 150
    assert n >= KernelScriptVerifier.PARALLEL_FROM_INPUTS
    plan, approved = build(
        wallet.xpubs,
        PlanSpec(
            inputs=[(1, 0, i, 10_000) for i in range(n)],
            sweeps=[(foreign_script(7, "p2wsh"), n * 10_000 - 20_000)],
        ),
    )
    signed = _sign(
        signer, wallet, plan, approved, sweep_scripts=frozenset({plan.outputs[0].script_pubkey})
    )
    spent = [SpentOutput(c.script_pubkey, c.amount_sat) for c in plan.inputs]
    kernel.verify_transaction(signed.raw, spent)
    tx = CTransaction.deserialize(signed.raw)
    sig = tx.wit.vtxinwit[bad_input].scriptWitness.stack[0]
    corrupted = bytearray(signed.raw)
    corrupted[signed.raw.index(sig) + 10] ^= 0x01
    with pytest.raises(VerificationFailed, match=f"input {bad_input} "):
        kernel.verify_transaction(bytes(corrupted), spent)
