"""The repositories: every query of the service, one module per area.

``ReadUnitOfWork`` (and the write ``UnitOfWork`` built on it, walletsvc.db.database) expose
one repository per table as attributes over the transaction's session.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from walletsvc.db.repositories.allowlist import AllowlistRepository
from walletsvc.db.repositories.approvals import (
    ApprovalDecisionRepository,
    ApprovalRequestRepository,
)
from walletsvc.db.repositories.audit import AuditEventRepository
from walletsvc.db.repositories.chain import (
    ChainTransactionRepository,
    ScannedBlockRepository,
    UtxoRepository,
)
from walletsvc.db.repositories.incident import (
    FreezeRepository,
    KeyRotationRepository,
    RiskEventRepository,
    ShieldIncidentRepository,
    ShieldRoundRepository,
    UnfreezeRequestRepository,
)
from walletsvc.db.repositories.policies import PolicyVersionRepository
from walletsvc.db.repositories.policy_proposals import PolicyProposalRepository
from walletsvc.db.repositories.rounds import PayoutRoundRepository
from walletsvc.db.repositories.staff import StaffRepository, StaffSessionRepository
from walletsvc.db.repositories.staff_auth import (
    StaffChangeRepository,
    StaffPasskeyRepository,
    StaffTotpResetRepository,
)
from walletsvc.db.repositories.tokens import ApiTokenRepository
from walletsvc.db.repositories.treasury import (
    ColdDestinationChangeRepository,
    ColdDestinationRepository,
    ColdUtxoRepository,
    HotAlertRepository,
    RefillRepository,
    SweepRepository,
    TransactionWatchRepository,
)
from walletsvc.db.repositories.wallets import (
    AddressRepository,
    KeyEpochRepository,
    WalletRepository,
)
from walletsvc.db.repositories.webhooks import (
    OutboxEventRepository,
    WebhookDeliveryRepository,
    WebhookRepository,
)
from walletsvc.db.repositories.withdrawals import (
    IdempotencyKeyRepository,
    WithdrawalRepository,
)


class ReadUnitOfWork:
    """One transaction's repositories. ``Database.read()`` hands out this (no lock, no
    audit); ``Database.write()`` hands out the ``UnitOfWork`` subclass."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.wallets = WalletRepository(session)
        self.key_epochs = KeyEpochRepository(session)
        self.addresses = AddressRepository(session)
        self.utxos = UtxoRepository(session)
        self.scanned_blocks = ScannedBlockRepository(session)
        self.transactions = ChainTransactionRepository(session)
        self.withdrawals = WithdrawalRepository(session)
        self.idempotency_keys = IdempotencyKeyRepository(session)
        self.payout_rounds = PayoutRoundRepository(session)
        self.policies = PolicyVersionRepository(session)
        self.staff = StaffRepository(session)
        self.staff_sessions = StaffSessionRepository(session)
        self.staff_passkeys = StaffPasskeyRepository(session)
        self.staff_totp_resets = StaffTotpResetRepository(session)
        self.staff_changes = StaffChangeRepository(session)
        self.approval_requests = ApprovalRequestRepository(session)
        self.approval_decisions = ApprovalDecisionRepository(session)
        self.allowlist = AllowlistRepository(session)
        self.policy_proposals = PolicyProposalRepository(session)
        self.tokens = ApiTokenRepository(session)
        self.cold_destinations = ColdDestinationRepository(session)
        self.cold_changes = ColdDestinationChangeRepository(session)
        self.sweeps = SweepRepository(session)
        self.watches = TransactionWatchRepository(session)
        self.hot_alerts = HotAlertRepository(session)
        self.refills = RefillRepository(session)
        self.cold_utxos = ColdUtxoRepository(session)
        self.freezes = FreezeRepository(session)
        self.unfreeze_requests = UnfreezeRequestRepository(session)
        self.rotations = KeyRotationRepository(session)
        self.risk_events = RiskEventRepository(session)
        self.shield_incidents = ShieldIncidentRepository(session)
        self.shield_rounds = ShieldRoundRepository(session)
        self.audit_events = AuditEventRepository(session)
        self.webhooks = WebhookRepository(session)
        self.outbox = OutboxEventRepository(session)
        self.webhook_deliveries = WebhookDeliveryRepository(session)

    def hold_freeze_gate(self, *, exclusive: bool = False) -> None:
        """A read takes no lock; a write transaction (``UnitOfWork``) holds the freeze gate."""
