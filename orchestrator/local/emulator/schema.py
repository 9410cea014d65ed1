"""Request bodies the emulator accepts, validated strictly into the spec's error shape."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from starlette.requests import Request

from orchestrator.duration import parse_duration
from orchestrator.local.emulator.errors import ApiError, invalid

MAX_BODY_BYTES = 1024 * 1024
PERMISSIONS = ("read", "write", "rotate", "list", "audit", "*")

Model = TypeVar("Model", bound=BaseModel)
Text = Annotated[str, Field(min_length=1, max_length=1024)]


class Body(BaseModel):
    """Base of every request body: strict types, unknown keys ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


def _duration(value: str) -> str:
    """Duration text the rotator can read back: :func:`parse_duration` refuses what it cannot,
    including anything over its maximum (``MAX_DURATION``), so events never carry it."""
    parse_duration(value)
    return value


def _finite(value: Any) -> Any:
    """Refuse numbers JSON cannot carry back out (``1e400`` parses to infinity)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


class PutOptions(Body):
    cas: Annotated[int, Field(ge=0)] | None = None
    max_versions: Annotated[int, Field(ge=1, le=1000)] | None = None


class PutSecret(Body):
    data: dict[str, Any]
    secret_type: Text = "json"
    metadata: dict[str, Any] = Field(default_factory=dict)
    options: PutOptions = Field(default_factory=PutOptions)

    _finite_values = field_validator("data", "metadata")(_finite)

    @field_validator("secret_type", "metadata", "options", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        # Clients often send explicit nulls for optional fields; treat them as left out.
        if value is None:
            return {"secret_type": "json", "metadata": {}, "options": {}}[info.field_name or ""]
        return value


class TokenRequest(Body):
    identity: Text
    ttl: Text | None = "1h"

    _ttl = field_validator("ttl")(lambda v: None if v is None else _duration(v))


class RuleBody(Body):
    path_pattern: Text
    permissions: Annotated[list[Literal[PERMISSIONS]], Field(min_length=1)]  # type: ignore[valid-type]


class PolicyBody(Body):
    name: Text
    description: str = ""
    rules: Annotated[list[RuleBody], Field(min_length=1)]


class BindingBody(Body):
    identity_type: Text
    identity_id: Text


class DeliveryBody(Body):
    type: Literal["webhook"]
    url: Text
    secret: Text

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("expected an http(s) URL")
        return value


class SubscriptionBody(Body):
    name: Text
    paths: Annotated[list[Text], Field(min_length=1)]
    events: Annotated[list[Text], Field(min_length=1)]
    delivery: DeliveryBody


class RotationPolicyBody(Body):
    name: Text
    interval: Text
    grace_period: Text = "0s"
    auto_generate: bool = False

    _durations = field_validator("interval", "grace_period")(_duration)


class AssignBody(Body):
    secret_path: Text


class FaultBody(Body):
    match: Text = "**"
    code: Text | None = None
    status: Annotated[int, Field(ge=400, le=599)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    retry_after: Annotated[float, Field(ge=0, le=3600)] | None = None
    latency: Annotated[float, Field(ge=0, le=120)] = 0.0
    methods: list[Text] | None = None
    probability: Annotated[float, Field(gt=0, le=1)] | None = None


class ClockBody(Body):
    advance: Text

    _advance = field_validator("advance")(_duration)


class RedeliverBody(Body):
    times: Annotated[int, Field(ge=1, le=100)] = 1
    concurrent: bool = False


class ConfigBody(Body):
    retry_schedule: (
        Annotated[list[Annotated[float, Field(ge=0, le=3600)]], Field(max_length=20)] | None
    ) = None
    delivery_timeout: Annotated[float, Field(gt=0, le=120)] | None = None
    tick_interval: Annotated[float, Field(ge=0.01, le=60)] | None = None
    max_retry_after: Annotated[float, Field(ge=0, le=3600)] | None = None


def is_number(text: str) -> bool:
    """True for a plain ASCII whole number (``str.isdigit`` also accepts ``²``)."""
    return text.isascii() and text.isdigit()


def describe(exc: ValidationError) -> str:
    """One line naming each wrong field and what was expected (never the input value)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


async def read_raw(request: Request) -> bytes:
    """The request body, refusing more than 1 MiB without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not is_number(declared) or int(declared) > MAX_BODY_BYTES):
        raise ApiError("invalid_request", "request body larger than 1 MiB", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError("invalid_request", "request body larger than 1 MiB", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, model: type[Model]) -> Model:
    """Read and validate the JSON body as ``model``; 400 ``invalid_request`` saying why."""
    raw = await read_raw(request)
    if not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid(describe(exc)) from None
