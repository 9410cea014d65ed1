import io
import json
import logging

from orchestrator.log import configure_logging, get_logger
from rotators.secret import Secret, SecretData

SENTINEL = "SENTINEL-log-7f3a9c"


def test_json_lines_redact_keys_and_wrapped_values(log_stream: io.StringIO) -> None:
    log = get_logger("test", rotation_id="r1")
    log.info(
        "rotation_stored",
        path="a/b",
        client_secret=SENTINEL,
        extra={"nested": {"password": SENTINEL}},
        wrapped=Secret(SENTINEL),
        blob=SecretData(client_secret=SENTINEL),
    )
    text = log_stream.getvalue()
    assert SENTINEL not in text
    line = json.loads(text.strip().splitlines()[-1])
    assert line["event"] == "rotation_stored"
    assert line["rotation_id"] == "r1"
    assert line["path"] == "a/b"
    assert line["client_secret"] == "[REDACTED]"


def test_stdlib_loggers_share_the_format(log_stream: io.StringIO) -> None:
    logging.getLogger("celery.worker").warning("worker_lost")
    line = json.loads(log_stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "worker_lost"
    assert line["level"] == "warning"


def test_console_format_is_readable() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="console", stream=stream)
    get_logger("t").info("hello_world", path="x")
    configure_logging()
    assert "hello_world" in stream.getvalue()
    assert "path=x" in stream.getvalue()


def test_secret_wrappers_hide_values() -> None:
    assert SENTINEL not in repr(Secret(SENTINEL))
    assert SENTINEL not in f"{SecretData(password=SENTINEL)}"
    assert SecretData(password=SENTINEL)["password"] == SENTINEL
