"""`walletsvc devchain …`: drive the embedded regtest chain, even while the service runs.

The embedded chain's directory is locked by whichever process opened it. If that is the
running service, we reach the chain through the service's loopback devchain JSON-RPC endpoint
(Bitcoin Core's shapes, authenticated with a Core-style cookie the service writes at start).
"""

from __future__ import annotations

from typing import Any

from walletsvc.bootstrap.setup import demo_destination
from walletsvc.chain.embedded import ChainLocked, EmbeddedChain
from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.config import Settings
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import InvalidInput

DEVCHAIN_RPC_PATH = "/devchain/rpc/"


def _require_embedded(settings: Settings) -> None:
    if settings.chain_backend != "embedded":
        raise InvalidInput("devchain commands need the embedded chain", field="chain_backend")


def _service_rpc(settings: Settings) -> BitcoinRpcBackend:
    return BitcoinRpcBackend(
        f"http://{settings.host}:{settings.port}{DEVCHAIN_RPC_PATH}",
        settings.network,
        cookie_file=settings.chain_dir / ".cookie",
        timeout_s=60.0,
        retries=1,
    )


def mine(settings: Settings, blocks: int, to: str | None) -> list[str]:
    _require_embedded(settings)
    address = to or demo_destination(settings.network)
    script = decode_address(address, settings.network, field="to").script_pubkey
    try:
        chain = EmbeddedChain(
            settings.chain_dir, fee_rate_sat_per_vb=settings.embedded_fee_rate_sat_per_vb
        )
    except ChainLocked:
        hashes: list[str] = _service_rpc(settings).call("generatetoaddress", blocks, address)
        return hashes
    try:
        return chain.mine(blocks, script)
    finally:
        chain.close()


def status(settings: Settings) -> dict[str, Any]:
    _require_embedded(settings)
    try:
        chain = EmbeddedChain(
            settings.chain_dir, fee_rate_sat_per_vb=settings.embedded_fee_rate_sat_per_vb
        )
    except ChainLocked:
        rpc = _service_rpc(settings)
        info = rpc.call("getblockchaininfo")
        return {
            "height": info["blocks"],
            "tip": info["bestblockhash"],
            "mempool": len(rpc.mempool_txids()),
            "via": "running service",
        }
    try:
        tip = chain.tip()
        return {
            "height": tip.height,
            "tip": tip.hash,
            "mempool": len(chain.mempool_txids()),
            "via": "direct",
        }
    finally:
        chain.close()
