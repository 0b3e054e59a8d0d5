"""The active policy and policy-change proposals (ratchet, quorum, time lock, veto)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import StrictStr

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access, require_staff
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas import Prose, StrictModel, Text
from walletsvc.api.schemas.governance import ActivePolicy, PolicyProposalList, PolicyProposalView
from walletsvc.governance import policy_changes
from walletsvc.governance.policies import policy_view
from walletsvc.governance.staff import StaffPrincipal

router = APIRouter(tags=["policy"], responses=error_responses(401, 403))
Reader = Annotated[Principal, Depends(require_access(scopes=("read",), roles=ALL_ROLES))]
Proposer = Annotated[StaffPrincipal, Depends(require_staff("approver", "operator"))]
Approver = Annotated[StaffPrincipal, Depends(require_staff("approver"))]


class ProposalCreate(StrictModel):
    # A policy document as a JSON object, or its YAML text. Not strict: it is validated by
    # the policy parser, which names the path of a bad field.
    document: dict[str, Any] | StrictStr


class VetoBody(StrictModel):
    totp: Text
    comment: Prose | None = None


@router.get("/policy", responses=error_responses(404, 422))
def show_policy(runtime: RuntimeDep, _: Reader, wallet: str | None = None) -> ActivePolicy:
    return ActivePolicy.model_validate(policy_view(runtime.db, runtime.tags, wallet))


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
    return PolicyProposalList.model_validate(
        policy_changes.proposals_index(runtime.db, status=status, limit=limit)
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
        runtime.signer,
        runtime.settings,
        proposal_id=proposal_id,
        staff=staff,
        totp=body.totp,
        comment=body.comment,
    )
    return _show(runtime, proposal_id)


def _show(runtime: RuntimeDep, proposal_id: str) -> PolicyProposalView:
    return PolicyProposalView.model_validate(policy_changes.show_proposal(runtime.db, proposal_id))
