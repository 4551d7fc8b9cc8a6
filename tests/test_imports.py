"""Every edgehal module imports in a bare install, and no two modules import each other at load time.

Both checks read the package from disk, so a new module is covered the day
it is added. Imports run in a fresh interpreter: modules an earlier test
imported would otherwise hide a module that fails, or one that pulls in an
optional library, on its own.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import edgehal

PACKAGE_DIR = Path(edgehal.__file__).resolve().parent

# Optional libraries that no edgehal module may import at load time: `import edgehal.X`
# must work without them, and importing them costs seconds (or needs a GPU).
OPTIONAL_LIBRARIES = ("tensorrt", "tritonclient", "pycuda")

# Import cycles another change is removing; the lead empties this once it has merged.
# A cycle made of exactly one of these pairs of modules is tolerated, no other.
_CYCLES_BEING_REMOVED: set[tuple[str, str]] = set()

_IMPORT_EVERY_MODULE = textwrap.dedent("""
    import importlib, json, pkgutil, sys, traceback

    package = importlib.import_module(sys.argv[1])
    failed = {}

    def record(name):
        failed[name] = traceback.format_exc(limit=-4)

    # walk_packages imports each package to list its submodules; onerror sees a package that fails.
    names = [sys.argv[1]]
    for info in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".", onerror=record):
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception:
            record(info.name)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))
    print(json.dumps({"modules": names, "failed": failed, "loaded": loaded}))
""")


def import_every_module(package: str, *, path: Path, watch: tuple[str, ...]) -> dict:
    """Import ``package`` and every module under it in a fresh interpreter with ``path`` first on sys.path.

    Returns the module names, the ones that failed (with their traceback),
    and which of ``watch`` ended up in ``sys.modules``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_MODULE, package, *watch], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_without_optional_libraries():
    found = import_every_module("edgehal", path=PACKAGE_DIR.parent, watch=OPTIONAL_LIBRARIES)
    # The walk reached the whole package, not just its top.
    assert {"edgehal.bench.run", "edgehal.runtime.onnxruntime", "edgehal.serve.app"} <= set(found["modules"])
    assert found["failed"] == {}, "\n".join(f"{name}:\n{tb}" for name, tb in found["failed"].items())
    assert found["loaded"] == [], f"imported at load time, make them lazy: {found['loaded']}"


def test_the_import_check_sees_failures_and_optional_libraries(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ok.py").write_text("import json\n")
    (pkg / "broken.py").write_text("import pkg.no_such_module\n")
    (pkg / "sub" / "__init__.py").write_text("raise RuntimeError('package fails')\n")
    (pkg / "heavy.py").write_text("import fakeoptional\n")
    (tmp_path / "fakeoptional.py").write_text("")
    found = import_every_module("pkg", path=tmp_path, watch=("fakeoptional",))
    assert set(found["failed"]) == {"pkg.broken", "pkg.sub"}
    assert "ModuleNotFoundError" in found["failed"]["pkg.broken"] and "package fails" in found["failed"]["pkg.sub"]
    assert found["loaded"] == ["fakeoptional"]


def test_bench_doctor_and_cli_load_no_heavy_library():
    # `edgehal --help`, `edgehal doctor` and bench's planning must start fast: heavy libraries load
    # only when a runner, a plot or a progress bar is actually made.
    code = ("import sys, edgehal.bench, edgehal.bench.run, edgehal.bench.report, edgehal.bench.jetson, "
            "edgehal.doctor, edgehal.cli; heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'matplotlib', "
            "'tensorrt', 'tqdm') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- import cycles -------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module loads: at top level, in top-level if/try/with blocks and
    class bodies; not in functions, and not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            pending.extend(node.orelse if _is_type_checking(node.test) else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            pending.extend(node.body)
    return found


def _modules(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it makes Python execute while it loads.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so those
    count too, except the importing module's own parent packages, which are
    always loaded before it and so never wait on it.
    """
    modules = _modules(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _load_time_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = module if is_package else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                # `from pkg import name` loads the submodule pkg.name when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    step = ".".join(parts[:i])
                    own_parent = module.startswith(step + ".")
                    if step in modules and step != module and (step == target or not own_parent):
                        graph[module].add(step)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each strongly connected group of modules, Tarjan's way."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(group, graph) for group in groups]


def _cycle_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {group}")  # a strongly connected group always has one


def test_no_import_cycles():
    allowed = {frozenset(pair) for pair in _CYCLES_BEING_REMOVED}
    cycles = [c for c in find_cycles(import_graph(PACKAGE_DIR, "edgehal")) if frozenset(c) not in allowed]
    assert not cycles, "import cycles at load time:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_cycles_through_packages_and_ignores_lazy_imports(tmp_path):
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    write("__init__.py", "")
    # a -> sub (its __init__ runs first) -> sub.y -> a: a cycle only through the package's __init__.
    write("a.py", "from pkg.sub.x import X\n")
    write("sub/__init__.py", "from pkg.sub.y import Y\n")
    write("sub/x.py", "X = 1\n")
    write("sub/y.py", "from pkg import a\nY = 2\n")
    # b and c import each other only lazily or for type checking: no cycle.
    write("b.py", """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg.c import C
        def f():
            from pkg import c
        """)
    write("c.py", "from pkg.b import f\nC = 3\n")
    # A relative import counts like an absolute one: d <-> e.
    write("d.py", "from .e import E\nD = 4\n")
    write("e.py", "try:\n    from pkg.d import D\nexcept ImportError:\n    D = None\nE = 5\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.x"} and graph["pkg.sub.x"] == set()
    assert graph["pkg.b"] == set() and graph["pkg.c"] == {"pkg.b"}
    assert sorted(find_cycles(graph)) == [["pkg.a", "pkg.sub", "pkg.sub.y", "pkg.a"], ["pkg.d", "pkg.e", "pkg.d"]]
