"""/metrics: request counters by URL rule, scrape-time gauges, and the workers' counters and
stage timings through the shared multiprocess directory (real API and worker processes)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from antihack.shared.infra.queues import ALL_QUEUES
from antihack.shared.infra.settings import Settings
from tests.conftest import Key, create_test_app
from tests.devstack import free_port
from tests.helpers import face_capture

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value (0 when absent: a counter nobody incremented yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: FlaskClient, **headers: str) -> Samples:
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain")
    return parse(resp.get_data(as_text=True))


def test_requests_are_counted_by_rule_not_path(client: FlaskClient, key: Key) -> None:
    before = scrape(client)
    for _ in range(3):
        job_id = "TID" + "0" * 32
        assert client.get(f"/v1/jobs/{job_id}", headers=key.headers).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)
    rule = {"endpoint": "/v1/jobs/<request_id>", "method": "GET", "status": "404"}
    assert (
        value(after, "antihack_http_requests_total", **rule)
        - value(before, "antihack_http_requests_total", **rule)
        == 3
    )
    unmatched = {"endpoint": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "antihack_http_requests_total", **unmatched) >= 1
    assert not any("TID" in str(labels) for _, labels in after), "raw paths leaked into labels"
    timed = {"endpoint": "/v1/jobs/<request_id>", "method": "GET"}
    assert value(after, "antihack_http_request_duration_seconds_count", **timed) >= 3


def test_scrape_time_gauges(
    client: FlaskClient, make_key: Callable[..., Key], base_settings: Settings
) -> None:
    limited = make_key(quota=10, quota_period="day")
    resp = client.post(
        "/v1/jobs",
        headers=limited.headers,
        data={"liveness_data_file": (io.BytesIO(face_capture(2)), "c.pb")},
    )
    assert resp.status_code == 202
    samples = scrape(client)
    for state in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED"):
        assert ("antihack_jobs", frozenset({("state", state)})) in samples
    assert value(samples, "antihack_jobs", state="QUEUED") >= 1
    for queue in ALL_QUEUES:
        assert ("antihack_queue_depth", frozenset({("queue", queue)})) in samples
    assert value(samples, "antihack_queue_depth", queue="analyze") >= 1
    assert value(samples, "antihack_quota_used", api_id=limited.api_id, period="day") == 1
    assert value(samples, "antihack_quota_limit", api_id=limited.api_id, period="day") == 10
    assert value(samples, "antihack_metrics_source_up", source="database") == 1
    assert value(samples, "antihack_metrics_source_up", source="redis") == 1


def test_metrics_token_when_set(base_settings: Settings) -> None:
    client = create_test_app(base_settings.replace(metrics_token="scrape-me-please")).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["status"] == "UNAUTHORIZED"
    wrong = client.get("/metrics", headers={"Authorization": "Bearer wrong-token"})
    assert wrong.status_code == 401
    scrape(client, Authorization="Bearer scrape-me-please")


def test_worker_counters_and_stage_timings_reach_the_api(
    start_worker: Any, start_api: Any, key: Key, base_settings: Settings
) -> None:
    """A real job through real processes: the API's /metrics shows the submit rule's counter,
    the job counted as SUCCEEDED by the worker and its pipeline stage histogram; the worker's
    own metrics port (the compose set-up) shows the same counters."""
    from jsonschema import Draft202012Validator

    from antihack.api.openapi import document

    port = free_port()
    start_worker(base_settings.replace(worker_metrics_port=port), concurrency=1)
    base = start_api()

    def get_metrics(url: str) -> Samples:
        resp = requests.get(url, timeout=30)
        assert resp.status_code == 200
        return parse(resp.text)

    before = get_metrics(base + "/metrics")
    resp = requests.post(
        base + "/face/liveness_anti_hack",
        files={"liveness_data_file": ("c.pb", face_capture(3))},
        data={"return_extra": "1"},
        headers=key.headers,
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    seed = resp.json()
    after = get_metrics(base + "/metrics")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    submit = {"endpoint": "/face/liveness_anti_hack", "method": "POST", "status": "200"}
    assert delta("antihack_http_requests_total", **submit) == 1
    # At least: jobs other tests left in the queue may finish in between.
    assert delta("antihack_jobs_finished_total", state="SUCCEEDED", status="OK") >= 1
    assert delta("antihack_job_attempts_total", outcome="finished") >= 1
    stages = {
        dict(labels)["stage"]
        for (name, labels), v in after.items()
        if name == "antihack_pipeline_stage_seconds_count" and v > 0
    }
    assert {"decode", "detect", "landmarks", "quality", "pad", "fusion"} <= stages, stages
    assert delta("antihack_pipeline_stage_seconds_count", stage="detect") >= 1
    assert delta("antihack_job_analysis_seconds_count") >= 1
    assert value(after, "antihack_jobs", state="SUCCEEDED") >= 1
    assert value(after, "antihack_workers_ready") >= 1

    own = get_metrics(f"http://127.0.0.1:{port}/metrics")
    assert value(own, "antihack_jobs_finished_total", state="SUCCEEDED", status="OK") >= 1
    assert value(own, "antihack_pipeline_stage_seconds_count", stage="detect") >= 1

    # The documented schemas describe what really came back.
    doc = document()

    def check(body: Any, schema: str) -> None:
        ref = {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
        Draft202012Validator(ref).validate(body)

    check(seed, "SeedResult")
    assert len(seed["extra"]) == 14
    job = requests.get(f"{base}/v1/jobs/{seed['request_id']}", headers=key.headers, timeout=10)
    check(job.json(), "Job")
