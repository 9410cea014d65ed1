"""What the on-call commands print: plain words or ``--json``, and the one error-to-exit-code map.

Every command's failure passes through :func:`describe_error`, which turns an exception into a
plain message, a "what to do next" hint and an exit code (0 success, 1 a failed operation,
2 bad usage or configuration). Nothing here prints a traceback or a secret value: messages come
from our own exceptions, which never carry one, and a foreign exception shows only its type.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import click
import redis

from orchestrator.errors import CommandError, ConfigError, OrchestratorError, VaultError

if TYPE_CHECKING:
    from orchestrator.state.records import RunRecord

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: The order in which ``status`` shows a run record's fields.
RECORD_FIELDS = (
    "path",
    "rotation_id",
    "state",
    "step",
    "trigger",
    "rotator",
    "from_version",
    "new_version",
    "restored_version",
    "finalize_after",
    "waiting",
    "waiting_since",
    "waiting_checks",
    "attempts",
    "last_error",
    "actor",
    "reason",
    "created_at",
    "updated_at",
)

#: Columns of the ``status`` table without a path.
TABLE_COLUMNS = (
    "path", "state", "step", "rotation_id", "finalize_after", "attempts", "driving", "last_error"
)  # fmt: skip

_VAULT_HINTS = {
    "authentication_required": "set SCAIVAULT_TOKEN (or SCAIVAULT_TOKEN_FILE) to a valid token",
    "token_expired": "get a fresh token and update SCAIVAULT_TOKEN or SCAIVAULT_TOKEN_FILE",
    "access_denied": "ask your ScaiVault admin to bind a policy granting the token that permission",
    "not_found": "check the path's spelling (paths look like integrations/salesforce/oauth)",
    "rate_limited": "ScaiVault is throttling us: wait a minute and run the command again",
    "service_unavailable": "check SCAIVAULT_URL and that ScaiVault is up, then run it again",
    "version_conflict": "someone else wrote the secret meanwhile: look at `history PATH`, retry",
    "invalid_request": "check the path and arguments; run the command with --help",
}


@dataclass(frozen=True)
class Failure:
    """What a failed command tells the operator."""

    message: str
    hint: str | None
    exit_code: int

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "hint": self.hint, "exit_code": self.exit_code}}


def safe_url(url: str) -> str:
    """``url`` without its user-info, so a Redis password never reaches a message."""
    if ";" in url:  # a Sentinel URL: one part per Sentinel, any of them may carry a password
        return ";".join(safe_url(part) for part in url.split(";"))
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def describe_error(exc: BaseException) -> Failure:
    """Map any exception to a plain message, a hint and an exit code (the one place that does)."""
    if isinstance(exc, CommandError):
        return Failure(exc.message, exc.hint, exc.exit_code)
    if isinstance(exc, ConfigError):
        hint = "fix the settings above; `scaivault-rotator check-config` lists every problem"
        return Failure("; ".join(exc.problems), hint, EXIT_USAGE)
    if isinstance(exc, VaultError):
        return Failure(f"ScaiVault: {exc.message}", _VAULT_HINTS.get(exc.code), EXIT_FAILED)
    if isinstance(exc, redis.RedisError):
        return Failure(
            f"Redis is unreachable or failed ({type(exc).__name__})",
            "check that Redis is up and REDIS_URL points at it",
            EXIT_FAILED,
        )
    if isinstance(exc, OrchestratorError):
        return Failure(str(exc), None, EXIT_FAILED)
    return Failure(
        f"unexpected error ({type(exc).__name__})",
        "run again with ROTATOR_LOG_LEVEL=DEBUG and look at the worker logs",
        EXIT_FAILED,
    )


def print_failure(failure: Failure, as_json: bool) -> None:
    """Print ``failure``: JSON on stdout for scripts, plain words on stderr for people."""
    if as_json:
        click.echo(json.dumps(failure.as_dict()))
        return
    click.echo(f"error: {failure.message}", err=True)
    if failure.hint:
        click.echo(f"next: {failure.hint}", err=True)


#: What a read command asked (``OnCall.asked``), named after its error too: an error from
#: the wrong Redis or ScaiVault must say which one it came from.
_asked: list[Callable[[], str]] = []


def name_on_error(asked: Callable[[], str]) -> None:
    """Have :func:`guarded` print ``asked()`` on stderr after the command's error."""
    _asked[:] = [asked]


@contextmanager
def guarded(as_json: bool) -> Iterator[None]:
    """Run a command body; on any error print it the on-call way and exit with its code."""
    _asked.clear()
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        failure = describe_error(exc)
        print_failure(failure, as_json)
        named = [line for line in (asked() for asked in _asked) if line]
        for line in named:
            click.echo(line, err=True)
        sys.exit(failure.exit_code)


def fail(message: str, *, hint: str | None = None, exit_code: int = EXIT_FAILED) -> NoReturn:
    """Raise a :class:`CommandError` (a shorthand for command bodies)."""
    raise CommandError(message, hint=hint, exit_code=exit_code)


def dump_json(data: Any) -> str:
    """Compact, stable JSON; anything not JSON-native becomes its string form."""
    return json.dumps(data, sort_keys=True, default=str)


def emit(data: Any, as_json: bool, plain: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON, or as ``plain(data)`` for people."""
    click.echo(dump_json(data) if as_json else plain(data))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def render_record(record: Mapping[str, Any]) -> str:
    """A run record as aligned ``field: value`` lines, in :data:`RECORD_FIELDS` order, without
    the fields that mean nothing in its state (:func:`_shown`)."""
    names = [name for name in RECORD_FIELDS if name in record and _shown(record, name)]
    width = max((len(name) for name in names), default=0)
    return "\n".join(f"{name.ljust(width)}  {_cell(record[name])}" for name in names)


#: Where a run's finalize time still means something.
_DUE_STATES = frozenset({"grace", "finalizing", "needs_attention"})


def _shown(record: Mapping[str, Any], name: str) -> bool:
    """Fields that would mislead in some states stay out of the plain view (``--json`` has
    them all): a finalize time once there is none to come, the rolled-back version."""
    state = record.get("state")
    if name.startswith("waiting"):  # finalize waits for the old credential's users
        return bool(record.get("waiting"))
    if name == "finalize_after":
        return state in _DUE_STATES
    if name == "new_version":
        return state != "rolled_back"
    if name == "restored_version":
        return record.get(name) is not None
    return True


def render_status(record: Mapping[str, Any]) -> str:
    """``status PATH``: the run record, then what happens now and what on-call can do."""
    lines = [render_record(record)]
    lines += [f"now:  {line}" for line in record.get("now") or []]
    lines += [f"next: {step}" for step in record.get("next") or []]
    return "\n".join(lines)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table with a header line; long cells are cut to keep lines readable."""
    cells = [[_cell(row.get(col))[:60] for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def render_history(entries: Sequence[Mapping[str, str]]) -> str:
    """History entries, one line each: time, event, then the other fields as ``key=value``."""
    lines = []
    for item in entries:
        rest = " ".join(f"{k}={v}" for k, v in item.items() if k not in {"ts", "event"})
        lines.append(f"{item.get('ts', '-')}  {item.get('event', '-'):<24} {rest}".rstrip())
    return "\n".join(lines)


#: History fields a progress line shows (the others repeat what the run record says).
ENTRY_FIELDS = ("step", "from_version", "new_version", "outcome", "duration_ms", "detail")


def render_entry(path: str, entry: Mapping[str, str]) -> str:
    """One progress line for a history entry: ``path: event step=... outcome=...``."""
    rest = " ".join(f"{k}={entry[k]}" for k in ENTRY_FIELDS if entry.get(k))
    return f"{path}: {entry.get('event', '-')} {rest}".rstrip()


def render_step(record: Mapping[str, Any]) -> str:
    """One progress line for ``rotate --wait``: state, step, attempt and any error."""
    parts = [f"{record.get('path')}: {record.get('state')}"]
    if record.get("step") and record.get("step") != record.get("state"):
        parts.append(f"step={record['step']}")
    if record.get("attempts"):
        parts.append(f"attempt={record['attempts']}")
    if record.get("new_version"):
        parts.append(f"new_version={record['new_version']}")
    if record.get("last_error"):
        parts.append(f"last_error={record['last_error']}")
    return " ".join(parts)


def report(
    record: RunRecord,
    as_json: bool,
    headline: str,
    actor: str,
    reason: str | None,
    *,
    good: set[str],
    new_fate: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """End a changing command: what happened, one statement per credential, who and why; exit
    1 with the run's reason and the next step when it did not end in a ``good`` state."""
    from orchestrator.cli.situation import Situation, credentials, hint

    statements = credentials(record, new_fate)
    data = {**record.to_dict(), "credentials": statements, **(extra or {})}
    if record.state not in good:
        emit(data, as_json, render_record)
        if not as_json:
            click.echo(f"error: rotation {record.rotation_id} is {record.state}: "
                       f"{record.last_error or 'see `history`'}", err=True)  # fmt: skip
            click.echo(f"next: {hint(Situation(record), record.path)}", err=True)
        sys.exit(EXIT_FAILED)
    why = f" by {actor}" + (f": {reason}" if reason else "")
    lines = [f"{headline} (rotation {record.rotation_id},{why})"]
    emit(data, as_json, lambda _: "\n".join(lines + [f"  {s}" for s in statements]))
