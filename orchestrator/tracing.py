"""OpenTelemetry tracing, optional: the ``otel`` extra installed and ``OTEL_*`` variables that
name an exporter turn it on; otherwise every function here is a no-op and nothing of
OpenTelemetry is imported.

One trace follows a rotation: the receiver's request span (ASGI), the ``traceparent`` it puts
in the hand-built task message (:func:`carrier`), the Celery task span the worker continues it
with, a span per engine step (:func:`span`), inside it a span per rotator call
(:func:`traced`, whatever client the plugin uses), and the HTTP client spans of the ScaiVault
requests (httpx) and of rotators' target calls (httpx, requests). Span attributes are names,
ids and paths only: the instrumentations record no bodies and no headers, and the engine's
spans carry ``rotation.id``, ``rotation.path``, ``rotator`` and ``rotation.step``.

The exporter is the one ``OTEL_TRACES_EXPORTER`` names among the installed entry points of
group ``opentelemetry_traces_exporter`` (default ``otlp``: OTLP over HTTP, configured by the
standard ``OTEL_EXPORTER_OTLP_*`` variables); the service name is ``OTEL_SERVICE_NAME``, else
``scaivault-rotator-<role>``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar, cast

from orchestrator.log import get_logger
from orchestrator.settings import TracingSettings

log = get_logger(__name__)

#: The entry-point group OpenTelemetry's SDK registers span exporters under.
EXPORTERS = "opentelemetry_traces_exporter"
#: What ``otlp`` means when the gRPC exporter is not installed (the ``otel`` extra has HTTP).
FALLBACK = {"otlp": "otlp_proto_http"}

_tracer: Any = None


def enabled() -> bool:
    """True once :func:`configure` turned tracing on in this process."""
    return _tracer is not None


def configure(role: str, settings: TracingSettings | None = None) -> bool:
    """Turn tracing on for this process (``role``: receiver, worker, beat) when the ``OTEL_*``
    variables ask for it and the packages are installed; return whether it is on."""
    global _tracer
    settings = settings or TracingSettings()
    if _tracer is not None or not settings.wanted():
        return _tracer is not None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing_unavailable", reason="install scaivault-rotator[otel]")
        return False
    exporter = _exporter(settings.exporter_name())
    if exporter is None:
        return False
    name = settings.otel_service_name or f"scaivault-rotator-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("scaivault-rotator")
    _instrument_http_clients()
    log.info("tracing_started", service=name, exporter=settings.exporter_name())
    return True


def _exporter(name: str) -> Any:
    found = entry_points(group=EXPORTERS, name=name) or entry_points(
        group=EXPORTERS, name=FALLBACK.get(name, name)
    )
    if not found:
        installed = sorted(e.name for e in entry_points(group=EXPORTERS))
        log.error("tracing_exporter_unknown", exporter=name, installed=installed)
        return None
    return next(iter(found)).load()()


def _instrument_http_clients() -> None:
    """ScaiVault's client and rotators' target calls (httpx, requests) make client spans."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    HTTPXClientInstrumentor().instrument()
    RequestsInstrumentor().instrument()


def instrument_celery() -> None:
    """Celery task spans that continue the ``traceparent`` of the task message."""
    if enabled():
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]


def instrument_asgi(app: Any) -> Any:
    """``app`` in a server-span middleware when tracing is on, else ``app`` itself."""
    if not enabled():
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app)


@contextlib.contextmanager
def span(name: str, **attributes: str | int | None) -> Iterator[None]:
    """A span around the block (attributes that are None are left out); no-op when off.

    An exception marks the span failed with its type's name only: a plugin's exception text
    may hold a secret value, so it is never recorded."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import Status, StatusCode

    present = {key: value for key, value in attributes.items() if value is not None}
    with _tracer.start_as_current_span(
        name, attributes=present, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


#: The rotator methods the engine calls (each reaches the target or ScaiVault): one span each.
ROTATOR_CALLS = frozenset({"preflight", "mint", "apply", "verify", "finalize", "in_use", "discard"})

R = TypeVar("R")


def traced(rotator: R) -> R:
    """``rotator`` with a ``rotator.<method>`` span around each of :data:`ROTATOR_CALLS`
    (attributes ``rotator`` and ``rotation.id``), a child of the engine's step span; the
    rotator itself when tracing is off."""
    return cast(R, _TracedRotator(rotator)) if _tracer is not None else rotator


class _TracedRotator:
    """Every attribute is the rotator's; its step methods run in spans."""

    def __init__(self, rotator: Any) -> None:
        self._rotator = rotator

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._rotator, name)
        if name not in ROTATOR_CALLS:
            return value

        @functools.wraps(value)
        def call(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            rotation_id = getattr(ctx, "rotation_id", None)
            with span(
                f"rotator.{name}", rotator=self._rotator.name, **{"rotation.id": rotation_id}
            ):
                return value(ctx, *args, **kwargs)

        return call


def carrier() -> Mapping[str, str]:
    """The current context as W3C headers (``traceparent``, ``tracestate``) for a message;
    empty when tracing is off or no span is current."""
    if _tracer is None:
        return {}
    from opentelemetry.propagate import inject

    headers: dict[str, str] = {}
    inject(headers)
    return headers
