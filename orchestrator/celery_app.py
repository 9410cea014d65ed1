"""``celery -A orchestrator.celery_app worker`` (DESIGN §3): the worker's Celery app, by its
contract name. The app lives in :mod:`orchestrator.worker.app`."""

from orchestrator.worker.app import app

__all__ = ["app"]
