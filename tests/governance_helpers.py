"""Helpers for the governance tests: staff with real TOTP devices, clocks, policies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyotp
import yaml

from tests.conftest import REPO, WALLET
from tests.signer_helpers import install_policy_in_signer
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.governance.policies import install_policy
from walletsvc.governance.sessions import login
from walletsvc.governance.staff import TOTP_PERIOD_S, create_staff, time_step
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.policy.document import PolicyDocument, parse_policy

PASSWORD = "correct horse battery staple"
# A regtest address that is not ours (the spine's demo destination style).
DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def aligned_now() -> datetime:
    """A moment at the start of a TOTP step, a little in the future, so injected times do not
    collide with the current real step."""
    step = time_step(datetime.now(UTC)) + 10
    return datetime.fromtimestamp(step * TOTP_PERIOD_S, UTC)


@dataclass
class Member:
    username: str
    staff_id: str
    secret: str
    role: str
    last_step: int = -1
    token: str | None = None

    def code_at(self, moment: datetime) -> str:
        return pyotp.TOTP(self.secret).at(moment)

    def live_code(self) -> str:
        """A code the server will accept now (window +-1 step), never a step used before.

        The newest acceptable step, not the oldest: a code of the current step stays valid
        until the end of the next one, so a slow subprocess on a loaded machine (seconds to
        start Python and hash a password) still lands inside the window. Only a member who
        already used the current and the next step has to wait for the clock.
        """
        current = int(time.time()) // TOTP_PERIOD_S
        step = max(self.last_step + 1, current)
        while step > current + 1:
            time.sleep(1)
            current = int(time.time()) // TOTP_PERIOD_S
        self.last_step = step
        return pyotp.TOTP(self.secret).at(step * TOTP_PERIOD_S)

    def headers(self) -> dict[str, str]:
        assert self.token is not None, "log in first"
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Team:
    runtime: Runtime
    members: dict[str, Member] = field(default_factory=dict)

    def add(
        self, name: str, role: str = "approver", groups: tuple[str, ...] = ("treasury",)
    ) -> Member:
        created = create_staff(
            self.runtime.db,
            self.runtime.tags,
            self.runtime.signer,
            username=name,
            password=PASSWORD,
            role=role,
            groups=list(groups),
            actor="test",
        )
        member = Member(name, created.staff_id, created.totp_secret, role)
        self.members[name] = member
        return member

    def login(self, member: Member) -> Member:
        """A session through the service, with a live code (real HTTP uses the token)."""
        session = login(
            self.runtime.db,
            self.runtime.tags,
            self.runtime.signer,
            self.runtime.settings,
            username=member.username,
            password=PASSWORD,
            totp=member.live_code(),
        )
        member.token = session.token
        return member


def principal(runtime: Runtime, member: Member) -> Any:
    from walletsvc.governance.staff import StaffPrincipal

    return StaffPrincipal(member.staff_id, member.username, member.role, frozenset(["treasury"]))


def shown_digest(runtime: Runtime, request_id: str) -> str:
    """The digest an approver is shown (``GET /approvals/{id}``) and decides on."""
    from walletsvc.governance.approvals import show_request

    digest: str = show_request(runtime.db, runtime.tags, request_id)["digest"]
    return digest


def decide(
    runtime: Runtime,
    member: Member,
    request_id: str,
    moment: datetime,
    *,
    decision: Literal["approve", "reject"] = "approve",
    digest: str | None = None,
    totp: str | None = None,
    comment: str | None = None,
) -> str:
    """``member`` decides ``request_id`` at ``moment``: by default approving the digest the
    API shows, with the code of ``moment``'s TOTP step."""
    from walletsvc.governance import approvals

    return approvals.decide(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        request_id=request_id,
        staff=principal(runtime, member),
        decision=decision,
        digest=digest or shown_digest(runtime, request_id),
        totp=totp or member.code_at(moment),
        comment=comment,
        now=moment,
    )


def assert_nowhere_in_database(runtime: Runtime, secret: str) -> None:
    """``secret`` is in no column of any row of any table (in any case)."""
    import sqlalchemy as sa

    from walletsvc.db.registry import metadata

    needle = secret.lower()
    with runtime.db.read() as uow:
        for table in metadata.sorted_tables:
            for row in uow.session.execute(sa.select(table)).all():
                text = " ".join(str(value) for value in row).lower()
                assert needle not in text, f"the secret is in table {table.name}"


def default_document(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "policies" / "default.yaml").read_text())
    data.update(changes)
    return data


def install(runtime: Runtime, data: dict[str, Any]) -> PolicyDocument:
    """The policy in force, set up as an operator does: in the database and, locally, in the
    signer (whose copy decides each governed change's quorum and a policy change's base)."""
    doc = parse_policy(data)
    with runtime.db.write() as uow:
        install_policy(uow, runtime.tags, doc, wallet_id=None, actor="test")
    install_policy_in_signer(runtime.settings, doc)
    return doc


def with_ops_group(runtime: Runtime) -> PolicyDocument:
    """A policy in force that also names an ``ops`` group (it approves key rotations): staff
    can only be in groups the policy names."""
    document = default_document()
    document["governance"]["key_rotation"] = {"group": "ops", "m": 2}
    return install(runtime, document)


def big_withdrawal(
    runtime: Runtime, *, amount: int = 20_000_000, key: str = "big-1", now: datetime | None = None
) -> str:
    """A payout above the 0.1 BTC tier: 2 of treasury must approve."""
    return request_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(WALLET, DEST, amount, "test"),
        idempotency_key=key,
        token_id="token-under-test",
        actor="token:engine",
        now=now,
    ).withdrawal_id


def later(moment: datetime, steps: int) -> datetime:
    return moment + timedelta(seconds=steps * TOTP_PERIOD_S)
