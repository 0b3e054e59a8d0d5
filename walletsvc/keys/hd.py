"""BIP32/BIP84 derivation: fast public derivation from an account xpub, and the signer's
private derivation from a seed.

Public side: ``AccountXpub`` derives receive/change P2WPKH scripts and addresses without any
secret. BIP32 CKDpub is implemented here with hmac + coincurve (libsecp256k1) and the two
chain-level nodes (m/84'/c'/0'/0 and /1) are cached, so one address costs one HMAC-SHA512, one
point tweak, one hash160 and one bech32 encoding (bip-utils'): well over 10,000 addresses per
second (docs/performance.md).

Private side: ``AccountKeys`` (used only by walletsvc.keys.signer) derives the hardened
account node from a BIP39 seed once and caches chain nodes, so signing many inputs costs one
HMAC and one scalar addition per distinct key.

Python cannot reliably erase ints or bytes; we keep secrets in as few objects as possible, drop
them with ``wipe()`` and never put them in reprs or exception messages.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import NoReturn

from bip_utils import Base58Decoder, Base58Encoder
from coincurve import PrivateKey, PublicKey
from coincurve.context import GLOBAL_CONTEXT

from walletsvc.domain.address import p2wpkh_script, witness_address
from walletsvc.domain.hashes import hash160
from walletsvc.domain.network import EXTENDED_PRIVATE_KEY_VERSIONS, Network
from walletsvc.domain.transaction import CHANGE_CHAIN, RECEIVE_CHAIN, KeyPath

from .errors import InvalidXpub

HARDENED = 0x8000_0000
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
BIP84_PURPOSE = 84
ACCOUNT = 0
ACCOUNT_DEPTH = 3
_XPUB_PAYLOAD_SIZE = 78


def p2wpkh_script_for_pubkey(pubkey: bytes) -> bytes:
    """The P2WPKH scriptPubKey (OP_0 <20-byte key hash>) of a compressed public key."""
    return p2wpkh_script(hash160(pubkey))


def account_path(network: Network) -> tuple[int, int, int]:
    """BIP84 account path m/84'/coin'/0' as hardened child numbers (coin 0 mainnet, 1 test)."""
    return (
        BIP84_PURPOSE | HARDENED,
        network.params.bip32_coin_type | HARDENED,
        ACCOUNT | HARDENED,
    )


def account_path_str(network: Network) -> str:
    """The account path in the usual notation, e.g. ``m/84'/1'/0'``."""
    return f"m/{BIP84_PURPOSE}'/{network.params.bip32_coin_type}'/{ACCOUNT}'"


def check_chain_index(chain: int, index: int) -> None:
    """Only the BIP84 receive/change chains and non-hardened indexes are ours."""
    if isinstance(chain, bool) or chain not in (RECEIVE_CHAIN, CHANGE_CHAIN):
        raise ValueError(f"chain must be {RECEIVE_CHAIN} (receive) or {CHANGE_CHAIN} (change)")
    check_unhardened_index(index)


def check_unhardened_index(index: int, *, what: str = "address index") -> int:
    """A non-hardened BIP32 child index: the only kind public derivation can reach."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < HARDENED:
        raise ValueError(f"{what} must be an integer in [0, {HARDENED})")
    return index


def _ser32(i: int) -> bytes:
    return struct.pack(">I", i)


class _InvalidChild(ValueError):
    """BIP32's ~2^-127 case (IL >= n or a zero/infinite key): callers must skip the index."""


@dataclass(frozen=True)
class _PubNode:
    key: PublicKey
    key_bytes: bytes  # compressed
    chain_code: bytes


def _ckd_pub(node: _PubNode, index: int) -> tuple[PublicKey, bytes]:
    digest = hmac.digest(node.chain_code, node.key_bytes + _ser32(index), "sha512")
    il = digest[:32]
    if int.from_bytes(il, "big") >= SECP256K1_N:
        raise _InvalidChild(f"BIP32 child {index} is invalid")
    try:
        child = node.key.add(il)
    except ValueError:
        raise _InvalidChild(f"BIP32 child {index} is invalid") from None
    return child, digest[32:]


class AccountXpub:
    """A BIP84 account public key (depth 3) of one network: derives our P2WPKH addresses.

    Accepts the standard BIP32 serialisation (xpub/tpub) and the SLIP-132 one (zpub/vpub);
    an extended key of the other network, or of a depth other than an account, is refused.
    """

    __slots__ = (
        "_chains",
        "chain_code",
        "child_number",
        "depth",
        "network",
        "parent_fingerprint",
        "public_key",
    )

    def __init__(
        self,
        *,
        network: Network,
        public_key: bytes,
        chain_code: bytes,
        parent_fingerprint: bytes,
        child_number: int,
        depth: int = ACCOUNT_DEPTH,
    ) -> None:
        if len(chain_code) != 32 or len(parent_fingerprint) != 4:
            raise InvalidXpub("malformed extended public key", field="xpub")
        try:
            point = PublicKey(bytes(public_key))
        except ValueError:
            raise InvalidXpub("extended public key holds an invalid point", field="xpub") from None
        if len(public_key) != 33:
            raise InvalidXpub("extended public key must hold a compressed key", field="xpub")
        self.network = network
        self.public_key = bytes(public_key)
        self.chain_code = bytes(chain_code)
        self.parent_fingerprint = bytes(parent_fingerprint)
        self.child_number = child_number
        self.depth = depth
        account = _PubNode(point, self.public_key, self.chain_code)
        # The two chain nodes are all that address derivation ever needs: derive them once.
        chains: dict[int, _PubNode] = {}
        for chain in (RECEIVE_CHAIN, CHANGE_CHAIN):
            key, code = _ckd_pub(account, chain)
            chains[chain] = _PubNode(key, key.format(compressed=True), code)
        self._chains = chains

    @classmethod
    def parse(cls, text: str, network: Network) -> AccountXpub:
        """Parse an account xpub/tpub/zpub/vpub of ``network``; refuse anything else."""
        key = parse_xpub(text, network, slip132=True)
        if key.depth != ACCOUNT_DEPTH or not key.child_number & HARDENED:
            raise InvalidXpub(
                f"expected a BIP84 account key (depth {ACCOUNT_DEPTH}, hardened), "
                f"got depth {key.depth}",
                field="xpub",
            )
        return cls(
            network=network,
            public_key=key.public_key,
            chain_code=key.chain_code,
            parent_fingerprint=key.parent_fingerprint,
            child_number=key.child_number,
            depth=key.depth,
        )

    def to_string(self, *, slip132: bool = False) -> str:
        """Base58Check serialisation: xpub/tpub by default, zpub/vpub with ``slip132``."""
        params = self.network.params
        version = params.zpub_version if slip132 else params.xpub_version
        return _serialise_xpub(
            version,
            self.depth,
            self.parent_fingerprint,
            self.child_number,
            self.chain_code,
            self.public_key,
        )

    @property
    def xpub(self) -> str:
        """Standard BIP32 form (xpub on mainnet, tpub on test networks)."""
        return self.to_string()

    @property
    def slip132(self) -> str:
        """SLIP-132 BIP84 form (zpub on mainnet, vpub on test networks)."""
        return self.to_string(slip132=True)

    def __repr__(self) -> str:
        return f"AccountXpub({self.to_string()!r}, network={self.network.value})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccountXpub):
            return NotImplemented
        return self.network is other.network and self.to_string() == other.to_string()

    def __hash__(self) -> int:
        return hash((self.network, self.public_key, self.chain_code))

    def pubkey(self, chain: int, index: int) -> bytes:
        """Compressed public key at m/84'/c'/0'/chain/index."""
        check_chain_index(chain, index)
        key, _ = _ckd_pub(self._chains[chain], index)
        return key.format(compressed=True)

    def script_pubkey(self, chain: int, index: int) -> bytes:
        """P2WPKH scriptPubKey at m/84'/c'/0'/chain/index."""
        return p2wpkh_script_for_pubkey(self.pubkey(chain, index))

    def address(self, chain: int, index: int) -> str:
        """Bech32 P2WPKH address at m/84'/c'/0'/chain/index."""
        return witness_address(0, hash160(self.pubkey(chain, index)), self.network)


# --- the extended public key parser -------------------------------------------------------


@dataclass(frozen=True)
class ExtendedPublicKey:
    """A decoded BIP32 extended public key (the 78-byte serialisation) of one network."""

    network: Network
    depth: int
    parent_fingerprint: bytes
    child_number: int
    chain_code: bytes
    public_key: bytes  # compressed
    point: PublicKey  # ``public_key``, checked to be on the curve

    @property
    def xpub(self) -> str:
        """The BIP32 form (xpub on mainnet, tpub on test networks), whatever form was parsed."""
        return _serialise_xpub(
            self.network.params.xpub_version,
            self.depth,
            self.parent_fingerprint,
            self.child_number,
            self.chain_code,
            self.public_key,
        )


def parse_xpub(text: object, network: Network, *, slip132: bool) -> ExtendedPublicKey:
    """Decode an extended public key of ``network``: the one parser for every xpub we take.

    Accepts the network's BIP32 version (xpub/tpub) and, with ``slip132``, its SLIP-132 BIP84
    version too (zpub/vpub; descriptors allow only the BIP32 form, as in Bitcoin Core). Refuses
    private keys, keys of another network, other versions and malformed text; messages never
    repeat the text, which may be a private key.
    """
    if not isinstance(text, str) or not text.isascii() or not 100 <= len(text) <= 120:
        raise InvalidXpub("not an extended public key", field="xpub")
    try:
        payload = bytes(Base58Decoder.CheckDecode(text))
    except Exception:  # bip-utils raises several types for bad base58/checksums
        raise InvalidXpub("extended public key has a bad base58 checksum", field="xpub") from None
    if len(payload) != _XPUB_PAYLOAD_SIZE:
        raise InvalidXpub("extended public key has the wrong length", field="xpub")
    _check_version(payload[0:4], network, slip132=slip132)
    public_key = payload[45:78]
    try:
        point = PublicKey(public_key)
    except ValueError:
        raise InvalidXpub("extended public key holds an invalid point", field="xpub") from None
    return ExtendedPublicKey(
        network=network,
        depth=payload[4],
        parent_fingerprint=payload[5:9],
        child_number=int.from_bytes(payload[9:13], "big"),
        chain_code=payload[13:45],
        public_key=public_key,
        point=point,
    )


def _check_version(version: bytes, network: Network, *, slip132: bool) -> None:
    params = network.params
    if version == params.xpub_version or (slip132 and version == params.zpub_version):
        return
    if version == params.zpub_version:
        raise InvalidXpub(
            "this is a SLIP-132 (zpub/vpub) key; write it in its BIP32 form (xpub/tpub) here",
            field="xpub",
        )
    for other in Network:
        if version in (other.params.xpub_version, other.params.zpub_version):
            owner = "mainnet" if other is Network.MAINNET else "a test network"
            raise InvalidXpub(
                f"extended public key belongs to {owner}, but this wallet is on {network.value}",
                field="xpub",
            )
    if version in EXTENDED_PRIVATE_KEY_VERSIONS:
        # Never echo the text back: it is a private key.
        raise InvalidXpub("this is an extended PRIVATE key; supply the xpub", field="xpub")
    raise InvalidXpub(
        f"unsupported extended key version {version.hex()} (an xpub/tpub expected)",
        field="xpub",
    )


def _serialise_xpub(
    version: bytes,
    depth: int,
    parent_fingerprint: bytes,
    child_number: int,
    chain_code: bytes,
    public_key: bytes,
) -> str:
    payload = (
        version
        + bytes([depth])
        + parent_fingerprint
        + _ser32(child_number)
        + chain_code
        + public_key
    )
    return str(Base58Encoder.CheckEncode(payload))


# --- private side (signer only) -----------------------------------------------------------


def _master(seed: bytes | bytearray) -> tuple[int, bytes]:
    digest = hmac.digest(b"Bitcoin seed", bytes(seed), "sha512")
    k = int.from_bytes(digest[:32], "big")
    if not 0 < k < SECP256K1_N:
        raise _InvalidChild("seed yields an invalid BIP32 master key")
    return k, digest[32:]


def _pub_of(k: int) -> bytes:
    return PublicKey.from_valid_secret(k.to_bytes(32, "big")).format(compressed=True)


def _ckd_priv(k: int, chain_code: bytes, index: int, pub: bytes | None) -> tuple[int, bytes]:
    if index & HARDENED:
        data = b"\x00" + k.to_bytes(32, "big") + _ser32(index)
    else:
        data = (pub if pub is not None else _pub_of(k)) + _ser32(index)
    digest = hmac.digest(chain_code, data, "sha512")
    il = int.from_bytes(digest[:32], "big")
    if il >= SECP256K1_N:
        raise _InvalidChild(f"BIP32 child {index} is invalid")
    child = (il + k) % SECP256K1_N
    if child == 0:
        raise _InvalidChild(f"BIP32 child {index} is invalid")
    return child, digest[32:]


@dataclass
class _PrivNode:
    k: int
    chain_code: bytes
    pub: bytes  # compressed, needed for non-hardened children


def _signing_key(secret: bytes) -> PrivateKey:
    """A coincurve PrivateKey for ECDSA signing, built with one EC multiplication, not two.

    ``PrivateKey.__init__`` (coincurve 21) derives both the ECDSA public key and a BIP340
    x-only keypair: two multiplications, a third of the cost of signing an input. We need only
    the first. ``secret`` comes from ``_ckd_priv``, which guarantees 0 < k < n.
    """
    key: PrivateKey = PrivateKey.__new__(PrivateKey)
    key.secret = secret
    key.context = GLOBAL_CONTEXT
    key.public_key = PublicKey.from_valid_secret(secret, GLOBAL_CONTEXT)
    return key


@dataclass(frozen=True)
class DerivedKey:
    """A signing key and its public key. Its repr shows only the public key."""

    private_key: PrivateKey
    public_key: bytes  # compressed

    def __repr__(self) -> str:
        return f"DerivedKey(public_key={self.public_key.hex()})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DerivedKey cannot be pickled or copied")


class AccountKeys:
    """The private BIP84 account (m/84'/c'/0') of one seed, for the signer only.

    Derives the hardened account node once, caches the two chain nodes, and derives child keys
    with one HMAC and one scalar addition each. Call :meth:`wipe` when the signing session ends.
    """

    __slots__ = ("_account", "_chains", "_parent_fingerprint", "master_fingerprint", "network")

    def __init__(self, seed: bytes | bytearray, network: Network) -> None:
        self.network = network
        k, code = _master(seed)
        master_pub = _pub_of(k)
        self.master_fingerprint: bytes = hash160(master_pub)[:4]
        purpose, coin, account = account_path(network)
        k, code = _ckd_priv(k, code, purpose, None)
        k, code = _ckd_priv(k, code, coin, None)
        # Fingerprint of m/84'/c' goes into the serialised account xpub.
        self._parent_fingerprint: bytes = hash160(_pub_of(k))[:4]
        k, code = _ckd_priv(k, code, account, None)
        self._account: _PrivNode | None = _PrivNode(k, code, _pub_of(k))
        self._chains: dict[int, _PrivNode] = {}

    def __repr__(self) -> str:
        return (
            f"AccountKeys(fingerprint={self.master_fingerprint.hex()}, "
            f"path={account_path_str(self.network)})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("AccountKeys cannot be pickled or copied")

    def _account_node(self) -> _PrivNode:
        if self._account is None:
            raise RuntimeError("AccountKeys used after wipe()")
        return self._account

    def account_xpub(self) -> AccountXpub:
        """The public account key this seed yields (what the database stores)."""
        account = self._account_node()
        return AccountXpub(
            network=self.network,
            public_key=account.pub,
            chain_code=account.chain_code,
            parent_fingerprint=self._parent_fingerprint,
            child_number=account_path(self.network)[-1],
        )

    def _chain(self, chain: int) -> _PrivNode:
        node = self._chains.get(chain)
        if node is None:
            account = self._account_node()
            k, code = _ckd_priv(account.k, account.chain_code, chain, account.pub)
            node = _PrivNode(k, code, _pub_of(k))
            self._chains[chain] = node
        return node

    def key(self, chain: int, index: int) -> DerivedKey:
        """The signing key at m/84'/c'/0'/chain/index."""
        check_chain_index(chain, index)
        node = self._chain(chain)
        k, _ = _ckd_priv(node.k, node.chain_code, index, node.pub)
        private_key = _signing_key(k.to_bytes(32, "big"))
        return DerivedKey(private_key, private_key.public_key.format(compressed=True))

    def wipe(self) -> None:
        """Drop every cached secret node (Python ints cannot be overwritten in place)."""
        self._account = None
        self._chains.clear()


def derive_private_key(seed: bytes | bytearray, network: Network, key_path: KeyPath) -> DerivedKey:
    """One-off derivation of the key at ``key_path`` (the seed must be that epoch's seed).

    For many keys use :class:`AccountKeys`, which derives the account node only once.
    """
    keys = AccountKeys(seed, network)
    try:
        return keys.key(key_path.chain, key_path.index)
    finally:
        keys.wipe()
