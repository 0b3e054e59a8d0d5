"""Approval requests and the decisions staff record on them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, select

from walletsvc.db.models_governance import ApprovalDecision, ApprovalRequest, Staff
from walletsvc.db.repositories.base import Repository

PENDING = "pending"


class ApprovalRequestRepository(Repository[ApprovalRequest]):
    model = ApprovalRequest

    def pending_count_by_kind(self) -> dict[str, int]:
        rows = self.session.execute(
            select(ApprovalRequest.kind, func.count())
            .where(ApprovalRequest.status == PENDING)
            .group_by(ApprovalRequest.kind)
        ).all()
        return {kind: int(count) for kind, count in rows}

    def pending_for_subject(self, kind: str, subject_id: str) -> list[ApprovalRequest]:
        return list(
            self.session.scalars(
                select(ApprovalRequest).where(
                    ApprovalRequest.kind == kind,
                    ApprovalRequest.subject_id == subject_id,
                    ApprovalRequest.status == PENDING,
                )
            )
        )

    def latest_for_subject(self, kind: str, subject_id: str) -> ApprovalRequest | None:
        return self.session.scalar(
            select(ApprovalRequest)
            .where(ApprovalRequest.kind == kind, ApprovalRequest.subject_id == subject_id)
            .order_by(ApprovalRequest.created_at.desc())
            .limit(1)
        )

    def any_expired(self, moment: datetime) -> bool:
        return (
            self.session.scalar(select(ApprovalRequest.id).where(*_due(moment)).limit(1))
            is not None
        )

    def expired(self, moment: datetime, *, limit: int) -> list[ApprovalRequest]:
        """Pending requests past their expiry, the longest-expired first."""
        return list(
            self.session.scalars(
                select(ApprovalRequest)
                .where(*_due(moment))
                .order_by(ApprovalRequest.expires_at)
                .limit(limit)
            )
        )

    def newest(self, *, pending: bool, kind: str | None, limit: int) -> list[ApprovalRequest]:
        query = select(ApprovalRequest)
        if pending:
            query = query.where(ApprovalRequest.status == PENDING)
        if kind is not None:
            query = query.where(ApprovalRequest.kind == kind)
        return list(
            self.session.scalars(query.order_by(ApprovalRequest.created_at.desc()).limit(limit))
        )


def _due(moment: datetime) -> tuple[ColumnElement[bool], ...]:
    return (ApprovalRequest.status == PENDING, ApprovalRequest.expires_at <= moment)


class ApprovalDecisionRepository(Repository[ApprovalDecision]):
    model = ApprovalDecision

    def on_content(self, request: ApprovalRequest) -> list[ApprovalDecision]:
        """Decisions on the request's current content (its digest)."""
        return list(
            self.session.scalars(
                select(ApprovalDecision).where(
                    ApprovalDecision.request_id == request.id,
                    ApprovalDecision.digest == request.digest,
                )
            )
        )

    def has_decided(self, request: ApprovalRequest, staff_id: str) -> bool:
        return (
            self.session.scalar(
                select(ApprovalDecision.id).where(
                    ApprovalDecision.request_id == request.id,
                    ApprovalDecision.staff_id == staff_id,
                    ApprovalDecision.digest == request.digest,
                )
            )
            is not None
        )

    def with_usernames(self, request_id: str) -> list[tuple[ApprovalDecision, str]]:
        rows = self.session.execute(
            select(ApprovalDecision, Staff.username)
            .join(Staff, Staff.id == ApprovalDecision.staff_id)
            .where(ApprovalDecision.request_id == request_id)
            .order_by(ApprovalDecision.created_at, ApprovalDecision.id)
        ).all()
        return [(d, name) for d, name in rows]
