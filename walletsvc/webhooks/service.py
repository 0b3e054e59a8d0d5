"""Webhook subscriptions and their delivery log: register, list, remove, read, replay.

An API token (scope ``webhooks``) manages its own webhooks; staff operators and auditors see
every webhook's deliveries, and operators may replay them. The signing secret is returned
once, at creation, and kept only sealed under the KEK.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from walletsvc.db.database import Database
from walletsvc.db.models import utcnow
from walletsvc.db.models_webhooks import Webhook, WebhookDelivery
from walletsvc.db.outbox import EVENT_TYPES
from walletsvc.domain.errors import InvalidInput, NotFound
from walletsvc.keys.sealing import WebhookSecretSealer

SECRET_PREFIX = "whsec_"  # noqa: S105  (a public prefix, not a secret)
MAX_WEBHOOKS_PER_TOKEN = 20
MAX_URL_LENGTH = 2000


@dataclass(frozen=True)
class Owner:
    """Who is asking: a token (sees only its own webhooks) or staff (``token_id`` None)."""

    actor: str
    token_id: str | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_plain_http: bool) -> str:
    """An absolute http(s) URL without credentials; plain http only to loopback unless the
    operator allowed it (the body is signed, not encrypted)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise InvalidInput("url is not a valid URL", field="url") from None
    if len(url) > MAX_URL_LENGTH or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(
            f"url must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters",
            field="url",
        )
    if parsed.userinfo:
        raise InvalidInput("url must not carry credentials", field="url")
    if parsed.scheme == "http" and not (allow_plain_http or _is_loopback(parsed.host)):
        raise InvalidInput(
            "url must use https (plain http only to loopback, or with "
            "WALLETSVC_WEBHOOK_ALLOW_PLAIN_HTTP=true)",
            field="url",
        )
    return url


def check_event_types(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - EVENT_TYPES)
    if unknown:
        raise InvalidInput(
            f"unknown event types {unknown}; choose from {sorted(EVENT_TYPES)}",
            field="event_types",
        )
    return sorted(set(event_types))


def webhook_view(row: Webhook) -> dict[str, Any]:
    return {
        "id": row.id,
        "token_id": row.token_id,
        "url": row.url,
        "event_types": list(row.event_types),
        "active": row.active,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


def delivery_view(row: WebhookDelivery, event_type: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event_id": row.event_id,
        "event_type": event_type,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at),
        "last_attempt_at": _iso(row.last_attempt_at),
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "replay_of": row.replay_of,
        "created_at": row.created_at.isoformat(),
        "delivered_at": _iso(row.delivered_at),
    }


def create_webhook(
    db: Database,
    sealer: WebhookSecretSealer,
    *,
    token_id: str,
    url: str,
    event_types: list[str],
    actor: str,
    allow_plain_http: bool,
) -> dict[str, Any]:
    """Register ``url`` for ``token_id``'s events; the answer holds the secret, once."""
    url = check_url(url, allow_plain_http=allow_plain_http)
    wanted = check_event_types(event_types)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with db.write() as uow:
        token = uow.tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            raise NotFound("no such API token", field="token")
        if len(uow.webhooks.listing(token_id=token_id)) >= MAX_WEBHOOKS_PER_TOKEN:
            raise InvalidInput(
                f"a token may have at most {MAX_WEBHOOKS_PER_TOKEN} webhooks", field="url"
            )
        row = Webhook(
            token_id=token_id,
            url=url,
            event_types=wanted,
            secret_sealed="",
            active=True,
            created_by=actor,
        )
        uow.webhooks.add(row, flush=True)
        row.secret_sealed = sealer.seal(row.id, secret)
        uow.audit(
            actor,
            "webhook.created",
            "webhook",
            row.id,
            {"url": url, "event_types": wanted, "token_id": token_id},
        )
        return {**webhook_view(row), "secret": secret}


def _visible(row: Webhook | None, owner: Owner) -> Webhook:
    # Another token's webhook answers like a missing one: ids are not an oracle.
    if row is None or row.removed_at is not None:
        raise NotFound("no such webhook", field="webhook_id")
    if owner.token_id is not None and row.token_id != owner.token_id:
        raise NotFound("no such webhook", field="webhook_id")
    return row


def list_webhooks(db: Database, owner: Owner) -> list[dict[str, Any]]:
    with db.read() as uow:
        return [webhook_view(row) for row in uow.webhooks.listing(token_id=owner.token_id)]


def remove_webhook(db: Database, webhook_id: str, owner: Owner) -> None:
    """Stop deliveries to it (pending ones too); its delivery log stays readable by staff."""
    with db.write() as uow:
        row = _visible(uow.webhooks.get(webhook_id), owner)
        row.active = False
        row.removed_at = utcnow()
        uow.audit(owner.actor, "webhook.removed", "webhook", row.id, {"url": row.url})


def list_deliveries(
    db: Database, webhook_id: str, owner: Owner, *, limit: int
) -> list[dict[str, Any]]:
    """The webhook's deliveries, newest first."""
    with db.read() as uow:
        webhook = uow.webhooks.get(webhook_id)
        if webhook is None or (owner.token_id is not None and webhook.token_id != owner.token_id):
            raise NotFound("no such webhook", field="webhook_id")
        views = []
        for row in uow.webhook_deliveries.of_webhook(webhook_id, limit=limit):
            event = uow.outbox.by_event_id(row.event_id)
            views.append(delivery_view(row, event.event_type if event else "unknown"))
        return views


def replay_delivery(
    db: Database, webhook_id: str, delivery_id: str, owner: Owner, *, now: datetime | None = None
) -> dict[str, Any]:
    """Send the delivery's event again, as a new delivery due at once (the log keeps both)."""
    with db.write() as uow:
        webhook = _visible(uow.webhooks.get(webhook_id), owner)
        original = uow.webhook_deliveries.get(delivery_id)
        if original is None or original.webhook_id != webhook.id:
            raise NotFound("no such delivery", field="delivery_id")
        replay = WebhookDelivery(
            webhook_id=webhook.id,
            event_id=original.event_id,
            status="pending",
            attempts=0,
            next_attempt_at=now or utcnow(),
            replay_of=original.id,
        )
        uow.webhook_deliveries.add(replay, flush=True)
        event = uow.outbox.by_event_id(original.event_id)
        uow.audit(
            owner.actor,
            "webhook.delivery_replayed",
            "webhook_delivery",
            replay.id,
            {"webhook_id": webhook.id, "replay_of": original.id},
        )
        return delivery_view(replay, event.event_type if event else "unknown")
