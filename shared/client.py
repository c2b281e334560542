"""The ``antihack submit`` client: submit files concurrently, show progress, optionally wait."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import requests

FINAL = {"SUCCEEDED", "FAILED"}


def _submit_one(
    session: requests.Session, base: str, path: str, return_extra: bool
) -> dict[str, Any]:
    with open(path, "rb") as fh:
        resp = session.post(
            f"{base}/v1/jobs",
            files={"liveness_data_file": (Path(path).name, fh, "application/octet-stream")},
            data={"return_extra": "1" if return_extra else "0"},
            timeout=60,
        )
    try:
        body: dict[str, Any] = resp.json()
    except ValueError:
        body = {"status": "INTERNAL_ERROR", "reason": f"HTTP {resp.status_code}, not JSON"}
    body["file"] = path
    body["http_status"] = resp.status_code
    return body


def _progress(length: int, label: str) -> Any:
    """A progress bar on stderr, so that stdout stays machine-readable."""
    stream = click.get_text_stream("stderr")  # type: ignore[operator]
    return click.progressbar(length=length, label=label, file=stream)


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
    base = url.rstrip("/")
    session = requests.Session()
    session.headers.update({"X-DF-API-ID": api_id, "X-DF-API-SECRET": api_secret})
    results: list[dict[str, Any]] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool,
        _progress(len(files), "submitting") as bar,
    ):
        for body in pool.map(lambda p: _submit_one(session, base, p, return_extra), files):
            results.append(body)
            bar.update(1)
    failed = sum(1 for r in results if r["http_status"] != 202)
    if wait:
        pending = {r["request_id"]: r for r in results if r["http_status"] == 202}
        deadline = time.monotonic() + timeout
        with _progress(len(pending), "waiting   ") as bar:
            while pending and time.monotonic() < deadline:
                for rid in list(pending):
                    job = session.get(f"{base}/v1/jobs/{rid}", timeout=30).json()
                    if job.get("status") in FINAL:
                        pending.pop(rid).update(job=job)
                        bar.update(1)
                if pending:
                    time.sleep(0.5)
        for r in results:
            job = r.get("job")
            if job is None or (job.get("result") or {}).get("status") != "OK":
                failed += r["http_status"] == 202
    for r in results:
        if as_json:
            click.echo(json.dumps(r))
        else:
            job = r.get("job") or {}
            result = job.get("result") or {}
            status = result.get("status") or r.get("status")
            score = result.get("score", "")
            click.echo(f"{r['file']}\t{r.get('request_id', '-')}\t{status}\t{score}")
    return 1 if failed else 0
