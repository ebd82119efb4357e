"""The layering rules of design.md, enforced by reading every module's imports (ast).

Function-local imports count as imports: hiding a dependency in a function does not
change which way it runs.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "authmilter"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module *path* imports (absolute names; 'authmilter.x.y' or third-party)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module is None or node.level and not node.module:
                out.update(f"{mod}.{a.name}" for a in node.names)   # from . import x
            else:
                out.add(mod)
                # from pkg import name: also the submodule pkg.name when there is one
                out.update(f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}"))
    return out


def _is_module(name: str) -> bool:
    path = SRC.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def _ours(imports: set[str]) -> set[str]:
    return {i for i in imports if i == "authmilter" or i.startswith("authmilter.")}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_every_module_was_read():
    assert "authmilter.pipeline" in MODULES and "authmilter.milter.handler" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_milter_package_imports_pymilter(module):
    if _within(module, ("authmilter.milter",)):
        return
    assert not {i for i in MODULES[module] if i.split(".")[0] in ("Milter", "milter")}, module


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ("authmilter.checks",))))
def test_checks_import_only_values_domain_and_the_resolver(module):
    allowed = ("authmilter.checks", "authmilter.results", "authmilter.model", "authmilter.domain",
               "authmilter.resolver", "authmilter.errors", "authmilter.dkim")
    bad = {i for i in _ours(MODULES[module]) if not _within(i, allowed)}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["authmilter.results", "authmilter.model", "authmilter.records",
                                    "authmilter.outcome"])
def test_value_modules_import_only_values(module):
    values = ("authmilter.results", "authmilter.model", "authmilter.records")
    bad = {i for i in _ours(MODULES[module]) if not _within(i, values)}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ("authmilter.dkim",))))
def test_the_dkim_engine_sits_below_the_checks(module):
    allowed = ("authmilter.dkim", "authmilter.results", "authmilter.model",
               "authmilter.domain", "authmilter.errors", "authmilter.resolver")
    bad = {i for i in _ours(MODULES[module]) if not _within(i, allowed)}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["authmilter.resolver", "authmilter.dnsudp", "authmilter.domain",
                                    "authmilter.errors"])
def test_foundations_import_no_layer_above(module):
    # dnsudp: the resolver's own exchange, below it (imports nothing of ours)
    allowed = ("authmilter.domain", "authmilter.errors", "authmilter.resolver", "authmilter.dnsudp")
    bad = {i for i in _ours(MODULES[module]) if not _within(i, allowed)}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ("authmilter.config",))))
def test_config_imports_no_layer_above(module):
    allowed = ("authmilter.config", "authmilter.errors", "authmilter.domain")
    bad = {i for i in _ours(MODULES[module]) if not _within(i, allowed)}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _within(m, ("authmilter.milter",))))
def test_nothing_below_the_entry_points_imports_the_milter_adapter(module):
    if module in ("authmilter.cli", "authmilter.demo"):
        return   # the command line starts the daemon
    bad = {i for i in _ours(MODULES[module]) if _within(i, ("authmilter.milter",))}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_policy_and_pipeline_do_not_reach_into_operations():
    for module in ("authmilter.policy", "authmilter.pipeline", "authmilter.authresults", "authmilter.signing"):
        bad = {i for i in _ours(MODULES[module]) if _within(i, ("authmilter.ops", "authmilter.milter", "authmilter.store"))}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_the_daemon_cannot_import_the_other_commands_modules():
    """`run` preloads the package's modules but the other commands' (privileges.COMMAND_ONLY),
    to keep every worker small; a worker that later imported one of those lazily could fail
    after the privilege drop. So no module the daemon loads may import one, at any level."""
    from authmilter.ops import privileges

    daemon = set(privileges.daemon_modules())
    assert "authmilter.milter.server" in daemon and "authmilter.pipeline" in daemon
    assert not any(privileges._command_only(m) for m in daemon)
    skipped = set(MODULES) - daemon
    assert "authmilter.analyze.command" in skipped and "authmilter.migrate" in skipped
    for module in sorted(daemon):
        bad = {i for i in _ours(MODULES[module]) if privileges._command_only(i)}
        assert not bad, f"{module} (loaded by the daemon) imports {sorted(bad)}, which run does not preload"
