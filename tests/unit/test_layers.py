"""Imports point down the layers (docs/architecture.md#where-things-live).

::

    cli, worker, receiver, local
              |
            engine
              |
        state, vault
              |
    base: settings, log, errors, duration, connection, routing, plugins, backoff, tracing
              |
           rotators (the plugin contract; never imports orchestrator)

Every import statement counts: at module level, under ``if TYPE_CHECKING:`` (a type-only
import is still an arrow) and inside functions. An exception (an entry point, or a function
that starts another layer's process) is listed in :data:`ALLOWED` with the reason it must
point up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = frozenset({"cli", "engine", "local", "receiver", "state", "vault", "worker"})
#: What each layer must never import (top-level modules are the base: no subpackage at all).
FORBIDDEN = {
    "engine": frozenset({"cli", "worker", "receiver", "local"}),
    "state": frozenset({"cli", "worker", "receiver", "local", "engine"}),
    "vault": frozenset({"engine"}),
    "<base>": SUBPACKAGES,
}
#: (importing module, imported module) pairs that may point up, and why.
ALLOWED = {
    ("orchestrator.__main__", "orchestrator.cli.main"): (
        "`python -m orchestrator` is the command line's entry point"
    ),
    ("orchestrator.celery_app", "orchestrator.worker.app"): (
        "`celery -A orchestrator.celery_app` is the worker app's contract name "
        "(docs/operating.md#what-runs)"
    ),
}


def module_name(root: Path, file: Path) -> tuple[str, str]:
    """``orchestrator/state/keys.py`` -> (``orchestrator.state.keys``, its package
    ``orchestrator.state``); a package's ``__init__`` is named and anchored by the package."""
    parts = file.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def imported(package: str, tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every module ``tree`` imports, with its line (``from a import b`` counts ``a.b`` too,
    which is what it is when ``b`` is a submodule; relative imports resolved in ``package``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield base, node.lineno
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


def layer(module: str) -> str | None:
    """The layer of an ``orchestrator`` module: its subpackage, or ``<base>`` (None: not ours)."""
    parts = module.split(".")
    if parts[0] != "orchestrator":
        return None
    return parts[1] if parts[1:2] and parts[1] in SUBPACKAGES else "<base>"


def violations(root: Path) -> list[str]:
    """Every import under ``root`` that points the wrong way, as ``file:line: a -> b``."""
    found: dict[str, str] = {}  # one problem per import statement
    for file in sorted([*root.glob("orchestrator/**/*.py"), *root.glob("rotators/**/*.py")]):
        module, package = module_name(root, file)
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for target, line in imported(package, tree):
            if _wrong_way(module, target) and not _allowed(module, target):
                where = f"{file.relative_to(root).as_posix()}:{line}"
                found.setdefault(where, f"{where}: {module} -> {target}")
    return sorted(found.values())


def _allowed(module: str, target: str) -> bool:
    return any(
        module == source and (target == dest or target.startswith(dest + "."))
        for source, dest in ALLOWED
    )


def _wrong_way(module: str, target: str) -> bool:
    if module.split(".")[0] == "rotators":
        return target.split(".")[0] == "orchestrator"
    source, dest = layer(module), layer(target)
    if source is None or dest is None or dest == source:
        return False
    return dest in FORBIDDEN.get(source, frozenset())


def test_imports_point_down_the_layers() -> None:
    assert violations(ROOT) == []


def test_every_allowed_exception_is_still_there() -> None:
    """An exception nobody needs any more goes, so the list stays the real one."""
    seen = set()
    for module, _ in ALLOWED:
        file = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(file.read_text(encoding="utf-8"))
        seen |= {(module, target) for target, _ in imported("orchestrator", tree)}
    # ``from a.b import c`` names ``a.b`` itself too, so the pair is seen exactly
    assert set(ALLOWED) <= seen


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("orchestrator/state/bad.py", "from orchestrator.cli.main import cli\n"),
        ("orchestrator/state/bad.py", "from orchestrator.engine import core\n"),
        ("orchestrator/vault/bad.py", "def f():\n    import orchestrator.engine.core\n"),
        (
            "orchestrator/engine/bad.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from orchestrator.worker.app import app\n",
        ),
        ("orchestrator/engine/bad.py", "from ..receiver import app\n"),
        ("orchestrator/settings.py", "from orchestrator.state import keys\n"),
        ("orchestrator/routing/bad.py", "from orchestrator import engine\n"),
        ("rotators/bad.py", "from orchestrator.errors import ConfigError\n"),
    ],
)
def test_a_planted_upward_import_is_found(tmp_path: Path, where: str, source: str) -> None:
    for package in ("orchestrator", "rotators"):
        (tmp_path / package).mkdir()
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(source)
    (problem,) = violations(tmp_path)
    assert problem.startswith(f"{where}:")
