"""A Bitcoin-Core-shaped JSON-RPC server over the embedded chain.

It lets the RPC backend be tested against a live HTTP server, and lets ``walletsvc devchain``
reach the chain a running service holds (the chain directory is locked to one process).
Replies follow Core's shapes and error codes: JSON-RPC 1.0 errors come back with HTTP 500
(404 for an unknown method), JSON-RPC 2.0 replies with HTTP 200, batches always with 200.
Amounts are JSON numbers in BTC with 8 decimals, as Core prints them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from bitcoin.core import CBlock, CTransaction, b2lx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from walletsvc.chain.core_protocol import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_PARSE_ERROR,
    RPC_TRANSACTION_ALREADY_IN_CHAIN,
    RPC_TRANSACTION_ERROR,
    RPC_TRANSACTION_REJECTED,
    RPC_TYPE_ERROR,
    RPC_VERIFY_ERROR,
)
from walletsvc.devchain import blocks
from walletsvc.devchain.embedded import INCREMENTAL_RELAY_SAT_PER_KVB, EmbeddedChain
from walletsvc.domain.address import decode_address
from walletsvc.domain.errors import (
    ChainRejected,
    DependencyUnavailable,
    DomainError,
    InvalidAddress,
    NotFound,
)
from walletsvc.domain.money import COIN
from walletsvc.domain.network import Network

log = logging.getLogger(__name__)

COOKIE_FILE = ".cookie"
COOKIE_USER = "__cookie__"

DEFAULT_MAX_FEERATE_BTC_PER_KVB = Decimal("0.10")
# getnetworkinfo's version: the Bitcoin Core release whose RPC shapes this server follows.
SPOKEN_CORE_VERSION = 280000
ESTIMATE_MODES = ("unset", "economical", "conservative")
_SATS_PER_BTC = Decimal(COIN)


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Btc:
    """A BTC amount to print as a JSON number with 8 decimals."""

    sats: int


_BTC_MARK = "__walletsvc_btc__:"
_BTC_RE = re.compile(r'"' + _BTC_MARK + r'(-?\d+\.\d{8})"')


def _dumps(payload: Any) -> str:
    def default(obj: object) -> str:
        if isinstance(obj, _Btc):
            return f"{_BTC_MARK}{Decimal(obj.sats) / _SATS_PER_BTC:.8f}"
        raise TypeError(f"cannot serialise {type(obj).__name__}")

    return _BTC_RE.sub(r"\1", json.dumps(payload, default=default))


# -- cookie --------------------------------------------------------------------------------


def write_cookie(chain_dir: Path) -> tuple[str, str]:
    """Write a fresh Core-style ``.cookie`` (``__cookie__:<hex>``, mode 0600) in ``chain_dir``."""
    chain_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(32)
    path = chain_dir / COOKIE_FILE
    tmp = path.with_name(COOKIE_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could not widen it, but an old file may exist
        os.write(fd, f"{COOKIE_USER}:{password}".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return COOKIE_USER, password


def read_cookie(path: Path) -> tuple[str, str]:
    """(user, password) from a Core-style cookie file; ValueError if it is malformed."""
    text = path.read_text().strip()
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{path} is not a user:password cookie")
    return user, password


# -- the app -------------------------------------------------------------------------------


def make_rpc_app(chain: EmbeddedChain, *, user: str, password: str) -> Starlette:
    """An ASGI app answering Core's JSON-RPC on POST / for ``chain``, behind Basic auth."""
    methods = _Methods(chain)
    expected = f"{user}:{password}".encode()

    def authorized(header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            supplied = base64.b64decode(header[6:], validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(supplied, expected)

    async def endpoint(request: Request) -> Response:
        if not authorized(request.headers.get("authorization")):
            # Core answers 401 with an empty body; no hint about which part was wrong.
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"'})
        body = await request.body()
        try:
            payload = json.loads(body)
        except ValueError:
            return _reply(_error_obj(None, RpcError(RPC_PARSE_ERROR, "Parse error"), "1.0"), 500)
        if isinstance(payload, list):
            replies = await run_in_threadpool(lambda: [methods.handle(item) for item in payload])
            return _reply([r for r, _ in replies if r is not None], 200)
        reply, status = await run_in_threadpool(methods.handle, payload)
        if reply is None:
            return Response(status_code=204)
        return _reply(reply, status)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])


def _reply(payload: Any, status: int) -> Response:
    return Response(_dumps(payload), status_code=status, media_type="application/json")


def _error_obj(request_id: Any, err: RpcError, version: str) -> dict[str, Any]:
    error = {"code": err.code, "message": err.message}
    if version == "2.0":
        return {"jsonrpc": "2.0", "error": error, "id": request_id}
    return {"result": None, "error": error, "id": request_id}


def _legacy_status(code: int) -> int:
    if code == RPC_INVALID_REQUEST:
        return 400
    if code == RPC_METHOD_NOT_FOUND:
        return 404
    return 500


class _Methods:
    """Core's RPC methods over the embedded chain; each takes named or positional params."""

    def __init__(self, chain: EmbeddedChain) -> None:
        self.chain = chain
        self.table: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
            "getblockchaininfo": (self.getblockchaininfo, ()),
            "getnetworkinfo": (self.getnetworkinfo, ()),
            "getblockcount": (self.getblockcount, ()),
            "getbestblockhash": (self.getbestblockhash, ()),
            "getblockhash": (self.getblockhash, ("height",)),
            "getblock": (self.getblock, ("blockhash", "verbosity")),
            "sendrawtransaction": (self.sendrawtransaction, ("hexstring", "maxfeerate")),
            "testmempoolaccept": (self.testmempoolaccept, ("rawtxs", "maxfeerate")),
            "estimatesmartfee": (self.estimatesmartfee, ("conf_target", "estimate_mode")),
            "getrawmempool": (self.getrawmempool, ("verbose", "mempool_sequence")),
            "getmempoolentry": (self.getmempoolentry, ("txid",)),
            "gettxspendingprevout": (self.gettxspendingprevout, ("outputs", "options")),
            "getrawtransaction": (self.getrawtransaction, ("txid", "verbose", "blockhash")),
            "generatetoaddress": (self.generatetoaddress, ("nblocks", "address", "maxtries")),
            "generateblock": (self.generateblock, ("output", "transactions", "submit")),
        }

    def handle(self, request: Any) -> tuple[dict[str, Any] | None, int]:
        """One request object -> (reply or None for a 2.0 notification, legacy HTTP status)."""
        if not isinstance(request, dict):
            return _error_obj(
                None, RpcError(RPC_INVALID_REQUEST, "Invalid Request object"), "1.0"
            ), 400
        version = "2.0" if request.get("jsonrpc") == "2.0" else "1.0"
        request_id = request.get("id")
        notification = version == "2.0" and "id" not in request
        try:
            result = self._call(request.get("method"), request.get("params", []))
        except RpcError as err:
            if notification:
                return None, 204
            status = 200 if version == "2.0" else _legacy_status(err.code)
            return _error_obj(request_id, err, version), status
        except DomainError as exc:  # e.g. the chain was closed under us
            failure = RpcError(RPC_MISC_ERROR, exc.message)
            return _error_obj(request_id, failure, version), 200 if version == "2.0" else 500
        except Exception:
            log.exception("rpc method failed")
            internal = RpcError(RPC_MISC_ERROR, "internal error")
            return _error_obj(request_id, internal, version), 200 if version == "2.0" else 500
        if notification:
            return None, 204
        if version == "2.0":
            return {"jsonrpc": "2.0", "result": result, "id": request_id}, 200
        return {"result": result, "error": None, "id": request_id}, 200

    def _call(self, method: object, params: object) -> Any:
        if not isinstance(method, str):
            raise RpcError(RPC_INVALID_REQUEST, "Method must be a string")
        if method not in self.table:
            raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
        fn, names = self.table[method]
        if params is None:
            params = []
        if isinstance(params, list):
            if len(params) > len(names):
                raise RpcError(RPC_MISC_ERROR, f"too many parameters for {method}")
            return fn(*params)
        if isinstance(params, dict):
            unknown = set(params) - set(names)
            if unknown:
                raise RpcError(RPC_MISC_ERROR, f"Unknown named parameter {sorted(unknown)[0]}")
            return fn(**params)
        raise RpcError(RPC_INVALID_REQUEST, "Params must be an array or object")

    # -- chain ---------------------------------------------------------------------------

    def getblockchaininfo(self) -> dict[str, Any]:
        tip = self.chain.tip()
        return {
            "chain": "regtest",
            "blocks": tip.height,
            "headers": tip.height,
            "bestblockhash": tip.hash,
            "bits": f"{blocks.REGTEST_BITS:08x}",
            "difficulty": 4.656542373906925e-10,
            "time": self._block_time(tip.hash),
            "mediantime": self.chain.median_time_past(tip.hash),
            "verificationprogress": 1,
            "initialblockdownload": False,
            # Every regtest block (nBits 207fffff) carries 2 units of work.
            "chainwork": f"{2 * (tip.height + 1):064x}",
            "size_on_disk": self._size_on_disk(),
            "pruned": False,
            "warnings": [],
        }

    def _size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.chain.chain_dir.rglob("*") if f.is_file())

    def getnetworkinfo(self) -> dict[str, Any]:
        """Core's shape; a single node with no peers, relaying at Core's default fees."""
        return {
            "version": SPOKEN_CORE_VERSION,
            "subversion": f"/Satoshi:{SPOKEN_CORE_VERSION // 10_000}.0.0/",
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": _Btc(1000),
            "incrementalfee": _Btc(INCREMENTAL_RELAY_SAT_PER_KVB),
            "localaddresses": [],
            "warnings": [],
        }

    def getblockcount(self) -> int:
        return self.chain.tip().height

    def getbestblockhash(self) -> str:
        return self.chain.tip().hash

    def getblockhash(self, height: Any = None) -> str:
        height = _int_param(height, "height")
        block_hash = self.chain.block_hash(height) if height >= 0 else None
        if block_hash is None:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return block_hash

    def getblock(self, blockhash: Any = None, verbosity: Any = 1) -> Any:
        block_hash = _hash_param(blockhash, "blockhash")
        if isinstance(verbosity, bool):
            verbosity = int(verbosity)
        verbosity = _int_param(verbosity, "verbosity")
        try:
            raw = self.chain.block_bytes(block_hash)
        except NotFound:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
        if verbosity <= 0:
            return raw.hex()
        block = CBlock.deserialize(raw)
        height = self.chain.block_height(block_hash)
        assert height is not None
        tip = self.chain.tip()
        active = self.chain.is_active(block_hash)
        result: dict[str, Any] = {
            "hash": block_hash,
            "confirmations": tip.height - height + 1 if active else -1,
            "size": len(raw),
            "strippedsize": len(block.serialize({"include_witness": False})),
            "weight": int(block.GetWeight()),
            "height": height,
            "version": block.nVersion,
            "versionHex": f"{block.nVersion & 0xFFFFFFFF:08x}",
            "merkleroot": str(b2lx(block.hashMerkleRoot)),
            "time": block.nTime,
            "mediantime": self.chain.median_time_past(block_hash),
            "nonce": block.nNonce,
            "bits": f"{block.nBits:08x}",
            "difficulty": 4.656542373906925e-10,
            "nTx": len(block.vtx),
        }
        if verbosity == 1:
            result["tx"] = [blocks.txid_hex(tx) for tx in block.vtx]
        else:
            result["tx"] = [_tx_json(tx) for tx in block.vtx]
        if height > 0:
            result["previousblockhash"] = str(b2lx(block.hashPrevBlock))
        if active:
            following = self.chain.block_hash(height + 1)
            if following is not None:
                result["nextblockhash"] = following
        return result

    def _block_time(self, block_hash: str) -> int:
        return int(CBlock.deserialize(self.chain.block_bytes(block_hash)).nTime)

    # -- transactions ----------------------------------------------------------------------

    def sendrawtransaction(self, hexstring: Any = None, maxfeerate: Any = None) -> str:
        raw = _decode_tx_hex(hexstring)
        txid = blocks.txid_hex(CTransaction.deserialize(raw))
        if self.chain.confirmations(txid) > 0:
            # Core refuses a confirmed tx with -27; clients treat it as success.
            raise RpcError(
                RPC_TRANSACTION_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set"
            )
        if txid in self.chain.mempool_txids():
            return txid
        limit = _feerate_param(maxfeerate)
        try:
            entry = self.chain.preview(raw)
            if limit > 0 and Decimal(entry.fee_sat) * 1000 > limit * _SATS_PER_BTC * entry.vsize:
                raise RpcError(
                    RPC_TRANSACTION_ERROR,
                    "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)",
                )
            return self.chain.broadcast(raw)
        except ChainRejected as rej:
            if rej.reason == "bad-txns-inputs-missingorspent":
                raise RpcError(RPC_TRANSACTION_ERROR, rej.reason) from None
            raise RpcError(RPC_TRANSACTION_REJECTED, rej.message) from None

    def testmempoolaccept(self, rawtxs: Any = None, maxfeerate: Any = None) -> list[dict[str, Any]]:
        if not isinstance(rawtxs, list) or not rawtxs:
            raise RpcError(RPC_TYPE_ERROR, "rawtxs must be a non-empty array of hex strings")
        if len(rawtxs) > 25:
            raise RpcError(
                RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions."
            )
        limit = _feerate_param(maxfeerate)
        results = []
        for item in rawtxs:
            raw = _decode_tx_hex(item)
            tx = CTransaction.deserialize(raw)
            base: dict[str, Any] = {
                "txid": blocks.txid_hex(tx),
                "wtxid": str(b2lx(tx.GetHash())),
            }
            try:
                entry = self.chain.preview(raw)
            except ChainRejected as rej:
                reason = rej.reason
                if reason == "bad-txns-inputs-missingorspent":
                    reason = "missing-inputs"  # Core's testmempoolaccept spelling
                results.append({**base, "allowed": False, "reject-reason": reason})
                continue
            if limit > 0 and Decimal(entry.fee_sat) * 1000 > limit * _SATS_PER_BTC * entry.vsize:
                results.append({**base, "allowed": False, "reject-reason": "max-fee-exceeded"})
                continue
            results.append(
                {
                    **base,
                    "allowed": True,
                    "vsize": entry.vsize,
                    "fees": {"base": _Btc(entry.fee_sat)},
                }
            )
        return results

    def estimatesmartfee(
        self, conf_target: Any = None, estimate_mode: Any = None
    ) -> dict[str, Any]:
        target = _int_param(conf_target, "conf_target")
        if not 1 <= target <= 1008:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
        if estimate_mode is not None and (
            not isinstance(estimate_mode, str) or estimate_mode.lower() not in ESTIMATE_MODES
        ):
            raise RpcError(
                RPC_INVALID_PARAMETER,
                'Invalid estimate_mode parameter, must be one of: "unset", "economical", '
                '"conservative"',
            )
        sat_per_vb = self.chain.fee_rate_sat_per_vb(target)
        return {"feerate": _Btc(sat_per_vb * 1000), "blocks": target}

    def getrawmempool(self, verbose: Any = False, mempool_sequence: Any = False) -> Any:
        entries = self.chain.mempool_entries()
        if not verbose:
            return [e.txid for e in entries]
        height = self.chain.tip().height
        return {
            e.txid: {
                "vsize": e.vsize,
                "weight": e.weight,
                "time": e.time,
                "height": height,
                "fees": {"base": _Btc(e.fee_sat)},
                "depends": sorted(e.parents),
                "bip125-replaceable": any(
                    txin.nSequence < 0xFFFFFFFE for txin in CTransaction.deserialize(e.raw).vin
                ),
            }
            for e in entries
        }

    def gettxspendingprevout(self, outputs: Any = None, options: Any = None) -> list[Any]:
        """Core's gettxspendingprevout: each outpoint, with ``spendingtxid`` only when a
        mempool transaction spends it."""
        if not isinstance(outputs, list) or not outputs:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, outputs are missing")
        asked: list[tuple[str, int]] = []
        for item in outputs:
            if not isinstance(item, dict):
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, expected object")
            vout = _int_param(item.get("vout"), "vout")
            if vout < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            asked.append((_hash_param(item.get("txid"), "txid"), vout))
        spenders = self.chain.mempool_spenders(asked)
        result = []
        for txid, vout in asked:
            row: dict[str, Any] = {"txid": txid, "vout": vout}
            if (txid, vout) in spenders:
                row["spendingtxid"] = spenders[(txid, vout)]
            result.append(row)
        return result

    def getmempoolentry(self, txid: Any = None) -> dict[str, Any]:
        """Core's getmempoolentry (src/rpc/mempool.cpp), the fields a replacement needs:
        fees in BTC (``base``, ``modified``, ``ancestor``, ``descendant``), ``vsize``,
        ``weight``, ``depends``, ``spentby``; -5 when the transaction is not in the mempool."""
        txid = _hash_param(txid, "txid")
        entry = self.chain.mempool_entry(txid)
        if entry is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
        entries = {e.txid: e for e in self.chain.mempool_entries()}
        own = entries[txid]
        return {
            "vsize": own.vsize,
            "weight": own.weight,
            "time": own.time,
            "height": self.chain.tip().height,
            "wtxid": b2lx(CTransaction.deserialize(own.raw).GetHash()),
            "fees": {
                "base": _Btc(own.fee_sat),
                "modified": _Btc(own.fee_sat),
                "ancestor": _Btc(own.fee_sat),  # ancestors are not summed here
                "descendant": _Btc(entry.descendant_fees_sat),
            },
            "depends": sorted(own.parents),
            "spentby": sorted(t for t, e in entries.items() if txid in e.parents),
            "bip125-replaceable": any(
                txin.nSequence < 0xFFFFFFFE for txin in CTransaction.deserialize(own.raw).vin
            ),
            "unbroadcast": False,
        }

    def getrawtransaction(
        self, txid: Any = None, verbose: Any = False, blockhash: Any = None
    ) -> Any:
        txid = _hash_param(txid, "txid")
        raw = self.chain.get_transaction(txid)
        if raw is None:
            raise RpcError(
                RPC_INVALID_ADDRESS_OR_KEY,
                "No such mempool or blockchain transaction. "
                "Use gettransaction for wallet transactions.",
            )
        if not verbose:
            return raw.hex()
        result = _tx_json(CTransaction.deserialize(raw))
        located = self.chain.transaction_block(txid)
        if located is not None:
            result["blockhash"] = located.hash
            result["confirmations"] = self.chain.tip().height - located.height + 1
        return result

    def generatetoaddress(
        self, nblocks: Any = None, address: Any = None, maxtries: Any = None
    ) -> list[str]:
        count = _int_param(nblocks, "nblocks")
        if count < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "nblocks must not be negative")
        try:
            destination = decode_address(address, Network.REGTEST, field="address")
        except InvalidAddress:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
        try:
            return self.chain.mine(count, destination.script_pubkey)
        except ChainRejected as rej:
            raise RpcError(RPC_MISC_ERROR, rej.message) from None

    def generateblock(
        self, output: Any = None, transactions: Any = None, submit: Any = True
    ) -> dict[str, str]:
        """One block with exactly ``transactions`` (mempool txids or raw hex), in order."""
        try:
            destination = decode_address(output, Network.REGTEST, field="output")
        except InvalidAddress:
            raise RpcError(
                RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address or descriptor"
            ) from None
        if not isinstance(transactions, list):
            raise RpcError(RPC_TYPE_ERROR, "Expected type array for transactions")
        if not isinstance(submit, bool):
            raise RpcError(RPC_TYPE_ERROR, "Expected type bool for submit")
        chosen = [self._block_tx_param(item) for item in transactions]
        try:
            block_hash, raw = self.chain.generate_block(
                chosen, destination.script_pubkey, submit=submit
            )
        except ChainRejected as rej:
            raise RpcError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {rej.message}") from None
        return {"hash": block_hash} if submit else {"hash": block_hash, "hex": raw.hex()}

    def _block_tx_param(self, item: Any) -> str | bytes:
        """Core's reading: 64 hex digits name a mempool transaction, anything else is raw."""
        if isinstance(item, str) and len(item) == 64 and _is_hex(item):
            txid = item.lower()
            if txid not in self.chain.mempool_txids():
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
            return txid
        try:
            raw = bytes.fromhex(item) if isinstance(item, str) else b""
            CTransaction.deserialize(raw)
        except Exception:
            raise RpcError(
                RPC_DESERIALIZATION_ERROR,
                f"Transaction decode failed for {item}. Make sure the tx has at least one input.",
            ) from None
        return raw


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _tx_json(tx: CTransaction) -> dict[str, Any]:
    raw = bytes(tx.serialize())
    return {
        "txid": blocks.txid_hex(tx),
        "hash": str(b2lx(tx.GetHash())),
        "version": tx.nVersion,
        "size": len(raw),
        "vsize": blocks.tx_vsize(tx),
        "weight": blocks.tx_weight(tx),
        "locktime": tx.nLockTime,
        "hex": raw.hex(),
    }


def _int_param(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcError(RPC_TYPE_ERROR, f"Expected type number for {name}")
    return value


def _hash_param(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {_len(value)})")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string") from None
    return value.lower()


def _len(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _feerate_param(value: Any) -> Decimal:
    if value is None:
        return DEFAULT_MAX_FEERATE_BTC_PER_KVB
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RpcError(RPC_TYPE_ERROR, "maxfeerate must be a number")
    try:
        rate = Decimal(str(value))
    except ArithmeticError:
        raise RpcError(RPC_TYPE_ERROR, "maxfeerate must be a number") from None
    if rate < 0:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return rate


def _decode_tx_hex(value: Any) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
        CTransaction.deserialize(raw)
    except Exception:
        raise RpcError(
            RPC_DESERIALIZATION_ERROR,
            "TX decode failed. Make sure the tx has at least one input.",
        ) from None
    return raw


# -- running it ----------------------------------------------------------------------------


class RpcServerThread:
    """A uvicorn server for ``app`` in a daemon thread (port 0 picks a free port)."""

    def __init__(self, app: Starlette, *, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="rpc-server", daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout_s: float = 10.0) -> RpcServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the RPC server did not start")
            time.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


RPC_INFO_FILE = "rpc.json"


def serve_embedded_rpc(
    chain: EmbeddedChain, *, host: str = "127.0.0.1", port: int = 0
) -> RpcServerThread:
    """Serve ``chain`` over JSON-RPC for dev tools: fresh cookie + ``rpc.json`` in chain_dir.

    Another process (``walletsvc devchain mine``) finds it with ``embedded_rpc_endpoint``.
    """
    user, password = write_cookie(chain.chain_dir)
    server = RpcServerThread(
        make_rpc_app(chain, user=user, password=password), host=host, port=port
    )
    server.start()
    info = json.dumps({"url": server.url, "pid": os.getpid()})
    tmp = chain.chain_dir / (RPC_INFO_FILE + ".tmp")
    tmp.write_text(info)
    os.replace(tmp, chain.chain_dir / RPC_INFO_FILE)
    return server


def embedded_rpc_endpoint(chain_dir: Path) -> tuple[str, Path]:
    """(url, cookie file) of the RPC server a running service opened on ``chain_dir``."""
    try:
        info = json.loads((chain_dir / RPC_INFO_FILE).read_text())
        url = str(info["url"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DependencyUnavailable(
            f"no embedded chain RPC server is advertised in {chain_dir}"
        ) from exc
    return url, chain_dir / COOKIE_FILE
