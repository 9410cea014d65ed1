"""The Salesforce connection of the ``salesforce-oauth`` rotator, and its one error translation.

It does its own client-credentials token request to ``{my_domain_url}/services/oauth2/token``
(simple-salesforce's login hard-codes ``*.salesforce.com``) and drives simple-salesforce in
``instance_url`` + ``session_id`` mode over a ``requests.Session`` it configures: TLS
verification against ``ca_bundle`` if given, ``trust_env`` off so ``REQUESTS_CA_BUNDLE`` cannot
override it, timeouts on every call. An expired session re-authenticates once.

Every simple-salesforce and ``requests`` exception is translated here into the rotators' error
tree *without its text*: simple-salesforce puts response bodies in its messages, and the bodies
of ``apps/oauth/credentials`` carry consumer secrets. Only the status and Salesforce's
``errorCode`` survive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from rotators.errors import PermanentError, RotatorError, TransientError
from rotators.secret import Secret

#: OAuth ``error`` codes meaning "this key/secret pair is not (or no longer) accepted".
REFUSED_CODES = frozenset({"invalid_client", "invalid_client_id"})
NOT_ENABLED_HINTS = ("not currently enabled", "feature is not enabled", "not enabled for this user")


class CredentialRefused(PermanentError):
    """The token endpoint refused a key/secret pair (``invalid_client``)."""


class NotFound(PermanentError):
    """Salesforce answered 404 ``NOT_FOUND`` for a resource (wrong id, or already deleted)."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to reach the org (a slice of the rotator's options)."""

    my_domain_url: str
    api_version: str
    ca_bundle: str | None
    connect_timeout: float
    read_timeout: float
    limit_backoff: float


@dataclass(frozen=True)
class Token:
    """An access token and the instance it is for; the token value never prints."""

    access_token: Secret
    instance_url: str


def _error_code(content: Any) -> tuple[str, str]:
    """Salesforce's ``errorCode`` and message from an error body, ``("", "")`` if unshaped."""
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", ""


def translate(exc: SalesforceError, what: str, limit_backoff: float) -> RotatorError:
    """Map a simple-salesforce error of call ``what`` onto the error tree, dropping its text."""
    status = int(exc.status or 0)
    code, message = _error_code(exc.content)
    where = f"{what}: Salesforce answered {status} {code}".rstrip()
    if code == "REQUEST_LIMIT_EXCEEDED":
        return TransientError(
            f"{where}; the org's daily API budget is used up (it is shared by every "
            "integration), retrying much later",
            retry_after=limit_backoff,
        )
    if code == "INSUFFICIENT_ACCESS":
        return PermanentError(
            f"{where}; the admin identity's Run-As user needs the 'External Client App "
            "Developer' and 'View Client Secret' permissions"
        )
    if status == 403 and any(hint in message.lower() for hint in NOT_ENABLED_HINTS):
        return PermanentError(
            f"{where}; turn on 'Allow access to External Client App consumer secrets via REST "
            "API' in Setup > External Client App Settings"
        )
    if status == 404:
        return NotFound(f"{where}; check app_id and consumer_id")
    if status >= 500 or status in {408, 409, 412, 429}:
        return TransientError(where)
    return PermanentError(where)


def _transport(exc: requests.RequestException, what: str) -> RotatorError:
    name = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return PermanentError(
            f"{what}: TLS certificate of my_domain_url not trusted ({name}); "
            "set ca_bundle for a private endpoint"
        )
    return TransientError(f"{what}: could not reach Salesforce ({name})")


class SalesforceConnection:
    """An authenticated admin connection to one org, re-authenticating once on expiry."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = settings.ca_bundle or True
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self._admin: tuple[str, Secret] | None = None
        self._sf: Salesforce | None = None

    def close(self) -> None:
        self.session.close()

    def token(self, client_id: str, client_secret: Secret) -> Token:
        """Client-credentials token request; :class:`CredentialRefused` on ``invalid_client``."""
        url = self.settings.my_domain_url.rstrip("/") + "/services/oauth2/token"
        try:
            response = self.session.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(client_id, client_secret.reveal()),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise _transport(exc, "token request") from None
        return self._token_result(response)

    def _token_result(self, response: requests.Response) -> Token:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200 and isinstance(body, dict) and "access_token" in body:
            return Token(Secret(str(body["access_token"])), str(body["instance_url"]))
        code = str(body.get("error", "")) if isinstance(body, dict) else ""
        where = f"token request: {response.status_code} {code}".rstrip()
        if code in REFUSED_CODES:
            raise CredentialRefused(f"{where}; the key/secret pair is not accepted")
        if response.status_code >= 500 or code == "rate_limit_exceeded":
            raise TransientError(where)
        raise PermanentError(
            f"{where}; check that the app has the client credentials flow enabled with a "
            "Run-As user"
        )

    def login(self, client_id: str, client_secret: Secret) -> None:
        """Authenticate as the admin identity the rotator works with."""
        self._admin = (client_id, client_secret)
        self._connect()

    def _connect(self) -> None:
        if self._admin is None:
            raise PermanentError("salesforce connection used before login")
        try:
            token = self.token(*self._admin)
        except CredentialRefused:
            raise PermanentError(
                "the admin credential at admin_secret_path was refused by the token endpoint"
            ) from None
        self._sf = self.client(token)

    def client(self, token: Token) -> Salesforce:
        """A simple-salesforce client in direct mode for ``token`` on this session."""
        return Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token.reveal(),
            session=self.session,
            version=self.settings.api_version,
        )

    def rest(self, what: str, path: str, method: str = "GET", **kwargs: Any) -> Any:
        """``restful`` call named ``what`` (for errors); re-authenticates once if expired."""
        if self._sf is None:
            self._connect()
        try:
            return self._call(what, lambda: self._restful(path, method, **kwargs))
        except _Expired:
            self._connect()
        try:
            return self._call(what, lambda: self._restful(path, method, **kwargs))
        except _Expired:
            raise TransientError(f"{what}: the session expired again right after login") from None

    def _restful(self, path: str, method: str, **kwargs: Any) -> Any:
        assert self._sf is not None
        return self._sf.restful(path, method=method, timeout=self.timeout, **kwargs)

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except SalesforceExpiredSession:
            raise _Expired from None
        except SalesforceError as exc:
            raise translate(exc, what, self.settings.limit_backoff) from None
        except requests.RequestException as exc:
            raise _transport(exc, what) from None
        except (ValueError, KeyError, TypeError):
            # simple-salesforce trips over unexpected bodies (e.g. a non-list 401).
            raise TransientError(f"{what}: unexpected response from Salesforce") from None

    def probe(self, token: Token) -> dict[str, Any]:
        """One cheap authorised call (``limits``) with ``token``; errors translated."""
        sf = self.client(token)
        try:
            result = self._call(
                "limits", lambda: sf.restful("limits/", method="GET", timeout=self.timeout)
            )
        except _Expired:
            raise TransientError("limits: the new session expired at once") from None
        return dict(result or {})


class _Expired(Exception):
    """Internal: the session expired (translated by :meth:`SalesforceConnection.rest`)."""
