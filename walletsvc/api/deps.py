"""Request dependencies: the runtime, the database session, the authenticated principal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from walletsvc.domain.errors import Unauthenticated
from walletsvc.services.runtime import Runtime
from walletsvc.services.tokens import TokenPrincipal, authenticate_token


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.db.read() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_secret(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("missing bearer credentials (Authorization: Bearer <token>)")
    return secret.strip()


def require_scope(scope: str) -> Callable[..., TokenPrincipal]:
    def dependency(request: Request, runtime: RuntimeDep) -> TokenPrincipal:
        secret = bearer_secret(request)
        with runtime.db.read() as session:
            principal = authenticate_token(session, secret)
        principal.require(scope)
        return principal

    return dependency
