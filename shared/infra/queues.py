"""Queue and task names, in one place: the API publishes by name, compose consumes them all."""

ANALYZE_QUEUE = "analyze"
MAINTENANCE_QUEUE = "maintenance"
WEBHOOKS_QUEUE = "webhooks"
ALL_QUEUES = (ANALYZE_QUEUE, MAINTENANCE_QUEUE, WEBHOOKS_QUEUE)

ANALYZE_TASK = "antihack.analyze"
SWEEP_TASK = "antihack.sweep"
PURGE_TASK = "antihack.purge"
WEBHOOK_DISPATCH_TASK = "antihack.webhooks.dispatch"
WEBHOOK_SEND_TASK = "antihack.webhooks.send"

TASK_QUEUES = {
    ANALYZE_TASK: ANALYZE_QUEUE,
    SWEEP_TASK: MAINTENANCE_QUEUE,
    PURGE_TASK: MAINTENANCE_QUEUE,
    WEBHOOK_DISPATCH_TASK: WEBHOOKS_QUEUE,
    WEBHOOK_SEND_TASK: WEBHOOKS_QUEUE,
}


def done_key(job_id: str) -> str:
    """Redis list the worker pushes to when a job ends, so a synchronous request wakes at once."""
    return f"antihack:done:{job_id}"
