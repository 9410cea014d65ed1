"""The fake Salesforce's routes: which handler answers a method and path, and from which API
version a resource exists (older versions answer 404, as Salesforce does)."""

from __future__ import annotations

import re

from orchestrator.local.fake_salesforce.errors import ApiError

DATA = r"^/services/data/v(?P<ver>\d+\.\d)/"
CRED = DATA + r"apps/oauth/credentials/(?P<app>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/services/oauth2/token$"), "token"),
    ("POST", re.compile(r"^/services/oauth2/revoke$"), "revoke"),
    ("GET", re.compile(DATA + r"limits/?$"), "limits"),
    ("GET", re.compile(DATA + r"query/?$"), "query"),
    ("GET", re.compile(DATA + r"apps/oauth/usage/?$"), "usage"),
    ("GET", re.compile(CRED + r"/?$"), "consumers"),
    ("GET", re.compile(CRED + r"/(?P<cons>[^/]+)/?$"), "consumer"),
    ("GET", re.compile(CRED + r"/(?P<cons>[^/]+)/staged/?$"), "staged_list"),
    ("POST", re.compile(CRED + r"/(?P<cons>[^/]+)/staged/?$"), "stage"),
    ("GET", re.compile(CRED + r"/(?P<cons>[^/]+)/staged/(?P<sid>[^/]+)$"), "staged_get"),
    ("PATCH", re.compile(CRED + r"/(?P<cons>[^/]+)/staged/(?P<sid>[^/]+)$"), "staged_patch"),
    ("DELETE", re.compile(CRED + r"/(?P<cons>[^/]+)/staged/(?P<sid>[^/]+)$"), "staged_delete"),
    ("GET", re.compile(r"^/_fake/health$"), "fake_health"),
    ("GET", re.compile(r"^/_fake/state$"), "fake_state"),
    ("GET", re.compile(r"^/_fake/requests$"), "fake_requests"),
    ("POST", re.compile(r"^/_fake/apps$"), "fake_app"),
    ("POST", re.compile(r"^/_fake/apps/(?P<app>[^/]+)/consumers$"), "fake_consumer"),
    ("POST", re.compile(r"^/_fake/admin-credential$"), "fake_admin"),
    ("POST", re.compile(r"^/_fake/faults$"), "fake_fault"),
    ("DELETE", re.compile(r"^/_fake/faults$"), "fake_clear_faults"),
    ("POST", re.compile(r"^/_fake/config$"), "fake_config"),
    ("POST", re.compile(r"^/_fake/expire-sessions$"), "fake_expire"),
    ("POST", re.compile(r"^/_fake/clock$"), "fake_clock"),
]
MIN_VERSION = {"usage": 59.0, "consumers": 60.0, "consumer": 60.0}
STAGED_MIN_VERSION = 65.0


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The handler name and path parameters for ``method path``; 404 or 405 if none."""
    allowed = False
    for want, pattern, name in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        allowed = True
        if want == method:
            params = match.groupdict()
            _check_version(name, params.pop("ver", None))
            return name, params
    if allowed:
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.")
    raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _check_version(name: str, version: str | None) -> None:
    if version is None:
        return
    needed = STAGED_MIN_VERSION if "staged" in name or name == "stage" else MIN_VERSION.get(name)
    if needed is not None and float(version) < needed:
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
