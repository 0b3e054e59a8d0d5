"""Request dependencies: the runtime and the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import Depends, Request

from walletsvc.api.tls import client_certificate_fingerprint
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.access import ROLES
from walletsvc.domain.errors import Forbidden, Unauthenticated
from walletsvc.governance.sessions import authenticate_session, is_session_token
from walletsvc.governance.staff import StaffPrincipal
from walletsvc.governance.tokens import TokenPrincipal, authenticate_api_token


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    """The runtime as a dependency. Async so that FastAPI runs it on the event loop: a sync
    dependency is handed to a thread of the route pool, one more hop per request for a line
    that does not block (docs/performance.md, "Thread hops per request")."""
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def bearer_secret(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("missing bearer credentials (Authorization: Bearer <token>)")
    return secret.strip()


# --- Principals: machine tokens and staff sessions, both as `Authorization: Bearer` -----------

Principal = TokenPrincipal | StaffPrincipal
ALL_ROLES: frozenset[str] = frozenset(ROLES)


def authenticate(request: Request, runtime: Runtime) -> Principal:
    """A staff session (prefix ``wsst_``) or an API token; 401 if neither is valid."""
    secret = bearer_secret(request)
    if is_session_token(secret):
        return authenticate_session(runtime.db, runtime.tags, secret)
    principal = authenticate_api_token(runtime.db, runtime.tags, secret)
    bound = principal.cert_fingerprint
    if bound is not None and client_certificate_fingerprint(request) != bound:
        # A stolen token is useless without the client's certificate and key.
        raise Unauthenticated("this API token is accepted only with its client certificate")
    return principal


def authorize(principal: Principal, scopes: Iterable[str], roles: Iterable[str]) -> None:
    """Allow a token holding any of ``scopes`` or a staff member with any of ``roles``."""
    scopes, roles = tuple(scopes), frozenset(roles)
    if isinstance(principal, StaffPrincipal):
        if principal.role in roles:
            return
        raise Forbidden(f"the {principal.role} role may not do this")
    if not scopes:
        raise Forbidden("API tokens may not do this; it needs a staff session")
    for scope in scopes:
        try:
            principal.require(scope)
            return
        except Forbidden:
            continue
    raise Forbidden(f"this token lacks the '{' or '.join(scopes)}' scope")


def require_access(
    *, scopes: Iterable[str] = (), roles: Iterable[str] = ()
) -> Callable[..., Principal]:
    wanted_scopes, wanted_roles = tuple(scopes), frozenset(roles)

    def dependency(request: Request, runtime: RuntimeDep) -> Principal:
        principal = authenticate(request, runtime)
        authorize(principal, wanted_scopes, wanted_roles)
        return principal

    return dependency


def require_scope(scope: str) -> Callable[..., Principal]:
    """A token scope. Read scopes also admit staff of every role: approvers must be able to
    see what they approve, auditors read everything. Write scopes stay token-only."""
    readable = scope == "read" or scope.endswith(":read")
    return require_access(scopes=(scope,), roles=ALL_ROLES if readable else ())


def require_staff(*roles: str) -> Callable[..., StaffPrincipal]:
    wanted = frozenset(roles or ROLES)

    def dependency(request: Request, runtime: RuntimeDep) -> StaffPrincipal:
        principal = authenticate(request, runtime)
        if not isinstance(principal, StaffPrincipal):
            raise Forbidden("this needs a staff session, not an API token")
        authorize(principal, (), wanted)
        return principal

    return dependency
