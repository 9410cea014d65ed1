"""All configuration, read from the environment in this one module and nowhere else.

Every variable is listed in the configuration table of docs/operating.md; a test keeps the two
in step. A missing or malformed value stops start-up with one message per variable saying what is
expected, never echoing a secret value.
"""

from __future__ import annotations

import ipaddress
import tempfile
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator.connection import is_sentinel, parse_sentinel_url
from orchestrator.duration import parse_duration
from orchestrator.errors import ConfigError

CommaList = Annotated[list[SecretStr], NoDecode]


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is a loopback address or ``localhost``."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """The process's configuration. Build it with :meth:`load` to get readable errors."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    # --- contract names (docs/operating.md#configuration) ---
    scaivault_url: str | None = Field(default=None, alias="SCAIVAULT_URL")
    scaivault_token: SecretStr | None = Field(default=None, alias="SCAIVAULT_TOKEN")
    scaivault_token_file: Path | None = Field(default=None, alias="SCAIVAULT_TOKEN_FILE")
    scaivault_webhook_secret: CommaList = Field(default=[], alias="SCAIVAULT_WEBHOOK_SECRET")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", alias="REDIS_URL")
    redis_sentinel_master: str = Field(
        default="mymaster", min_length=1, alias="REDIS_SENTINEL_MASTER"
    )
    rotator_config: Path = Field(default=Path("rotation.toml"), alias="ROTATOR_CONFIG")
    rotator_log_format: Literal["json", "console"] = Field(
        default="json", alias="ROTATOR_LOG_FORMAT"
    )
    rotator_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="ROTATOR_LOG_LEVEL"
    )
    rotator_seal_key: CommaList = Field(default=[], alias="ROTATOR_SEAL_KEY")
    rotator_alert_webhook_url: str | None = Field(default=None, alias="ROTATOR_ALERT_WEBHOOK_URL")

    # --- tunables ---
    scaivault_connect_timeout: float = Field(default=3.0, gt=0, alias="SCAIVAULT_CONNECT_TIMEOUT")
    scaivault_read_timeout: float = Field(default=10.0, gt=0, alias="SCAIVAULT_READ_TIMEOUT")
    scaivault_retry_deadline: float = Field(default=60.0, gt=0, alias="SCAIVAULT_RETRY_DEADLINE")
    scaivault_allow_insecure_http: bool = Field(
        default=False, alias="SCAIVAULT_ALLOW_INSECURE_HTTP"
    )
    rotator_event_max_age: str = Field(default="7d", alias="ROTATOR_EVENT_MAX_AGE")
    rotator_publish_timeout: float = Field(
        default=2.0, gt=0, allow_inf_nan=False, alias="ROTATOR_PUBLISH_TIMEOUT"
    )
    rotator_body_timeout: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, alias="ROTATOR_BODY_TIMEOUT"
    )
    rotator_metrics_port: int = Field(default=9464, ge=0, le=65535, alias="ROTATOR_METRICS_PORT")
    prometheus_multiproc_dir: Path | None = Field(default=None, alias="PROMETHEUS_MULTIPROC_DIR")
    rotator_heartbeat_interval: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, alias="ROTATOR_HEARTBEAT_INTERVAL"
    )
    rotator_heartbeat_dir: Path = Field(
        default=Path(tempfile.gettempdir()), alias="ROTATOR_HEARTBEAT_DIR"
    )
    notify_socket: str | None = Field(default=None, alias="NOTIFY_SOCKET")
    rotator_task_events: bool = Field(default=True, alias="ROTATOR_TASK_EVENTS")
    rotator_max_attempts: int = Field(default=8, ge=1, alias="ROTATOR_MAX_ATTEMPTS")
    rotator_task_time_limit: int = Field(default=300, ge=10, alias="ROTATOR_TASK_TIME_LIMIT")
    rotator_visibility_timeout: int = Field(default=3600, ge=60, alias="ROTATOR_VISIBILITY_TIMEOUT")
    rotator_lease_seconds: float = Field(default=30.0, gt=0, alias="ROTATOR_LEASE_SECONDS")
    rotator_sweep_interval: float = Field(default=15.0, gt=0, alias="ROTATOR_SWEEP_INTERVAL")
    rotator_reconcile_interval: float = Field(
        default=900.0, gt=0, alias="ROTATOR_RECONCILE_INTERVAL"
    )
    rotator_finalize_lease: float = Field(default=300.0, gt=0, alias="ROTATOR_FINALIZE_LEASE")
    rotator_retry_backoff_max: float = Field(default=60.0, gt=0, alias="ROTATOR_RETRY_BACKOFF_MAX")
    rotator_default_grace: str = Field(default="48h", alias="ROTATOR_DEFAULT_GRACE")
    rotator_min_grace: str = Field(default="1h", alias="ROTATOR_MIN_GRACE")
    rotator_pending_republish_after: float = Field(
        default=120.0, gt=0, alias="ROTATOR_PENDING_REPUBLISH_AFTER"
    )
    rotator_cli_allow_defaults: bool = Field(default=False, alias="ROTATOR_CLI_ALLOW_DEFAULTS")

    @property
    def redis_url_defaulted(self) -> bool:
        """True when ``REDIS_URL`` came from nowhere but its default."""
        return "redis_url" not in self.model_fields_set

    @field_validator("scaivault_webhook_secret", "rotator_seal_key", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("rotator_log_level", "rotator_log_format", mode="before")
    @classmethod
    def _case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in {"debug", "info", "warning", "error"} else value

    @field_validator("scaivault_url", "rotator_alert_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("expected an http(s) URL such as https://scaivault.example.com")
        return value.rstrip("/")

    @field_validator("scaivault_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).query or urlsplit(value).fragment):
            raise ValueError(
                "expected ScaiVault's base URL without a ?query or #fragment, such as "
                "https://scaivault.example.com (API paths are added to it)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"redis", "rediss", "unix", "sentinel", "sentinels"}:
            raise ValueError(
                "expected redis://, rediss://, unix:// or sentinel:// URL, "
                "e.g. redis://127.0.0.1:6379/0"
            )
        if is_sentinel(value):
            parse_sentinel_url(value)
        return value

    @field_validator("rotator_event_max_age", "rotator_default_grace", "rotator_min_grace")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("rotator_seal_key")
    @classmethod
    def _fernet_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for position, key in enumerate(value, start=1):
            try:
                Fernet(key.get_secret_value().encode())
            except (ValueError, TypeError):
                raise ValueError(
                    f"key {position} is not a Fernet key (url-safe base64 of 32 random bytes); "
                    "make one with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'"
                ) from None
        return value

    @model_validator(mode="after")
    def _secure_transport(self) -> Settings:
        url = self.scaivault_url
        if (
            url
            and url.startswith("http://")
            and not is_loopback_url(url)
            and not self.scaivault_allow_insecure_http
        ):
            raise ValueError(
                "SCAIVAULT_URL uses plain http:// to a non-loopback host, which would send the "
                "token and secrets unencrypted; use https:// or set "
                "SCAIVAULT_ALLOW_INSECURE_HTTP=true if you really mean it"
            )
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment; raise :class:`ConfigError` naming every bad variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_input=False, include_url=False):
                name = _env_name(error.get("loc", ()))
                message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
                problems.append(f"{name}: {message}" if name else message)
            raise ConfigError("invalid configuration: " + "; ".join(problems), problems) from None

    @cached_property
    def event_max_age(self) -> timedelta:
        """How old a webhook event's ``created_at`` may be before it is rejected."""
        return parse_duration(self.rotator_event_max_age)

    def decision_ttl(self) -> timedelta:
        """How long records of requests that stored nothing (skipped, refused) are kept: as
        long as the receiver keeps event ids claimed (:func:`dedupe_window`)."""
        return dedupe_window(self.event_max_age)

    def min_grace(self) -> timedelta:
        """The shortest grace period a ``rotation.due`` event may ask for."""
        return parse_duration(self.rotator_min_grace)

    def require_vault(self) -> str:
        """Return ``SCAIVAULT_URL`` or raise a :class:`ConfigError` saying how to set it."""
        if not self.scaivault_url:
            raise ConfigError(
                "SCAIVAULT_URL is not set: set it to your ScaiVault base URL, "
                "e.g. SCAIVAULT_URL=https://scaivault.example.com"
            )
        if self.scaivault_token is None and self.scaivault_token_file is None:
            raise ConfigError(
                "no ScaiVault token: set SCAIVAULT_TOKEN, or SCAIVAULT_TOKEN_FILE to a file "
                "holding it (the file is re-read when the token expires)"
            )
        return self.scaivault_url

    def read_token(self) -> str:
        """Return the ScaiVault token, re-reading ``SCAIVAULT_TOKEN_FILE`` each call."""
        if self.scaivault_token_file is not None:
            try:
                return self.scaivault_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"SCAIVAULT_TOKEN_FILE: cannot read {self.scaivault_token_file} "
                    f"({exc.strerror}); check the path and its permissions"
                ) from None
        if self.scaivault_token is not None:
            return self.scaivault_token.get_secret_value()
        raise ConfigError("no ScaiVault token: set SCAIVAULT_TOKEN or SCAIVAULT_TOKEN_FILE")

    def webhook_secrets(self) -> list[bytes]:
        """The accepted webhook signing secrets, as the UTF-8 bytes that key the HMAC."""
        return [s.get_secret_value().encode() for s in self.scaivault_webhook_secret]

    def require_webhook_secrets(self) -> list[bytes]:
        """Return the webhook secrets or refuse: a receiver without one would accept anything."""
        secrets = self.webhook_secrets()
        if not secrets:
            raise ConfigError(
                "SCAIVAULT_WEBHOOK_SECRET is not set: the receiver refuses to start without a "
                "signing secret (it would accept unsigned events). Set it to the subscription's "
                "secret, e.g. whsec_...; list several separated by commas during a rollover"
            )
        return secrets

    def seal_keys(self) -> list[bytes]:
        """Fernet keys: the first seals, all unseal."""
        return [k.get_secret_value().encode() for k in self.rotator_seal_key]

    def require_seal_keys(self) -> list[bytes]:
        """Return the seal keys or refuse: updaters must not run without them."""
        keys = self.seal_keys()
        if not keys:
            raise ConfigError(
                "ROTATOR_SEAL_KEY is not set: updater rotators refuse to run without it. Make "
                "one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )
        return keys


class EmulatorSettings(BaseSettings):
    """The emulator command's own variable, read apart from :class:`Settings`: a trial emulator
    starts even while the rotator's settings still hold placeholders."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    emulator_admin_token: SecretStr | None = Field(default=None, alias="EMULATOR_ADMIN_TOKEN")


class TracingSettings(BaseSettings):
    """OpenTelemetry's standard variables that decide whether we trace (the SDK and exporters
    read the rest themselves, e.g. ``OTEL_EXPORTER_OTLP_HEADERS``). Read apart from
    :class:`Settings`: they are OpenTelemetry's names, documented in docs/monitoring.md."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    otel_sdk_disabled: bool = Field(default=False, alias="OTEL_SDK_DISABLED")
    otel_traces_exporter: str | None = Field(default=None, alias="OTEL_TRACES_EXPORTER")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_service_name: str | None = Field(default=None, alias="OTEL_SERVICE_NAME")

    def exporter_name(self) -> str:
        """The exporter ``OTEL_TRACES_EXPORTER`` names (the first of a list; default otlp)."""
        names = [n.strip() for n in (self.otel_traces_exporter or "otlp").split(",")]
        return next((n for n in names if n), "otlp")

    def wanted(self) -> bool:
        """Tracing is asked for: an exporter or an OTLP endpoint is set, and the SDK is not
        disabled. ``OTEL_TRACES_EXPORTER=none`` means off."""
        if self.otel_sdk_disabled or self.exporter_name() == "none":
            return False
        endpoints = (self.otel_exporter_otlp_endpoint, self.otel_exporter_otlp_traces_endpoint)
        return bool(self.otel_traces_exporter or any(endpoints))


class _LogFormat(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    rotator_log_format: Literal["json", "console"] = Field(
        default="json", alias="ROTATOR_LOG_FORMAT"
    )


def requested_log_format() -> Literal["json", "console"]:
    """``ROTATOR_LOG_FORMAT`` read alone (json when unset or invalid): the format in which a
    process reports that the rest of its configuration does not load."""
    try:
        return _LogFormat().rotator_log_format
    except ValidationError:
        return "json"


def dedupe_window(max_age: timedelta) -> timedelta:
    """How long an event id stays claimed: longer than any event still accepted (``max_age`` plus a
    day), and at least 7 days
    (docs/security.md#network-access-to-the-receiver-no-webhook-secret)."""
    return max(timedelta(days=7), max_age + timedelta(days=1))


def _env_name(loc: tuple[Any, ...]) -> str:
    if not loc:
        return ""
    field = Settings.model_fields.get(str(loc[0]))
    return (field.alias if field and field.alias else str(loc[0])).upper()


def env_names() -> list[str]:
    """Every environment variable the settings read, for documentation checks."""
    models: tuple[type[BaseSettings], ...] = (Settings, EmulatorSettings)
    return sorted(
        f.alias or name.upper() for model in models for name, f in model.model_fields.items()
    )
