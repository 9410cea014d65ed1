"""Routing-file options of the ``salesforce-oauth`` rotator: the org, the app and consumer,
the admin credential's path, and the timeouts of its calls."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rotators.salesforce_client import ConnectionSettings

#: Staged credentials need this REST API version or later.
MIN_API_VERSION = 65.0


class SalesforceOAuthOptions(BaseModel):
    """Routing-file options of ``salesforce-oauth``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    my_domain_url: str = Field(
        description="https base URL of the org, e.g. https://acme.my.salesforce.com"
    )
    api_version: str = Field(default="65.0", description="REST API version, 65.0 or later")
    app_id: str = Field(description="The External Client App's id (0xI...)")
    consumer_id: str | None = Field(
        default=None, description="The consumer's id; found by the current client_id if unset"
    )
    admin_secret_path: str = Field(
        description="ScaiVault path of the separate admin credential {client_id, client_secret}"
    )
    ca_bundle: str | None = Field(default=None, description="CA file for a private endpoint")
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    propagation_timeout: float = Field(
        default=60.0, ge=0, description="Seconds mint waits for a staged pair to be accepted"
    )
    propagation_interval: float = Field(default=2.0, gt=0)
    limit_backoff: float = Field(
        default=3600.0, gt=0, description="Retry-after (s) when the org's API budget is used up"
    )
    min_api_remaining: int = Field(
        default=0, ge=0, description="Do not start a mint below this many daily API calls left"
    )

    @field_validator("my_domain_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("expected an https URL such as https://acme.my.salesforce.com")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"\d+\.\d", value) or float(value) < MIN_API_VERSION:
            raise ValueError("expected a version like 65.0 (staged credentials need 65.0+)")
        return value

    def connection(self) -> ConnectionSettings:
        return ConnectionSettings(
            my_domain_url=self.my_domain_url,
            api_version=self.api_version,
            ca_bundle=self.ca_bundle,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            limit_backoff=self.limit_backoff,
        )
