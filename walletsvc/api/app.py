"""The FastAPI application: create_app() and its lifespan (engines are made there)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from walletsvc.api.console import install_console
from walletsvc.api.errors import error_responses, install_error_handlers
from walletsvc.api.examples import install_examples
from walletsvc.api.input_guard import install_input_guard
from walletsvc.api.rate_limits import RateLimiter, install_rate_limits
from walletsvc.api.request_ids import install_request_ids
from walletsvc.api.routes import (
    allowlist,
    approvals,
    audit,
    freeze,
    passkeys,
    policy,
    refills,
    rotation,
    rounds,
    sessions,
    shield,
    sweeps,
    system,
    unfreeze,
    wallets,
    webhooks,
    withdrawals,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.config import Settings


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Pass ``runtime`` to share one (tests); otherwise lifespan opens one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or Runtime.open(settings or Settings())
        app.state.runtime = rt
        limits = rt.settings
        app.state.rate_limiter = (
            RateLimiter(limits.rate_limit_requests, limits.rate_limit_window_s)
            if limits.rate_limit_requests
            else None
        )
        # The shared pool of sync routes, bounded (the freeze lane has its own threads).
        anyio.to_thread.current_default_thread_limiter().total_tokens = limits.route_threads
        if owned and rt.settings.run_worker:
            rt.start_background()
        try:
            yield
        finally:
            if owned:
                rt.close()

    app = FastAPI(
        title="walletsvc",
        version="0.1.0",
        summary="Hot-wallet security and withdrawal control",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_input_guard(app)
    # Inside the request-id middleware (installed after it, so outer): a 429 carries the id.
    install_rate_limits(app)
    install_request_ids(app)
    # Any operation may be rate limited or fail unexpectedly; the answer is the error body.
    unexpected = error_responses(429, 500)
    for router in (system.router, wallets.router, withdrawals.router, freeze.router):
        app.include_router(router, prefix="/v1", responses=unexpected)
    governance = (sessions, passkeys, approvals, allowlist, policy, audit, sweeps, refills)
    incident = (unfreeze, rotation, shield)  # governed unfreeze, key rotation, theft shield
    for module in (*governance, *incident, webhooks):
        app.include_router(module.router, prefix="/v1", responses=unexpected)
    # Issue 10: payout rounds.
    app.include_router(rounds.router, prefix="/v1", responses=unexpected)
    app.include_router(system.root_router, responses=unexpected)
    install_console(app)  # issue 12: the treasury console at /console
    install_examples(app)
    return app
