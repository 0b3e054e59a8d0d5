"""What the treasury console shows: read views over the features, shaped for its pages.

The console (walletsvc.api.console) renders these; it asks for nothing the JSON API cannot
also see. Kept here, beside the other combined read views, because a page combines several
features (a queue item is an approval request, its payout and the payout's policy decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.wallet_views import list_wallet_views
from walletsvc.governance import approvals, audit, passkeys, quorum, staff_changes, totp_resets
from walletsvc.governance.allowlist import list_allowlist
from walletsvc.governance.passkeys import RelyingParty
from walletsvc.governance.policies import policy_view
from walletsvc.governance.policy_changes import proposals_index
from walletsvc.governance.staff import StaffPrincipal, known_groups, list_staff
from walletsvc.incident import unfreeze
from walletsvc.incident.freeze import freeze_overview
from walletsvc.payouts.intake import KIND as WITHDRAWAL_KIND
from walletsvc.payouts.intake import get_withdrawal, withdrawal_view, withdrawals_index
from walletsvc.payouts.rounds import rounds_index
from walletsvc.treasury.sweeps import sweeps_index

QUEUE_LIMIT = 200
RECENT = 50


@dataclass(frozen=True)
class ConsoleViews:
    runtime: Runtime

    # --- every page ---------------------------------------------------------------------

    def freeze_state(self) -> dict[str, Any]:
        return freeze_overview(self.runtime.db)

    # --- my queue -----------------------------------------------------------------------

    def queue(self, staff: StaffPrincipal, rp: RelyingParty) -> list[dict[str, Any]]:
        """Everything waiting for this approver's decision (for other roles: everything
        pending, to read), each with what is needed to decide it: with a passkey too, the
        WebAuthn options of approving and of rejecting exactly its digest."""
        items = self._queue_items(staff)
        rt = self.runtime
        if staff.role == "approver" and items and passkeys.my_passkeys(rt.db, rt.tags, staff):
            for item in items:
                item["passkey_options"] = {
                    decision: passkeys.approval_options(
                        rt.db, rt.tags, rp, staff, digest=item["digest"], decision=decision
                    )
                    for decision in ("approve", "reject")
                }
        return items

    def _queue_items(self, staff: StaffPrincipal) -> list[dict[str, Any]]:
        rt = self.runtime
        mine = staff if staff.role == "approver" else None
        with rt.db.read() as uow:
            rows = approvals.list_requests(
                uow, pending=True, kind=None, limit=QUEUE_LIMIT, waiting_for=mine
            )
            items = []
            for row in rows:
                item = approvals.request_view(uow, rt.tags, row)
                item["shortfall"] = quorum.request_shortfall(uow, rt.tags, row)
                item["decidable"] = mine is not None
                if row.kind == WITHDRAWAL_KIND:
                    item["payout"] = withdrawal_view(uow, get_withdrawal(uow, row.subject_id))
                items.append(item)
            return items

    def request_kind(self, request_id: str) -> str:
        with self.runtime.db.read() as uow:
            return approvals.get_request(uow, request_id).kind

    def held_payouts(self) -> list[dict[str, Any]]:
        """Payouts approved and waiting to be signed: those a freeze held back."""
        page = withdrawals_index(
            self.runtime.db, status="approved", wallet=None, cursor=None, limit=RECENT
        )
        held: list[dict[str, Any]] = page["withdrawals"]
        return held

    # --- passkeys ------------------------------------------------------------------------

    def passkeys_page(
        self, staff: StaffPrincipal, rp: RelyingParty, challenge: bytes
    ) -> dict[str, Any]:
        rt = self.runtime
        return {
            "passkeys": passkeys.my_passkeys(rt.db, rt.tags, staff),
            "registration_options": passkeys.registration_options(
                rt.db, rt.tags, rp, staff, challenge=challenge
            ),
        }

    # --- staff --------------------------------------------------------------------------

    def staff_page(self) -> dict[str, Any]:
        """Members (no secrets), the groups they may be in, and where a quorum falls short."""
        rt = self.runtime
        with rt.db.read() as uow:
            members = [
                {
                    "username": row.username,
                    "role": row.role,
                    "groups": list(row.groups),
                    "disabled": row.disabled_at is not None,
                    "locked_until": row.locked_until.isoformat() if row.locked_until else None,
                    "passkeys": sum(
                        1 for p in uow.staff_passkeys.of_staff(row.id) if p.disabled_at is None
                    ),
                }
                for row in list_staff(uow)
            ]
            groups = sorted(known_groups(uow, rt.tags))
            warnings = quorum.staff_shortfalls(uow, rt.tags)
        return {
            "members": members,
            "groups": groups,
            "quorum_warnings": warnings,
            "resets": totp_resets.resets_index(rt.db),
            "changes": staff_changes.changes_index(rt.db),
        }

    # --- freeze -------------------------------------------------------------------------

    def freeze_page(self) -> dict[str, Any]:
        return {
            "unfreeze_requests": unfreeze.unfreeze_index(self.runtime.db)["unfreeze_requests"],
            "held": self.held_payouts(),
        }

    def propose_unfreeze(self, staff: StaffPrincipal, reason: str) -> str:
        row = unfreeze.propose(
            self.runtime.db,
            self.runtime.tags,
            target=unfreeze.Target(),
            reason=reason,
            requester=unfreeze.Requester(staff.actor, staff.staff_id),
        )
        return str(row.approval_request_id)

    # --- read-only pages ----------------------------------------------------------------

    def wallets(self) -> dict[str, Any]:
        rt = self.runtime
        listed = list_wallet_views(rt.db, rt.tags, min_confirmations=rt.settings.min_confirmations)
        # "Below its floor" by the figure a refill uses (pending payouts' needs and change in
        # flight counted), so this page and Refills never disagree.
        below = {p.wallet for p in rt.refills.positions() if p.below_floor}
        return {"wallets": listed["wallets"], "below_floor": below}

    def payouts(self) -> dict[str, Any]:
        db = self.runtime.db
        return {
            "payouts": withdrawals_index(db, status=None, wallet=None, cursor=None, limit=RECENT)[
                "withdrawals"
            ],
            "rounds": rounds_index(db, wallet=None, cursor=None, limit=RECENT)["payout_rounds"],
            "sweeps": sweeps_index(db, wallet=None, limit=RECENT)["sweeps"],
        }

    def refills(self) -> dict[str, Any]:
        """Each wallet's hot balance against its floor and target, and the recent refills."""
        service = self.runtime.refills
        return {"positions": service.positions(), "refills": service.recent(RECENT)}

    def refill(self, refill_id: str) -> dict[str, Any]:
        """One refill and where it stands: signatures per input against what each needs."""
        service = self.runtime.refills
        view = service.show(refill_id)
        needed = service.signatures_needed(refill_id)
        return {
            "refill": view,
            "needed": needed,
            "stages": {
                "Signatures combined": all(n >= needed for n in view["signatures"]),
                "Finalised and verified": view["complete"],
                "Broadcast": view["status"] in ("broadcast", "confirmed"),
                "Confirmed": view["status"] == "confirmed",
            },
        }

    def allowlist(self) -> dict[str, Any]:
        listed = list_allowlist(
            self.runtime.db, self.runtime.tags, wallet=None, include_removed=True
        )
        return {"entries": listed["entries"]}

    def policy(self) -> dict[str, Any]:
        rt = self.runtime
        with rt.db.read() as uow:
            names = [w.name for w in uow.wallets.all_by_name()]
        scoped = {name: policy_view(rt.db, rt.tags, name) for name in names}
        return {
            "policy": policy_view(rt.db, rt.tags, None),
            # Wallets with a policy of their own: it, not the default, is in force for them.
            "wallet_policies": {n: v for n, v in scoped.items() if v["wallet_scoped"]},
            "proposals": proposals_index(rt.db, status=None, limit=RECENT)["proposals"],
        }

    def audit(self) -> dict[str, Any]:
        """The newest audit events and the verification of the whole chain and its rows."""
        rt = self.runtime
        with rt.db.read() as uow:
            report = audit.verify(uow, rt.tags, rt.db.audit_key)
            head = uow.audit_events.head()
            last = head.last_seq if head is not None else 0
            events = audit.events_after(uow, max(0, last - RECENT), RECENT)
        return {
            "events": list(reversed(events)),
            "verification": {
                "ok": report.ok,
                "events_checked": report.events_checked,
                "rows_checked": report.rows_checked,
                "problems": report.problems,
            },
        }
