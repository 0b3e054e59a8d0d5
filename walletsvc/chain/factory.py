"""Choose and open the configured chain backend."""

from __future__ import annotations

from walletsvc.config import Settings
from walletsvc.domain.ports import ChainBackend


def open_chain(settings: Settings) -> ChainBackend:
    """The embedded regtest chain (locks ``settings.chain_dir``) or Bitcoin Core over RPC.

    The embedded chain raises ``ChainLocked`` when another process holds it.
    """
    if settings.chain_backend == "embedded":
        from walletsvc.chain.embedded import EmbeddedChain

        return EmbeddedChain(
            settings.chain_dir, fee_rate_sat_per_vb=settings.embedded_fee_rate_sat_per_vb
        )
    from walletsvc.chain.rpc import BitcoinRpcBackend

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
