"""The dev chain beside the service: what `make run` composes around the product.

The product (walletsvc.bootstrap and below) only knows the ChainBackend port; on the embedded
default the CLI opens the chain here, serves its Core-style JSON-RPC on a loopback port of its
own (advertised in ``<chain_dir>/rpc.json`` with a Core-style cookie, so `walletsvc devchain`
reaches it while the service holds the chain directory), starts the auto-miner, and injects
the chain with ``Runtime.open(settings, chain=...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from walletsvc.config import Settings
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.devchain.rpc_server import RPC_INFO_FILE, serve_embedded_rpc
from walletsvc.domain.errors import InvalidInput


def open_dev_chain(settings: Settings) -> EmbeddedChain:
    """The embedded regtest chain in ``settings.chain_dir`` (ChainLocked if a process holds it)."""
    if settings.chain_backend != "embedded":
        raise InvalidInput("the dev chain needs chain_backend=embedded", field="chain_backend")
    return EmbeddedChain(
        settings.chain_dir, fee_rate_sat_per_vb=settings.embedded_fee_rate_sat_per_vb
    )


@contextlib.contextmanager
def serving_dev_chain(settings: Settings) -> Iterator[EmbeddedChain]:
    """The dev chain with its RPC port and auto-miner running; all stopped on exit."""
    chain = open_dev_chain(settings)
    try:
        server = serve_embedded_rpc(chain, port=settings.devchain_rpc_port)
        try:
            chain.start_auto_mining(settings.devchain_mine_interval_s)
            yield chain
        finally:
            chain.stop_auto_mining()
            server.stop()
            (settings.chain_dir / RPC_INFO_FILE).unlink(missing_ok=True)
    finally:
        chain.close()
