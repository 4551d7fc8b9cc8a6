"""The generic registry: one registration per name, unknown names answered with the known ones,
built-in modules imported on first use, and a built-in module that fails to import is an error."""

import sys
import textwrap

import pytest

from edgehal.errors import EdgehalError
from edgehal.registry import Registry, place_of


def _builder_a():
    return "a"


def _builder_b():
    return "b"


def test_registers_and_looks_up_by_name():
    reg: Registry = Registry("widget")
    reg.register("a")(_builder_a)
    reg.add("b", _builder_b)
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.get("b")() == "b" and "a" in reg and "c" not in reg
    assert reg.place("a") == f"{__name__}._builder_a" == place_of(_builder_a)


def test_a_duplicate_name_is_refused_naming_both_places():
    reg: Registry = Registry("widget")
    reg.register("a")(_builder_a)
    with pytest.raises(EdgehalError) as err:
        reg.register("a")(_builder_b)
    message = str(err.value)
    assert message.startswith("widget 'a' | is registered twice")
    assert f"{__name__}._builder_a" in message and f"{__name__}._builder_b" in message
    assert reg.get("a") is _builder_a  # the first registration stands


def test_the_same_place_registering_again_is_a_reimport_not_a_duplicate():
    reg: Registry = Registry("widget")
    reg.add("a", _builder_a)
    reg.add("a", _builder_a)
    assert reg.names() == ["a"]


def test_an_unknown_name_lists_the_known_ones():
    reg: Registry = Registry("widget")
    reg.add("alpha", _builder_a)
    reg.add("beta", _builder_b)
    with pytest.raises(EdgehalError, match=r"widget 'gamma' \| is not a known widget. Note: one of \['alpha', 'beta'\]"):
        reg.get("gamma")


@pytest.fixture
def package(tmp_path, monkeypatch):
    """Make a real package on sys.path holding the given files; it is forgotten after the test."""
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name: str, files: dict[str, str]) -> str:
        pkg = tmp_path / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        for file, text in files.items():
            (pkg / file).write_text(textwrap.dedent(text))
        return name

    yield make
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_builtin_modules_register_on_first_use(package):
    pkg = package("reg_ok", {
        "reg.py": "from edgehal.registry import Registry\nREG = Registry('widget', builtin=('reg_ok.one',))\n",
        "one.py": "from reg_ok.reg import REG\n\n@REG.register('one')\ndef one():\n    return 1\n",
    })
    reg = __import__(f"{pkg}.reg", fromlist=["REG"]).REG
    assert f"{pkg}.one" not in sys.modules
    assert reg.names() == ["one"] and reg.get("one")() == 1


@pytest.mark.parametrize("files,missing", [
    # the built-in module itself is missing (the old data registry skipped exactly this case)
    ({}, "reg_bad.gone"),
    # the module exists but one of its imports fails
    ({"gone.py": "import reg_bad_no_such_dependency\n"}, "reg_bad_no_such_dependency"),
])
def test_a_builtin_module_that_fails_to_import_is_an_error(package, files, missing):
    pkg = package("reg_bad", files)
    reg: Registry = Registry("widget", builtin=(f"{pkg}.gone",))
    for _ in range(2):  # and stays one: a second look does not see a half-filled registry
        with pytest.raises(ImportError, match="widget registry: the built-in module reg_bad.gone failed to import") \
                as err:
            reg.names()
        assert err.value.name == missing and isinstance(err.value.__cause__, ModuleNotFoundError)
