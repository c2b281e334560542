"""Micro-batching of model calls across threads (worker/pipeline/batching.py), on the real models
and real face crops, and a real threads-pool worker that batches.

Batches form deterministically here: callers start together at a barrier, and ``max_rows`` is
the rows they bring together, so a lane runs as soon as the last one arrives (the long wait bound
is only a backstop and never what a test measures).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from antihack.shared.domain.capture import parse_capture
from antihack.shared.domain.jobs import Submission, capture_limits, create_job
from antihack.shared.infra.db import transaction
from antihack.shared.infra.queues import ANALYZE_QUEUE, ANALYZE_TASK
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Job
from antihack.worker.celery_app import make_celery
from antihack.worker.pipeline.batching import BatcherClosed
from antihack.worker.pipeline.models import MODEL_NAMES, ModelSet
from antihack.worker.pipeline.run import Analysis, Pipeline, PipelineContext
from bench.bench_batching import OUTPUTS
from bench.bench_models import model_rows
from tests.conftest import Key
from tests.devstack import free_port, wait_until
from tests.fixtures_images import astronaut, jittered
from tests.helpers import face_capture

# Long enough never to be what closes a batch in these tests (see the module docstring).
BACKSTOP_MS = 20_000.0


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.load(intra_threads=1)


@pytest.fixture(scope="module")
def rows(models: ModelSet) -> dict[str, np.ndarray]:
    """Real rows for every model from 6 hand-held frames of a real face (iris: 12 eyes)."""
    return model_rows(models, jittered(astronaut(), 6))


@pytest.fixture
def batched(models: ModelSet) -> Iterator[Callable[..., ModelSet]]:
    made: list[ModelSet] = []

    def make(max_rows: int, wait_ms: float = BACKSTOP_MS) -> ModelSet:
        made.append(models.batched(max_rows, wait_ms))
        return made[-1]

    yield make
    for m in made:
        m.close()


def together(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at once; each result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    return results


def _slices(batch: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *counts])
    return [np.ascontiguousarray(batch[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_concurrent_requests_of_different_sizes_get_their_unbatched_outputs(
    name: str, models: ModelSet, rows: dict[str, np.ndarray], batched: Callable[..., ModelSet]
) -> None:
    counts = (1, 3, 2) if name != "iris_landmarks" else (2, 6, 4)
    requests_ = _slices(rows[name], counts)
    expected = [models.run(name, r, OUTPUTS[name]) for r in requests_]
    merged = batched(max_rows=sum(counts))
    got = together([partial(merged.run, name, r, OUTPUTS[name]) for r in requests_])

    for want, have, n in zip(expected, got, counts, strict=True):
        assert not isinstance(have, Exception), have
        assert len(have) == len(want)
        for w, h in zip(want, have, strict=True):
            assert h.shape == w.shape and h.shape[0] == n and h.dtype == np.float32
            np.testing.assert_allclose(h, w, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(w).max()))
    assert merged.batcher is not None
    stats = merged.batcher.stats()[name]
    assert (stats.batches, stats.requests, stats.rows) == (1, len(counts), sum(counts))


def test_a_lone_request_runs_once_its_wait_is_over(
    models: ModelSet, rows: dict[str, np.ndarray], batched: Callable[..., ModelSet]
) -> None:
    merged = batched(max_rows=32, wait_ms=50)
    one = rows["face_detector"][:1]
    (got, _) = merged.run("face_detector", one, OUTPUTS["face_detector"])
    (want, _) = models.run("face_detector", one, OUTPUTS["face_detector"])
    np.testing.assert_array_equal(got, want)
    # A request larger than a batch runs alone (in chunks of max_rows) instead of waiting.
    small = batched(max_rows=2)
    (big,) = small.run("pad", rows["pad"][:5], ["output"])
    (ref,) = models.run("pad", rows["pad"][:5], ["output"])
    np.testing.assert_allclose(big, ref, rtol=1e-5, atol=1e-6)
    assert small.batcher is not None
    assert small.batcher.stats()["pad"].max_rows == 5


def test_the_pipeline_gets_the_same_analysis_when_jobs_share_batches(
    models: ModelSet, batched: Callable[..., ModelSet]
) -> None:
    """Four jobs analysed at once by one batching pipeline: every model run merges the calls of
    several jobs, and every analysis is the one the unbatched pipeline makes."""
    captures = [
        parse_capture(face_capture(frames=2, session_id=f"s{i}"), capture_limits(Settings()))
        for i in range(4)
    ]
    ctx = PipelineContext.fresh()
    plain = [Pipeline(models).analyze(c, ctx) for c in captures]
    # 2 frames x 4 jobs fill each per-frame run; the eye model (4 rows a job) runs in pairs.
    merged = batched(max_rows=8, wait_ms=2_000)
    pipeline = Pipeline(merged)
    got = together([partial(pipeline.analyze, c, ctx) for c in captures])

    for want, have in zip(plain, got, strict=True):
        assert isinstance(have, Analysis), have
        assert have.score == pytest.approx(want.score, abs=1e-5)
        assert have.reasons == want.reasons and have.best_frame == want.best_frame
        for field, value in want.extra.items():
            assert have.extra[field] == pytest.approx(value, abs=1e-5), field
    assert merged.batcher is not None
    stats = merged.batcher.stats()
    assert stats["face_detector"].max_requests > 1, stats
    assert all(s.max_requests > 1 for s in stats.values()), stats


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda r: r[:, :, :64, :64], "expected"),  # wrong crop size
        (lambda r: r.astype(np.float64), "float32"),
        (lambda r: r[0], "dimensions"),
        (lambda r: r[:0], "empty"),
    ],
    ids=["shape", "dtype", "rank", "empty"],
)
def test_a_malformed_request_fails_alone(
    bad: Callable[[np.ndarray], np.ndarray],
    message: str,
    models: ModelSet,
    rows: dict[str, np.ndarray],
    batched: Callable[..., ModelSet],
) -> None:
    name = "face_detector"
    good = _slices(rows[name], (1, 1, 1))
    merged = batched(max_rows=3)
    calls = [partial(merged.run, name, r, OUTPUTS[name]) for r in good]
    calls.append(partial(merged.run, name, bad(rows[name][:2]), OUTPUTS[name]))
    *fine, refused = together(calls)

    assert isinstance(refused, ValueError) and message in str(refused)
    for r, have in zip(good, fine, strict=True):
        assert not isinstance(have, Exception), have
        np.testing.assert_array_equal(have[1], models.run(name, r, OUTPUTS[name])[1])
    assert merged.batcher is not None
    assert merged.batcher.stats()[name].max_requests == 3


def test_an_unknown_model_is_refused(batched: Callable[..., ModelSet]) -> None:
    with pytest.raises(ValueError, match="no pipeline model"):
        batched(max_rows=4).run("versions", np.zeros((1, 3), np.float32))


def test_an_error_of_the_run_reaches_every_caller_of_the_batch(
    rows: dict[str, np.ndarray], batched: Callable[..., ModelSet]
) -> None:
    """onnxruntime refuses an output name it does not have: the whole batch fails, and each of
    its callers gets that one error."""
    merged = batched(max_rows=3)
    calls = [
        partial(merged.run, "mask_classifier", r, ["no_such_output"])
        for r in _slices(rows["mask_classifier"], (1, 1, 1))
    ]
    errors = together(calls)
    assert all(isinstance(e, Exception) for e in errors), errors
    assert errors[0] is errors[1] is errors[2]  # one run, one error
    assert "no_such_output" in str(errors[0])
    # The lane still serves the next batch (3 rows: it runs at once).
    (probabilities,) = merged.run("mask_classifier", rows["mask_classifier"][:3], ["probabilities"])
    assert probabilities.shape == (3, 2)


def test_close_runs_what_is_queued_then_refuses(
    models: ModelSet, rows: dict[str, np.ndarray], batched: Callable[..., ModelSet]
) -> None:
    merged = batched(max_rows=32)  # two requests cannot fill it: they wait for the backstop
    batcher = merged.batcher
    assert batcher is not None
    pending = _slices(rows["face_landmarks"], (1, 2))
    results: list[Any] = [None, None]

    def call(i: int) -> None:
        results[i] = merged.run("face_landmarks", pending[i], OUTPUTS["face_landmarks"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: batcher.queued() == 2, 30, "two queued requests", interval=0.01)

    closers = [threading.Thread(target=merged.close) for _ in range(3)]  # from several threads
    for t in closers:
        t.start()
    for t in (*closers, *threads):
        t.join(timeout=30)
    assert not any(t.is_alive() for t in (*closers, *threads))
    for r, have in zip(pending, results, strict=True):
        np.testing.assert_array_equal(have[0], models.run("face_landmarks", r)[0])
    assert batcher.closed and batcher.queued() == 0
    assert not any(t.name.startswith("batcher-") for t in threading.enumerate())
    with pytest.raises(BatcherClosed):
        merged.run("face_landmarks", pending[0])
    merged.close()  # again: nothing happens


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_threads_pool_worker_batches_concurrent_jobs_with_the_same_scores(
    base_settings: Settings,
    start_worker: Any,
    make_key: Callable[..., Key],
    sessions: Any,
    models: ModelSet,
) -> None:
    """A real worker on Celery's threads pool with batching on: four jobs queued before it
    starts run at once in its one process, their model calls share runs, and each result has
    the score and extra the unbatched pipeline gives the same capture."""
    port = free_port()
    settings = base_settings.replace(
        worker_pool="threads", batch_max=8, batch_wait_ms=2_000, worker_metrics_port=port
    )
    payloads = [face_capture(frames=2, session_id=f"gpu-{i}") for i in range(4)]
    ids = []
    # A key each: no job sees another's frames as a replay. Made before the transaction below,
    # which would otherwise hold SQLite's write lock that make_key waits for.
    key_ids = [make_key().api_id for _ in payloads]
    with transaction(sessions) as s:
        for payload, key_id in zip(payloads, key_ids, strict=True):
            key = s.get(ApiKey, key_id)
            assert key is not None
            job, _ = create_job(s, key, Submission(payload, "file", return_extra=True))
            ids.append(job.id)
    app = make_celery(base_settings)
    for job_id in ids:
        app.send_task(ANALYZE_TASK, args=(job_id,), queue=ANALYZE_QUEUE)
    start_worker(settings, concurrency=4)

    def finished() -> list[dict[str, Any]] | None:
        with transaction(sessions) as s:
            jobs = [s.get(Job, job_id) for job_id in ids]
            if not all(j is not None and j.status == "SUCCEEDED" for j in jobs):
                return None
            return [j.result.body for j in jobs if j is not None and j.result is not None]

    bodies = wait_until(finished, 120, "the four jobs")
    ctx = PipelineContext.fresh()
    plain = Pipeline(models)
    for payload, body in zip(payloads, bodies, strict=True):
        want = plain.analyze(parse_capture(payload, capture_limits(settings)), ctx)
        assert body["score"] == pytest.approx(want.score, abs=1e-5)
        for field, value in want.extra.items():
            assert body["extra"][field] == pytest.approx(value, abs=1e-5), field

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for model in MODEL_NAMES:
        assert _metric(text, "antihack_model_batch_rows_count", model=model) >= 1, model
    # Several jobs' calls merged into one run: more calls than runs.
    calls = _metric(text, "antihack_model_batch_requests_sum", model="face_detector")
    runs = _metric(text, "antihack_model_batch_requests_count", model="face_detector")
    assert calls > runs, text


def test_threads_of_one_worker_process_share_one_state_and_one_model_load(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under the threads pool every task thread asks for the process's state at once: they all
    get the same one, the models load once, batched as the settings say."""
    from antihack.worker import state as worker_state

    monkeypatch.setattr(worker_state, "_state", None)  # this test's own process state
    settings = base_settings.replace(batch_max=8, batch_wait_ms=1.5)
    caplog.set_level("INFO", logger="antihack.worker.state")

    def pipeline_of_this_thread() -> tuple[object, object]:
        st = worker_state.get_state(settings)
        return st, st.pipeline

    got = together([pipeline_of_this_thread] * 8)
    states = {id(s) for s, _ in got}
    pipelines = {id(p) for _, p in got}
    assert len(states) == 1 and len(pipelines) == 1, got
    assert [r.getMessage() for r in caplog.records].count(
        "models loaded: providers CPUExecutionProvider, batching max 8 rows, wait 1.5 ms"
    ) == 1
    st, pipeline = got[0]
    assert isinstance(pipeline, Pipeline) and pipeline.models.batcher is not None
    assert pipeline.models.batcher.max_rows == 8
    assert isinstance(st, worker_state.WorkerState)
    st.close()
    assert pipeline.models.batcher.closed
