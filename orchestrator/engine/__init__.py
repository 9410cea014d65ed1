"""The rotation protocol (docs/architecture.md#the-protocol): claim, the step runner,
mint/seal/apply/verify/store, grace, finalize, sweep, reconcile, rollback, leases and the run's
recording. No Celery, no HTTP server, no terminal: the worker's tasks call
:class:`~orchestrator.engine.core.Engine`."""
