"""Bodies of the webhook endpoints: subscriptions and their delivery log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from walletsvc.api.schemas import StrictModel, Text
from walletsvc.api.schemas.base import ResponseModel, Timestamp


class WebhookCreate(StrictModel):
    url: Text = Field(
        description="https URL (plain http only to loopback unless the operator allows it).",
        examples=["https://pool.example/walletsvc-events"],
    )
    event_types: list[Text] = Field(
        default_factory=list,
        description="Event types to receive; empty (the default) means every type.",
        examples=[["withdrawal.status_changed", "freeze.applied"]],
    )


class WebhookView(ResponseModel):
    id: str
    token_id: str = Field(description="The API token that owns it.")
    url: str
    event_types: list[str]
    active: bool
    created_by: str
    created_at: Timestamp


class WebhookCreated(WebhookView):
    secret: str = Field(
        description="The signing secret (`whsec_…`), shown once: keep it to verify "
        "`X-Walletsvc-Signature`."
    )


class WebhookList(ResponseModel):
    webhooks: list[WebhookView]


class DeliveryView(ResponseModel):
    id: str
    webhook_id: str
    event_id: str = Field(description="The event's id: the same on every attempt and replay.")
    event_type: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    next_attempt_at: Timestamp | None
    last_attempt_at: Timestamp | None
    last_status_code: int | None = Field(description="The receiver's last HTTP status.")
    last_error: str | None
    replay_of: str | None = Field(description="The delivery this one replays, if any.")
    created_at: Timestamp
    delivered_at: Timestamp | None


class DeliveryList(ResponseModel):
    deliveries: list[DeliveryView]
