"""The fee a payout would pay now: the rate the signer would use and a payout's cost at it."""

from __future__ import annotations

from typing import Any

from walletsvc.config import Settings
from walletsvc.domain.address import p2wpkh_script
from walletsvc.domain.ports import ChainBackend
from walletsvc.domain.sizes import estimate_vsize
from walletsvc.payouts.signing import fee_rate

# A payout sent alone: one P2WPKH input, the payout and change (both P2WPKH-sized). The worst
# case for one payout; batched payouts share one transaction's overhead and pay less each.
_SINGLE_PAYOUT_VSIZE = estimate_vsize(1, [p2wpkh_script(bytes(20)), p2wpkh_script(bytes(20))])


def fee_estimate(
    chain: ChainBackend, settings: Settings, target_blocks: int | None
) -> dict[str, Any]:
    """The clamped rate the signing pipeline would use for this confirmation target (the
    configured target when None). Raises DependencyUnavailable (503) without a chain."""
    target = target_blocks or settings.confirmation_target_blocks
    rate = fee_rate(chain, settings, target_blocks=target)
    return {
        "target_blocks": target,
        "fee_rate_sat_per_vb": rate,
        "single_payout_vsize": _SINGLE_PAYOUT_VSIZE,
        "single_payout_fee_sat": rate * _SINGLE_PAYOUT_VSIZE,
        "max_fee_sat": settings.max_fee_sat,
    }
