"""The package's public names, resolved on first use, and the import order it exists for."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import edgehal
import edgehal.export.tensorrt as tensorrt_pkg


@pytest.mark.parametrize("name", tensorrt_pkg.__all__)
def test_every_public_name_is_its_module_object(name):
    module = importlib.import_module(f"edgehal.export.tensorrt.{tensorrt_pkg._PUBLIC[name]}")
    assert getattr(tensorrt_pkg, name) is getattr(module, name)
    assert name in dir(tensorrt_pkg)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'build_engine_v2'"):
        tensorrt_pkg.build_engine_v2  # noqa: B018


def test_the_inspector_imports_without_the_planner():
    """``edgehal.export.inspect`` needs the operator table and the profile rules, not the planner that uses it."""
    code = ("import sys, edgehal.export.inspect\n"
            "print(sorted(m for m in sys.modules if m.startswith('edgehal.export.tensorrt')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("['edgehal.export.tensorrt', 'edgehal.export.tensorrt.ops', "
                                  "'edgehal.export.tensorrt.profile']")


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The edgehal modules ``module`` imports anywhere in its file (lazy imports in functions too), with
    the packages Python runs on the way."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in found & known if m != module and not module.startswith(m + ".")}


def test_export_and_runtime_have_no_import_cycles():
    root = Path(edgehal.__file__).parent
    files = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    scope = {m for m in files if m.startswith(("edgehal.export", "edgehal.runtime"))}
    graph = {m: _imports(files[m], m, scope) for m in scope}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(scope)) if c]
    assert not cycles, " -> ".join(cycles[0])
