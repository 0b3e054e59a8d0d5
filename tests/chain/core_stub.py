"""A small Bitcoin-Core-shaped JSON-RPC stub on loopback, for node states the embedded chain
cannot be in (syncing, pruned, old, other networks, no fee estimate).

Every reply body follows the help text of Bitcoin Core's own RPC definitions
(src/rpc/blockchain.cpp, net.cpp, fees.cpp, mempool.cpp): field names, types, optional fields
present only when Core prints them, and JSON-RPC 1.0 errors as HTTP 500 with
``{"result": null, "error": {"code", "message"}, "id"}``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bitcoin.core import CTransaction, b2lx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from walletsvc.chain.rpc import CORE_GENESIS_HASHES, NO_ESTIMATE_ERROR
from walletsvc.devchain.rpc_server import RpcServerThread

TIP_HASH = "ab" * 32
TXID = "cd" * 32
WTXID = "ef" * 32


class CoreError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class CoreStub:
    """The node's state; tests change it between calls. ``seen`` records every request."""

    chain: str = "regtest"
    genesis: str | None = None  # None: the real genesis of ``chain``
    blocks: int = 7
    headers: int = 7
    initialblockdownload: bool = False
    pruneheight: int | None = None  # None: not pruned
    version: int = 280000
    feerate: Decimal | None = Decimal("0.00012341")  # BTC/kvB; None: no estimate
    reject_reason: str | None = None  # testmempoolaccept's verdict; None: allowed
    pruned_blocks: set[str] = field(default_factory=set)
    password: str = ""  # Basic auth password for user "__cookie__"; empty: no auth
    seen: list[dict[str, Any]] = field(default_factory=list)
    # txid -> (raw hex, base fee, descendant fees (BTC), vsize): getrawmempool and friends.
    mempool: dict[str, tuple[str, Decimal, Decimal, int]] = field(default_factory=dict)

    def methods(self) -> list[str]:
        return [request["method"] for request in self.seen]

    def params(self, method: str) -> list[list[Any]]:
        return [request["params"] for request in self.seen if request["method"] == method]

    # -- Core's replies --------------------------------------------------------------------

    def getblockchaininfo(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "chain": self.chain,
            "blocks": self.blocks,
            "headers": self.headers,
            "bestblockhash": TIP_HASH,
            "difficulty": 4.656542373906925e-10,
            "time": 1_700_000_000,
            "mediantime": 1_700_000_000,
            "verificationprogress": 0.42 if self.initialblockdownload else 1,
            "initialblockdownload": self.initialblockdownload,
            "chainwork": "00" * 31 + "10",
            "size_on_disk": 12_345,
            "pruned": self.pruneheight is not None,
            "warnings": [],
        }
        if self.pruneheight is not None:  # Core prints these only when pruning is enabled
            info["pruneheight"] = self.pruneheight
            info["automatic_pruning"] = True
            info["prune_target_size"] = 576_716_800
        return info

    def getblockhash(self, height: int) -> str:
        if not 0 <= height <= self.blocks:
            raise CoreError(-8, "Block height out of range")
        if height == 0:
            return self.genesis or CORE_GENESIS_HASHES[self.chain]
        return f"{height:064x}"

    def getblock(self, blockhash: str, verbosity: int = 1) -> str:
        if blockhash in self.pruned_blocks:
            raise CoreError(-1, "Block not available (pruned data)")
        raise CoreError(-5, "Block not found")

    def getnetworkinfo(self) -> dict[str, Any]:
        major = self.version // 10_000
        return {
            "version": self.version,
            "subversion": f"/Satoshi:{major}.{self.version // 100 % 100}.0/",
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": 8,
            "connections_in": 0,
            "connections_out": 8,
            "networks": [],
            "relayfee": Decimal("0.00001000"),
            "incrementalfee": Decimal("0.00001000"),
            "localaddresses": [],
            "warnings": [],
        }

    def estimatesmartfee(self, conf_target: int, estimate_mode: str = "economical") -> Any:
        if self.feerate is None:
            return {"errors": [NO_ESTIMATE_ERROR], "blocks": 0}
        return {"feerate": self.feerate, "blocks": max(2, conf_target)}

    def testmempoolaccept(self, rawtxs: list[str], maxfeerate: Any = "0.10") -> Any:
        if self.reject_reason is not None:
            return [
                {
                    "txid": TXID,
                    "wtxid": WTXID,
                    "allowed": False,
                    "reject-reason": self.reject_reason,
                    "reject-details": f"{self.reject_reason}, details from Core 29",
                }
            ]
        return [
            {
                "txid": TXID,
                "wtxid": WTXID,
                "allowed": True,
                "vsize": 141,
                "fees": {
                    "base": Decimal("0.00002820"),
                    "effective-feerate": Decimal("0.00020000"),
                    "effective-includes": [WTXID],
                },
            }
        ]

    def sendrawtransaction(self, hexstring: str, maxfeerate: Any = "0.10") -> str:
        return TXID

    def getrawmempool(self) -> list[str]:
        return sorted(self.mempool)

    def gettxspendingprevout(self, outputs: list[dict[str, Any]], options: Any = None) -> Any:
        spent: dict[tuple[str, int], str] = {}
        for txid, (raw, *_) in self.mempool.items():
            tx = CTransaction.deserialize(bytes.fromhex(raw))
            for txin in tx.vin:
                spent[(b2lx(txin.prevout.hash), txin.prevout.n)] = txid
        result = []
        for item in outputs:
            row = {"txid": item["txid"], "vout": item["vout"]}
            if (item["txid"], item["vout"]) in spent:
                row["spendingtxid"] = spent[(item["txid"], item["vout"])]
            result.append(row)
        return result

    def getmempoolentry(self, txid: str) -> dict[str, Any]:
        if txid not in self.mempool:
            raise CoreError(-5, "Transaction not in mempool")
        _, base, descendant, vsize = self.mempool[txid]
        return {
            "vsize": vsize,
            "weight": vsize * 4,
            "time": 1_700_000_000,
            "height": self.blocks,
            "descendantcount": 1,
            "descendantsize": vsize,
            "ancestorcount": 1,
            "ancestorsize": vsize,
            "wtxid": WTXID,
            "fees": {"base": base, "modified": base, "ancestor": base, "descendant": descendant},
            "depends": [],
            "spentby": [],
            "bip125-replaceable": True,
            "unbroadcast": False,
        }

    def getrawtransaction(self, txid: str, verbose: Any = 0, blockhash: Any = None) -> str:
        if txid not in self.mempool:
            raise CoreError(
                -5,
                "No such mempool or blockchain transaction. "
                "Use gettransaction for wallet transactions.",
            )
        return self.mempool[txid][0]

    # -- the server ------------------------------------------------------------------------

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            if self.password and not self._authorized(request.headers.get("authorization")):
                return Response(status_code=401)
            body = await request.json()
            self.seen.append(body)
            try:
                result = getattr(self, body["method"])(*body["params"])
            except CoreError as err:
                error = {"code": err.code, "message": err.message}
                return _json({"result": None, "error": error, "id": body["id"]}, 500)
            return _json({"result": result, "error": None, "id": body["id"]}, 200)

        return Starlette(routes=[Route("/", endpoint, methods=["POST"])])

    def _authorized(self, header: str | None) -> bool:
        expected = base64.b64encode(f"__cookie__:{self.password}".encode()).decode()
        return header == f"Basic {expected}"


def _json(payload: Any, status: int) -> Response:
    def amount(value: object) -> float:
        assert isinstance(value, Decimal)
        return float(value)

    return Response(
        json.dumps(payload, default=amount), status_code=status, media_type="application/json"
    )


@contextmanager
def running(stub: CoreStub) -> Iterator[str]:
    """Serve ``stub`` on loopback; yields its URL."""
    server = RpcServerThread(stub.app()).start()
    try:
        yield server.url
    finally:
        server.stop()
