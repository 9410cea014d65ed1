"""Error translation of the salesforce-oauth connection: by code, never carrying body text."""

from __future__ import annotations

import json

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from rotators import PermanentError, Secret, TransientError
from rotators.salesforce_client import (
    ConnectionSettings,
    CredentialRefused,
    NotFound,
    SalesforceConnection,
    translate,
)

SECRET = "S3CRET-in-a-response-body-0123456789"
URL = "https://acme.my.salesforce.com/services/data/v65.0/apps/oauth/credentials/0xI/0Cs/staged"


def body(code: str, message: str = "") -> list[dict[str, str]]:
    return [{"errorCode": code, "message": f"{message} {SECRET}"}]


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (
            SalesforceRefusedRequest(URL, 403, "x", body("REQUEST_LIMIT_EXCEEDED")),
            TransientError,
            "budget",
        ),
        (
            SalesforceRefusedRequest(URL, 403, "x", body("INSUFFICIENT_ACCESS")),
            PermanentError,
            "View Client Secret",
        ),
        (
            SalesforceRefusedRequest(
                URL, 403, "x", body("FUNCTIONALITY_NOT_ENABLED", "not currently enabled")
            ),
            PermanentError,
            "consumer secrets via REST API",
        ),
        (SalesforceResourceNotFound(URL, 404, "x", body("NOT_FOUND")), NotFound, "app_id"),
        (
            SalesforceMalformedRequest(URL, 400, "x", body("INVALID_INPUT")),
            PermanentError,
            "INVALID_INPUT",
        ),
        (SalesforceGeneralError(URL, 503, "x", body("SERVER_UNAVAILABLE")), TransientError, "503"),
        (SalesforceGeneralError(URL, 500, "x", SECRET.encode()), TransientError, "500"),
        (SalesforceGeneralError(URL, 409, "x", body("CONFLICT")), TransientError, "409"),
    ],
)
def test_translate_maps_by_code_and_drops_the_body(
    exc: SalesforceError, kind: type, words: str
) -> None:
    assert SECRET in str(exc)  # simple-salesforce does embed the body
    error = translate(exc, "stage credentials", limit_backoff=900)
    assert type(error) is kind or isinstance(error, kind)
    assert words in str(error) and "stage credentials" in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error.args)
    if "LIMIT" in str(error):
        assert isinstance(error, TransientError) and error.retry_after == 900


def response(status: int, payload: object) -> requests.Response:
    result = requests.Response()
    result.status_code = status
    result._content = json.dumps(payload).encode()
    return result


def connection() -> SalesforceConnection:
    settings = ConnectionSettings("https://acme.my.salesforce.com", "65.0", None, 1.0, 1.0, 60.0)
    return SalesforceConnection(settings)


def test_token_results_are_classified_without_their_text() -> None:
    conn = connection()
    ok = conn._token_result(response(200, {"access_token": SECRET, "instance_url": "https://a"}))
    assert SECRET not in repr(ok)
    cases = [
        (
            response(400, {"error": "invalid_client", "error_description": SECRET}),
            CredentialRefused,
        ),
        (response(400, {"error": "invalid_grant", "error_description": SECRET}), PermanentError),
        (response(400, {"error": "rate_limit_exceeded"}), TransientError),
        (response(503, SECRET), TransientError),
    ]
    for resp, kind in cases:
        with pytest.raises(kind) as err:
            conn._token_result(resp)
        assert SECRET not in str(err.value)
    conn.close()


def test_unreachable_endpoint_is_transient_and_names_no_url_secret() -> None:
    settings = ConnectionSettings("https://127.0.0.1:1", "65.0", None, 0.5, 0.5, 60.0)
    conn = SalesforceConnection(settings)
    with pytest.raises(TransientError, match="could not reach Salesforce"):
        conn.token("client", Secret(SECRET))
    assert conn.session.trust_env is False
    conn.close()
