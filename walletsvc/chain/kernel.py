"""The only module that imports py-bitcoinkernel (pbk, alpha: pinned in pyproject).

Everything walletsvc asks of Bitcoin Core's consensus code goes through here: script checks of
the transactions we sign, and block validation/storage for the embedded regtest chain.
"""

from __future__ import annotations

import pbk

from walletsvc.domain.errors import VerificationFailed
from walletsvc.domain.ports import SpentOutput


class KernelScriptVerifier:
    """Checks every input of a transaction with libbitcoinkernel and all script flags."""

    def verify_transaction(self, raw_tx: bytes, spent_outputs: list[SpentOutput]) -> None:
        try:
            tx = pbk.Transaction(raw_tx)
        except Exception as exc:
            raise VerificationFailed("transaction does not deserialise in the kernel") from exc
        n_inputs = len(tx.inputs)
        if n_inputs != len(spent_outputs):
            raise VerificationFailed(
                f"{n_inputs} inputs but {len(spent_outputs)} spent outputs were supplied"
            )
        kernel_outputs = [
            pbk.TransactionOutput(pbk.ScriptPubkey(bytes(o.script_pubkey)), o.amount_sat)
            for o in spent_outputs
        ]
        # One precomputed object per transaction (taproot needs every spent output).
        precomputed = pbk.script.PrecomputedTransactionData(tx, kernel_outputs)
        for index, spent in enumerate(spent_outputs):
            try:
                ok = pbk.ScriptPubkey(bytes(spent.script_pubkey)).verify(
                    spent.amount_sat, tx, precomputed, index, pbk.ScriptVerificationFlags.ALL
                )
            except Exception as exc:
                raise VerificationFailed(f"kernel refused input {index}: {exc}") from exc
            if not ok:
                raise VerificationFailed(f"input {index} does not verify in libbitcoinkernel")
