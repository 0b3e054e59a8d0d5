"""The treasury console: server-rendered pages for staff at /console.

Thin like the JSON routes: each handler checks the session and the CSRF token, calls one use
case of the feature packages (the same ones the API calls: login, decide, freeze, ...), and
renders a template. A domain error is shown on the page with the status the API would give
(walletsvc.api.errors.status_for), never as a stack trace.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import segno
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from walletsvc.api.console import security
from walletsvc.api.console.security import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    csrf_for_session,
    passkey_registration_challenge,
    relying_party,
)
from walletsvc.api.deps import runtime_of
from walletsvc.api.errors import status_for
from walletsvc.bootstrap.console_views import ConsoleViews
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import DomainError, Forbidden, InvalidInput, Unauthenticated
from walletsvc.governance import approvals, passkeys, staff_changes, totp_resets
from walletsvc.governance.passkeys import RelyingParty
from walletsvc.governance.sessions import authenticate_session, end_session, is_session_token, login
from walletsvc.governance.staff import (
    StaffPrincipal,
    change_password,
    create_staff,
    disable_staff,
)
from walletsvc.incident.freeze import freeze

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(prefix="/console", include_in_schema=False)
FormText = Annotated[str, Form()]
OptionalFormText = Annotated[str | None, Form()]
AUDIT_READERS = ("auditor", "operator")
UNFREEZE_PROPOSERS = ("approver", "operator")
REFILL_PROPOSERS = ("operator",)
REFILL_SIGNERS = ("operator", "approver")
MAX_PSBT_BYTES = 6_000_000  # as POST /v1/refills/{id}/signatures
BINARY_PSBT_MAGIC = b"psbt\xff"  # BIP174: a PSBT file may hold the raw bytes, not base64
EXPIRED = "Your session has expired or ended. Log in again."


@dataclass(frozen=True)
class Visit:
    """A logged-in staff member's request: who, their session secret and CSRF token."""

    request: Request
    runtime: Runtime
    staff: StaffPrincipal
    csrf: str

    @property
    def views(self) -> ConsoleViews:
        return ConsoleViews(self.runtime)

    @property
    def relying_party(self) -> RelyingParty:
        return relying_party(self.request, self.runtime.settings)


def _session_secret(request: Request) -> str | None:
    secret = request.cookies.get(SESSION_COOKIE)
    return secret if secret and is_session_token(secret) else None


def _visit(request: Request) -> Visit:
    """The logged-in staff member, or Unauthenticated (an absent, expired or ended session)."""
    runtime = runtime_of(request)
    secret = _session_secret(request)
    if secret is None:
        raise Unauthenticated(EXPIRED)
    staff = authenticate_session(runtime.db, runtime.tags, secret)
    return Visit(request, runtime, staff, csrf_for_session(secret))


def _page(
    visit: Visit,
    template: str,
    *,
    status: int = 200,
    message: str | None = None,
    error: DomainError | None = None,
    **context: Any,
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        visit.request,
        template,
        {
            "staff": visit.staff,
            "csrf": visit.csrf,
            "csrf_field": CSRF_FIELD,
            "freeze": visit.views.freeze_state(),
            "message": message,
            "error": error,
            **context,
        },
        status_code=status_for(error) if error is not None else status,
    )


def _login_page(
    request: Request, *, error: str | None = None, status: int = 200, info: str | None = None
) -> HTMLResponse:
    token = security.new_login_csrf()
    response = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"csrf": token, "csrf_field": CSRF_FIELD, "login_error": error, "info": info},
        status_code=status,
    )
    security.set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


def _signed_out(request: Request) -> Response:
    """Answer a request without a live session: GETs go to the login page, POSTs are refused
    (401) with the login form, and nothing is done."""
    response: Response
    if request.method == "GET":
        response = RedirectResponse("/console/login?expired=1", status_code=303)
    else:
        response = _login_page(request, error=EXPIRED, status=401)
    security.clear_cookie(request, response, SESSION_COOKIE)
    return response


def _posted(request: Request, csrf_token: str | None) -> Visit | Response:
    """A POST's visit after its session and CSRF checks, or the answer that refuses it."""
    try:
        visit = _visit(request)
    except Unauthenticated:
        return _signed_out(request)
    try:
        check_csrf(visit.csrf, csrf_token)
    except DomainError as exc:
        return _page(visit, "error.html", error=exc)
    return visit


class _ErrorPage(Protocol):
    """Renders a page with a domain error on it (the page the action was taken from)."""

    def __call__(self, visit: Visit, *, error: DomainError) -> Response: ...


def _post(
    request: Request,
    csrf_token: str | None,
    act: Callable[[Visit], Response],
    *,
    shown_on: _ErrorPage,
) -> Response:
    """A form's POST: the session and CSRF checks, then ``act``; a domain error it raises is
    shown on ``shown_on``'s page, with the status the API would give."""
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    try:
        return act(visit)
    except DomainError as exc:
        return shown_on(visit, error=exc)


def _get(request: Request, render: Callable[[Visit], Response]) -> Response:
    try:
        visit = _visit(request)
    except Unauthenticated:
        return _signed_out(request)
    try:
        return render(visit)
    except DomainError as exc:
        return _page(visit, "error.html", error=exc)


# --- Log in and out --------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def home() -> Response:
    return RedirectResponse("/console/queue", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, expired: int = 0) -> Response:
    return _login_page(request, info=EXPIRED if expired else None)


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    username: FormText = "",
    password: FormText = "",
    totp: FormText = "",
    csrf_token: OptionalFormText = None,
) -> Response:
    runtime = runtime_of(request)
    try:
        check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token)
        created = login(
            runtime.db,
            runtime.tags,
            runtime.signer,
            runtime.settings,
            username=username.strip(),
            password=password,
            totp=totp.strip(),
            client=request.client.host if request.client else "unknown",
            throttle=runtime.login_throttle,
        )
    except DomainError as exc:
        return _login_page(request, error=exc.message, status=status_for(exc))
    response = RedirectResponse("/console/queue", status_code=303)
    security.set_cookie(
        request, response, SESSION_COOKIE, created.token, max_age=runtime.settings.session_ttl_s
    )
    security.clear_cookie(request, response, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout", response_class=HTMLResponse)
def logout(request: Request, csrf_token: OptionalFormText = None) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    end_session(visit.runtime.db, visit.staff)
    response = RedirectResponse("/console/login", status_code=303)
    security.clear_cookie(request, response, SESSION_COOKIE)
    return response


# --- My queue and decisions ------------------------------------------------------------------


def _queue(visit: Visit, **extra: Any) -> HTMLResponse:
    items = visit.views.queue(visit.staff, visit.relying_party)
    return _page(visit, "queue.html", items=items, **extra)


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request) -> Response:
    return _get(request, _queue)


@router.post("/approvals/{request_id}", response_class=HTMLResponse)
def decide(
    request_id: str,
    request: Request,
    decision: FormText = "",
    digest: FormText = "",
    totp: FormText = "",
    passkey: FormText = "",
    comment: OptionalFormText = None,
    csrf_token: OptionalFormText = None,
) -> Response:
    """Decide with a TOTP code, or (``passkey``: the assertion the page's script obtained)
    with a passkey, which then signed exactly this digest and decision."""

    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        kind = visit.views.request_kind(request_id)
        try:
            status = approvals.decide(
                runtime.db,
                runtime.tags,
                runtime.signer,
                runtime.settings,
                request_id=request_id,
                staff=visit.staff,
                decision=decision,
                digest=digest,
                totp=None if passkey else totp.strip(),
                comment=(comment or "").strip() or None,
                passkey=passkey or None,
                rp=visit.relying_party,
            )
        except approvals.ContentTampered:
            runtime.risk.evaluate()  # as the API does: freeze on the integrity failure now
            raise
        verb = "approved" if decision == "approve" else "rejected"
        message = f"You {verb} request {request_id}; it is now {status.replace('_', ' ')}."
        held = visit.views.held_payouts() if kind == "unfreeze" and status == "approved" else None
        return _queue(visit, message=message, released=held)

    return _post(request, csrf_token, act, shown_on=_queue)


# --- Passkeys -------------------------------------------------------------------------------


def _passkeys(visit: Visit, **extra: Any) -> HTMLResponse:
    challenge = passkey_registration_challenge(_session_secret(visit.request) or "")
    page = visit.views.passkeys_page(visit.staff, visit.relying_party, challenge)
    return _page(visit, "passkeys.html", **page, **extra)


@router.get("/passkeys", response_class=HTMLResponse)
def passkeys_page(request: Request) -> Response:
    return _get(request, _passkeys)


@router.post("/passkeys", response_class=HTMLResponse)
def register_passkey(
    request: Request,
    credential: FormText = "",
    totp: FormText = "",
    label: FormText = "",
    csrf_token: OptionalFormText = None,
) -> Response:
    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        if visit.staff.role != "approver":
            raise Forbidden("passkeys are for approvers: they sign decisions")
        if not credential:
            raise InvalidInput(
                "no passkey was created (the browser needs JavaScript for this)", field="passkey"
            )
        passkeys.register_passkey(
            runtime.db,
            runtime.tags,
            runtime.signer,
            runtime.settings,
            visit.relying_party,
            visit.staff,
            challenge=passkey_registration_challenge(_session_secret(request) or ""),
            credential=credential,
            totp=totp.strip(),
            label=label,
        )
        return _passkeys(visit, status=201, message="Passkey registered: you can approve with it.")

    return _post(request, csrf_token, act, shown_on=_passkeys)


@router.post("/passkeys/{passkey_id}/remove", response_class=HTMLResponse)
def remove_my_passkey(
    passkey_id: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:
    def act(visit: Visit) -> Response:
        removed = passkeys.remove_passkey(
            visit.runtime.db,
            visit.runtime.tags,
            visit.runtime.signer,
            visit.staff,
            passkey_id=passkey_id,
        )
        message = f"Passkey {removed.label!r} removed: it approves nothing now."
        return _passkeys(visit, message=message)

    return _post(request, csrf_token, act, shown_on=_passkeys)


# --- Staff administration (operators) and one's own password --------------------------------


def _staff(visit: Visit, **extra: Any) -> HTMLResponse:
    page = visit.views.staff_page() if visit.staff.role == "operator" else {}
    return _page(visit, "staff.html", **page, **extra)


def _operator(visit: Visit) -> None:
    if visit.staff.role != "operator":
        raise Forbidden("staff administration is for operators")


def _enrolment(username: str, uri: str, note: str) -> dict[str, Any]:
    """The one-time TOTP enrolment: the QR code (inline SVG) and the URI it holds."""
    qr = segno.make(uri, error="m").svg_inline(scale=5, light="#fff")
    # segno's own markup (no user input but the URI, which it encodes as modules).
    return {"username": username, "uri": uri, "qr": Markup(qr), "note": note}  # noqa: S704


@router.get("/staff", response_class=HTMLResponse)
def staff_page(request: Request) -> Response:
    return _get(request, _staff)


@router.post("/staff", response_class=HTMLResponse)
def add_member(
    request: Request,
    username: FormText = "",
    password: FormText = "",
    role: FormText = "",
    groups: Annotated[list[str] | None, Form()] = None,
    csrf_token: OptionalFormText = None,
) -> Response:
    """During the signer's genesis the member is enrolled at once; after it, this opens the
    governed enrolment (``staff_change``) that an operator applies once it is approved."""

    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        _operator(visit)
        if not staff_changes.genesis_open(runtime.signer):
            pending = staff_changes.request_enrolment(
                runtime.db,
                runtime.tags,
                username=username.strip(),
                password=password,
                role=role,
                groups=groups or [],
                requester=approvals.Requester(visit.staff.actor, visit.staff.staff_id),
            )
            return _staff(visit, status=201, message=_awaiting_quorum("Enrolment", pending))
        created = create_staff(
            runtime.db,
            runtime.tags,
            runtime.signer,
            username=username.strip(),
            password=password,
            role=role,
            groups=groups or [],
            actor=visit.staff.actor,
        )
        note = "Scan this now with the new member's authenticator app; it is shown only once."
        return _staff(
            visit,
            status=201,
            message=f"Added {created.username} ({created.role}).",
            enrolment=_enrolment(created.username, created.otpauth_uri, note),
        )

    return _post(request, csrf_token, act, shown_on=_staff)


def _awaiting_quorum(what: str, pending: staff_changes.PendingStaffChange) -> str:
    return (
        f"{what} of {pending.username} requested: once approval request"
        f" {pending.approval_request_id} reaches its quorum, apply it here."
    )


@router.post("/staff/{username}/update", response_class=HTMLResponse)
def update_member(
    username: str,
    request: Request,
    role: FormText = "",
    groups: Annotated[list[str] | None, Form()] = None,
    csrf_token: OptionalFormText = None,
) -> Response:
    """A new role and groups: at once if it only takes power away, else governed."""

    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        _operator(visit)
        outcome = staff_changes.request_update(
            runtime.db,
            runtime.tags,
            runtime.signer,
            username=username,
            role=role,
            groups=groups or [],
            requester=approvals.Requester(visit.staff.actor, visit.staff.staff_id),
        )
        if isinstance(outcome, staff_changes.PendingStaffChange):
            return _staff(visit, status=201, message=_awaiting_quorum("Change", outcome))
        groups_text = ", ".join(outcome.groups) or "no groups"
        message = f"{outcome.username} is now {outcome.role} ({groups_text}); sessions ended."
        return _staff(visit, message=message)

    return _post(request, csrf_token, act, shown_on=_staff)


@router.post("/staff/changes/{change_id}/apply", response_class=HTMLResponse)
def apply_member_change(
    change_id: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:

    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        _operator(visit)
        applied = staff_changes.apply_change(
            runtime.db,
            runtime.tags,
            runtime.signer,
            change_id=change_id,
            actor=visit.staff.actor,
        )
        member = applied.member
        if applied.created is None:
            groups_text = ", ".join(member.groups) or "no groups"
            return _staff(visit, message=f"{member.username} is now {member.role} ({groups_text}).")
        note = "Scan this now with the new member's authenticator app; it is shown only once."
        return _staff(
            visit,
            status=201,
            message=f"Added {member.username} ({member.role}).",
            enrolment=_enrolment(member.username, applied.created.otpauth_uri, note),
        )

    return _post(request, csrf_token, act, shown_on=_staff)


@router.post("/staff/{username}/disable", response_class=HTMLResponse)
def disable_member(
    username: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:

    def act(visit: Visit) -> Response:
        _operator(visit)
        if username == visit.staff.username:
            raise Forbidden("you cannot disable yourself; ask another operator")
        disable_staff(
            visit.runtime.db,
            visit.runtime.tags,
            visit.runtime.signer,
            username=username,
            actor=visit.staff.actor,
        )
        return _staff(visit, message=f"Disabled {username}; their sessions have ended.")

    return _post(request, csrf_token, act, shown_on=_staff)


@router.post("/staff/{username}/reset-authenticator", response_class=HTMLResponse)
def reset_authenticator(
    username: str, request: Request, reason: FormText = "", csrf_token: OptionalFormText = None
) -> Response:

    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        _operator(visit)
        pending = totp_resets.request_reset(
            runtime.db,
            runtime.tags,
            username=username,
            reason=reason,
            requester=approvals.Requester(visit.staff.actor, visit.staff.staff_id),
        )
        return _staff(
            visit,
            status=201,
            message=(
                f"Authenticator reset of {username} requested: once approval request"
                f" {pending.approval_request_id} reaches its quorum, apply it here to get the new"
                " enrolment (the old authenticator works until then)."
            ),
        )

    return _post(request, csrf_token, act, shown_on=_staff)


@router.post("/staff/resets/{reset_id}/apply", response_class=HTMLResponse)
def apply_authenticator_reset(
    reset_id: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:

    def act(visit: Visit) -> Response:
        _operator(visit)
        applied = totp_resets.apply_reset(
            visit.runtime.db, visit.runtime.signer, reset_id=reset_id, actor=visit.staff.actor
        )
        note = f"Give this to {applied.username} now: it is shown only once, and works at once."
        return _staff(
            visit,
            status=201,
            message=f"Authenticator of {applied.username} reset.",
            enrolment=_enrolment(applied.username, applied.otpauth_uri, note),
        )

    return _post(request, csrf_token, act, shown_on=_staff)


@router.post("/password", response_class=HTMLResponse)
def change_my_password(
    request: Request,
    current_password: FormText = "",
    new_password: FormText = "",
    totp: FormText = "",
    csrf_token: OptionalFormText = None,
) -> Response:

    def act(visit: Visit) -> Response:
        runtime = visit.runtime
        change_password(
            runtime.db,
            runtime.tags,
            runtime.signer,
            runtime.settings,
            visit.staff,
            current=current_password,
            new=new_password,
            totp=totp.strip(),
        )
        return _staff(visit, message="Password changed; your other sessions have ended.")

    return _post(request, csrf_token, act, shown_on=_staff)


# --- Freeze ----------------------------------------------------------------------------------


def _freeze(visit: Visit, **extra: Any) -> HTMLResponse:
    return _page(visit, "freeze.html", **visit.views.freeze_page(), **extra)


@router.post("/freeze", response_class=HTMLResponse)
def freeze_now(
    request: Request, reason: FormText = "", csrf_token: OptionalFormText = None
) -> Response:
    def act(visit: Visit) -> Response:
        freeze(visit.runtime.db, scope="all", wallet=None, reason=reason, actor=visit.staff.actor)
        message = "Frozen: nothing is signed or broadcast until the freeze is lifted."
        return _freeze(visit, status=201, message=message)

    return _post(request, csrf_token, act, shown_on=_freeze)


@router.get("/freeze", response_class=HTMLResponse)
def freeze_page(request: Request) -> Response:
    return _get(request, _freeze)


@router.post("/unfreeze", response_class=HTMLResponse)
def unfreeze_request(
    request: Request, reason: FormText = "", csrf_token: OptionalFormText = None
) -> Response:
    def act(visit: Visit) -> Response:
        if visit.staff.role not in UNFREEZE_PROPOSERS:  # as POST /v1/unfreeze
            raise Forbidden("approvers and operators ask for an unfreeze")
        request_id = visit.views.propose_unfreeze(visit.staff, reason)
        message = f"Unfreeze requested ({request_id}); it lifts when its approvers agree."
        return _freeze(visit, status=201, message=message)

    return _post(request, csrf_token, act, shown_on=_freeze)


# --- Refills from cold storage ------------------------------------------------------------


def _refills(visit: Visit, **extra: Any) -> HTMLResponse:
    return _page(visit, "refills.html", **visit.views.refills(), **extra)


def _refill(visit: Visit, refill_id: str, **extra: Any) -> HTMLResponse:
    return _page(visit, "refill.html", **visit.views.refill(refill_id), **extra)


def _refill_errors(refill_id: str) -> _ErrorPage:
    """Errors shown on the refill's page, or on the error page if the refill is unknown."""

    def shown(visit: Visit, *, error: DomainError) -> Response:
        try:
            return _refill(visit, refill_id, error=error)
        except DomainError:
            return _page(visit, "error.html", error=error)

    return shown


def _psbt_upload(file_bytes: bytes, pasted: str) -> str:
    """The uploaded PSBT as base64 text, from a file (binary BIP174 or base64) or the text box;
    what it contains is checked by the refill service (walletsvc.keys.psbt.parse_psbt)."""
    pasted = pasted.strip()
    if file_bytes and pasted:
        raise InvalidInput("choose a file or paste the PSBT, not both", field="psbt")
    if len(file_bytes) > MAX_PSBT_BYTES or len(pasted) > MAX_PSBT_BYTES:
        raise InvalidInput(f"the PSBT is larger than {MAX_PSBT_BYTES} bytes", field="psbt")
    if file_bytes.startswith(BINARY_PSBT_MAGIC):
        return base64.b64encode(file_bytes).decode("ascii")
    if file_bytes:
        try:
            return file_bytes.decode("ascii").strip()
        except UnicodeDecodeError:
            raise InvalidInput(
                "the file is neither a binary PSBT nor base64 text", field="psbt"
            ) from None
    if not pasted:
        raise InvalidInput("choose a signed PSBT file or paste its base64", field="psbt")
    return pasted


@router.get("/refills", response_class=HTMLResponse)
def refills(request: Request) -> Response:
    return _get(request, _refills)


@router.post("/wallets/{wallet}/refills", response_class=HTMLResponse)
def propose_refill(wallet: str, request: Request, csrf_token: OptionalFormText = None) -> Response:

    def act(visit: Visit) -> Response:
        if visit.staff.role not in REFILL_PROPOSERS:  # as POST /v1/wallets/{w}/refills
            raise Forbidden("operators propose refills")
        proposed = visit.runtime.refills.propose(wallet, actor=visit.staff.actor)
        message = (
            "Refill proposed: download the PSBT, sign it on the cold wallet's device, upload it."
        )
        return _refill(visit, proposed["id"], status=201, message=message)

    return _post(request, csrf_token, act, shown_on=_refills)


@router.get("/refills/{refill_id}", response_class=HTMLResponse)
def refill_page(refill_id: str, request: Request) -> Response:
    return _get(request, lambda v: _refill(v, refill_id))


@router.get("/refills/{refill_id}/psbt")
def download_psbt(refill_id: str, request: Request) -> Response:
    """The proposal (with the signatures combined so far) as a base64 ``.psbt`` file, the form
    hardware wallets and their companion apps (Sparrow, HWI, Coldcard's SD card) import."""

    def render(visit: Visit) -> Response:
        shown = visit.runtime.refills.show(refill_id)
        name = f"refill-{shown['wallet']}-{shown['txid'][:12]}.psbt"
        return Response(
            shown["psbt"],
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return _get(request, render)


@router.post("/refills/{refill_id}/signatures", response_class=HTMLResponse)
def upload_signed_psbt(
    refill_id: str,
    request: Request,
    psbt_file: Annotated[UploadFile | None, File()] = None,
    psbt_text: FormText = "",
    csrf_token: OptionalFormText = None,
) -> Response:
    """A signed PSBT, as a file (binary or base64) or pasted base64."""

    def act(visit: Visit) -> Response:
        if visit.staff.role not in REFILL_SIGNERS:  # as POST /v1/refills/{id}/signatures
            raise Forbidden("operators and approvers upload signed PSBTs")
        uploaded = _psbt_upload(
            psbt_file.file.read(MAX_PSBT_BYTES + 1) if psbt_file is not None else b"",
            psbt_text,
        )
        after = visit.runtime.refills.add_signatures(refill_id, uploaded, actor=visit.staff.actor)
        if after["status"] == "awaiting_signatures":
            message = "Signatures added; the refill still needs more before it can be broadcast."
        else:
            message = f"The refill is complete and {after['status'].replace('_', ' ')}."
        return _refill(visit, refill_id, message=message)

    return _post(request, csrf_token, act, shown_on=_refill_errors(refill_id))


@router.post("/refills/{refill_id}/cancel", response_class=HTMLResponse)
def cancel_refill(
    refill_id: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:
    def act(visit: Visit) -> Response:
        if visit.staff.role not in REFILL_PROPOSERS:  # as POST /v1/refills/{id}/cancel
            raise Forbidden("operators cancel refills")
        visit.runtime.refills.cancel(refill_id, actor=visit.staff.actor)
        message = "Refill cancelled; its cold coins are free again."
        return _refill(visit, refill_id, message=message)

    return _post(request, csrf_token, act, shown_on=_refill_errors(refill_id))


# --- Read-only pages -------------------------------------------------------------------------


@router.get("/wallets", response_class=HTMLResponse)
def wallets(request: Request) -> Response:
    return _get(request, lambda v: _page(v, "wallets.html", **v.views.wallets()))


@router.get("/payouts", response_class=HTMLResponse)
def payouts(request: Request) -> Response:
    return _get(request, lambda v: _page(v, "payouts.html", **v.views.payouts()))


@router.get("/allowlist", response_class=HTMLResponse)
def allowlist(request: Request) -> Response:
    return _get(request, lambda v: _page(v, "allowlist.html", **v.views.allowlist()))


@router.get("/policy", response_class=HTMLResponse)
def policy(request: Request) -> Response:
    return _get(request, lambda v: _page(v, "policy.html", **v.views.policy()))


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request) -> Response:
    def render(visit: Visit) -> Response:
        if visit.staff.role not in AUDIT_READERS:  # as GET /v1/audit
            raise Forbidden("the audit trail is for auditors and operators")
        return _page(visit, "audit.html", **visit.views.audit())

    return _get(request, render)
