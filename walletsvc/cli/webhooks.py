"""`walletsvc webhook add|list|remove|deliveries|replay`: webhooks without the API.

The operator registers a URL for an API token (the token may also do it itself through
`POST /v1/webhooks`); the signing secret is printed once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from walletsvc.cli.conventions import operator_actor
from walletsvc.config import Settings
from walletsvc.domain.errors import DomainError

webhook_app = typer.Typer(
    no_args_is_help=True, help="Signed webhooks: URLs that receive events, and their deliveries."
)
CLI_ACTOR = operator_actor()


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@webhook_app.command("add")
def add(
    token: Annotated[str, typer.Option(help="The id of the API token that owns the webhook")],
    url: Annotated[str, typer.Option(help="The https URL that receives the events")],
    event: Annotated[
        list[str] | None,
        typer.Option(help="An event type to receive (repeat); none: every type"),
    ] = None,
) -> None:
    """Register a webhook for a token; prints its signing secret once."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.keys.kek import load_kek
    from walletsvc.webhooks.service import create_webhook

    s = Settings()
    try:
        created = create_webhook(
            open_database(s),
            load_kek(s.kek_path).webhook_sealer(),
            token_id=token,
            url=url,
            event_types=list(event or []),
            actor=CLI_ACTOR,
            allow_plain_http=s.webhook_allow_plain_http,
        )
    except DomainError as exc:
        _fail(exc.message)
        return
    types = ",".join(created["event_types"]) or "all events"
    typer.echo(f"webhook id: {created['id']}  url: {created['url']}  events: {types}")
    typer.echo("signing secret (shown once; verify X-Walletsvc-Signature with it):")
    typer.echo(created["secret"])


@webhook_app.command("list")
def list_command() -> None:
    """Every webhook that is not removed."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.webhooks.service import Owner, list_webhooks

    views = list_webhooks(open_database(Settings()), Owner(CLI_ACTOR, None))
    if not views:
        typer.echo("no webhooks (add one with `walletsvc webhook add`)")
    for view in views:
        types = ",".join(view["event_types"]) or "all events"
        typer.echo(f"{view['id']}  token {view['token_id']}  {view['url']}  {types}")


@webhook_app.command("remove")
def remove(webhook_id: str) -> None:
    """Stop deliveries to a webhook (its delivery log stays)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.webhooks.service import Owner, remove_webhook

    try:
        remove_webhook(open_database(Settings()), webhook_id, Owner(CLI_ACTOR, None))
    except DomainError as exc:
        _fail(exc.message)
    typer.echo("removed")


@webhook_app.command("deliveries")
def deliveries(
    webhook_id: str,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 50,
) -> None:
    """A webhook's delivery log, newest first."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.webhooks.service import Owner, list_deliveries

    try:
        views = list_deliveries(
            open_database(Settings()), webhook_id, Owner(CLI_ACTOR, None), limit=limit
        )
    except DomainError as exc:
        _fail(exc.message)
        return
    if not views:
        typer.echo("no deliveries yet")
    for v in views:
        answer = v["last_status_code"] or v["last_error"] or "-"
        typer.echo(
            f"{v['id']}  {v['event_type']:26} {v['status']:9} attempts {v['attempts']}  {answer}"
        )


@webhook_app.command("replay")
def replay(webhook_id: str, delivery_id: str) -> None:
    """Send a delivery's event again (a new delivery, due at once)."""
    from walletsvc.bootstrap.runtime import open_database
    from walletsvc.webhooks.service import Owner, replay_delivery

    try:
        view = replay_delivery(
            open_database(Settings()), webhook_id, delivery_id, Owner(CLI_ACTOR, None)
        )
    except DomainError as exc:
        _fail(exc.message)
        return
    typer.echo(f"replay queued: delivery {view['id']}")
