"""Incident response: freezes, requests to lift them, key rotations and risk events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select

from walletsvc.db.models_incident import Freeze, ShieldIncident, ShieldRound
from walletsvc.db.models_risk import KeyRotation, RiskEvent, UnfreezeRequest
from walletsvc.db.repositories.base import Repository


class FreezeRepository(Repository[Freeze]):
    model = Freeze

    def active(self, wallet_id: str | None = None) -> list[Freeze]:
        """Unlifted freezes that apply to ``wallet_id`` (global ones always apply), oldest first."""
        query = select(Freeze).where(Freeze.lifted_at.is_(None))
        if wallet_id is not None:
            query = query.where(or_(Freeze.wallet_id.is_(None), Freeze.wallet_id == wallet_id))
        return list(self.session.scalars(query.order_by(Freeze.created_at)))


class UnfreezeRequestRepository(Repository[UnfreezeRequest]):
    model = UnfreezeRequest

    def newest(self, *, limit: int) -> list[UnfreezeRequest]:
        return list(
            self.session.scalars(
                select(UnfreezeRequest).order_by(UnfreezeRequest.created_at.desc()).limit(limit)
            )
        )


class KeyRotationRepository(Repository[KeyRotation]):
    model = KeyRotation

    def with_status(self, wallet_id: str, status: str) -> KeyRotation | None:
        return self.session.scalar(
            select(KeyRotation).where(
                KeyRotation.wallet_id == wallet_id, KeyRotation.status == status
            )
        )

    def newest_of_wallet(self, wallet_id: str, *, limit: int | None = None) -> list[KeyRotation]:
        query = (
            select(KeyRotation)
            .where(KeyRotation.wallet_id == wallet_id)
            .order_by(KeyRotation.created_at.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        return list(self.session.scalars(query))


class RiskEventRepository(Repository[RiskEvent]):
    model = RiskEvent

    def seen(self, rule_id: str, fingerprint: str) -> bool:
        """Whether this evidence was reported before (each finding is acted on once)."""
        return (
            self.session.scalar(
                select(RiskEvent.id).where(
                    RiskEvent.rule_id == rule_id, RiskEvent.fingerprint == fingerprint
                )
            )
            is not None
        )

    def known_among(self, fingerprints: Sequence[str]) -> set[tuple[str, str]]:
        """(rule, fingerprint) of the events already recorded with any of ``fingerprints``."""
        rows = self.session.execute(
            select(RiskEvent.rule_id, RiskEvent.fingerprint).where(
                RiskEvent.fingerprint.in_(list(fingerprints))
            )
        ).all()
        return {(rule, fingerprint) for rule, fingerprint in rows}


class ShieldIncidentRepository(Repository[ShieldIncident]):
    model = ShieldIncident

    def racing(self, wallet_id: str | None = None) -> list[ShieldIncident]:
        query = select(ShieldIncident).where(ShieldIncident.status == "racing")
        if wallet_id is not None:
            query = query.where(ShieldIncident.wallet_id == wallet_id)
        return list(self.session.scalars(query.order_by(ShieldIncident.created_at)))

    def resolved_above(self, height: int) -> list[ShieldIncident]:
        return list(
            self.session.scalars(
                select(ShieldIncident).where(ShieldIncident.resolved_height > height)
            )
        )

    def newest(self, *, wallet_id: str | None = None, limit: int = 100) -> list[ShieldIncident]:
        query = select(ShieldIncident)
        if wallet_id is not None:
            query = query.where(ShieldIncident.wallet_id == wallet_id)
        return list(
            self.session.scalars(query.order_by(ShieldIncident.created_at.desc()).limit(limit))
        )


class ShieldRoundRepository(Repository[ShieldRound]):
    model = ShieldRound

    def by_thief_txid(self, txid: str) -> ShieldRound | None:
        return self.session.scalar(select(ShieldRound).where(ShieldRound.thief_txid == txid))

    def of_incident(self, incident_id: str) -> list[ShieldRound]:
        return list(
            self.session.scalars(
                select(ShieldRound)
                .where(ShieldRound.incident_id == incident_id)
                .order_by(ShieldRound.number)
            )
        )
