"""Watch-only cold destinations: an account xpub (BIP84) or ``wsh(sortedmulti(...))``.

The service never holds a cold private key. What it holds is one of:

* an account extended public key (xpub/zpub, tpub/vpub on test networks) of a single-sig
  BIP84 wallet: cold addresses are P2WPKH at ``<account>/0/i``;
* a ``wpkh(KEY/.../*)`` descriptor (the same thing, written as a descriptor);
* a ``wsh(sortedmulti(M,KEY1/.../*,KEY2/.../*,...))`` descriptor (BIP383), keys optionally
  with origins ``[fingerprint/path]``. Keys are sorted per address (BIP67), so their order in
  the descriptor does not matter to the addresses.

A descriptor checksum (BIP380) is verified when given and computed when absent. Every form is
reduced to one normalised descriptor (xpub/tpub encodings, ``h`` for hardened, lower-case
fingerprints, checksum appended); its SHA-256, shortened, is the *fingerprint* staff compare
with what their hardware wallets show.

Parsing refuses private keys (never echoing them), hardened steps after a key (they would need
the private key), keys of another network and duplicate keys.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from walletsvc.domain.address import p2wsh_script, script_to_address
from walletsvc.domain.hashes import hash160
from walletsvc.domain.network import Network

from .errors import InvalidXpub
from .hd import (
    HARDENED,
    AccountXpub,
    ExtendedPublicKey,
    _ckd_pub,
    _PubNode,
    check_unhardened_index,
    p2wpkh_script_for_pubkey,
    parse_xpub,
)

_INPUT_CHARSET = (
    "0123456789()[],'/*abcdefgh@:$%{}"
    "IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
    'ijklmnopqrstuvwxyzABCDEFGH`#"\\ '
)
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_DESCSUM_GEN = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)
# Bitcoin Core: at most 20 keys in a P2WSH multisig (MAX_PUBKEYS_PER_MULTISIG).
MAX_MULTISIG_KEYS = 20
FINGERPRINT_HEX_CHARS = 16
MAX_DESCRIPTOR_LENGTH = 4_000
_FINGERPRINT_RE = re.compile(r"[0-9a-fA-F]{8}")
_STEP_RE = re.compile(r"([0-9]+)(['hH]?)")


class InvalidDescriptor(InvalidXpub):
    """A cold destination that cannot be used; the message never repeats key material."""

    code = "invalid_cold_destination"


class ColdKind(StrEnum):
    SINGLE_SIG = "wpkh"
    MULTISIG = "wsh-sortedmulti"


# --- BIP380 checksum ----------------------------------------------------------------------


def _descsum_polymod(symbols: list[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = (chk & 0x7FFFFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= _DESCSUM_GEN[i] if ((top >> i) & 1) else 0
    return chk


def _descsum_expand(text: str) -> list[int]:
    groups: list[int] = []
    symbols: list[int] = []
    for ch in text:
        pos = _INPUT_CHARSET.find(ch)
        if pos < 0:
            raise InvalidDescriptor("the descriptor contains a character outside BIP380's set")
        symbols.append(pos & 31)
        groups.append(pos >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    return symbols


def descriptor_checksum(body: str) -> str:
    """The 8-character BIP380 checksum of a descriptor (without its ``#``)."""
    symbols = [*_descsum_expand(body), 0, 0, 0, 0, 0, 0, 0, 0]
    checksum = _descsum_polymod(symbols) ^ 1
    return "".join(_CHECKSUM_CHARSET[(checksum >> (5 * (7 - i))) & 31] for i in range(8))


def split_checksum(text: str) -> str:
    """The descriptor body; raises if a given checksum is malformed or does not match."""
    if text.count("#") > 1:
        raise InvalidDescriptor("the descriptor has more than one '#'")
    body, sep, given = text.partition("#")
    if not sep:
        return body
    if len(given) != 8:
        raise InvalidDescriptor(f"expected an 8-character checksum, got {len(given)} characters")
    expected = descriptor_checksum(body)
    if given != expected:
        raise InvalidDescriptor(
            f"descriptor checksum {given!r} does not match the computed {expected!r}"
        )
    return body


# --- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExtendedKey:
    """A public BIP32 node and the non-hardened steps to the parent of the wildcard."""

    origin: str  # normalised "[fingerprint/path]" or ""
    xpub: str  # normalised (xpub/tpub version)
    steps: tuple[int, ...]
    node: _PubNode  # the node ``steps`` lead to; child i of it is the key of address i
    # BIP174 key origin of the xpub: the origin's fingerprint and path, or (without an
    # origin) the xpub's own fingerprint and an empty path, as Bitcoin Core does.
    root_fingerprint: bytes
    root_path: tuple[int, ...]

    def text(self) -> str:
        path = "".join(f"/{s}" for s in self.steps)
        return f"{self.origin}{self.xpub}{path}/*"

    def pubkey(self, index: int) -> bytes:
        key, _ = _ckd_pub(self.node, index)
        return bytes(key.format(compressed=True))

    def origin_of(self, index: int) -> KeyOrigin:
        """The key of address ``index`` with its BIP32 origin, for a PSBT."""
        return KeyOrigin(
            self.pubkey(index), self.root_fingerprint, (*self.root_path, *self.steps, index)
        )


@dataclass(frozen=True)
class KeyOrigin:
    """A public key and where it comes from: what a hardware wallet needs to sign for it."""

    pubkey: bytes  # compressed
    fingerprint: bytes  # 4 bytes: the master (or the xpub's own) key fingerprint
    path: tuple[int, ...]  # BIP32 steps from that key, hardened ones with the HARDENED bit


def _parse_origin(text: str) -> tuple[str, str]:
    """Split ``[fp/path]rest`` into a normalised origin and the rest."""
    if not text.startswith("["):
        if "]" in text:
            raise InvalidDescriptor("a key has a ']' without a matching '['")
        return "", text
    end = text.find("]")
    if end < 0:
        raise InvalidDescriptor("a key origin is missing its ']'")
    inside, rest = text[1:end], text[end + 1 :]
    if "[" in rest or "]" in rest:
        raise InvalidDescriptor("a key has more than one origin")
    fingerprint, *path = inside.split("/")
    if not _FINGERPRINT_RE.fullmatch(fingerprint):
        raise InvalidDescriptor("a key origin fingerprint is not 8 hex characters")
    steps = []
    for step in path:
        match = _STEP_RE.fullmatch(step)
        if match is None or int(match.group(1)) >= HARDENED:
            raise InvalidDescriptor("a key origin path step is not a valid BIP32 index")
        steps.append(match.group(1) + ("h" if match.group(2) else ""))
    return "[" + "/".join([fingerprint.lower(), *steps]) + "]", rest


def _decode_xpub(text: str, network: Network) -> ExtendedPublicKey:
    """A descriptor key: an xpub/tpub of ``network`` (descriptors have no zpub/vpub form)."""
    try:
        return parse_xpub(text, network, slip132=False)
    except InvalidXpub as exc:
        raise InvalidDescriptor(f"a key in the descriptor: {exc.message}") from None


def _parse_key(text: str, network: Network) -> _ExtendedKey:
    origin, rest = _parse_origin(text.strip())
    encoded, *path = rest.split("/")
    if not path or path[-1] != "*":
        raise InvalidDescriptor("each key must end in a non-hardened wildcard '/*'")
    steps: list[int] = []
    for step in path[:-1]:
        if not step.isdigit() or int(step) >= HARDENED:
            raise InvalidDescriptor(
                "a key's derivation after the xpub must be non-hardened indexes (watch-only)"
            )
        steps.append(int(step))
    key = _decode_xpub(encoded, network)
    node = _PubNode(key.point, key.public_key, key.chain_code)
    for index in steps:
        child, code = _ckd_pub(node, index)
        node = _PubNode(child, bytes(child.format(compressed=True)), code)
    root_fingerprint, root_path = _origin_parts(origin, key.public_key)
    return _ExtendedKey(origin, key.xpub, tuple(steps), node, root_fingerprint, root_path)


def _origin_parts(origin: str, xpub_key: bytes) -> tuple[bytes, tuple[int, ...]]:
    if not origin:
        return hash160(xpub_key)[:4], ()
    fingerprint, *steps = origin[1:-1].split("/")
    path = tuple(int(s[:-1]) | HARDENED if s.endswith("h") else int(s) for s in steps)
    return bytes.fromhex(fingerprint), path


# --- destinations -------------------------------------------------------------------------


def _push_small_int(n: int) -> bytes:
    # OP_1..OP_16 for 1..16; Core's CScript << n pushes 17..20 as a one-byte number.
    return bytes([0x50 + n]) if 1 <= n <= 16 else bytes([1, n])


class ColdDestination:
    """A parsed, normalised watch-only destination; derives the script of cold address i."""

    __slots__ = ("_keys", "_threshold", "descriptor", "kind", "network")

    def __init__(
        self, kind: ColdKind, network: Network, threshold: int, keys: tuple[_ExtendedKey, ...]
    ) -> None:
        self.kind = kind
        self.network = network
        self._threshold = threshold
        self._keys = keys
        if kind is ColdKind.SINGLE_SIG:
            body = f"wpkh({keys[0].text()})"
        else:
            inner = ",".join(k.text() for k in keys)
            body = f"wsh(sortedmulti({threshold},{inner}))"
        self.descriptor = f"{body}#{descriptor_checksum(body)}"

    @property
    def fingerprint(self) -> str:
        """A short hash of the normalised descriptor, for staff to compare out of band."""
        return hashlib.sha256(self.descriptor.encode()).hexdigest()[:FINGERPRINT_HEX_CHARS]

    @property
    def threshold(self) -> int:
        return self._threshold

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def witness_script(self, index: int) -> bytes:
        """The multisig script of address ``index`` (BIP67: keys sorted by their bytes)."""
        if self.kind is not ColdKind.MULTISIG:
            raise ValueError("a single-sig destination has no witness script")
        keys = sorted(k.pubkey(_check_index(index)) for k in self._keys)
        pushes = b"".join(bytes([33]) + key for key in keys)
        return (
            _push_small_int(self._threshold)
            + pushes
            + _push_small_int(len(keys))
            + b"\xae"  # OP_CHECKMULTISIG
        )

    def key_origins(self, index: int) -> tuple[KeyOrigin, ...]:
        """Every key of address ``index`` with its BIP32 origin, in descriptor order."""
        _check_index(index)
        return tuple(k.origin_of(index) for k in self._keys)

    def script_pubkey(self, index: int) -> bytes:
        if self.kind is ColdKind.SINGLE_SIG:
            return p2wpkh_script_for_pubkey(self._keys[0].pubkey(_check_index(index)))
        return p2wsh_script(self.witness_script(index))

    def address(self, index: int) -> str:
        return script_to_address(self.script_pubkey(index), self.network)

    def __repr__(self) -> str:
        return f"ColdDestination({self.kind.value}, fingerprint={self.fingerprint})"


def _check_index(index: int) -> int:
    return check_unhardened_index(index, what="cold address index")


def parse_cold_destination(text: str, network: Network) -> ColdDestination:
    """Parse an account xpub/zpub or a ``wpkh``/``wsh(sortedmulti)`` descriptor."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidDescriptor("the cold destination is empty")
    text = text.strip()
    if len(text) > MAX_DESCRIPTOR_LENGTH:
        raise InvalidDescriptor("the cold destination is too long")
    if "(" not in text:
        return _from_account_xpub(text, network)
    body = split_checksum(text)
    if body.startswith("wpkh(") and body.endswith(")"):
        key = _parse_key(body[5:-1], network)
        return ColdDestination(ColdKind.SINGLE_SIG, network, 1, (key,))
    if body.startswith("wsh(sortedmulti(") and body.endswith("))"):
        return _multisig(body[len("wsh(sortedmulti(") : -2], network)
    raise InvalidDescriptor(
        "unsupported cold destination: use an account xpub, wpkh(KEY/0/*) or "
        "wsh(sortedmulti(M,KEY1/0/*,KEY2/0/*,...))"
    )


def _from_account_xpub(text: str, network: Network) -> ColdDestination:
    try:
        account = AccountXpub.parse(text, network)
    except InvalidXpub as exc:
        raise InvalidDescriptor(f"cold destination: {exc.message}") from None
    # The same key as a descriptor: <account xpub>/0/* (BIP84 receive chain).
    return parse_cold_destination(f"wpkh({account.xpub}/0/*)", network)


def _multisig(args: str, network: Network) -> ColdDestination:
    threshold_text, *key_texts = args.split(",")
    if not threshold_text.isdigit():
        raise InvalidDescriptor("the multisig threshold is not a number")
    threshold = int(threshold_text)
    if not key_texts or len(key_texts) > MAX_MULTISIG_KEYS:
        raise InvalidDescriptor(f"a multisig needs between 1 and {MAX_MULTISIG_KEYS} keys")
    if not 1 <= threshold <= len(key_texts):
        raise InvalidDescriptor(
            f"the multisig threshold must be between 1 and the number of keys ({len(key_texts)})"
        )
    keys = tuple(_parse_key(k, network) for k in key_texts)
    if len({k.pubkey(0) for k in keys}) != len(keys):
        raise InvalidDescriptor("the multisig lists the same key twice")
    return ColdDestination(ColdKind.MULTISIG, network, threshold, keys)
