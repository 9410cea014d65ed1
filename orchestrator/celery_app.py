"""``celery -A orchestrator.celery_app worker`` (docs/operating.md#what-runs): the worker's Celery
app, by its contract name. The app lives in :mod:`orchestrator.worker.app`."""

from orchestrator.worker.app import app

__all__ = ["app"]
