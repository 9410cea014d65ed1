"""The addresses, routing file and shared local secrets of one sandbox's processes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Endpoints:
    """Where the sandbox's processes listen, and the local secrets that tie them together."""

    workdir: Path
    prefix: str
    redis_url: str = ""
    vault_url: str = ""
    salesforce_url: str = ""
    salesforce_ca: str = ""
    receiver_url: str = ""
    metrics_port: int = 0
    admin_token: str = field(default_factory=lambda: "adm_" + secrets.token_urlsafe(24))
    webhook_secret: str = field(default_factory=lambda: "whsec_" + secrets.token_urlsafe(24))
    seal_key: str = field(default_factory=lambda: _fernet_key())
    worker_token: str = ""
    sf_app_id: str = ""

    @property
    def routing_file(self) -> Path:
        return self.workdir / "rotation.toml"

    @property
    def sf_admin_path(self) -> str:
        return f"{self.prefix}/admin/salesforce"

    @property
    def pg_admin_path(self) -> str:
        return f"{self.prefix}/admin/postgres"


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
