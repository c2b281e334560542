"""The long-running processes: ``serve``, ``api``, ``worker``, ``beat``, and ``migrate``.

Each imports its server (gunicorn, Celery, Alembic) when it runs, not when the CLI loads.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from antihack.shared.choices import WORKER_POOLS
from antihack.shared.cli.common import load_settings

if TYPE_CHECKING:
    from antihack.shared.infra.settings import Settings


@click.command()
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
    from antihack.shared.cli.serve import serve as run

    sys.exit(run(load_settings(), host, port, workers, demo_page=demo))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--processes", default=2, show_default=True, type=int)
@click.option("--threads", default=16, show_default=True, type=int)
def api(host: str, port: int, processes: int, threads: int) -> None:
    """Run the HTTP API under gunicorn."""
    from antihack.shared.infra.logs import configure_logging, gunicorn_logconfig
    from antihack.shared.infra.metrics import configure_multiprocess, mark_dead

    settings = load_settings()
    configure_multiprocess(settings)  # before anything imports prometheus_client
    configure_logging(settings, "api")

    from gunicorn.app.base import BaseApplication

    from antihack.api import create_app

    def child_exit(_server: Any, child: Any) -> None:
        mark_dead(child.pid)

    class App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", processes)
            self.cfg.set("threads", threads)
            # gthread, with gunicorn's own refusals (414, 431, 400) as the seed's JSON errors.
            self.cfg.set("worker_class", "antihack.api.gunicorn_worker.JsonErrorWorker")
            # A synchronous request may wait ANTIHACK_SYNC_WAIT_S for its result.
            self.cfg.set("timeout", int(settings.sync_wait_s + 30))
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("proc_name", "antihack-api")
            self.cfg.set("accesslog", None)
            self.cfg.set("logconfig_dict", gunicorn_logconfig(settings))
            self.cfg.set("child_exit", child_exit)

        def load(self) -> Any:
            return create_app(settings, threads)

    App().run()


@click.command()
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
    from antihack.shared.infra.metrics import configure_multiprocess, serve_worker_metrics

    settings = load_settings()
    if concurrency:
        settings = settings.replace(worker_concurrency=concurrency)
    if pool:
        settings = settings.replace(worker_pool=pool)
    if batch_max is not None:
        settings = settings.replace(batch_max=batch_max)
    if settings.batch_max < 0 or settings.batch_wait_ms < 0:
        raise click.ClickException("ANTIHACK_BATCH_MAX and ANTIHACK_BATCH_WAIT_MS must be >= 0")
    if settings.batch_max and settings.worker_pool != "threads":
        # One job per process: every model call would wait for company that never comes.
        click.echo("worker: batching only pays with --pool threads; it adds waits here", err=True)
    configure_multiprocess(settings)  # before anything imports prometheus_client
    _celery_logging(settings, "worker")

    from antihack.shared.infra.queues import ALL_QUEUES
    from antihack.worker import make_celery
    from antihack.worker.pipeline.models import verify_models

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


@click.command()
def beat() -> None:
    """Run the scheduler: sweeper, purge, webhook dispatcher.

    The job sweeper (every ANTIHACK_SWEEP_INTERVAL_S, 10 s), the hourly purge, and the webhook
    dispatcher that sends due webhook deliveries (every ANTIHACK_WEBHOOK_DISPATCH_INTERVAL_S,
    2 s). Run exactly one beat per deployment.
    """
    from antihack.worker import make_celery

    settings = load_settings()
    _celery_logging(settings, "beat")
    app = make_celery(settings)
    schedule = settings.data_path / "celerybeat-schedule"
    app.start(
        [*_quiet(settings), "beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"]
    )


def _celery_logging(settings: Settings, role: str) -> None:
    """Our formatter instead of Celery's (a receiver of setup_logging stops Celery's own)."""
    from celery.signals import setup_logging

    from antihack.shared.infra.logs import configure_logging

    def setup(**_: Any) -> None:
        configure_logging(settings, role)

    setup_logging.connect(setup, weak=False)
    configure_logging(settings, role)


def _quiet(settings: Settings) -> list[str]:
    """No banner on stdout when the logs are JSON lines (it is not one)."""
    from antihack.shared.infra.logs import resolve_format

    return ["--quiet"] if resolve_format(settings.log_format) == "json" else []


@click.command()
@click.option("--check", is_flag=True, help="Only check that models and migrations agree.")
def migrate(check: bool) -> None:
    """Apply database migrations (alembic upgrade head)."""
    from antihack.shared.infra.migrate import MigrationsDisagree, upgrade
    from antihack.shared.infra.migrate import check as check_models

    url = load_settings().effective_database_url
    if check:
        try:
            check_models(url)
        except MigrationsDisagree as exc:  # one line, not Alembic's traceback; exit status 1
            raise click.ClickException(f"{exc} (run `antihack migrate`)") from None
        click.echo("models and migrations agree")
    else:
        upgrade(url)
