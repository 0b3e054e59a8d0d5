"""Governed changes reach the signer only with quorum evidence it verifies itself.

The op ``apply_governed {kind, content, payload?}`` carries the exact content staff approved
(the approval kind's ``content``, the same dict the service digests); the signer computes
``content_digest(content)`` itself and counts the approvals of that digest in its own ledger
(:mod:`walletsvc.signer.evidence`), with the quorum of *its own* policy copy for the wallet.
Nothing the request says about approvals is believed. What each kind needs:

* ``policy_change`` (payload: the document): the document must hash to the content's
  ``sha256``, and the content's base must be the signer's current copy for that wallet. The
  signer judges the direction itself with the service's ratchet
  (:func:`walletsvc.policy.ratchet.compare`): a tightening applies at once on the service's
  word (like a freeze: the worst it does is stop payouts); a loosening needs the
  ``policy_change`` quorum, reached at least the copy's ``policy_change_timelock`` ago by
  the signer's clock.
* ``allowlist_add``: the ``allowlist_add`` quorum; the entry's cooling-off starts when the
  signer learns the quorum (its clock). ``allowlist_remove`` only tightens: at once.
* ``cold_destination_change``: the ``cold_destination_change`` quorum; replaces the signer's
  cold copy (the local ``walletsvc signer set-cold`` stays the trust root at set-up).
* ``unfreeze``: the ``unfreeze`` quorum of every frozen wallet's policy; lifts the signer's
  freeze of the wallets named in the payload, each of which must be a wallet of the content's
  freezes, frozen in the signer before the first approval was given (a freeze made during
  the review was never seen by the approvers).
* ``key_rotation``: the ``key_rotation`` quorum, ``from_epoch`` the wallet's newest epoch;
  the signer then makes the next epoch (``new_epoch`` beyond epoch 1 needs this record).

The records (``governed_policy``, ``allowlist_add``, ``allowlist_remove``, ``governed_cold``,
``governed_unfreeze``, ``rotation``) are folded in :mod:`walletsvc.signer.state`. Each digest
applies once: a replay of evidence already used (an allowlist entry removed since,
a policy replaced since) changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from walletsvc.domain.canonical import content_digest
from walletsvc.domain.errors import DomainError
from walletsvc.domain.network import Network
from walletsvc.keys.descriptor import parse_cold_destination
from walletsvc.policy.document import (
    GovernedAction,
    PolicyDocument,
    canonical_dict,
    normalize_address,
    parse_policy,
    policy_hash,
)
from walletsvc.policy.ratchet import compare

from . import wire
from .errors import SignerError, refuse
from .state import (
    ALL_WALLETS,
    ALLOWLIST_ADD,
    ALLOWLIST_REMOVE,
    GOVERNED_COLD,
    GOVERNED_POLICY,
    GOVERNED_UNFREEZE,
    ROTATION,
    SignerState,
)


class CoreView(Protocol):
    """What a governed change needs of walletsvc.signer.core.SignerCore (no import cycle)."""

    state: SignerState

    @property
    def network(self) -> Network: ...

    def now(self) -> datetime: ...

    def record(self, type_: str, body: dict[str, Any]) -> None: ...

    def new_epoch(self, params: dict[str, Any]) -> dict[str, Any]: ...


KINDS = (
    "policy_change",
    "allowlist_add",
    "allowlist_remove",
    "cold_destination_change",
    "unfreeze",
    "key_rotation",
)


def apply_governed(core: CoreView, params: dict[str, Any]) -> dict[str, Any]:
    kind = params.get("kind")
    if kind not in KINDS:
        raise _invalid(f"kind must be one of {list(KINDS)}")
    content = params.get("content")
    if not isinstance(content, dict) or content.get("kind") != kind:
        raise _invalid("content must be an object whose kind is the change's kind")
    payload = params.get("payload")
    digest = content_digest(content)
    if digest in core.state.governed_digests:
        # Evidence is used once: a crash-retry gets its answer, a replay changes nothing.
        return _already(core, kind, content, digest)
    handler = _APPLY[kind]
    return handler(core, content, payload, digest)


# --- per kind -------------------------------------------------------------------------------


def _policy_change(
    core: CoreView, content: dict[str, Any], payload: object, digest: str
) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _invalid("payload must be the policy document")
    try:
        document = parse_policy(payload)
    except DomainError as exc:
        raise _invalid(f"the policy document is invalid: {exc.message}") from None
    new_hash = policy_hash(document)
    if content.get("sha256") != new_hash or content.get("document_sha256") != new_hash:
        raise _refuse("the policy document does not hash to the approved content's sha256")
    wallet = document.wallet
    current = core.state.policy_for(wallet)
    if current is None:
        raise _refuse("the signer holds no policy; install one at signer init")
    current_hash = policy_hash(current)
    if content.get("base_sha256") != current_hash:
        raise _refuse(
            f"the change was assessed against policy {content.get('base_sha256')}, but the "
            f"signer's copy for {wallet or 'the default'} is {current_hash}"
        )
    assessment = compare(current, document)  # the signer's own judgement, not the request's
    if assessment.direction == "unchanged":
        return {"applied": False, "direction": "unchanged", "policy_hash": new_hash}
    if assessment.loosens:
        reached = _quorum(core, current, "policy_change", "policy_change", digest)
        lock = current.policy_change_timelock_delta
        now = core.now()
        if now - reached < lock:
            raise _refuse(
                f"a loosening waits the time lock: quorum reached at {reached.isoformat()}, "
                f"applies from {(reached + lock).isoformat()} (signer clock)"
            )
    body = {
        "wallet": wallet,
        "document": canonical_dict(document),
        "direction": assessment.direction,
        "digest": digest,
    }
    core.record(GOVERNED_POLICY, body)
    return {"applied": True, "direction": assessment.direction, "policy_hash": new_hash}


def _allowlist_add(
    core: CoreView, content: dict[str, Any], payload: object, digest: str
) -> dict[str, Any]:
    wallet, address = _wallet(content), _address(content)
    policy = _policy(core, wallet)
    _quorum(core, policy, "allowlist_add", "allowlist_add", digest)
    core.record(ALLOWLIST_ADD, {"wallet": wallet, "address": address, "digest": digest})
    since = core.state.allowlist[(wallet, address)].active_since
    return {"applied": True, "active_since": since.isoformat()}


def _allowlist_remove(
    core: CoreView, content: dict[str, Any], payload: object, digest: str
) -> dict[str, Any]:
    # Tightening: at once, on the service's word.
    wallet, address = _wallet(content), _address(content)
    core.record(ALLOWLIST_REMOVE, {"wallet": wallet, "address": address, "digest": digest})
    return {"applied": True}


def _cold_change(
    core: CoreView, content: dict[str, Any], payload: object, digest: str
) -> dict[str, Any]:
    wallet = _wallet(content)
    text = content.get("descriptor")
    if not isinstance(text, str):
        raise _invalid("content.descriptor must be the cold destination")
    try:
        parsed = parse_cold_destination(text, core.network)
    except (DomainError, ValueError) as exc:
        raise _invalid(f"content.descriptor is not a cold destination: {exc}") from None
    policy = _policy(core, wallet)
    _quorum(core, policy, "cold_destination_change", "cold_destination_change", digest)
    body = {"wallet": wallet, "destination": parsed.descriptor, "digest": digest}
    core.record(GOVERNED_COLD, body)
    return {"applied": True, "descriptor": parsed.descriptor}


def _unfreeze(
    core: CoreView, content: dict[str, Any], payload: object, digest: str
) -> dict[str, Any]:
    freezes = content.get("freezes")
    if not isinstance(freezes, list) or not freezes:
        raise _invalid("content.freezes must list the freezes lifted")
    named: set[str] = set()
    for freeze in freezes:
        if not isinstance(freeze, dict) or "wallet" not in freeze:
            raise _invalid("each freeze must name its wallet (null: every wallet)")
        named.add(_key(freeze["wallet"]))
    if not isinstance(payload, dict) or not isinstance(payload.get("wallets"), list):
        raise _invalid("payload.wallets must list the wallets to lift (null: every wallet)")
    lift = {_key(w) for w in payload["wallets"]}
    if not lift <= named:
        raise _refuse(f"the approved freezes do not cover {sorted(lift - named)}")
    for wallet in sorted(named):  # the quorum of every frozen wallet's policy
        policy = _policy(core, None if wallet == ALL_WALLETS else wallet)
        _quorum(core, policy, "unfreeze", "unfreeze", digest)
    first = min(
        (
            d.at
            for d in core.state.evidence.decisions.get(digest, [])
            if d.kind == "unfreeze" and d.decision == "approve"
        ),
        default=None,
    )
    for wallet in sorted(lift):
        frozen_at = core.state.frozen_at.get(wallet)
        if frozen_at is not None and first is not None and frozen_at > first:
            raise _refuse(
                f"wallet {wallet!r} was frozen again in the signer after the approvals began; "
                "its newest freeze needs its own unfreeze"
            )
    core.record(GOVERNED_UNFREEZE, {"wallets": sorted(lift), "digest": digest})
    return {"applied": True, "frozen": dict(core.state.frozen)}


def _key_rotation(
    core: CoreView, content: dict[str, Any], payload: object, digest: str
) -> dict[str, Any]:
    wallet = _wallet(content)
    from_epoch = content.get("from_epoch")
    epochs = core.state.epochs_of(wallet)
    if not epochs or from_epoch != epochs[-1]:
        raise _refuse(f"wallet {wallet!r}: the rotation is from epoch {from_epoch}, not newest")
    policy = _policy(core, wallet)
    _quorum(core, policy, "key_rotation", "key_rotation", digest)
    epoch = from_epoch + 1
    core.record(ROTATION, {"wallet": wallet, "epoch": epoch, "digest": digest})
    return core.new_epoch({"wallet": wallet, "epoch": epoch})


def _already(core: CoreView, kind: str, content: dict[str, Any], digest: str) -> dict[str, Any]:
    if kind == "key_rotation":
        wallet = _wallet(content)
        epoch = core.state.rotations.get(digest)
        if epoch is not None:
            return core.new_epoch({"wallet": wallet, "epoch": epoch})
    return {"applied": False, "already": True}


_APPLY = {
    "policy_change": _policy_change,
    "allowlist_add": _allowlist_add,
    "allowlist_remove": _allowlist_remove,
    "cold_destination_change": _cold_change,
    "unfreeze": _unfreeze,
    "key_rotation": _key_rotation,
}


# --- helpers --------------------------------------------------------------------------------


def _quorum(
    core: CoreView, policy: PolicyDocument, action: GovernedAction, kind: str, digest: str
) -> datetime:
    quorum = policy.quorum_for(action)
    reached = core.state.evidence.quorum_reached_at(
        kind=kind, digest=digest, group=quorum.group, m=quorum.m
    )
    if reached is None:
        raise _refuse(
            f"no quorum in the signer's ledger for this {kind}: it needs {quorum.m} of "
            f"{quorum.group!r} approving exactly this content"
        )
    return reached


def _policy(core: CoreView, wallet: str | None) -> PolicyDocument:
    policy = core.state.policy_for(wallet)
    if policy is None:
        raise _refuse("the signer holds no policy; install one at signer init")
    return policy


def _wallet(content: dict[str, Any]) -> str:
    wallet = content.get("wallet")
    if not isinstance(wallet, str) or not wallet or len(wallet) > 64:
        raise _invalid("content.wallet must be a wallet name")
    return wallet


def _key(wallet: object) -> str:
    if wallet is None:
        return ALL_WALLETS
    if not isinstance(wallet, str) or not wallet or len(wallet) > 64:
        raise _invalid("a wallet must be a wallet name or null")
    return wallet


def _address(content: dict[str, Any]) -> str:
    address = content.get("address")
    if not isinstance(address, str) or not address or len(address) > 200:
        raise _invalid("content.address must be an address")
    return normalize_address(address)


def _invalid(message: str) -> SignerError:
    return SignerError(wire.INVALID_REQUEST, message)


def _refuse(message: str) -> SignerError:
    return refuse(message)
