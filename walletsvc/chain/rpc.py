"""ChainBackend over Bitcoin Core's JSON-RPC (bitcoind, or the embedded chain's RPC server)."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import httpx
from bitcoin.core import CTransaction, b2lx

from walletsvc.domain.errors import ChainRejected, DependencyUnavailable, NotFound
from walletsvc.domain.money import COIN
from walletsvc.domain.network import Network
from walletsvc.domain.ports import AcceptResult, BlockRef

log = logging.getLogger(__name__)

# getblockchaininfo's "chain" for each network.
CORE_CHAIN_NAMES: dict[Network, frozenset[str]] = {
    Network.MAINNET: frozenset({"main"}),
    Network.TESTNET: frozenset({"test", "testnet4"}),
    Network.SIGNET: frozenset({"signet"}),
    Network.REGTEST: frozenset({"regtest"}),
}

RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ALREADY_IN_CHAIN = -27
# Refusals that mean "the node already has it": broadcast is idempotent.
ALREADY_KNOWN_MESSAGES = (
    "txn-already-known",
    "txn-already-in-mempool",
    "transaction already in block chain",
    "transaction outputs already in utxo set",
)
_SAT_PER_VB_PER_BTC_PER_KVB = Decimal(COIN) / 1000  # sat/BTC over vB/kvB


class RpcError(ChainRejected):
    """Bitcoin Core answered with a JSON-RPC error (``rpc_code`` is Core's error code)."""

    def __init__(self, rpc_code: int, message: str) -> None:
        super().__init__(message, reason=reject_reason(message))
        self.rpc_code = rpc_code


class NetworkMismatch(DependencyUnavailable):
    """The node is on another network than the one configured."""

    code = "network_mismatch"


def reject_reason(message: str) -> str:
    """Core's reject reason from a refusal message ("min relay fee not met, 1 < 110" -> ...)."""
    return message.split(",", 1)[0].split(" (", 1)[0].strip()


class BitcoinRpcBackend:
    """A ``ChainBackend`` talking JSON-RPC to Bitcoin Core with a synchronous httpx client.

    Authenticates with user/password or Core's cookie file (re-read when the node answers
    401, since Core writes a new cookie on every start). Connection failures and HTTP 5xx
    replies without a JSON-RPC error are retried with exponential backoff; a JSON-RPC error
    is a definite answer and is never retried. The network of the node is checked once,
    before the first call that depends on it.
    """

    def __init__(
        self,
        url: str,
        network: Network,
        *,
        user: str = "",
        password: str = "",
        cookie_file: Path | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        fee_floor_sat_per_vb: int = 1,
    ) -> None:
        self._url = url
        self._network = network
        self._user = user
        self._password = password
        self._cookie_file = cookie_file
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        self._fee_floor = fee_floor_sat_per_vb
        self._ids = itertools.count(1)
        self._network_checked = False
        self._client = httpx.Client(timeout=timeout_s)

    def __repr__(self) -> str:  # never show credentials
        return f"BitcoinRpcBackend(url={self._url!r}, network={self._network.value})"

    # -- transport -----------------------------------------------------------------------

    def _auth_header(self, reload_cookie: bool = False) -> dict[str, str]:
        if self._cookie_file is not None and (reload_cookie or not self._password):
            try:
                text = self._cookie_file.read_text().strip()
            except OSError as exc:
                raise DependencyUnavailable(
                    f"cannot read the RPC cookie file {self._cookie_file}: {exc.strerror}"
                ) from None
            user, _, password = text.partition(":")
            self._user, self._password = user, password
        if not self._user and not self._password:
            return {}
        token = base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; returns ``result`` or raises RpcError / DependencyUnavailable."""
        body = json.dumps(
            {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)}
        )
        headers = {"Content-Type": "application/json", **self._auth_header()}
        reloaded = False
        attempt = 0
        while True:
            problem: str
            try:
                response = self._client.post(self._url, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code == 401:
                    if self._cookie_file is not None and not reloaded:
                        reloaded = True
                        headers.update(self._auth_header(reload_cookie=True))
                        continue
                    raise DependencyUnavailable(
                        f"bitcoind at {self._url} refused the RPC credentials (HTTP 401)"
                    )
                error, result, parsed = _parse(response)
                if error is not None:
                    raise RpcError(int(error.get("code", -1)), str(error.get("message", "")))
                if parsed and response.status_code < 400:
                    return result
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    raise DependencyUnavailable(
                        f"bitcoind at {self._url} answered {method} with {problem}"
                    )
            if attempt >= self._retries:
                raise DependencyUnavailable(
                    f"bitcoind at {self._url} unreachable for {method} after "
                    f"{attempt + 1} attempt(s): {problem}"
                )
            delay = self._backoff_s * (2**attempt)
            log.warning("rpc %s failed (%s); retrying in %.2fs", method, problem, delay)
            time.sleep(delay)
            attempt += 1

    def _check_network(self) -> dict[str, Any]:
        info: dict[str, Any] = self.call("getblockchaininfo")
        chain = info.get("chain")
        if chain not in CORE_CHAIN_NAMES[self._network]:
            raise NetworkMismatch(
                f"bitcoind at {self._url} is on chain {chain!r}, expected {self._network.value}"
            )
        self._network_checked = True
        return info

    def _ensure_network(self) -> None:
        if not self._network_checked:
            self._check_network()

    # -- ChainBackend ----------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return self._network

    def tip(self) -> BlockRef:
        info = self._check_network()
        return BlockRef(height=int(info["blocks"]), hash=str(info["bestblockhash"]))

    def block_hash(self, height: int) -> str | None:
        self._ensure_network()
        if height < 0:
            return None
        try:
            return str(self.call("getblockhash", height))
        except RpcError as exc:
            if exc.rpc_code == RPC_INVALID_PARAMETER:
                return None
            raise

    def block_bytes(self, block_hash: str) -> bytes:
        self._ensure_network()
        try:
            return bytes.fromhex(self.call("getblock", block_hash, 0))
        except RpcError as exc:
            if exc.rpc_code in (RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER):
                raise NotFound(f"block {block_hash} not found", field="block_hash") from None
            raise

    def broadcast(self, raw_tx: bytes) -> str:
        self._ensure_network()
        try:
            return str(self.call("sendrawtransaction", raw_tx.hex()))
        except RpcError as exc:
            if exc.rpc_code == RPC_VERIFY_ALREADY_IN_CHAIN or any(
                known in exc.message.lower() for known in ALREADY_KNOWN_MESSAGES
            ):
                return _txid(raw_tx)
            raise

    def test_accept(self, raw_tx: bytes) -> AcceptResult:
        self._ensure_network()
        try:
            (result,) = self.call("testmempoolaccept", [raw_tx.hex()])
        except RpcError as exc:
            if exc.rpc_code == RPC_DESERIALIZATION_ERROR:
                return AcceptResult(txid="", allowed=False, reason="TX decode failed")
            raise
        reason = result.get("reject-reason")
        if reason == "missing-inputs":
            # Same spelling as sendrawtransaction and the embedded chain.
            reason = "bad-txns-inputs-missingorspent"
        return AcceptResult(
            txid=str(result["txid"]), allowed=bool(result["allowed"]), reason=reason
        )

    def mempool_txids(self) -> set[str]:
        self._ensure_network()
        return {str(txid) for txid in self.call("getrawmempool")}

    def fee_rate_sat_per_vb(self, target_blocks: int) -> int:
        """estimatesmartfee in whole sat/vB, rounded up; the floor when Core has no estimate."""
        self._ensure_network()
        result = self.call("estimatesmartfee", max(1, min(1008, target_blocks)))
        feerate = result.get("feerate")
        if feerate is None or result.get("errors"):
            log.info("estimatesmartfee has no estimate (%s); using the floor", result.get("errors"))
            return self._fee_floor
        sat_per_vb = (Decimal(feerate) * _SAT_PER_VB_PER_BTC_PER_KVB).to_integral_value(
            rounding=ROUND_CEILING
        )
        return max(self._fee_floor, int(sat_per_vb))

    def close(self) -> None:
        self._client.close()


def _parse(response: httpx.Response) -> tuple[dict[str, Any] | None, Any, bool]:
    """(error object, result, parsed as a JSON-RPC reply) from an HTTP response."""
    try:
        payload = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        return None, None, False
    if not isinstance(payload, dict) or ("result" not in payload and "error" not in payload):
        return None, None, False
    error = payload.get("error")
    if error is not None and not isinstance(error, dict):
        error = {"code": -1, "message": str(error)}
    return error, payload.get("result"), True


def _txid(raw_tx: bytes) -> str:
    return str(b2lx(CTransaction.deserialize(raw_tx).GetTxid()))
