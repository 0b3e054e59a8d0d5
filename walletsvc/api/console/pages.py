"""The treasury console: server-rendered pages for staff at /console.

Thin like the JSON routes: each handler checks the session and the CSRF token, calls one use
case of the feature packages (the same ones the API calls: login, decide, freeze, ...), and
renders a template. A domain error is shown on the page with the status the API would give
(walletsvc.api.errors.status_for), never as a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Form, Request
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
from walletsvc.api.deps import get_runtime
from walletsvc.api.errors import status_for
from walletsvc.bootstrap.console_views import ConsoleViews
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.errors import DomainError, Forbidden, InvalidInput, Unauthenticated
from walletsvc.governance import approvals, passkeys, totp_resets
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
    runtime = get_runtime(request)
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
    runtime = get_runtime(request)
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
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    runtime = visit.runtime
    try:
        kind = visit.views.request_kind(request_id)
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
    except approvals.ContentTampered as exc:
        runtime.risk.evaluate()  # as the API does: freeze on the integrity failure now
        return _queue(visit, error=exc)
    except DomainError as exc:
        return _queue(visit, error=exc)
    verb = "approved" if decision == "approve" else "rejected"
    message = f"You {verb} request {request_id}; it is now {status.replace('_', ' ')}."
    held = visit.views.held_payouts() if kind == "unfreeze" and status == "approved" else None
    return _queue(visit, message=message, released=held)


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
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    runtime = visit.runtime
    try:
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
    except DomainError as exc:
        return _passkeys(visit, error=exc)
    return _passkeys(visit, status=201, message="Passkey registered: you can approve with it.")


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
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    runtime = visit.runtime
    try:
        _operator(visit)
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
    except DomainError as exc:
        return _staff(visit, error=exc)
    note = "Scan this now with the new member's authenticator app; it is shown only once."
    return _staff(
        visit,
        status=201,
        message=f"Added {created.username} ({created.role}).",
        enrolment=_enrolment(created.username, created.otpauth_uri, note),
    )


@router.post("/staff/{username}/disable", response_class=HTMLResponse)
def disable_member(
    username: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    try:
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
    except DomainError as exc:
        return _staff(visit, error=exc)
    return _staff(visit, message=f"Disabled {username}; their sessions have ended.")


@router.post("/staff/{username}/reset-authenticator", response_class=HTMLResponse)
def reset_authenticator(
    username: str, request: Request, reason: FormText = "", csrf_token: OptionalFormText = None
) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    runtime = visit.runtime
    try:
        _operator(visit)
        pending = totp_resets.request_reset(
            runtime.db,
            runtime.tags,
            username=username,
            reason=reason,
            requester=approvals.Requester(visit.staff.actor, visit.staff.staff_id),
        )
    except DomainError as exc:
        return _staff(visit, error=exc)
    return _staff(
        visit,
        status=201,
        message=(
            f"Authenticator reset of {username} requested: once approval request"
            f" {pending.approval_request_id} reaches its quorum, apply it here to get the new"
            " enrolment (the old authenticator works until then)."
        ),
    )


@router.post("/staff/resets/{reset_id}/apply", response_class=HTMLResponse)
def apply_authenticator_reset(
    reset_id: str, request: Request, csrf_token: OptionalFormText = None
) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    try:
        _operator(visit)
        applied = totp_resets.apply_reset(
            visit.runtime.db, visit.runtime.signer, reset_id=reset_id, actor=visit.staff.actor
        )
    except DomainError as exc:
        return _staff(visit, error=exc)
    note = f"Give this to {applied.username} now: it is shown only once, and works at once."
    return _staff(
        visit,
        status=201,
        message=f"Authenticator of {applied.username} reset.",
        enrolment=_enrolment(applied.username, applied.otpauth_uri, note),
    )


@router.post("/password", response_class=HTMLResponse)
def change_my_password(
    request: Request,
    current_password: FormText = "",
    new_password: FormText = "",
    totp: FormText = "",
    csrf_token: OptionalFormText = None,
) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    runtime = visit.runtime
    try:
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
    except DomainError as exc:
        return _staff(visit, error=exc)
    return _staff(visit, message="Password changed; your other sessions have ended.")


# --- Freeze ----------------------------------------------------------------------------------


@router.post("/freeze", response_class=HTMLResponse)
def freeze_now(
    request: Request, reason: FormText = "", csrf_token: OptionalFormText = None
) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    try:
        freeze(visit.runtime.db, scope="all", wallet=None, reason=reason, actor=visit.staff.actor)
    except DomainError as exc:
        return _page(visit, "freeze.html", error=exc, **visit.views.freeze_page())
    return _page(
        visit,
        "freeze.html",
        status=201,
        message="Frozen: nothing is signed or broadcast until the freeze is lifted.",
        **visit.views.freeze_page(),
    )


@router.get("/freeze", response_class=HTMLResponse)
def freeze_page(request: Request) -> Response:
    return _get(request, lambda v: _page(v, "freeze.html", **v.views.freeze_page()))


@router.post("/unfreeze", response_class=HTMLResponse)
def unfreeze_request(
    request: Request, reason: FormText = "", csrf_token: OptionalFormText = None
) -> Response:
    visit = _posted(request, csrf_token)
    if not isinstance(visit, Visit):
        return visit
    try:
        if visit.staff.role not in UNFREEZE_PROPOSERS:  # as POST /v1/unfreeze
            raise Forbidden("approvers and operators ask for an unfreeze")
        request_id = visit.views.propose_unfreeze(visit.staff, reason)
    except DomainError as exc:
        return _page(visit, "freeze.html", error=exc, **visit.views.freeze_page())
    return _page(
        visit,
        "freeze.html",
        status=201,
        message=f"Unfreeze requested ({request_id}); it lifts when its approvers agree.",
        **visit.views.freeze_page(),
    )


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
