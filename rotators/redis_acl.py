"""The ``redis-acl`` rotator: passwords of Redis 6+ ACL users (no extra dependency).

Strategy ``issuer``, in one of two modes chosen by the rule's options:

- ``username``: one ACL user, which holds several passwords at once. ``mint`` adds a new one
  (``ACL SETUSER user #<sha256>``), ``finalize`` removes the old one (``!<sha256>``). Consumers
  of either password are the same user to Redis, so this mode cannot tell who still uses the
  old password (``in_use`` answers None).
- ``users``: two ACL users used alternately. ``mint`` gives the one not in use exactly one new
  password (``resetpass #<sha256>``); ``finalize`` removes the old user's password, and
  ``in_use`` counts the old user's connections in ``CLIENT LIST``.

Only sha256 hashes are sent, never a plaintext (``MONITOR`` would show it). Each mint notes
its password's fingerprint in ``ctx.notes`` next to those of earlier mints of the same rotation
before it sends ``ACL SETUSER``, and narrows the note to its own once the change is in place.
A later mint removes every noted password the user still holds in the same ``ACL SETUSER``
that adds its own, and ``discard`` removes them all, so a mint that crashed or timed out after
sending its change never leaves a password nobody knows valid. Every step
checks before it acts. The admin login comes from ``admin_secret_path``; ``acl_save`` persists
each change with ``ACL SAVE`` on servers that use an ACL file.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import redis
from pydantic import BaseModel
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from rotators.contract import NOTE_VALUE_MAX, RotationContext, Rotator, Usage, host_target
from rotators.errors import CredentialRejected, PermanentError, RotatorError, TransientError
from rotators.login import Login, admin_login, login_of, with_login
from rotators.passwords import generate
from rotators.redis_acl_options import RedisAclOptions
from rotators.secret import SecretData

#: ``ctx.notes`` name: the first 16 hex digits of the sha256 of each password this rotation's
#: mints may have added (comma-separated), narrowed to the last one once it is in place.
NOTE_MINTED = "minted_sha256"


Context = RotationContext[RedisAclOptions]


def password_hash(password: str) -> str:
    """The sha256 hex digest Redis keeps for an ACL password (``#<hash>`` adds it)."""
    return hashlib.sha256(password.encode()).hexdigest()


class RedisAclRotator(Rotator[RedisAclOptions]):
    """Adds a password to an ACL user, and removes the old one at finalize."""

    name = "redis-acl"
    strategy = "issuer"
    can_discard = True
    Options: ClassVar[type[BaseModel]] = RedisAclOptions
    verify_timeout: ClassVar[float] = 10.0

    def target(self, options: RedisAclOptions) -> str:
        """The server this rule rotates on, ``host:port``: rules on one server share its budget."""
        return host_target(options.host, options.port)

    def mint(self, ctx: Context) -> dict[str, Any]:
        """A new password on the rotated user (one mode) or the one not in use (two users)."""
        options = ctx.options
        user = _mint_user(ctx.current.data, options)
        password = generate(options.password)
        digest = password_hash(password)
        with _admin(ctx) as admin:
            held = admin.passwords(user)
            earlier = _minted(ctx)
            _note_minted(ctx, [*earlier, digest[:16]])
            if options.users:
                changes = ["resetpass"]
            else:
                changes = [f"!{h}" for h in _noted(held, earlier, ctx.current.data, options)]
            admin.setuser(user, *changes, f"#{digest}")
        _note_minted(ctx, [digest[:16]])
        ctx.log.info("redis_acl_minted", user=user, replaced=len(changes))
        return with_login(ctx.current.data, options, user, password)

    def verify(self, ctx: Context, new: SecretData) -> None:
        """A new connection authenticates as the user with ``new``. ``ACL SETUSER`` applies to
        the next ``AUTH`` at once, so a refusal is final; an unreachable server is transient."""
        login = _rule_login(new, "new", ctx.options)
        if not accepts(ctx.options, login):
            raise CredentialRejected("Redis refuses the new password", step="verify")
        ctx.log.info("redis_acl_verified", user=login.username)

    def in_use(self, ctx: Context, old: SecretData) -> Usage | None:
        """Two users: the old user's connections in ``CLIENT LIST``. One user: None (both
        passwords belong to the same user, so Redis cannot tell them apart), once the server
        has answered that the user exists: an unreachable server is a TransientError here too,
        never a None that would let finalize go ahead."""
        user = _rule_login(old, "old", ctx.options).username
        with _admin(ctx) as admin:
            if ctx.options.users is None:
                admin.user(user)
                return None
            clients = [c for c in admin.clients() if c.get("user") == user]
        return Usage(
            sessions=len(clients),
            who=user,
            clients=tuple(str(c.get("addr", "")).rsplit(":", 1)[0] for c in clients),
            applications=tuple(str(c["name"]) for c in clients if c.get("name")),
        )

    def finalize(self, ctx: Context, old: SecretData, new: SecretData) -> None:
        """Remove the old password from the old user; already removed is success."""
        options = ctx.options
        previous, current = _rule_login(old, "old", options), _rule_login(new, "new", options)
        if previous == current:
            raise PermanentError("old and new are the same login: nothing to revoke safely")
        if options.users and previous.username == current.username:
            raise PermanentError("old and new are the same ACL user: nothing to revoke safely")
        self._remove(ctx, previous, "finalize")

    def discard(self, ctx: Context, new: SecretData) -> None:
        """Remove the unused new password (never stored, or rolled back), and every other
        password this rotation's mints noted that the user still holds."""
        self._remove(ctx, _rule_login(new, "new", ctx.options), "discard", _minted(ctx))

    def preflight(self, ctx: Context) -> None:
        """The admin logs in and may change the users; they exist, are on, and need a password;
        the current login works."""
        options = ctx.options
        with _admin(ctx) as admin:
            for user in options.rotated:
                flags = admin.flags(user)
                if "nopass" in flags or "on" not in flags:
                    raise PermanentError(
                        f"ACL user {user!r} is {'nopass' if 'nopass' in flags else 'off'}: "
                        "its passwords would not matter; set it on, without nopass"
                    )
            admin.check_grants(self._grants(options))
        if not accepts(options, _rule_login(ctx.current.data, "current", options)):
            raise PermanentError("ScaiVault's current login is refused by Redis")

    def _remove(self, ctx: Context, login: Login, step: str, noted: tuple[str, ...] = ()) -> None:
        digest = password_hash(login.password.reveal())
        with _admin(ctx) as admin:
            if "nopass" in admin.flags(login.username):
                raise PermanentError(f"ACL user {login.username!r} is nopass: cannot revoke")
            held = admin.passwords(login.username)
            gone = {h for h in held if h == digest}
            gone.update(_noted(held, noted, ctx.current.data, ctx.options))
            if gone:
                admin.setuser(login.username, *(f"!{h}" for h in sorted(gone)))
                ctx.log.info(
                    "redis_acl_password_removed", user=login.username, step=step, count=len(gone)
                )
            else:
                ctx.log.info("redis_acl_already_removed", user=login.username, step=step)

    @staticmethod
    def _grants(options: RedisAclOptions) -> list[str]:
        """The commands the admin runs: the ACL changes, ``CLIENT LIST``, ``ACL SAVE``."""
        grants = ["acl|setuser"]
        if options.users:
            grants.append("client|list")
        if options.acl_save:
            grants.append("acl|save")
        return grants


class AdminSession:
    """An authenticated admin connection and the ACL commands the rotator uses."""

    def __init__(self, client: redis.Redis, options: RedisAclOptions, who: str) -> None:
        self.client = client
        self.options = options
        self.who = who

    def _call(self, grant: str, *args: str) -> Any:
        try:
            return self.client.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            raise _translate(exc, grant) from None

    def user(self, name: str) -> dict[str, Any]:
        found = self._call("acl|getuser", "ACL", "GETUSER", name)
        if not found:
            raise PermanentError(f"Redis has no ACL user {name!r}: create it first")
        return dict(found)

    def passwords(self, name: str) -> list[str]:
        return [str(h) for h in self.user(name).get("passwords", [])]

    def flags(self, name: str) -> list[str]:
        return [str(f) for f in self.user(name).get("flags", [])]

    def setuser(self, name: str, *changes: str) -> None:
        """``ACL SETUSER name changes...`` (and ``ACL SAVE`` when the rule asks)."""
        self._call("acl|setuser", "ACL", "SETUSER", name, *changes)
        if self.options.acl_save:
            self._call("acl|save", "ACL", "SAVE")

    def clients(self) -> list[dict[str, Any]]:
        try:
            return list(self.client.client_list())
        except redis.RedisError as exc:
            raise _translate(exc, "client|list") from None

    def check_grants(self, grants: list[str]) -> None:
        """``ACL DRYRUN`` each command as the admin (skipped where DRYRUN itself is denied)."""
        for grant in grants:
            try:
                command = ("ACL", "DRYRUN", self.who, *_sample(grant))
                answer = self.client.execute_command(*command)  # type: ignore[no-untyped-call]
            except NoPermissionError:
                return
            except redis.RedisError as exc:
                raise _translate(exc, "acl|dryrun") from None
            if str(answer) != "OK":
                raise PermanentError(_grant_text(self.who, grant))


#: A command line needing each grant the admin may be asked for, for ``ACL DRYRUN``.
_SAMPLES = {
    "acl|setuser": ["ACL", "SETUSER", "scaivault-rotator-dryrun"],
    "acl|getuser": ["ACL", "GETUSER", "scaivault-rotator-dryrun"],
    "acl|save": ["ACL", "SAVE"],
    "client|list": ["CLIENT", "LIST"],
}


def _sample(grant: str) -> list[str]:
    """A command line that needs ``grant`` (``acl|setuser`` -> ``ACL SETUSER x``)."""
    return _SAMPLES[grant]


def _grant_text(admin: str, grant: str) -> str:
    return f"the admin ACL user {admin!r} may not run {grant}: ACL SETUSER {admin} +{grant}"


def _client(options: RedisAclOptions, login: Login) -> redis.Redis:
    return redis.Redis(
        host=options.host,
        port=options.port,
        username=login.username,
        password=login.password.reveal(),
        ssl=options.tls,
        ssl_ca_certs=options.ca_file,
        ssl_cert_reqs="required",
        ssl_check_hostname=options.tls and options.verify_identity,
        socket_connect_timeout=options.connect_timeout,
        socket_timeout=options.socket_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


@contextmanager
def _admin(ctx: Context) -> Iterator[AdminSession]:
    """An admin session with the login at ``admin_secret_path`` (refused: permanent)."""
    options = ctx.options
    login = admin_login(ctx, options.admin_secret_path, *options.rotated)
    client = _client(options, login)
    try:
        if not _authenticates(client):
            raise PermanentError(
                f"Redis refuses the admin login at admin_secret_path ({login.username!r})"
            )
        yield AdminSession(client, options, login.username)
    finally:
        client.close()


def accepts(options: RedisAclOptions, login: Login) -> bool:
    """True when ``login`` authenticates on a new connection; False when refused."""
    client = _client(options, login)
    try:
        return _authenticates(client)
    finally:
        client.close()


def _authenticates(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.AuthenticationError:
        return False
    except NoPermissionError:
        return True  # authenticated; the user may just not run PING
    except redis.RedisError as exc:
        raise _translate(exc, "ping") from None
    return True


def _translate(exc: redis.RedisError, grant: str) -> RotatorError:
    """Our error for a client error, without its text (it may quote a command's arguments)."""
    if isinstance(exc, NoPermissionError):
        return PermanentError(f"the admin ACL user may not run {grant}: grant it +{grant}")
    if _cert_refused(exc):
        return PermanentError(
            "Redis's TLS certificate is not trusted or does not name host "
            "(check ca_file and verify_identity)"
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        return TransientError(f"Redis is unreachable ({type(exc).__name__})")
    return PermanentError(f"Redis refused {grant} ({type(exc).__name__})")


def _cert_refused(exc: BaseException) -> bool:
    """Did a TLS certificate check fail underneath ``exc`` (redis-py wraps it)?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _mint_user(data: SecretData, options: RedisAclOptions) -> str:
    """The user that gets the new password: the rule's one, or the one not in use."""
    current = data.get(options.username_field)
    if options.users is None:
        if current is not None and current != options.username:
            raise PermanentError(
                f"the secret's {options.username_field!r} is {current!r}, but the rule rotates "
                f"{options.username!r}"
            )
        return str(options.username)
    if current not in options.users:
        raise PermanentError(
            f"the secret's {options.username_field!r} is {current!r}, not one of the rule's "
            f"users {list(options.users)}"
        )
    return options.users[1] if current == options.users[0] else options.users[0]


def _minted(ctx: Context) -> tuple[str, ...]:
    """The fingerprints this rotation's mints noted and may have added."""
    noted = ctx.notes.get(NOTE_MINTED)
    return tuple(noted.split(",")) if noted else ()


def _note_minted(ctx: Context, fingerprints: list[str]) -> None:
    """Note ``fingerprints`` (without repeats) before a change that may add the last one."""
    value = ",".join(dict.fromkeys(fingerprints))
    if len(value) > NOTE_VALUE_MAX:
        raise PermanentError(
            f"{len(fingerprints) - 1} mints of this rotation failed after sending ACL SETUSER: "
            "check the ACL user's passwords, then rotate again"
        )
    ctx.notes.put(NOTE_MINTED, value)


def _noted(
    held: list[str], noted: tuple[str, ...], current: SecretData, options: RedisAclOptions
) -> list[str]:
    """The held password hashes a ``noted`` fingerprint begins, never the current password's."""
    password = current.get(options.password_field)
    keep = password_hash(str(password)) if password is not None else None
    return [h for h in held if h != keep and any(h.startswith(n) for n in noted)]


def _rule_login(data: SecretData, what: str, options: RedisAclOptions) -> Login:
    login = login_of(data, what, options)
    if login.username not in options.rotated:
        raise PermanentError(f"the {what} login's user {login.username!r} is not the rule's")
    return login
