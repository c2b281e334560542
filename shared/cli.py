"""The ``antihack`` command line."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from shared.settings import Settings, SettingsError

WORKER_POOLS = ("prefork", "threads", "solo")  # Celery pools `antihack worker` runs with


def _settings() -> Settings:
    from shared.logs import resolve_format
    from shared.runtime import prepare

    try:
        settings = prepare(Settings.from_env())
        resolve_format(settings.log_format)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """antihack: a self-hosted face-liveness anti-hack service."""


# --- processes --------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", type=int, default=None, help="Worker processes (default: CPU count).")
@click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    envvar="ANTIHACK_DEMO",
    help="Serve the /demo page with the demo key (env ANTIHACK_DEMO=off turns it off too).",
)
def serve(host: str, port: int, workers: int | None, demo: bool) -> None:
    """Run API, worker and scheduler as one process tree.

    API, worker, scheduler (and the embedded Redis) as one supervised process tree; it prints
    the demo key and a curl that sends a fresh sample capture.
    """
    from shared.serve import serve as run

    sys.exit(run(_settings(), host, port, workers, demo_page=demo))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--processes", default=2, show_default=True, type=int)
@click.option("--threads", default=16, show_default=True, type=int)
def api(host: str, port: int, processes: int, threads: int) -> None:
    """Run the HTTP API under gunicorn."""
    from shared.logs import configure_logging, gunicorn_logconfig
    from shared.metrics import configure_multiprocess, mark_dead

    settings = _settings()
    configure_multiprocess(settings)  # before anything imports prometheus_client
    configure_logging(settings, "api")

    from gunicorn.app.base import BaseApplication

    from api import create_app

    def child_exit(_server: Any, child: Any) -> None:
        mark_dead(child.pid)

    class App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", processes)
            self.cfg.set("threads", threads)
            # gthread, with gunicorn's own refusals (414, 431, 400) as the seed's JSON errors.
            self.cfg.set("worker_class", "api.gunicorn_worker.JsonErrorWorker")
            # A synchronous request may wait ANTIHACK_SYNC_WAIT_S for its result.
            self.cfg.set("timeout", int(settings.sync_wait_s + 30))
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("proc_name", "antihack-api")
            self.cfg.set("accesslog", None)
            self.cfg.set("logconfig_dict", gunicorn_logconfig(settings))
            self.cfg.set("child_exit", child_exit)

        def load(self) -> Any:
            return create_app(settings)

    App().run()


@main.command()
@click.option(
    "--concurrency", type=int, default=None, help="Processes or threads (default: CPU count)."
)
@click.option("--queues", default=None, help="Comma-separated queues (default: all).")
@click.option(
    "--pool",
    type=click.Choice(WORKER_POOLS),
    default=None,
    help="prefork (CPU) or threads (GPU: one process, models loaded once) "
    "[default: ANTIHACK_WORKER_POOL, prefork].",
)
@click.option(
    "--batch-max",
    type=click.IntRange(min=0),
    default=None,
    help="Batch model calls of concurrent jobs, at most this many rows (0: off) "
    "[default: ANTIHACK_BATCH_MAX, 0].",
)
def worker(
    concurrency: int | None, queues: str | None, pool: str | None, batch_max: int | None
) -> None:
    """Run a Celery worker.

    It refuses to start if a model file is missing or altered.
    """
    from shared.metrics import configure_multiprocess, serve_worker_metrics

    settings = _settings()
    if concurrency:
        settings = settings.replace(worker_concurrency=concurrency)
    if pool:
        settings = settings.replace(worker_pool=pool)
    if batch_max is not None:
        settings = settings.replace(batch_max=batch_max)
    if settings.worker_pool not in WORKER_POOLS:
        raise click.ClickException(f"unknown worker pool {settings.worker_pool!r}")
    if settings.batch_max < 0 or settings.batch_wait_ms < 0:
        raise click.ClickException("ANTIHACK_BATCH_MAX and ANTIHACK_BATCH_WAIT_MS must be >= 0")
    if settings.batch_max and settings.worker_pool != "threads":
        # One job per process: every model call would wait for company that never comes.
        click.echo("worker: batching only pays with --pool threads; it adds waits here", err=True)
    configure_multiprocess(settings)  # before anything imports prometheus_client
    _celery_logging(settings, "worker")

    from shared.queues import ALL_QUEUES
    from worker import make_celery
    from worker.pipeline.models import verify_models

    problems = verify_models(settings.model_path)
    if problems:
        for problem in problems:
            click.echo(f"worker: {problem}", err=True)
        raise click.ClickException("model files are missing or altered; refusing to start")
    app = make_celery(settings)
    if settings.worker_metrics_port:
        serve_worker_metrics(settings.worker_metrics_port)
    argv = [
        *_quiet(settings),
        "worker",
        f"--loglevel={settings.log_level}",
        f"--queues={queues or ','.join(ALL_QUEUES)}",
        f"--pool={settings.worker_pool}",
        "--without-gossip",
        "--without-mingle",
    ]
    if settings.worker_concurrency:
        argv.append(f"--concurrency={settings.worker_concurrency}")
    app.worker_main(argv)


@main.command()
def beat() -> None:
    """Run the scheduler: sweeper, purge, webhook dispatcher.

    The job sweeper (every ANTIHACK_SWEEP_INTERVAL_S, 10 s), the hourly purge, and the webhook
    dispatcher that sends due webhook deliveries (every ANTIHACK_WEBHOOK_DISPATCH_INTERVAL_S,
    2 s). Run exactly one beat per deployment.
    """
    from worker import make_celery

    settings = _settings()
    _celery_logging(settings, "beat")
    app = make_celery(settings)
    schedule = settings.data_path / "celerybeat-schedule"
    app.start(
        [*_quiet(settings), "beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"]
    )


def _celery_logging(settings: Settings, role: str) -> None:
    """Our formatter instead of Celery's (a receiver of setup_logging stops Celery's own)."""
    from celery.signals import setup_logging

    from shared.logs import configure_logging

    def setup(**_: Any) -> None:
        configure_logging(settings, role)

    setup_logging.connect(setup, weak=False)
    configure_logging(settings, role)


def _quiet(settings: Settings) -> list[str]:
    """No banner on stdout when the logs are JSON lines (it is not one)."""
    from shared.logs import resolve_format

    return ["--quiet"] if resolve_format(settings.log_format) == "json" else []


@main.command()
@click.option("--check", is_flag=True, help="Only check that models and migrations agree.")
def migrate(check: bool) -> None:
    """Apply database migrations (alembic upgrade head)."""
    from shared.migrate import check as check_models
    from shared.migrate import upgrade

    url = _settings().effective_database_url
    if check:
        check_models(url)
        click.echo("models and migrations agree")
    else:
        upgrade(url)


# --- keys -------------------------------------------------------------------------------------


def _iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not ISO 8601: {value}") from None
    if parsed.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2027-01-01T00:00:00+00:00")
    return parsed


def key_options(fn: Any) -> Any:
    opts = [
        click.option("--quota", type=int, help="Requests allowed per quota period."),
        click.option("--quota-period", type=click.Choice(["day", "month", "total"])),
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
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _options(name: str | None, kw: dict[str, Any]) -> Any:
    from shared.keys import KeyOptions

    return KeyOptions(
        name=name,
        quota=kw["quota"],
        quota_period=kw["quota_period"],
        rate=kw["rate"],
        burst=kw["burst"],
        expires_at=_iso(kw["expires_at"]),
        permissions=kw["permissions"],
        webhook_url=kw["webhook_url"],
        require_signed=kw["require_signed"],
        require_session=kw["require_session"],
    )


def _with_session(fn: Any) -> Any:
    from shared.db import make_engine, make_sessionmaker, transaction
    from shared.errors import ApiError

    settings = _settings()
    engine = make_engine(settings.effective_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return fn(session, settings)
    except ApiError as exc:
        raise click.ClickException(exc.reason) from None
    finally:
        engine.dispose()


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        width = max(len(k) for k in data)
        for k, v in data.items():
            click.echo(f"{k:<{width}}  {_human(v)}")


def _human(value: Any) -> str:
    """A value as a person reads it: no Python ``None``, ``True`` or list reprs."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


@main.group()
def keys() -> None:
    """Manage API keys.

    Secrets are shown only by create and rotate.
    """


@keys.command("create")
@click.option("--name", required=True)
@key_options
def keys_create(name: str, **kw: Any) -> None:
    """Create a key and print its secrets once."""
    from shared.keys import create_key, secrets_view

    opts = _options(name, kw)
    data = _with_session(
        lambda s, st: secrets_view(
            *create_key(s, st.secret_key, opts, allow_private_urls=st.allow_private_urls)
        )
    )
    _show(data, kw["as_json"])


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json: bool) -> None:
    """List keys."""
    from shared.keys import key_view, list_keys

    rows = _with_session(lambda s, st: [key_view(k) for k in list_keys(s)])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'API ID':<28} {'NAME':<20} {'QUOTA':>10} {'PERIOD':<6} {'STATE':<8}")
    for r in rows:
        state = "revoked" if r["revoked"] else "active"
        quota = "-" if r["quota"] is None else r["quota"]
        click.echo(
            f"{r['api_id']:<28} {r['name'][:20]:<20} {quota:>10} {r['quota_period']:<6} {state}"
        )


@keys.command("show")
@click.argument("api_id")
@click.option("--json", "as_json", is_flag=True)
def keys_show(api_id: str, as_json: bool) -> None:
    """Show one key (no secrets)."""
    from shared.keys import get_key, key_view

    _show(_with_session(lambda s, st: key_view(get_key(s, api_id))), as_json)


@keys.command("update")
@click.argument("api_id")
@click.option("--name")
@key_options
def keys_update(api_id: str, name: str | None, **kw: Any) -> None:
    """Change a key's limits, expiry, permissions or webhook."""
    from shared.keys import key_view, update_key

    opts = _options(name, kw)
    data = _with_session(
        lambda s, st: key_view(
            update_key(s, api_id, opts, allow_private_urls=st.allow_private_urls)
        )
    )
    _show(data, kw["as_json"])


@keys.command("rotate")
@click.argument("api_id")
@click.option("--json", "as_json", is_flag=True)
def keys_rotate(api_id: str, as_json: bool) -> None:
    """Replace a key's secrets and print the new ones once."""
    from shared.keys import rotate_key, secrets_view

    _show(_with_session(lambda s, st: secrets_view(*rotate_key(s, st.secret_key, api_id))), as_json)


@keys.command("revoke")
@click.argument("api_id")
@click.option("--json", "as_json", is_flag=True)
def keys_revoke(api_id: str, as_json: bool) -> None:
    """Revoke a key: its requests get 401 UNAUTHORIZED from now on."""
    from shared.keys import key_view, revoke_key

    _show(_with_session(lambda s, st: key_view(revoke_key(s, api_id))), as_json)


@main.command()
@click.option("--api-id", help="One key (default: every key).")
@click.option("--days", default=31, show_default=True, type=click.IntRange(1, 366))
@click.option("--json", "as_json", is_flag=True)
def usage(api_id: str | None, days: int, as_json: bool) -> None:
    """Show quota use and per-day counts.

    Quota position and per-day accepted/succeeded/failed/refunded counts.
    """
    from shared.keys import get_key, list_keys
    from shared.quota import key_usage

    def read(session: Any, _settings: Settings) -> list[dict[str, Any]]:
        keys = [get_key(session, api_id)] if api_id else list_keys(session)
        return [key_usage(session, k, days) for k in keys]

    rows = _with_session(read)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        limit = "unlimited" if row["limit"] is None else row["limit"]
        click.echo(f"{row['api_id']}  {row['period_key']}  used {row['used']} of {limit}")
        click.echo(f"  {'date':<10} {'accepted':>9} {'succeeded':>9} {'failed':>7} {'refunded':>8}")
        for d in row["days"]:
            click.echo(
                f"  {d['date']:<10} {d['accepted']:>9} {d['succeeded']:>9} "
                f"{d['failed']:>7} {d['refunded']:>8}"
            )


# --- client -----------------------------------------------------------------------------------


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, envvar="ANTIHACK_URL")
@click.option("--api-id", envvar="ANTIHACK_API_ID", help="API key id. Env: ANTIHACK_API_ID.")
@click.option(
    "--api-secret", envvar="ANTIHACK_API_SECRET", help="API key secret. Env: ANTIHACK_API_SECRET."
)
@click.option("--wait", is_flag=True, help="Poll until every job has finished.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--concurrency", default=8, show_default=True)
@click.option("--return-extra/--no-return-extra", default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
def submit(files: tuple[str, ...], **kw: Any) -> None:
    """Submit capture files as jobs.

    With a progress bar; --wait polls for their results.
    """
    from shared.client import submit_files

    for option, env in (("api_id", "ANTIHACK_API_ID"), ("api_secret", "ANTIHACK_API_SECRET")):
        if not kw[option]:
            flag = "--" + option.replace("_", "-")
            raise click.UsageError(f"Missing option '{flag}': pass it or set {env}.")
    sys.exit(submit_files(list(files), **kw))


def _register_pipeline_commands() -> None:
    """Commands that live beside the code they drive."""
    from shared.cli_attacks import attacks
    from shared.cli_sample import make_sample
    from worker.pipeline.eval import eval_cmd

    main.add_command(make_sample, "make-sample")
    main.add_command(eval_cmd, "eval")
    main.add_command(attacks, "attacks")


_register_pipeline_commands()

if __name__ == "__main__":
    main()
