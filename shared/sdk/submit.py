"""The ``antihack submit`` client: submit files concurrently, show progress, optionally wait."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import requests

from antihack.shared.sdk.client import FINAL, Client, ClientError


def _submit_one(client: Client, path: str, return_extra: bool) -> dict[str, Any]:
    """One file as a job; an error answer becomes a row of its own, not an exception."""
    try:
        body = client.submit(Path(path).read_bytes(), return_extra=return_extra)
        body["http_status"] = 202
    except ClientError as exc:
        body = {"status": exc.status, "reason": exc.reason, "http_status": exc.http_status}
    except requests.RequestException as exc:
        body = {"status": "INTERNAL_ERROR", "reason": str(exc), "http_status": 0}
    body["file"] = path
    return body


def _progress(length: int, label: str) -> Any:
    """A progress bar on stderr, so that stdout stays machine-readable."""
    return click.progressbar(length=length, label=label, file=sys.stderr)


def submit_files(
    files: list[str],
    *,
    url: str,
    api_id: str,
    api_secret: str,
    wait: bool,
    timeout: float,
    concurrency: int,
    return_extra: bool,
    as_json: bool,
) -> int:
    """Returns the exit status: 0 when every file was accepted (and, with --wait, finished OK)."""
    client = Client(url, api_id, api_secret)
    results: list[dict[str, Any]] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool,
        _progress(len(files), "submitting") as bar,
    ):
        for body in pool.map(lambda p: _submit_one(client, p, return_extra), files):
            results.append(body)
            bar.update(1)
    failed = sum(1 for r in results if r["http_status"] != 202)
    if wait:
        pending = {r["request_id"]: r for r in results if r["http_status"] == 202}
        deadline = time.monotonic() + timeout
        with _progress(len(pending), "waiting   ") as bar:
            while pending and time.monotonic() < deadline:
                for rid in list(pending):
                    job = client.job(rid)
                    if job.get("status") in FINAL:
                        pending.pop(rid).update(job=job)
                        bar.update(1)
                if pending:
                    time.sleep(0.5)
        for r in results:
            finished = r.get("job")
            if finished is None or (finished.get("result") or {}).get("status") != "OK":
                failed += r["http_status"] == 202
    for r in results:
        if as_json:
            click.echo(json.dumps(r))
        else:
            job = r.get("job") or {}
            result = job.get("result") or {}
            status = result.get("status") or r.get("status")
            score = result.get("score", "")
            line = f"{r['file']}\t{r.get('request_id', '-')}\t{status}\t{score}"
            # The challenge steps not met, e.g. "TURN_LEFT: yaw reached 4°, needs 12°".
            steps = "; ".join(f"{f['step']}: {f['why']}" for f in job.get("failed_steps") or [])
            click.echo(f"{line}\t{steps}" if steps else line)
    return 1 if failed else 0
