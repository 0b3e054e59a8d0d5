"""Webhooks: a token registers its own URLs; operators read delivery logs and replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from walletsvc.api.deps import ALL_ROLES, Principal, RuntimeDep, require_access
from walletsvc.api.errors import error_responses
from walletsvc.api.schemas.webhooks import (
    DeliveryList,
    DeliveryView,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
)
from walletsvc.domain.errors import Forbidden
from walletsvc.governance.tokens import TokenPrincipal
from walletsvc.webhooks import service
from walletsvc.webhooks.service import Owner

router = APIRouter(tags=["webhooks"], responses=error_responses(401, 403))
# A token with the `webhooks` scope manages its own; staff of every role may read every
# webhook's log, operators may also remove webhooks and replay deliveries.
Reader = Annotated[Principal, Depends(require_access(scopes=("webhooks",), roles=ALL_ROLES))]
Manager = Annotated[Principal, Depends(require_access(scopes=("webhooks",), roles=("operator",)))]


def _owner(principal: Principal) -> Owner:
    token_id = principal.token_id if isinstance(principal, TokenPrincipal) else None
    return Owner(actor=principal.actor, token_id=token_id)


@router.post("/webhooks", status_code=201, responses=error_responses(404, 422))
def create_webhook(body: WebhookCreate, runtime: RuntimeDep, principal: Manager) -> WebhookCreated:
    if not isinstance(principal, TokenPrincipal):
        raise Forbidden("a webhook belongs to an API token: register it with that token")
    created = service.create_webhook(
        runtime.db,
        runtime.webhook_secrets,
        token_id=principal.token_id,
        url=body.url,
        event_types=list(body.event_types),
        actor=principal.actor,
        allow_plain_http=runtime.settings.webhook_allow_plain_http,
    )
    return WebhookCreated.model_validate(created)


@router.get("/webhooks")
def list_webhooks(runtime: RuntimeDep, principal: Reader) -> WebhookList:
    views = service.list_webhooks(runtime.db, _owner(principal))
    return WebhookList.model_validate({"webhooks": views})


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404, 422),
)
def remove_webhook(webhook_id: str, runtime: RuntimeDep, principal: Manager) -> Response:
    service.remove_webhook(runtime.db, webhook_id, _owner(principal))
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", responses=error_responses(404, 422))
def list_deliveries(
    webhook_id: str,
    runtime: RuntimeDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    views = service.list_deliveries(runtime.db, webhook_id, _owner(principal), limit=limit)
    return DeliveryList.model_validate({"deliveries": views})


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    responses=error_responses(404, 422),
)
def replay_delivery(
    webhook_id: str, delivery_id: str, runtime: RuntimeDep, principal: Manager
) -> DeliveryView:
    view = service.replay_delivery(runtime.db, webhook_id, delivery_id, _owner(principal))
    return DeliveryView.model_validate(view)
