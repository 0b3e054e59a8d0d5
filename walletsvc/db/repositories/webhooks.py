"""Webhooks, the event outbox and the delivery log (walletsvc.db.models_webhooks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from walletsvc.db.models import ApiToken
from walletsvc.db.models_webhooks import OutboxEvent, Webhook, WebhookDelivery
from walletsvc.db.repositories.base import Repository


class WebhookRepository(Repository[Webhook]):
    model = Webhook

    def listing(self, *, token_id: str | None) -> list[Webhook]:
        """Webhooks not removed, oldest first; only the token's own when ``token_id`` is set."""
        query = select(Webhook).where(Webhook.removed_at.is_(None))
        if token_id is not None:
            query = query.where(Webhook.token_id == token_id)
        return list(self.session.scalars(query.order_by(Webhook.created_at, Webhook.id)))

    def receiving(self) -> list[Webhook]:
        """Active webhooks whose token is still valid: the ones an event fans out to."""
        query = (
            select(Webhook)
            .join(ApiToken, ApiToken.id == Webhook.token_id)
            .where(
                Webhook.active.is_(True),
                Webhook.removed_at.is_(None),
                ApiToken.revoked_at.is_(None),
            )
        )
        return list(self.session.scalars(query.order_by(Webhook.created_at, Webhook.id)))


class OutboxEventRepository(Repository[OutboxEvent]):
    model = OutboxEvent

    def by_event_id(self, event_id: str) -> OutboxEvent | None:
        return self.session.scalar(select(OutboxEvent).where(OutboxEvent.id == event_id))

    def not_fanned_out(self, limit: int) -> list[OutboxEvent]:
        query = (
            select(OutboxEvent)
            .where(OutboxEvent.fanned_out.is_(False))
            .order_by(OutboxEvent.seq)
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def of_type(self, event_type: str) -> list[OutboxEvent]:
        query = select(OutboxEvent).where(OutboxEvent.event_type == event_type)
        return list(self.session.scalars(query.order_by(OutboxEvent.seq)))


class WebhookDeliveryRepository(Repository[WebhookDelivery]):
    model = WebhookDelivery

    def due(self, now: datetime, limit: int) -> list[WebhookDelivery]:
        """Pending deliveries whose next attempt is due: the longest waiting first, and events
        due together in the order they were committed."""
        query = (
            select(WebhookDelivery)
            .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at, OutboxEvent.seq, WebhookDelivery.id)
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def of_webhook(self, webhook_id: str, *, limit: int) -> Sequence[WebhookDelivery]:
        """The webhook's deliveries, newest first."""
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(limit)
        )
        return list(self.session.scalars(query))
