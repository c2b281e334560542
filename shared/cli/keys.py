"""``antihack keys …`` (create, list, show, update, rotate, revoke) and ``antihack usage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from antihack.shared.choices import QUOTA_PERIODS
from antihack.shared.cli.common import iso, json_option, with_session
from antihack.shared.cli.output import emit_json, record, table

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from antihack.shared.domain.schemas import KeyOptions
    from antihack.shared.infra.settings import Settings

# `keys list` columns, in this order, and the key_view field each shows.
LIST_COLUMNS = (
    ("API ID", "api_id"),
    ("NAME", "name"),
    ("QUOTA", "quota"),
    ("PERIOD", "quota_period"),
    ("RATE", "rate"),
    ("BURST", "burst"),
    ("EXPIRES", "expires_at"),
    ("STATE", "state"),
)
USAGE_COLUMNS = ("DATE", "ACCEPTED", "SUCCEEDED", "FAILED", "REFUNDED")


def key_options(fn: Any) -> Any:
    """The options ``keys create`` and ``keys update`` share."""
    opts = [
        click.option("--quota", type=int, help="Requests allowed per quota period."),
        click.option("--quota-period", type=click.Choice(QUOTA_PERIODS)),
        click.option("--rate", type=float, help="Requests per second."),
        click.option("--burst", type=int, help="Requests allowed at once above the rate."),
        click.option("--expires-at", help="ISO 8601 expiry with a time zone."),
        click.option("--permissions", help="Comma-separated endpoints (default: all)."),
        click.option("--webhook-url"),
        click.option("--require-signed/--no-require-signed", default=None),
        click.option(
            "--require-session/--no-require-session",
            default=None,
            help="Every capture must carry a capture session's nonce (POST /v1/sessions).",
        ),
        json_option(),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _options(name: str | None, kw: dict[str, Any]) -> KeyOptions:
    """The options as the admin API's model, checked by it (its errors become messages inside
    ``with_session``); each option's name is its field's (a test checks they stay the same)."""
    from antihack.shared.domain.schemas import KeyOptions

    fields = {field: kw[field] for field in KeyOptions.model_fields if field in kw}
    return KeyOptions.parse({**fields, "name": name, "expires_at": iso(kw["expires_at"])})


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(data)
    else:
        record(data)


@click.group()
def keys() -> None:
    """Manage API keys.

    Secrets are shown only by create and rotate.
    """


@keys.command("create")
@click.option("--name", required=True)
@key_options
def keys_create(name: str, **kw: Any) -> None:
    """Create a key and print its secrets once."""
    from antihack.shared.domain.keys import create_key, secrets_view

    iso(kw["expires_at"])  # a usage error (exit 2) before any database work
    data = with_session(
        lambda s, st: secrets_view(
            *create_key(
                s, st.secret_key, _options(name, kw), allow_private_urls=st.allow_private_urls
            )
        )
    )
    _show(data, kw["as_json"])


@keys.command("list")
@json_option("Print the keys as one JSON array.")
def keys_list(as_json: bool) -> None:
    """List keys."""
    from antihack.shared.domain.keys import key_view, list_keys

    rows = with_session(lambda s, st: [key_view(k) for k in list_keys(s)])
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["state"] = "revoked" if row["revoked"] else "active"
    table(
        [title for title, _ in LIST_COLUMNS],
        ([row[field] for _, field in LIST_COLUMNS] for row in rows),
        right={"QUOTA", "RATE", "BURST"},
    )


@keys.command("show")
@click.argument("api_id")
@json_option()
def keys_show(api_id: str, as_json: bool) -> None:
    """Show one key (no secrets)."""
    from antihack.shared.domain.keys import get_key, key_view

    _show(with_session(lambda s, st: key_view(get_key(s, api_id))), as_json)


@keys.command("update")
@click.argument("api_id")
@click.option("--name")
@key_options
def keys_update(api_id: str, name: str | None, **kw: Any) -> None:
    """Change a key's limits, expiry, permissions or webhook."""
    from antihack.shared.domain.keys import key_view, update_key

    iso(kw["expires_at"])  # a usage error (exit 2) before any database work
    data = with_session(
        lambda s, st: key_view(
            update_key(s, api_id, _options(name, kw), allow_private_urls=st.allow_private_urls)
        )
    )
    _show(data, kw["as_json"])


@keys.command("rotate")
@click.argument("api_id")
@json_option()
def keys_rotate(api_id: str, as_json: bool) -> None:
    """Replace a key's secrets and print the new ones once."""
    from antihack.shared.domain.keys import rotate_key, secrets_view

    _show(with_session(lambda s, st: secrets_view(*rotate_key(s, st.secret_key, api_id))), as_json)


@keys.command("revoke")
@click.argument("api_id")
@json_option()
def keys_revoke(api_id: str, as_json: bool) -> None:
    """Revoke a key: its requests get 401 UNAUTHORIZED from now on."""
    from antihack.shared.domain.keys import key_view, revoke_key

    _show(with_session(lambda s, st: key_view(revoke_key(s, api_id))), as_json)


@click.command()
@click.option("--api-id", help="One key (default: every key).")
@click.option("--days", default=31, show_default=True, type=click.IntRange(1, 366))
@json_option("Print one JSON array, an object per key.")
def usage(api_id: str | None, days: int, as_json: bool) -> None:
    """Show quota use and per-day counts.

    Quota position and per-day accepted/succeeded/failed/refunded counts.
    """
    from antihack.shared.domain.keys import get_key, list_keys
    from antihack.shared.domain.quota import key_usage

    def read(session: Session, _settings: Settings) -> list[dict[str, Any]]:
        keys = [get_key(session, api_id)] if api_id else list_keys(session)
        return [key_usage(session, k, days) for k in keys]

    rows = with_session(read)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        limit = "unlimited" if row["limit"] is None else row["limit"]
        click.echo(f"{row['api_id']}  {row['period_key']}  used {row['used']} of {limit}")
        if not row["days"]:
            click.echo(f"  no requests in the last {days} days")
            continue
        table(
            USAGE_COLUMNS,
            ([d[c.lower()] for c in USAGE_COLUMNS] for d in row["days"]),
            right=USAGE_COLUMNS[1:],
            indent=2,
        )
