"""Delivers outbox events to webhooks: at least once, signed, retried with backoff.

Each pass (``run_once``) does three short steps, none of which holds the write lock while a
receiver is being talked to, so a slow or dead receiver never delays a payout:

1. fan out: every new outbox event gets one delivery per webhook that wants it;
2. claim: the due deliveries have their next attempt pushed a lease ahead, in one write
   transaction, so a second dispatcher (or this one after a crash) does not send them too
   until the lease runs out;
3. send each over HTTP (httpx) and record the answer: 2xx is delivered; anything else is
   retried after a deterministic exponential delay (``retry_delay``) until the attempts are
   used up, then the delivery is ``failed`` (an operator can replay it).

The clock is injected so that tests drive the retry schedule without sleeping.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from walletsvc.db.database import Database
from walletsvc.db.models import utcnow
from walletsvc.db.models_webhooks import OutboxEvent, WebhookDelivery
from walletsvc.keys.errors import SealedSecretError
from walletsvc.keys.sealing import WebhookSecretSealer
from walletsvc.metrics import WEBHOOK_DELIVERIES
from walletsvc.webhooks.signatures import HEADER, signature_header

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class RetrySchedule:
    """Attempt n (1-based) failing waits ``min(base * 2**(n-1), cap)`` seconds before n+1."""

    max_attempts: int = 8
    base_s: float = 10.0
    cap_s: float = 3600.0

    def delay_after(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.base_s * 2 ** (attempt - 1), self.cap_s))


@dataclass(frozen=True)
class Outgoing:
    """One claimed delivery, read out of the database before any HTTP happens."""

    delivery_id: str
    webhook_id: str
    url: str
    secret: str
    event_id: str
    event_type: str
    body: bytes
    attempt: int

    def __repr__(self) -> str:  # never show the secret
        return f"Outgoing(delivery={self.delivery_id}, url={self.url}, attempt={self.attempt})"


@dataclass
class PassReport:
    fanned_out: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def event_body(event: OutboxEvent) -> bytes:
    """The JSON body of an event: the same bytes on every attempt and every replay."""
    envelope: dict[str, Any] = {
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at.isoformat(),
        "data": event.payload,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


class WebhookDispatcher:
    def __init__(
        self,
        db: Database,
        sealer: WebhookSecretSealer,
        *,
        schedule: RetrySchedule | None = None,
        timeout_s: float = 5.0,
        clock: Clock = utcnow,
        client: httpx.Client | None = None,
        batch_size: int = 100,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.schedule = schedule or RetrySchedule()
        self.timeout_s = timeout_s
        self.clock = clock
        # Redirects are not followed: a receiver that moved registers its new URL.
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.batch_size = batch_size

    def close(self) -> None:
        self.client.close()

    def run_once(self) -> PassReport:
        report = PassReport(fanned_out=self.fan_out())
        for outgoing in self.claim_due():
            self._record(outgoing, self._send(outgoing), report)
        return report

    # --- 1. fan out -------------------------------------------------------------------------

    def fan_out(self) -> int:
        now = self.clock()
        created = 0
        with self.db.write() as uow:
            events = uow.outbox.not_fanned_out(self.batch_size)
            if not events:
                return 0
            webhooks = uow.webhooks.receiving()
            for event in events:
                for webhook in webhooks:
                    if webhook.event_types and event.event_type not in webhook.event_types:
                        continue
                    uow.webhook_deliveries.add(
                        WebhookDelivery(
                            webhook_id=webhook.id,
                            event_id=event.id,
                            status="pending",
                            attempts=0,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
                    created += 1
                event.fanned_out = True
        return created

    # --- 2. claim ---------------------------------------------------------------------------

    def claim_due(self) -> list[Outgoing]:
        now = self.clock()
        # Long enough for one attempt to time out and be recorded.
        lease = timedelta(seconds=self.timeout_s * 2 + 30)
        claimed: list[Outgoing] = []
        with self.db.write() as uow:
            for delivery in uow.webhook_deliveries.due(now, self.batch_size):
                webhook = uow.webhooks.get(delivery.webhook_id)
                event = uow.outbox.by_event_id(delivery.event_id)
                if webhook is None or event is None or webhook.removed_at is not None:
                    delivery.status, delivery.next_attempt_at = "cancelled", None
                    delivery.last_error = "webhook removed"
                    continue
                try:
                    secret = self.sealer.unseal(webhook.id, webhook.secret_sealed)
                except SealedSecretError:
                    delivery.status, delivery.next_attempt_at = "failed", None
                    delivery.last_error = "the webhook secret fails its integrity check"
                    log.error("webhook %s: its sealed secret does not open", webhook.id)
                    continue
                delivery.attempts += 1
                delivery.next_attempt_at = now + lease
                claimed.append(
                    Outgoing(
                        delivery_id=delivery.id,
                        webhook_id=webhook.id,
                        url=webhook.url,
                        secret=secret,
                        event_id=event.id,
                        event_type=event.event_type,
                        body=event_body(event),
                        attempt=delivery.attempts,
                    )
                )
        return claimed

    # --- 3. send and record -----------------------------------------------------------------

    def _send(self, outgoing: Outgoing) -> tuple[int | None, str | None]:
        """(HTTP status, None) or (None, the error's type name: no text that could leak)."""
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            HEADER: signature_header(outgoing.secret, timestamp, outgoing.body),
            "X-Walletsvc-Event-Id": outgoing.event_id,
            "X-Walletsvc-Event-Type": outgoing.event_type,
            "X-Walletsvc-Delivery-Id": outgoing.delivery_id,
            "User-Agent": "walletsvc-webhooks/1",
        }
        try:
            response = self.client.post(outgoing.url, content=outgoing.body, headers=headers)
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, None

    def _record(
        self, outgoing: Outgoing, answer: tuple[int | None, str | None], report: PassReport
    ) -> None:
        status_code, error = answer
        now = self.clock()
        with self.db.write() as uow:
            delivery = uow.webhook_deliveries.get(outgoing.delivery_id)
            if delivery is None:
                return
            delivery.last_attempt_at = now
            delivery.last_status_code = status_code
            if status_code is not None and 200 <= status_code < 300:
                delivery.status, delivery.next_attempt_at = "delivered", None
                delivery.delivered_at, delivery.last_error = now, None
                report.delivered += 1
                outcome = "delivered"
            else:
                delivery.last_error = error or f"HTTP {status_code}"
                if delivery.attempts >= self.schedule.max_attempts:
                    delivery.status, delivery.next_attempt_at = "failed", None
                    report.failed += 1
                    outcome = "failed"
                    log.warning(
                        "webhook %s: delivery %s failed after %d attempts (%s)",
                        outgoing.webhook_id,
                        outgoing.delivery_id,
                        delivery.attempts,
                        delivery.last_error,
                    )
                else:
                    delivery.next_attempt_at = now + self.schedule.delay_after(delivery.attempts)
                    report.retrying += 1
                    outcome = "retrying"
        WEBHOOK_DELIVERIES.labels(outgoing.event_type, outcome).inc()
