"""ChainBackend over Bitcoin Core's JSON-RPC (bitcoind, or the embedded chain's RPC server)."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from bitcoin.core import CTransaction, b2lx

from walletsvc.chain.core_protocol import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_MISC_ERROR,
    RPC_TRANSACTION_ERROR,
    RPC_TRANSACTION_REJECTED,
    RPC_VERIFY_ALREADY_IN_CHAIN,
)
from walletsvc.domain.errors import ChainRejected, DependencyUnavailable, NotFound
from walletsvc.domain.money import COIN
from walletsvc.domain.network import Network
from walletsvc.domain.ports import AcceptResult, BlockRef

log = logging.getLogger(__name__)

TestnetVariant = Literal["testnet4", "testnet3"]
EstimateMode = Literal["conservative", "economical"]

# Genesis block hashes (Bitcoin Core, src/kernel/chainparams.cpp), keyed by getblockchaininfo's
# "chain". The name is what a node says about itself; block 0 is what it actually holds, and
# the only thing that tells testnet3 from testnet4 (both are Network.TESTNET, with the same
# addresses and xpubs). Every signet, default or custom, shares one genesis block.
CORE_GENESIS_HASHES: dict[str, str] = {
    "main": "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
    "test": "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
    "testnet4": "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043",
    "signet": "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6",
    "regtest": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
}
# getblockchaininfo's "chain" for each network (both testnets share addresses and xpubs).
CORE_CHAIN_NAMES: dict[Network, frozenset[str]] = {
    Network.MAINNET: frozenset({"main"}),
    Network.TESTNET: frozenset({"test", "testnet4"}),
    Network.SIGNET: frozenset({"signet"}),
    Network.REGTEST: frozenset({"regtest"}),
}
_TESTNET_CHAIN: dict[TestnetVariant, str] = {"testnet4": "testnet4", "testnet3": "test"}

# Bitcoin Core 28.0 (getnetworkinfo "version" 280000) is the first release that relays full-RBF
# replacements by default (-mempoolfullrbf=1): the theft shield's conflicting spend must reach
# miners whatever the thief's transaction signals.
MIN_CORE_VERSION = 280000

# Refusals that mean "the node already has it": broadcast is idempotent.
ALREADY_KNOWN_MESSAGES = (
    "txn-already-known",
    "txn-already-in-mempool",
    "transaction already in block chain",
    "transaction outputs already in utxo set",
)
# testmempoolaccept's reject reasons for a transaction the node already has (mempool or chain).
ALREADY_KNOWN_REASONS = frozenset(
    {"txn-already-known", "txn-already-in-mempool", "txn-same-nonwitness-data-in-mempool"}
)
# sendrawtransaction answers these reasons with RPC_TRANSACTION_ERROR, every other refusal
# with RPC_TRANSACTION_REJECTED (Core's src/rpc/util.cpp, RPCErrorFromTransactionError).
_TRANSACTION_ERROR_REASONS = frozenset({"bad-txns-inputs-missingorspent", "max-fee-exceeded"})
NO_ESTIMATE_ERROR = "Insufficient data or no feerate found"
_SAT_PER_VB_PER_BTC_PER_KVB = Decimal(COIN) / 1000  # sat/BTC over vB/kvB
# Head-room of maxfeerate over the highest rate we sign at: a transaction is sized before its
# signatures exist (72-byte DER assumed) and Core divides its fee by the real, smaller vsize.
_MAX_FEERATE_HEADROOM = Decimal("1.05")


class RpcError(ChainRejected):
    """Bitcoin Core answered with a JSON-RPC error (``rpc_code`` is Core's error code)."""

    def __init__(self, rpc_code: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, reason=reject_reason(message) if reason is None else reason)
        self.rpc_code = rpc_code


class NetworkMismatch(DependencyUnavailable):
    """The node is on another network (or another testnet) than the one configured."""

    code = "network_mismatch"


class NodeNotSynced(DependencyUnavailable):
    """The node is in initial block download or has not validated every header it knows."""

    code = "node_not_synced"


class NodePruned(DependencyUnavailable):
    """The node has deleted blocks the wallet's history needs."""

    code = "node_pruned"


class NodeUnsupported(DependencyUnavailable):
    """The node runs a Bitcoin Core older than the one the theft shield relies on."""

    code = "node_unsupported"


class FeeEstimateUnavailable(DependencyUnavailable):
    """estimatesmartfee has no estimate and no fallback fee rate is configured."""

    code = "fee_estimate_unavailable"


def reject_reason(message: str) -> str:
    """Core's reject reason from a refusal message ("min relay fee not met, 1 < 110" -> ...)."""
    return message.split(",", 1)[0].split(" (", 1)[0].strip()


def max_feerate_btc_per_kvb(max_fee_rate_sat_per_vb: int) -> str:
    """Core's ``maxfeerate`` (BTC/kvB, 8 decimals, as a string) for our highest signing rate."""
    sat_per_kvb = (
        Decimal(max_fee_rate_sat_per_vb) * 1000 * _MAX_FEERATE_HEADROOM
    ).to_integral_value(rounding=ROUND_CEILING)
    return f"{sat_per_kvb / COIN:.8f}"


class BitcoinRpcBackend:
    """A ``ChainBackend`` talking JSON-RPC to Bitcoin Core with a synchronous httpx client.

    Authenticates with user/password or Core's cookie file (re-read when the node answers
    401, since Core writes a new cookie on every start). Connection failures and HTTP 5xx
    replies without a JSON-RPC error are retried with exponential backoff; a JSON-RPC error
    is a definite answer and is never retried.

    Before the first call that depends on the node, and again after the node was unreachable
    or wrote a new cookie (a restart), the node is checked once: its chain name and genesis
    block (mainnet, testnet3, testnet4, signet, regtest told apart), its version (at least
    ``MIN_CORE_VERSION``), that it has finished syncing, and that it has not pruned blocks
    below ``scan_start_height``. ``tip()`` re-applies the sync check to every answer, at no
    extra call. Broadcasts go through ``testmempoolaccept`` first; both carry an explicit
    ``maxfeerate`` derived from our own highest fee rate, not Core's 0.10 BTC/kvB default.
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
        max_fee_rate_sat_per_vb: int = 200,
        estimate_mode: EstimateMode = "conservative",
        fallback_fee_rate_sat_per_vb: int | None = None,
        scan_start_height: int = 0,
        testnet_variant: TestnetVariant = "testnet4",
        min_node_version: int = MIN_CORE_VERSION,
    ) -> None:
        self._url = url
        self._network = network
        self._user = user
        self._password = password
        self._cookie_file = cookie_file
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        self._fee_floor = fee_floor_sat_per_vb
        self._maxfeerate = max_feerate_btc_per_kvb(max_fee_rate_sat_per_vb)
        self._estimate_mode = estimate_mode
        self._fallback_fee_rate = fallback_fee_rate_sat_per_vb
        self._scan_start_height = scan_start_height
        self._expected_chain = _expected_chain(network, testnet_variant)
        self._min_node_version = min_node_version
        self._ids = itertools.count(1)
        self._node_checked = False
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
                # The next connection may reach a restarted (or another) node: check it again.
                self._node_checked = False
            else:
                if response.status_code == 401:
                    if self._cookie_file is not None and not reloaded:
                        reloaded = True
                        self._node_checked = False  # a new cookie: the node restarted
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

    # -- the node check --------------------------------------------------------------------

    def _check_node(self) -> dict[str, Any]:
        """Check the node once per connection; returns its getblockchaininfo."""
        info: dict[str, Any] = self.call("getblockchaininfo")
        self._check_chain_name(info)
        self._check_genesis()
        self._check_version()
        self._check_synced(info)
        self._check_not_pruned_below_scan_start(info)
        self._node_checked = True
        return info

    def _ensure_node(self) -> None:
        if not self._node_checked:
            self._check_node()

    def _check_chain_name(self, info: dict[str, Any]) -> None:
        chain = info.get("chain")
        if chain != self._expected_chain:
            raise NetworkMismatch(
                f"bitcoind at {self._url} is on chain {chain!r}, expected "
                f"{self._expected_chain!r} for {self._network.value}"
                + _TESTNET_HINT.get(self._network, "")
            )

    def _check_genesis(self) -> None:
        genesis = str(self.call("getblockhash", 0))
        expected = CORE_GENESIS_HASHES[self._expected_chain]
        if genesis != expected:
            raise NetworkMismatch(
                f"bitcoind at {self._url} has genesis block {genesis}, not the "
                f"{self._expected_chain!r} genesis {expected}"
            )

    def _check_version(self) -> None:
        info: dict[str, Any] = self.call("getnetworkinfo")
        version = int(info.get("version", 0))
        if version < self._min_node_version:
            raise NodeUnsupported(
                f"bitcoind at {self._url} is version {version} "
                f"({info.get('subversion', '?')}); walletsvc needs at least "
                f"{self._min_node_version} (Bitcoin Core {self._min_node_version // 10_000}, "
                "which relays full-RBF replacements by default)"
            )

    def _check_synced(self, info: dict[str, Any]) -> None:
        blocks, headers = int(info["blocks"]), int(info["headers"])
        if info.get("initialblockdownload"):
            raise NodeNotSynced(
                f"bitcoind at {self._url} is in initial block download "
                f"(blocks {blocks}, headers {headers}); waiting for it to finish"
            )
        if blocks < headers:
            raise NodeNotSynced(
                f"bitcoind at {self._url} has validated {blocks} blocks of {headers} headers "
                f"({headers - blocks} behind); waiting for it to catch up"
            )

    def _check_not_pruned_below_scan_start(self, info: dict[str, Any]) -> None:
        if not info.get("pruned"):
            return
        # pruneheight: the lowest height whose block is still stored (Core's help text).
        prune_height = int(info.get("pruneheight", 0))
        if prune_height > self._scan_start_height:
            raise NodePruned(
                f"bitcoind at {self._url} is pruned up to height {prune_height}, above "
                f"WALLETSVC_SCAN_START_HEIGHT={self._scan_start_height}: the blocks the "
                "wallet's history needs are gone (docs/runbook.md, Production)"
            )

    # -- ChainBackend ----------------------------------------------------------------------

    @property
    def network(self) -> Network:
        return self._network

    def tip(self) -> BlockRef:
        if self._node_checked:
            info: dict[str, Any] = self.call("getblockchaininfo")
            self._check_chain_name(info)
            self._check_synced(info)
        else:
            info = self._check_node()
        return BlockRef(height=int(info["blocks"]), hash=str(info["bestblockhash"]))

    def block_hash(self, height: int) -> str | None:
        self._ensure_node()
        if height < 0:
            return None
        try:
            return str(self.call("getblockhash", height))
        except RpcError as exc:
            if exc.rpc_code == RPC_INVALID_PARAMETER:
                return None
            raise

    def block_bytes(self, block_hash: str) -> bytes:
        self._ensure_node()
        try:
            return bytes.fromhex(self.call("getblock", block_hash, 0))
        except RpcError as exc:
            if exc.rpc_code in (RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER):
                raise NotFound(f"block {block_hash} not found", field="block_hash") from None
            if exc.rpc_code == RPC_MISC_ERROR and "pruned data" in exc.message:
                raise NodePruned(
                    f"bitcoind at {self._url} has pruned block {block_hash} "
                    f"({exc.message}); the wallet's history needs it"
                ) from None
            if exc.rpc_code == RPC_MISC_ERROR and "not fully downloaded" in exc.message:
                raise NodeNotSynced(
                    f"bitcoind at {self._url} has not downloaded block {block_hash} yet"
                ) from None
            raise

    def broadcast(self, raw_tx: bytes, *, max_fee_rate_sat_per_vb: int | None = None) -> str:
        """testmempoolaccept, then sendrawtransaction; a refusal sends nothing.

        A transaction the node already has is sent anyway: Core answers with its txid (in the
        mempool, re-announcing it) or -27 (confirmed), which is success here.
        ``max_fee_rate_sat_per_vb`` replaces our usual maxfeerate for this transaction only.
        """
        self._ensure_node()
        maxfeerate = (
            self._maxfeerate
            if max_fee_rate_sat_per_vb is None
            else max_feerate_btc_per_kvb(max_fee_rate_sat_per_vb)
        )
        verdict, details = self._test_accept(raw_tx, maxfeerate)
        if not verdict.allowed and verdict.reason not in ALREADY_KNOWN_REASONS:
            reason = verdict.reason or "rejected"
            code = (
                RPC_TRANSACTION_ERROR
                if reason in _TRANSACTION_ERROR_REASONS
                else RPC_TRANSACTION_REJECTED
            )
            raise RpcError(
                code,
                f"bitcoind refused transaction {verdict.txid or '?'} in testmempoolaccept "
                f"({details or reason}); not broadcast",
                reason=reason,
            )
        self._ensure_node()  # again, if the node restarted under testmempoolaccept
        try:
            return str(self.call("sendrawtransaction", raw_tx.hex(), maxfeerate))
        except RpcError as exc:
            if exc.rpc_code == RPC_VERIFY_ALREADY_IN_CHAIN or any(
                known in exc.message.lower() for known in ALREADY_KNOWN_MESSAGES
            ):
                return _txid(raw_tx)
            raise

    def test_accept(self, raw_tx: bytes) -> AcceptResult:
        self._ensure_node()
        return self._test_accept(raw_tx)[0]

    def _test_accept(
        self, raw_tx: bytes, maxfeerate: str | None = None
    ) -> tuple[AcceptResult, str]:
        """testmempoolaccept's verdict and its ``reject-details`` (Core 29+; else empty)."""
        try:
            (result,) = self.call(
                "testmempoolaccept", [raw_tx.hex()], maxfeerate or self._maxfeerate
            )
        except RpcError as exc:
            if exc.rpc_code == RPC_DESERIALIZATION_ERROR:
                return AcceptResult(txid="", allowed=False, reason="TX decode failed"), ""
            raise
        # "allowed" is optional in Core's help (absent when another tx of a package failed).
        allowed = bool(result.get("allowed", False))
        reason = result.get("reject-reason") or result.get("package-error")
        if reason == "missing-inputs":
            # Same spelling as sendrawtransaction and the embedded chain.
            reason = "bad-txns-inputs-missingorspent"
        verdict = AcceptResult(txid=str(result["txid"]), allowed=allowed, reason=reason)
        return verdict, str(result.get("reject-details") or "")

    def mempool_txids(self) -> set[str]:
        self._ensure_node()
        return {str(txid) for txid in self.call("getrawmempool")}

    def fee_rate_sat_per_vb(self, target_blocks: int) -> int:
        """estimatesmartfee (our estimate_mode) in whole sat/vB, rounded up, at least the floor.

        With no estimate: the configured fallback rate (logged as a warning), or
        FeeEstimateUnavailable, so nothing is signed at a guessed rate.
        """
        self._ensure_node()
        target = max(1, min(1008, target_blocks))
        result = self.call("estimatesmartfee", target, self._estimate_mode)
        feerate = result.get("feerate")
        if feerate is None or result.get("errors"):
            return self._no_estimate(target, result.get("errors") or [])
        sat_per_vb = (Decimal(feerate) * _SAT_PER_VB_PER_BTC_PER_KVB).to_integral_value(
            rounding=ROUND_CEILING
        )
        return max(self._fee_floor, int(sat_per_vb))

    def _no_estimate(self, target: int, errors: list[Any]) -> int:
        said = "; ".join(str(e) for e in errors) or NO_ESTIMATE_ERROR
        if self._fallback_fee_rate is None:
            raise FeeEstimateUnavailable(
                f"bitcoind at {self._url} has no fee estimate for {target} blocks ({said}) and "
                "WALLETSVC_FALLBACK_FEE_RATE_SAT_PER_VB is not set: nothing is signed until "
                "the node can estimate"
            )
        rate = max(self._fee_floor, self._fallback_fee_rate)
        log.warning(
            "bitcoind has no fee estimate for %d blocks (%s); using "
            "WALLETSVC_FALLBACK_FEE_RATE_SAT_PER_VB=%d sat/vB",
            target,
            said,
            rate,
        )
        return rate

    def close(self) -> None:
        self._client.close()


_TESTNET_HINT: dict[Network, str] = {
    Network.TESTNET: " (WALLETSVC_TESTNET_VARIANT chooses testnet4 or testnet3)",
}


def _expected_chain(network: Network, testnet_variant: TestnetVariant) -> str:
    """getblockchaininfo's "chain" for the configured network (and testnet variant)."""
    if network is Network.TESTNET:
        return _TESTNET_CHAIN[testnet_variant]
    (name,) = CORE_CHAIN_NAMES[network]
    return name


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
