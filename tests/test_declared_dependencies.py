"""Every third-party package edgehal imports is declared in pyproject.toml.

A package that only arrives as a dependency of another (protobuf through
tritonclient[grpc], say) disappears the day that package stops requiring it, so
each distribution edgehal's own code imports must be named in ``dependencies``
or in one of the ``optional-dependencies`` extras (the lazily imported ones:
tensorrt, tritonclient, onnxruntime, ...).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgehal"
# Modules found by a string (``importlib.util.find_spec("tritonclient")``) are imports too.
_SPEC_CALLS = {"find_spec", "import_module"}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a PEP 508 requirement string names (``tritonclient[grpc]>=2.40`` -> ``tritonclient``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read the distribution name of requirement {requirement!r}"
    return normalise(match.group(1))


def declared_distributions(pyproject: dict) -> set[str]:
    """Distributions named in [project] dependencies and every optional-dependencies extra."""
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {requirement_name(r) for r in requirements}


def imported_modules(source: str) -> set[str]:
    """Absolute dotted module names a module's source imports, lazily or not."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in _SPEC_CALLS):
            found.add(node.args[0].value)
    return found


def third_party_modules(package: Path) -> dict[str, set[str]]:
    """Dotted third-party module name -> the files under ``package`` importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for module in imported_modules(path.read_text(encoding="utf-8")):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ("__future__", "edgehal") or not top:
                continue
            found.setdefault(module, set()).add(str(path.relative_to(package.parent)))
    return found


def _provides(distribution: str, module: str) -> bool:
    """Whether an installed distribution ships ``module``'s package: of a namespace package
    (google.*) each distribution ships only some subpackages, so the first two name parts decide."""
    prefix = "/".join(module.split(".")[:2])
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(str(f) == prefix + ".py" or str(f).startswith(prefix + "/") for f in files)


@functools.cache
def _index() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str, index: dict[str, list[str]]) -> set[str]:
    """The distributions that provide ``module``. A module not installed here (tensorrt on a CPU
    machine) is taken to be published under its own name, which holds for edgehal's optional packages."""
    top = module.split(".")[0]
    candidates = index.get(top, [])
    if not candidates:
        return {normalise(top)}
    if len(candidates) > 1:  # a namespace package (google.*): keep those shipping the submodule
        narrowed = [d for d in candidates if _provides(d, module)]
        candidates = narrowed or candidates
    return {normalise(d) for d in candidates}


def undeclared(package: Path, pyproject: dict) -> dict[str, list[str]]:
    """Imported module -> the files importing it, for each one whose distribution pyproject does not name."""
    declared = declared_distributions(pyproject)
    index = _index()
    return {module: sorted(files) for module, files in sorted(third_party_modules(package).items())
            if not distributions_of(module, index) & declared}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_imported_package_is_declared(pyproject):
    missing = undeclared(PACKAGE, pyproject)
    assert not missing, ("edgehal imports packages pyproject.toml does not declare (add them to "
                         f"dependencies or the extra whose code imports them): {missing}")


def test_the_walk_sees_lazy_and_namespace_imports():
    """The check has teeth: the optional packages and the google.protobuf namespace package are found."""
    modules = third_party_modules(PACKAGE)
    for module in ("tensorrt", "tritonclient.grpc", "onnxruntime", "google.protobuf", "grpc", "torch"):
        assert module in modules, sorted(modules)
    index = _index()
    assert distributions_of("google.protobuf", index) == {"protobuf"}
    assert distributions_of("grpc", index) == {"grpcio"}
    assert distributions_of("yaml", index) == {"pyyaml"}


@pytest.mark.parametrize("line,module", [
    ("protobuf", "google.protobuf"),
    ("grpcio", "grpc"),
    ("tritonclient", "tritonclient.grpc"),
    ("tensorrt", "tensorrt"),
    ("scikit-learn", "sklearn.datasets"),
    ("pyyaml", "yaml"),
])
def test_removing_a_declaration_is_caught(pyproject, line, module):
    project = pyproject["project"]
    stripped = {"project": {
        "dependencies": [r for r in project["dependencies"] if requirement_name(r) != line],
        "optional-dependencies": {extra: [r for r in reqs if requirement_name(r) != line]
                                  for extra, reqs in project["optional-dependencies"].items()},
    }}
    assert module in undeclared(PACKAGE, stripped)


def test_imported_modules_reads_every_import_form():
    source = (
        "import a.b as c\n"
        "from d.e import f\n"
        "from . import local\n"
        "def lazy():\n"
        "    import g\n"
        "    importlib.util.find_spec('h')\n"
        "    importlib.import_module('i.j')\n"
    )
    assert imported_modules(source) == {"a.b", "d.e", "g", "h", "i.j"}
