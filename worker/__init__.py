"""Celery workers: the app factory, tasks and the anti-hack pipeline."""

from antihack.worker.celery_app import make_celery

__all__ = ["make_celery"]
