"""Cold wallets whose private keys the tests hold (the stand-in hardware wallets), and paying
their addresses from a coinbase of a key of the test's own."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from bitcoin.core import CBlock, b2lx
from embit import bip32, script
from embit.networks import NETWORKS
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from tests.helpers import dev_chain
from walletsvc.bootstrap.runtime import Runtime

REGTEST = NETWORKS["regtest"]


def root(tag: str) -> bip32.HDKey:
    return bip32.HDKey.from_seed(hashlib.sha256(tag.encode()).digest(), version=REGTEST["xprv"])


@dataclass(frozen=True)
class Cold:
    """A cold wallet the test holds the private keys of: its descriptor for the service, its
    signers (what the hardware wallets hold), and its addresses derived by embit."""

    descriptor: str
    signers: list[bip32.HDKey]
    needed: int
    script: Callable[[int], bytes]


def single_key() -> Cold:
    """The plain account tpub form: the key origin is the account key's own fingerprint."""
    account = root("refill cold single").derive("m/84h/1h/0h")
    return Cold(
        descriptor=account.to_public().to_base58(REGTEST["xpub"]),
        signers=[account],
        needed=1,
        script=lambda i: script.p2wpkh(account.derive([0, i]).key).data,
    )


def two_of_three() -> Cold:
    """wsh(sortedmulti(2, ...)) with key origins [master fingerprint/48h/1h/0h/2h]."""
    roots = [root(f"refill cold {n}") for n in range(3)]
    path = "m/48h/1h/0h/2h"
    keys = ",".join(
        f"[{r.my_fingerprint.hex()}/48h/1h/0h/2h]"
        f"{r.derive(path).to_public().to_base58(REGTEST['xpub'])}/0/*"
        for r in roots
    )

    def cold_script(i: int) -> bytes:
        pubs = sorted((r.derive(f"{path}/0/{i}").key for r in roots), key=lambda k: k.sec())
        return script.p2wsh(script.multisig(2, pubs)).data

    return Cold(f"wsh(sortedmulti(2,{keys}))", roots, 2, cold_script)


COLD = {"single-key": single_key, "2-of-3": two_of_three}


def cold_payment(runtime: Runtime, payments: list[tuple[bytes, int]]) -> bytes:
    """A signed transaction paying cold addresses from a (mined, matured) coinbase of a key of
    the test's own; not broadcast."""
    chain = dev_chain(runtime)
    funder = root("refill funder").derive("m/84h/1h/0h/0/0")
    hashes = chain.mine(101, script.p2wpkh(funder.key).data)
    coinbase = CBlock.deserialize(chain.block_bytes(hashes[0])).vtx[0]
    value = int(coinbase.vout[0].nValue)
    outputs = [TransactionOutput(amount, Script(spk)) for spk, amount in payments]
    change = value - sum(amount for _, amount in payments) - 10_000
    outputs.append(TransactionOutput(change, script.p2wpkh(funder.key)))
    txid = bytes.fromhex(b2lx(coinbase.GetTxid()))
    tx = Transaction(vin=[TransactionInput(txid, 0, sequence=0xFFFFFFFD)], vout=outputs)
    digest = tx.sighash_segwit(0, script.p2pkh(funder.key), value)
    signature = funder.key.sign(digest).serialize() + b"\x01"
    tx.vin[0].witness = Witness([signature, funder.key.sec()])
    raw: bytes = tx.serialize()
    return raw


def pay_cold(runtime: Runtime, payments: list[tuple[bytes, int]]) -> None:
    """Pay cold addresses, mine the payment, scan."""
    chain = dev_chain(runtime)
    chain.broadcast(cold_payment(runtime, payments))
    chain.mine(1)
    runtime.scanner.sync()
