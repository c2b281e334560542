"""A pipeline that analyses nothing, for the queue benchmark only.

Enabled by ``ANTIHACK_BENCH_NOOP_PIPELINE``. It lets ``bench_queue`` measure what the service
adds around the pipeline (HTTP, database, broker, job transitions) against bare Celery round
trips. Its answer says so: every result it produces carries the reason ``bench_noop_pipeline``
and no model version.
"""

from __future__ import annotations

from antihack.shared.proto import liveness_pb2 as pb
from antihack.worker.pipeline.run import Analysis, PipelineContext


class NoopPipeline:
    def analyze(self, capture: pb.Capture, ctx: PipelineContext) -> Analysis:
        return Analysis(
            score=0.0,
            extra={},
            image_base64=None,
            reasons=["bench_noop_pipeline"],
            model_versions={},
            session_id="",  # never recorded for replay detection
            frame_hashes=[],
            stage_ms={},
        )
