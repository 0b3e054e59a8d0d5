"""The active policy and policy-change proposals (ratchet, quorum, time lock, veto)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import StrictStr

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import StrictModel
from walletsvc.api.schemas.governance import ActivePolicy, PolicyProposalList, PolicyProposalView
from walletsvc.db.models import Wallet
from walletsvc.governance import policy_changes
from walletsvc.governance.policies import active_policy
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.policy.document import canonical_dict
from walletsvc.wallets.service import get_wallet

router = APIRouter(tags=["policy"], responses=error_responses(401, 403))
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]
Proposer = Annotated[StaffPrincipal, Depends(require_staff("approver", "operator"))]
Approver = Annotated[StaffPrincipal, Depends(require_staff("approver"))]


class ProposalCreate(StrictModel):
    # A policy document as a JSON object, or its YAML text. Not strict: it is validated by
    # the policy parser, which names the path of a bad field.
    document: dict[str, Any] | StrictStr


class VetoBody(StrictModel):
    totp: StrictStr
    comment: StrictStr | None = None


@router.get("/policy", responses=error_responses(404, 422))
def show_policy(runtime: RuntimeDep, _: Reader, wallet: str | None = None) -> ActivePolicy:
    with runtime.db.read() as session:
        w: Wallet | None = get_wallet(session, wallet) if wallet is not None else None
        active = active_policy(session, runtime.tags, w)
        return ActivePolicy.model_validate(
            {
                "version": active.version,
                "sha256": active.sha256,
                "wallet_scoped": active.wallet_scoped,
                "rules": canonical_dict(active.document),
            }
        )


@router.post("/policy/proposals", status_code=201, responses=error_responses(404, 409, 422))
def propose(body: ProposalCreate, runtime: RuntimeDep, staff: Proposer) -> PolicyProposalView:
    proposal_id = policy_changes.propose(
        runtime.db, runtime.tags, document=body.document, proposer=staff
    )
    return _show(runtime, proposal_id)


@router.get("/policy/proposals", responses=error_responses(422))
def index_proposals(
    runtime: RuntimeDep,
    _: Reader,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PolicyProposalList:
    with runtime.db.read() as session:
        rows = policy_changes.list_proposals(session, status=status, limit=limit)
        return PolicyProposalList.model_validate(
            {"proposals": [policy_changes.proposal_view(session, p) for p in rows]}
        )


@router.get("/policy/proposals/{proposal_id}", responses=error_responses(404, 422))
def show_proposal(proposal_id: str, runtime: RuntimeDep, _: Reader) -> PolicyProposalView:
    return _show(runtime, proposal_id)


@router.post("/policy/proposals/{proposal_id}/veto", responses=error_responses(404, 409, 422, 429))
def veto(
    proposal_id: str, body: VetoBody, runtime: RuntimeDep, staff: Approver
) -> PolicyProposalView:
    policy_changes.veto(
        runtime.db,
        runtime.tags,
        runtime.totp_secrets,
        runtime.settings,
        proposal_id=proposal_id,
        staff=staff,
        totp=body.totp,
        comment=body.comment,
    )
    return _show(runtime, proposal_id)


def _show(runtime: RuntimeDep, proposal_id: str) -> PolicyProposalView:
    with runtime.db.read() as session:
        return PolicyProposalView.model_validate(
            policy_changes.proposal_view(session, policy_changes.get_proposal(session, proposal_id))
        )
