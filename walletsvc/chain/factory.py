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
    )
