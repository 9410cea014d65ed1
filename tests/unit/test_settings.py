import pytest
from cryptography.fernet import Fernet

from orchestrator.errors import ConfigError
from orchestrator.settings import Settings, env_names

SENTINEL = "whsec_SENTINEL_do_not_print_0042"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = Settings.load()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert str(settings.rotator_config) == "rotation.toml"
    assert settings.rotator_log_format == "json"


def test_webhook_secrets_are_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIVAULT_WEBHOOK_SECRET", "whsec_new, whsec_old")
    assert Settings.load().webhook_secrets() == [b"whsec_new", b"whsec_old"]


def test_receiver_refuses_without_webhook_secret() -> None:
    with pytest.raises(ConfigError, match="SCAIVAULT_WEBHOOK_SECRET is not set"):
        Settings.load().require_webhook_secrets()


def test_bad_values_are_all_named_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://nope")
    monkeypatch.setenv("ROTATOR_SEAL_KEY", SENTINEL)
    monkeypatch.setenv("ROTATOR_EVENT_MAX_AGE", "soon")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    text = str(info.value)
    assert "REDIS_URL" in text
    assert "ROTATOR_SEAL_KEY" in text
    assert "ROTATOR_EVENT_MAX_AGE" in text
    assert len(info.value.problems) == 3
    assert SENTINEL not in text


@pytest.mark.parametrize(
    "name", ["ROTATOR_DEFAULT_GRACE", "ROTATOR_MIN_GRACE", "ROTATOR_EVENT_MAX_AGE"]
)
@pytest.mark.parametrize("value", ["2914000d", "999999999d999999999h"])
def test_durations_over_the_maximum_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert info.value.problems == [
        f"{name}: {value!r} is longer than the maximum duration, 3650d (10 years)"
    ]


@pytest.mark.parametrize("name", ["ROTATOR_BODY_TIMEOUT", "ROTATOR_PUBLISH_TIMEOUT"])
@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_receiver_timeouts_must_be_positive_and_finite(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert [p.split(":")[0] for p in info.value.problems] == [name]


def test_seal_keys_accept_a_rotation_list(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("ROTATOR_SEAL_KEY", f"{first},{second}")
    assert Settings.load().require_seal_keys() == [first.encode(), second.encode()]


def test_refuses_plain_http_outside_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIVAULT_URL", "http://vault.example.com")
    with pytest.raises(ConfigError, match="https://"):
        Settings.load()
    monkeypatch.setenv("SCAIVAULT_ALLOW_INSECURE_HTTP", "true")
    assert Settings.load().scaivault_url == "http://vault.example.com"


@pytest.mark.parametrize("url", ["https://vault.example.com/?x=1", "https://vault.example.com#v1"])
def test_refuses_a_scaivault_url_with_a_query_or_fragment(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("SCAIVAULT_URL", url)
    with pytest.raises(ConfigError, match=r"SCAIVAULT_URL: .*without a \?query or #fragment"):
        Settings.load()


def test_loopback_http_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIVAULT_URL", "http://127.0.0.1:8200/")
    assert Settings.load().scaivault_url == "http://127.0.0.1:8200"


def test_token_file_is_reread(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    monkeypatch.setenv("SCAIVAULT_TOKEN_FILE", str(token_file))
    settings = Settings.load()
    assert settings.read_token() == "one"
    token_file.write_text("two")
    assert settings.read_token() == "two"


def test_vault_settings_say_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="SCAIVAULT_URL is not set"):
        Settings.load().require_vault()
