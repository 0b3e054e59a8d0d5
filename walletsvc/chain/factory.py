"""Open the configured production chain backend: Bitcoin Core over JSON-RPC."""

from __future__ import annotations

from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.config import Settings
from walletsvc.domain.errors import InvalidInput
from walletsvc.domain.ports import ChainBackend


def open_chain(settings: Settings) -> ChainBackend:
    """Bitcoin Core over RPC for ``chain_backend=rpc``.

    The embedded regtest chain is a development tool (walletsvc.devchain), not part of the
    product: the CLI's ``serve``/``dev`` commands and the tests open it and hand it to
    ``Runtime.open(settings, chain=...)``. Asking the product to open it is a wiring mistake.
    """
    if settings.chain_backend == "embedded":
        raise InvalidInput(
            "the embedded chain is opened by the walletsvc CLI (development only); "
            "pass it to Runtime.open(chain=...) or set chain_backend=rpc",
            field="chain_backend",
        )
    return BitcoinRpcBackend(
        settings.rpc_url,
        settings.network,
        user=settings.rpc_user,
        password=settings.rpc_password.get_secret_value(),
        cookie_file=settings.rpc_cookie_file,
        timeout_s=settings.rpc_timeout_s,
        retries=settings.rpc_retries,
        fee_floor_sat_per_vb=settings.fee_floor_sat_per_vb,
        # The highest rate we sign at: the ceiling, or a rotation sweep's floor above it.
        max_fee_rate_sat_per_vb=max(
            settings.fee_ceiling_sat_per_vb, settings.rotation_sweep_min_fee_rate
        ),
        estimate_mode=settings.fee_estimate_mode,
        fallback_fee_rate_sat_per_vb=settings.fallback_fee_rate_sat_per_vb,
        scan_start_height=settings.scan_start_height,
        testnet_variant=settings.testnet_variant,
    )
