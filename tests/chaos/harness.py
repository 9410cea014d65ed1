"""The crash and fault scenario: seeded, on a real stack, ending in a checked summary table.

``python -m tests.chaos.harness --secrets 200 --seed 7`` runs it in full and prints the table;
``tests/chaos/test_chaos.py`` runs a bounded form in the normal test suite.

What happens (every choice drawn from ``random.Random(seed)``):

1. A private Redis (AOF), a private PostgreSQL, the ScaiVault emulator, the fake Salesforce,
   a Redis with an ACL file, the receiver, beat and two worker processes start. Secrets are
   stored: half ``random-password``, ``postgres`` of them ``postgres-dual`` logins and ``acl``
   of them ``redis-acl`` logins (two users used alternately), each of those with a consumer
   connected as its first role or user (:mod:`tests.chaos.consumers`), the rest
   ``salesforce-oauth`` consumers, a few of them "ghosts" whose client_id Salesforce does not
   know (meant to fail permanently). Each is put on one of several rotation policies.
2. Faults go on: ScaiVault answers ``rate_limited``/``service_unavailable`` or is slow on about
   ``fault_rate`` of its API requests; Salesforce answers 503, limit exceeded or expired session.
3. In waves, the emulator clock moves on so each policy's schedule fires signed ``rotation.due``
   webhooks; each event is redelivered up to twice more (some concurrently), and some of the
   same paths get a manual ``scaivault-rotator rotate`` at the same time.
4. Meanwhile workers are SIGKILLed at random moments (whole process group) and replaced, and
   Redis is restarted once, at a moment when workers hold leases on rotations in flight.
   Workers are supervised as ``deploy/`` does: one that exits by itself, whatever its status,
   is restarted, and its exit status is recorded.
5. Faults stop; the harness waits until every rotation ended and grace has passed, then checks
   the invariants (:mod:`tests.chaos.checks`, :mod:`tests.chaos.leak`).
"""

from __future__ import annotations

import argparse
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from celery import Celery

from orchestrator.local.processes import cli_argv
from orchestrator.state import keys
from orchestrator.state.messages import RotateRequest, Task
from tests.chaos import checks, faults, leak
from tests.chaos.checks import Check, Facts, World
from tests.chaos.consumers import Consumers
from tests.chaos.probe import OldCredentialProber
from tests.chaos.report import Params, Report, Tally, summary
from tests.chaos.stack import ChaosStack

Echo = Callable[[str], None]

#: The emulator's webhook retry schedule for the scenario (seconds before each retry).
RETRY_SCHEDULE = [0.5, 1, 1, 2, 2, 3, 3, 5, 5, 5, 5, 5]


class Scenario:
    """One run of the scenario on a fresh stack in ``workdir``."""

    def __init__(self, params: Params, workdir: Path, echo: Echo = print) -> None:
        self.params = params
        self.rng = random.Random(params.seed)
        self.echo = echo
        self.pg_apps = [f"pg{i:02d}" for i in range(params.postgres)]
        self.acl_apps = [f"acl{i:02d}" for i in range(params.acl)]
        self.stack = ChaosStack(workdir, params.grace, self.pg_apps, self.acl_apps)
        self.consumers: Consumers | None = None
        self.facts = Facts()
        self.tally = Tally()
        self.waves: list[list[str]] = [[] for _ in range(params.waves)]
        self.policies: list[str] = []
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()
        self.prober: OldCredentialProber | None = None
        self.sampler: leak.BrokerSampler | None = None

    def say(self, text: str) -> None:
        self.echo(f"{time.monotonic() - self._started:7.1f}s  {text}")

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> Report:
        """Start the stack, run the scenario, check, stop everything; return the report."""
        try:
            self.stack.start(workers=2)
            self.say("stack up: redis (AOF), emulator, fake salesforce, receiver, beat, 2 workers")
            self.setup()
            self.chaos()
            self.settle()
            return Report(self.params, self.facts, self.tally, self.check())
        finally:
            self.stack.close()

    def setup(self) -> None:
        """Delivery retries, one rotation policy per wave, and the secrets."""
        p = self.params
        self.stack.emulator(
            "POST",
            "/v1/_emulator/config",
            {"retry_schedule": RETRY_SCHEDULE, "max_retry_after": 1.0, "delivery_timeout": 5.0},
        )
        for wave in range(p.waves):
            body = {"name": f"wave-{wave}", "interval": f"{90 + wave}d", "grace_period": p.grace}
            self.policies.append(
                str(self.stack.emulator("POST", "/v1/rotation/policies", body)["id"])
            )
        ghosts = max(1, round(p.secrets * p.ghost_share))
        kinds = ["password"] * (p.secrets // 2) + ["ghost"] * ghosts
        kinds += ["postgres"] * len(self.pg_apps) + ["acl"] * len(self.acl_apps)
        kinds += ["salesforce"] * (p.secrets - len(kinds))
        self.rng.shuffle(kinds)
        for i, kind in enumerate(kinds):
            path = self._add(kind, f"s{i:03d}")
            wave = self.rng.randrange(p.waves)
            self.waves[wave].append(path)
            self.stack.emulator(
                "POST",
                f"/v1/rotation/policies/{self.policies[wave]}/secrets",
                {"secret_path": path},
            )
        self._connect_consumers()
        self.say(
            f"{p.secrets} secrets: {len(self.facts.passwords)} random-password, "
            f"{len(self.facts.salesforce)} salesforce-oauth, {len(self.facts.postgres)} "
            f"postgres-dual and {len(self.facts.acl)} redis-acl (consumers connected), "
            f"{len(self.facts.ghosts)} meant to fail"
        )

    def _connect_consumers(self) -> None:
        """One consumer per PostgreSQL or ACL secret, connected with its original login."""
        logins = self.facts.logins
        if not logins:
            return
        self.consumers = Consumers(self.stack.store, random.Random(self.rng.random()))
        for path in logins:
            self.consumers.connect(path, self.stack.target_of(path), self.facts.originals[path])

    def _add(self, kind: str, name: str) -> str:
        box, facts = self.stack.box, self.facts
        if kind == "password":
            path = box.add_password(name, scheduled=False)
            facts.passwords.append(path)
        elif kind == "salesforce":
            path = box.add_salesforce(name, scheduled=False)
            facts.salesforce.append(path)
        elif kind == "postgres":
            path = box.add_postgres(self.pg_apps[len(facts.postgres)], scheduled=False)
            facts.postgres.append(path)
        elif kind == "acl":
            path = box.add_acl(self.acl_apps[len(facts.acl)])
            facts.acl.append(path)
        else:
            path = f"{box.ends.prefix}/salesforce/{name}"
            box.originals[path] = {
                "client_id": "3MVG9" + secrets.token_hex(20),
                "client_secret": secrets.token_hex(32),
            }
            box.put(path, box.originals[path], "a consumer Salesforce does not know")
            facts.ghosts.append(path)
        facts.originals[path] = dict(box.originals[path])
        return path

    # --- chaos -------------------------------------------------------------------------------

    def plan(self) -> list[tuple[float, str, int]]:
        """The seeded timeline: (seconds from start, action, argument)."""
        p, rng = self.params, self.rng
        span = 0.5 * p.duration
        actions = [(span * w / max(p.waves - 1, 1), "wave", w) for w in range(p.waves)]
        actions += [
            (rng.uniform(0.05, 0.9) * p.duration, "kill", rng.randrange(2)) for _ in range(p.kills)
        ]
        actions += [
            (rng.uniform(0.05, 0.9) * p.duration, "pool", rng.randrange(4))
            for _ in range(p.pool_kills)
        ]
        actions.append((rng.uniform(0.35, 0.6) * p.duration, "redis", 0))
        return sorted(actions)

    def chaos(self) -> None:
        """Faults on; waves, deliveries, manual rotations, kills and a Redis restart; faults off."""
        p = self.params
        sampler = leak.BrokerSampler(self.stack, self.facts.broker_messages).start()
        sf_originals = {path: self.facts.originals[path] for path in self.facts.salesforce}
        logins = {path: self.facts.originals[path] for path in self.facts.logins}
        self.prober = OldCredentialProber(self.stack, sf_originals, logins).start()
        if self.consumers is not None:
            self.consumers.start()
        self.facts.sightings = self.prober.seen
        faults.arm_vault_faults(self.stack, p.fault_rate)
        pump = faults.SalesforcePump(self.stack, random.Random(self.rng.random())).start()
        self.say(f"faults on: ScaiVault {p.fault_rate:.0%} of requests, Salesforce pump")
        start = time.monotonic()
        try:
            for at, action, arg in self.plan():
                self._wait_until(start + at)
                getattr(self, f"_do_{action}")(arg)
            self._wait_until(start + p.duration)
        finally:
            self.tally.vault_faults = faults.vault_fault_hits(self.stack)
            faults.clear_vault_faults(self.stack)
            pump.stop()
            self.tally.salesforce_faults = pump.armed
            self.sampler = sampler
        for thread in self._threads:
            thread.join(timeout=120)
        self.say("faults off")

    def _wait_until(self, moment: float) -> None:
        """Sleep until ``moment`` (monotonic), restarting workers that exited meanwhile."""
        while True:
            self._supervise()
            left = moment - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.25))

    def _supervise(self) -> None:
        for worker in self.stack.supervise():
            code = worker.proc.returncode if worker.proc else None
            self.tally.exits.append((worker.name, code))
            self.say(f"{worker.name} exited by itself (status {code}); restarted")

    def _do_wave(self, wave: int) -> None:
        paths = self.waves[wave]
        self.stack.emulator(
            "POST", "/v1/_emulator/clock", {"advance": "90d" if wave == 0 else "1d"}
        )
        events = self._due_events(set(paths))
        self.facts.due_events.update(events)
        self.tally.due_events += len(events)
        manual = [path for path in paths if self.rng.random() < self.params.manual_share]
        for path in manual:  # at once, racing the deliveries of the same paths
            how = self._manual_rotation if self.rng.random() < 0.5 else self._manual_publish
            self._spawn(how, path)
        for path in paths:
            extra = self.rng.choice((0, 1, 2))
            if extra and path in events:
                body = {"times": extra, "concurrent": self.rng.random() < 0.5}
                self.stack.emulator(
                    "POST", f"/v1/_emulator/deliveries/{events[path]}/redeliver", body
                )
                self.tally.redeliveries += extra
        self.facts.manual += manual
        self.say(f"wave {wave}: {len(events)} rotation.due fired, {len(manual)} manual rotations")

    def _due_events(self, paths: set[str], timeout: float = 20.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        found: dict[str, str] = {}
        while time.monotonic() < deadline and len(found) < len(paths):
            for item in self.stack.emulator("GET", "/v1/_emulator/deliveries?type=rotation.due")[
                "deliveries"
            ]:
                if item["path"] in paths:
                    found.setdefault(item["path"], item["event_id"])
            time.sleep(0.1)
        return found

    def _manual_rotation(self, path: str) -> None:
        """On-call's ``scaivault-rotator rotate PATH`` (it refuses while a rotation is active)."""
        done = subprocess.run(
            cli_argv("rotate", path, "--json", "--reason", "chaos"),
            env=self.stack.cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.stack.box.ends.workdir,
            check=False,
        )
        self.facts.cli_outputs += [done.stdout, done.stderr]
        outcome = "CLI queued" if done.returncode == 0 else f"CLI failed (exit {done.returncode})"
        if done.returncode == 1 and "already active" in done.stdout:
            outcome = "CLI refused: rotation active"
        self.tally.manual[outcome] += 1

    def _manual_publish(self, path: str) -> None:
        """A manual ``scaivault.rotate`` published straight away, as a racing on-call would."""
        producer = Celery("chaos-harness", broker=self.stack.redis.url, set_as_current=False)
        producer.conf.update(task_serializer="json", accept_content=["json"])
        request = RotateRequest(path, trigger="manual", actor="chaos", reason="race")
        try:
            producer.send_task(Task.ROTATE, kwargs=request.to_kwargs(), queue=keys.TASK_QUEUE)
        finally:
            producer.close()
        self.tally.manual["published"] += 1

    def _do_kill(self, which: int) -> None:
        victim = self.stack.kill_worker(which)
        if victim is not None:
            replacement = self.stack.start_worker()
            self.tally.kills.append(victim.name)
            self.say(f"SIGKILL {victim.name} (pid {victim.pid}); started {replacement.name}")

    def _do_pool(self, which: int) -> None:
        pid = self.stack.kill_pool_process(which)
        if pid is not None:
            self.tally.pool_kills += 1
            self.say(f"SIGKILL pool process {pid}")

    def _do_redis(self, _: int) -> None:
        """Restart Redis as soon as workers hold leases on rotations in flight."""
        deadline = time.monotonic() + self.params.duration
        runs, messages = self.stack.in_flight()
        while not runs and time.monotonic() < deadline:
            self._supervise()
            time.sleep(0.02)
            runs, messages = self.stack.in_flight()
        self.stack.redis.restart()
        self.tally.redis_restarts += 1
        self.tally.in_flight_at_restart.append((len(runs), messages))
        self.say(
            f"redis restarted (AOF) with {len(runs)} rotations in flight "
            f"({', '.join(sorted(runs)[:5])}{' ...' if len(runs) > 5 else ''}) and "
            f"{messages} task messages unacknowledged"
        )

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- settle and check --------------------------------------------------------------------

    def settle(self) -> None:
        """Wait until every due event's rotation ended, nothing runs and grace has passed.

        Consumers stay connected until their rotation's finalize waits for them (then they
        leave by themselves); any still connected at the end leave then."""
        deadline = time.monotonic() + self.params.settle_timeout
        waited = time.monotonic()
        busy = self._busy()
        while busy and time.monotonic() < deadline:
            self._wait_until(time.monotonic() + 1.0)
            busy = self._busy()
        if self.consumers is not None:
            self.consumers.stop()
            self.facts.consumers = self.consumers.held
        self.tally.timings["settle"] = time.monotonic() - waited
        for watcher in (self.prober, self.sampler):
            if watcher is not None:
                watcher.stop()
        cli_log = self.stack.box.ends.workdir / "cli.log"
        cli_log.write_text("\n".join(self.facts.cli_outputs), encoding="utf-8")
        outcome = f"still busy: {busy}" if busy else "settled"
        self.say(f"{outcome} after {self.tally.timings['settle']:.0f}s")

    def _busy(self) -> str:
        """What is still going on ('' when everything has ended)."""
        store, client = self.stack.store, self.stack.client
        try:
            pending = self.stack.emulator("GET", "/v1/_emulator/deliveries?type=none")["pending"]
            if pending:
                return f"{pending} webhook deliveries pending"
            for path in self.facts.due_events:
                record = store.last(path)
                if record is None or not record.is_terminal:
                    return f"{path}: {record.state if record else 'no run yet'}"
            for key in client.scan_iter(keys.run("*")):
                record = store.get(key.removeprefix(keys.run("")))
                if record is not None and not record.is_terminal:
                    return f"{record.path}: {record.rotation_id} {record.state}"
            due = int(client.zcard(keys.DUE))
            return f"{due} due-queue entries" if due else ""
        except Exception as exc:  # Redis or the emulator busy restarting: ask again
            return type(exc).__name__

    def check(self) -> list[Check]:
        """Read the end state and run every check."""
        deliveries = self.stack.emulator("GET", "/v1/_emulator/deliveries?type=rotation.due")
        attempts = deliveries["deliveries"]
        self.tally.delivery_attempts = len(attempts)
        self.tally.delivery_answers = Counter(str(a["status"] or a["error"]) for a in attempts)
        world = World(self.stack, self.facts)
        return [
            checks.one_version_per_due_event(world),
            checks.current_versions_work(world),
            checks.old_revoked_after_grace(world),
            checks.nothing_left_running(world),
            checks.permanent_failures_failed(world),
            leak.no_secret_anywhere(world),
        ]


def run(params: Params, workdir: Path | None = None, echo: Echo = print) -> Report:
    """Run the scenario (in a temporary directory unless ``workdir`` is given)."""
    if workdir is not None:
        return Scenario(params, workdir, echo).run()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        return Scenario(params, Path(tmp), echo).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=Params.secrets)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--kills", type=int, default=Params.kills)
    parser.add_argument("--pool-kills", type=int, default=Params.pool_kills)
    parser.add_argument("--fault-rate", type=float, default=Params.fault_rate)
    parser.add_argument("--duration", type=float, default=Params.duration)
    parser.add_argument("--grace", default=Params.grace)
    parser.add_argument("--postgres", type=int, default=Params.postgres)
    parser.add_argument("--acl", type=int, default=Params.acl)
    parser.add_argument("--workdir", type=Path, help="keep logs and state here")
    args = parser.parse_args(argv)
    params = Params(
        secrets=args.secrets,
        seed=args.seed,
        kills=args.kills,
        pool_kills=args.pool_kills,
        fault_rate=args.fault_rate,
        duration=args.duration,
        grace=args.grace,
        postgres=args.postgres,
        acl=args.acl,
    )
    report = run(params, args.workdir)
    print(summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
