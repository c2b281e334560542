"""``antihack submit``: send capture files to a running API as jobs."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.command()
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
    from antihack.shared.sdk.submit import submit_files

    for option, env in (("api_id", "ANTIHACK_API_ID"), ("api_secret", "ANTIHACK_API_SECRET")):
        if not kw[option]:
            flag = "--" + option.replace("_", "-")
            raise click.UsageError(f"Missing option '{flag}': pass it or set {env}.")
    sys.exit(submit_files(list(files), **kw))
