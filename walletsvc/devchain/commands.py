"""`walletsvc devchain …`: drive the embedded regtest chain, even while the service runs.

The embedded chain's directory is locked by whichever process opened it. If that is the
running service, we reach the chain through the dev chain's own loopback JSON-RPC port
(Bitcoin Core's shapes; its URL in ``<chain_dir>/rpc.json``, authenticated with the Core-style
cookie beside it), which `walletsvc serve` opens next to the API on the embedded default.
"""

from __future__ import annotations

from typing import Any

from walletsvc.bootstrap.setup import demo_destination
from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.config import Settings
from walletsvc.devchain.embedded import ChainLocked
from walletsvc.devchain.rpc_server import embedded_rpc_endpoint
from walletsvc.devchain.service import open_dev_chain
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import InvalidInput


def _require_embedded(settings: Settings) -> None:
    if settings.chain_backend != "embedded":
        raise InvalidInput("devchain commands need the embedded chain", field="chain_backend")


def _service_rpc(settings: Settings) -> BitcoinRpcBackend:
    url, cookie_file = embedded_rpc_endpoint(settings.chain_dir)
    return BitcoinRpcBackend(
        url,
        settings.network,
        cookie_file=cookie_file,
        timeout_s=60.0,
        retries=1,
    )


def mine(
    settings: Settings, blocks: int, to: str | None, txs: list[str] | None = None
) -> list[str]:
    """Mine ``blocks`` blocks of the mempool, or with ``txs`` one block of exactly those
    transactions (mempool txids or raw hex, like Core's ``generateblock``)."""
    _require_embedded(settings)
    address = to or demo_destination(settings.network)
    script = decode_address(address, settings.network, field="to").script_pubkey
    if txs:
        return [_generate_block(settings, address, script, txs)]
    try:
        chain = open_dev_chain(settings)
    except ChainLocked:
        hashes: list[str] = _service_rpc(settings).call("generatetoaddress", blocks, address)
        return hashes
    try:
        return chain.mine(blocks, script)
    finally:
        chain.close()


def _generate_block(settings: Settings, address: str, script: bytes, txs: list[str]) -> str:
    try:
        chain = open_dev_chain(settings)
    except ChainLocked:
        result: dict[str, str] = _service_rpc(settings).call("generateblock", address, txs)
        return result["hash"]
    try:
        block_hash, _ = chain.generate_block([_txid_or_raw(item) for item in txs], script)
        return block_hash
    finally:
        chain.close()


def _txid_or_raw(item: str) -> str | bytes:
    """Core's reading of a generateblock argument: 64 hex digits are a txid, else raw hex."""
    try:
        raw = bytes.fromhex(item)
    except ValueError:
        raise InvalidInput(
            f"{item!r} is neither a txid nor a raw transaction", field="tx"
        ) from None
    return item.lower() if len(raw) == 32 else raw


def status(settings: Settings) -> dict[str, Any]:
    _require_embedded(settings)
    try:
        chain = open_dev_chain(settings)
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
