import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import WebhookRejected
from orchestrator.receiver.signing import MAX_HEADER_LENGTH, parse_signatures, sign, verify

# Computed independently of this code, with:
#   printf '%s' 'Hello, World!' | openssl dgst -sha256 -hmac "It's a Secret to Everybody"
# (GitHub's published vector) and
#   printf '%s' "$ENVELOPE" | openssl dgst -sha256 -hmac 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
GITHUB_VECTOR = (
    b"Hello, World!",
    "It's a Secret to Everybody",
    "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
)
ENVELOPE = (
    b'{"id": "evt_01HV", "type": "rotation.due", "created_at": "2026-11-27T08:00:00Z", '
    b'"path": "integrations/salesforce/oauth", "data": {"version": 3, "policy_id": "rot_xyz", '
    b'"grace_period": "48h", "trigger": "schedule"}}'
)
SCAIVAULT_VECTOR = (
    ENVELOPE,
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "b4bcfa3d8a9cedf21782fc99ecccbfd0f86160987f9300aeceed5787e5cfdd60",
)
KEY = b"whsec_current"
OLD = b"whsec_previous"


@pytest.mark.parametrize("vector", [GITHUB_VECTOR, SCAIVAULT_VECTOR], ids=["github", "envelope"])
def test_known_answer_vectors(vector: tuple[bytes, str, str]) -> None:
    body, secret, expected = vector
    assert sign(body, secret) == expected
    assert verify(body, expected, [secret.encode()]) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_matches_openssl_on_a_fresh_body() -> None:
    body = b'{"id": "evt_\xc3\xa9", "type": "secret.updated"}'
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", "whsec_x"], input=body, capture_output=True
    ).stdout.decode()
    assert out.strip().endswith(sign(body, "whsec_x"))


def test_key_is_the_secret_string_as_written_not_base64_decoded() -> None:
    body = b"{}"
    assert verify(body, sign(body, "whsec_dGVzdA=="), [b"whsec_dGVzdA=="]) == 1
    with pytest.raises(WebhookRejected):
        verify(body, sign(body, b"test"), [b"whsec_dGVzdA=="])


def test_returns_the_position_of_the_matching_secret() -> None:
    body = b'{"id": "evt_1"}'
    assert verify(body, sign(body, OLD), [KEY, OLD]) == 2
    assert verify(body, sign(body, KEY), [KEY, OLD]) == 1


def test_accepts_uppercase_and_several_signatures() -> None:
    body = b"{}"
    good = sign(body, KEY)
    assert verify(body, good.upper(), [KEY]) == 1
    assert verify(body, f"{'0' * 64}, {good}", [KEY]) == 1
    assert verify(body, f"{sign(body, b'other')} {good}", [KEY]) == 1


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "sha256=" + "a" * 64,
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "é" * 64,
        "\u0663" * 64,  # Arabic-Indic digit three: \d would match it
        "a" * 64 + "\x00",
        ",".join(["a" * 64] * 6),
        "a" * (MAX_HEADER_LENGTH + 1),
    ],
    ids=lambda h: repr(h)[:20],
)
def test_malformed_headers_are_401(header: str | None) -> None:
    with pytest.raises(WebhookRejected) as info:
        verify(b"{}", header, [KEY])
    assert info.value.status == 401


def test_wrong_secret_and_flipped_body_are_401() -> None:
    body = b'{"id": "evt_1"}'
    with pytest.raises(WebhookRejected, match="signature_mismatch"):
        verify(body, sign(body, b"wrong"), [KEY])
    with pytest.raises(WebhookRejected, match="signature_mismatch"):
        verify(body + b" ", sign(body, KEY), [KEY])


def test_refuses_to_verify_without_secrets() -> None:
    with pytest.raises(ValueError, match="fail closed"):
        verify(b"{}", sign(b"{}", KEY), [])


@given(body=st.binary(max_size=512), secret=st.binary(min_size=1, max_size=64))
def test_sign_then_verify_round_trips(body: bytes, secret: bytes) -> None:
    assert verify(body, sign(body, secret), [OLD, secret]) in {1, 2}


@given(body=st.binary(min_size=1, max_size=256), bit=st.integers(min_value=0))
def test_any_flipped_bit_fails(body: bytes, bit: int) -> None:
    bit %= len(body) * 8
    flipped = bytearray(body)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(WebhookRejected):
        verify(bytes(flipped), sign(body, KEY), [KEY])


@given(header=st.text(max_size=2048))
def test_any_header_text_is_a_position_or_a_401(header: str) -> None:
    try:
        assert verify(b"{}", header, [KEY]) == 1
    except WebhookRejected as exc:
        assert exc.status == 401


@given(header=st.text(alphabet="0123456789abcdefABCDEF ,", max_size=400))
def test_parsed_signatures_are_32_bytes(header: str) -> None:
    try:
        digests = parse_signatures(header)
    except WebhookRejected:
        return
    assert all(len(d) == 32 for d in digests) and 1 <= len(digests) <= 5
