"""Superclass cases from the HAL papers: groupings of the main classes that
auxiliary heads predict. The head manifest that records them is in
:mod:`edgehal.manifest`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgehal.errors import EdgehalError
from edgehal.manifest import Head

DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


@dataclass(frozen=True)
class SuperclassCase:
    """A grouping of the main classes into K superclasses.

    ``groups[k]`` holds the main class indices of superclass ``k``;
    ``mapping[c]`` is the superclass of main class ``c``.
    """

    name: str
    semantics: str
    groups: tuple[tuple[int, ...], ...]
    superclass_names: tuple[str, ...]

    @property
    def num_superclasses(self) -> int:
        return len(self.groups)

    @property
    def num_classes(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def mapping(self) -> tuple[int, ...]:
        out = [0] * self.num_classes
        for k, group in enumerate(self.groups):
            for c in group:
                out[c] = k
        return tuple(out)


def _case(name: str, semantics: str, groups: Sequence[Sequence[int]],
          names: Sequence[str] | None = None) -> SuperclassCase:
    groups_t = tuple(tuple(g) for g in groups)
    return SuperclassCase(
        name=name,
        semantics=semantics,
        groups=groups_t,
        superclass_names=tuple(names) if names else tuple(
            "{" + ",".join(str(c) for c in g) + "}" for g in groups_t),
    )


# Exactly the tables of Cha, Kim, Lee (arXiv:1906.00852) and the SURF 2019 deck.
_DIGIT_CASES = {
    "case1": _case("case1", ">= 5", [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]], ["ge5", "lt5"]),
    "case2": _case("case2", "mod 2", [[1, 3, 5, 7, 9], [0, 2, 4, 6, 8]], ["odd", "even"]),
    "case3": _case("case3", "prime", [[2, 3, 5, 7], [0, 1, 4, 6, 8, 9]], ["prime", "not_prime"]),
    "case4": _case("case4", "circle / curve / straight line",
                   [[0, 6, 8, 9], [2, 3, 5], [1, 4, 7]], ["circle", "curve", "straight"]),
}
_CIFAR10_CASES = {
    "case1": _case("case1", "none", [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]),
    "case2": _case("case2", "none", [[1, 3, 5, 7, 9], [0, 2, 4, 6, 8]]),
    "case3": _case("case3", "transportation / animal",
                   [[2, 3, 4, 5, 6, 7], [0, 1, 8, 9]], ["animal", "transportation"]),
    "case4": _case("case4", "car / small animal / big animal / craft / others",
                   [[1, 9], [3, 5], [4, 7], [0, 8], [2, 6]],
                   ["car", "small_animal", "big_animal", "craft", "others"]),
}
SUPERCLASS_CASES: dict[str, dict[str, SuperclassCase]] = {
    "mnist": _DIGIT_CASES,
    "svhn": _DIGIT_CASES,
    "digits": _DIGIT_CASES,
    "cifar10": _CIFAR10_CASES,
}


def get_case(dataset: str, case: str, *, num_classes: int | None = None,
             class_names: Sequence[str] | None = None) -> SuperclassCase:
    """Return a published superclass case, or a custom one from a YAML/JSON file.

    ``case`` is a case name (``case1``..``case4``) or a path to a mapping file.
    ``num_classes`` is how many main classes a mapping file must partition;
    ``class_names`` (in label order) lets the file name classes by name, and
    gives the count when ``num_classes`` is not given. Without either, the
    count is that of ``dataset``'s published cases.
    """
    if case.endswith((".yaml", ".yml", ".json")) or "/" in case:
        if num_classes is None and class_names is None:
            published = SUPERCLASS_CASES.get(dataset)
            if not published:
                raise EdgehalError(f"superclass mapping {case}", f"has no class count to check: {dataset!r} "
                                   "has no published superclass cases",
                                   "the class names (class_names) or number of main classes (num_classes)")
            num_classes = next(iter(published.values())).num_classes
        return load_case_file(case, num_classes=num_classes, class_names=class_names)
    cases = SUPERCLASS_CASES.get(dataset)
    if cases is None:
        raise EdgehalError(
            f"dataset {dataset!r}", "has no published superclass cases",
            f"one of {sorted(SUPERCLASS_CASES)}, or give a mapping file")
    if case not in cases:
        raise EdgehalError(
            f"case {case!r}", f"is not a superclass case of {dataset}",
            f"one of {sorted(cases)}, or a path to a YAML/JSON mapping file")
    return cases[case]


def validate_groups(groups: Any, *, num_classes: int, what: str,
                    class_names: Sequence[str] | None = None,
                    superclass_names: Sequence[str] | None = None) -> tuple[tuple[int, ...], ...]:
    """Check that ``groups`` partitions ``0..num_classes-1``; name the offending class.

    ``class_names`` and ``superclass_names``, when given, are how messages name
    classes and superclasses (a file that names them by name reads its own
    names back in an error).
    """
    def cls(c: int) -> str:
        return repr(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)

    def sup(k: int) -> str:
        return repr(superclass_names[k]) if superclass_names is not None else str(k)

    if isinstance(groups, Mapping):
        try:
            keys = sorted(int(k) for k in groups)
        except (TypeError, ValueError):
            raise EdgehalError(what, f"superclass ids {list(groups)} are not integers",
                               "ids 0..K-1") from None
        if keys != list(range(len(keys))):
            raise EdgehalError(what, f"superclass ids are {keys}",
                               f"ids 0..{len(keys) - 1} with none missing")
        groups = [groups[k] if k in groups else groups[str(k)] for k in keys]
    if not isinstance(groups, (list, tuple)) or not groups:
        raise EdgehalError(what, "groups must be a non-empty list or an id -> classes map")
    seen: dict[int, int] = {}
    out = []
    for k, group in enumerate(groups):
        if not isinstance(group, (list, tuple)) or not group:
            raise EdgehalError(what, f"superclass {sup(k)} is empty or not a list",
                               "each superclass lists at least one class")
        for c in group:
            if isinstance(c, bool) or not isinstance(c, int):
                raise EdgehalError(what, f"class {c!r} in superclass {sup(k)} is not an integer")
            if not 0 <= c < num_classes:
                raise EdgehalError(what, f"class {c} in superclass {sup(k)} is out of range",
                                   f"classes 0..{num_classes - 1}")
            if c in seen:
                raise EdgehalError(what, f"class {cls(c)} is repeated (superclasses {sup(seen[c])} and {sup(k)})",
                                   "each class in exactly one superclass")
            seen[c] = k
        out.append(tuple(group))
    missing = sorted(set(range(num_classes)) - set(seen))
    if missing:
        raise EdgehalError(what, f"class {cls(missing[0])} is missing" +
                           (f" (and {', '.join(cls(c) for c in missing[1:])})" if len(missing) > 1 else ""),
                           f"every class 0..{num_classes - 1} in exactly one superclass")
    return tuple(out)


def _by_name(groups: Any) -> bool:
    """A mapping whose keys are superclass names (``{even: [...], odd: [...]}``), not ids 0..K-1."""
    if not isinstance(groups, Mapping) or not groups:
        return False
    try:
        for k in groups:
            if isinstance(k, bool) or k is None:
                return True
            int(k)
    except (TypeError, ValueError):
        return True
    return False


def _class_index(member: Any, *, superclass: str, class_names: Sequence[str] | None, what: str) -> Any:
    """A group member as a class index: a class name is looked up, an integer is an index.

    An integer that is also the name of another class (folders named 1, 2, ...)
    is ambiguous and refused; anything else that is not a string is handed to
    ``validate_groups``, which names it.
    """
    if isinstance(member, bool) or member is None:
        raise EdgehalError(what, f"class {member!r} in superclass {superclass!r} is not a class name",
                           "quote names YAML reads as booleans or null (yes, no, on, off, true, false, null)")
    if isinstance(member, int):
        if class_names is not None and str(member) in class_names and class_names.index(str(member)) != member:
            raise EdgehalError(what, f"class {member} in superclass {superclass!r} is both the index of class "
                               f"{class_names[member] if 0 <= member < len(class_names) else '(none)'!r} and the "
                               f"name of class {class_names.index(str(member))}",
                               f"quote it ('{member}') to mean the class named {member}")
        return member
    if not isinstance(member, str):
        return member
    if class_names is None:
        raise EdgehalError(what, f"names class {member!r} but the class names are not known",
                           "class indices, or pass class_names (the data set's classes in label order)")
    if member not in class_names:
        close = difflib.get_close_matches(member, list(class_names), n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise EdgehalError(what, f"class {member!r} in superclass {superclass!r} is not a class",
                           f"{hint}the classes: {list(class_names)}")
    return list(class_names).index(member)


def load_case_file(path: str | Path, *, num_classes: int | None = None,
                   class_names: Sequence[str] | None = None) -> SuperclassCase:
    """Load a custom mapping.

    Two forms: superclass ids, ``{name, groups: {0: [...], 1: [...]}, names: [...]}``,
    or superclass names, ``{name, groups: {even: [zero, two], odd: [one, three]}}``.
    Classes are listed by index or, with ``class_names`` given (label order), by
    name; a name that is not a class is refused with the close matches. Every
    class must be in exactly one superclass. ``num_classes`` defaults to
    ``len(class_names)``.
    """
    import yaml

    p = Path(path)
    what = f"superclass mapping {p}"
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes is not None and num_classes != len(class_names):
            raise EdgehalError(what, f"was asked for {num_classes} classes but given {len(class_names)} class names",
                               "one class name per class")
        num_classes = len(class_names)
    if num_classes is None:
        raise EdgehalError(what, "has no class count to check", "num_classes or class_names")
    if not p.is_file():
        raise EdgehalError(what, "file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise EdgehalError(what, f"is not valid YAML/JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or "groups" not in raw:
        raise EdgehalError(what, "has no 'groups' key", "{name: ..., groups: {0: [classes], 1: [...]}} "
                           "or {name: ..., groups: {superclass: [class names], ...}}")
    groups, names = raw["groups"], raw.get("names")
    by_name = _by_name(groups)
    if by_name:
        if names is not None:
            raise EdgehalError(what, "names its superclasses twice (groups' keys and 'names')",
                               "superclass names as the keys of groups, or ids 0..K-1 with 'names'")
        bad = [k for k in groups if isinstance(k, bool) or k is None]
        if bad:
            raise EdgehalError(what, f"superclass name {bad[0]!r} is not a string",
                               "quote names YAML reads as booleans or null (yes, no, on, off, true, false, null)")
        names = [str(k) for k in groups]
        groups = list(groups.values())
    # Class names become indices here; validate_groups then checks the partition as for an index file.
    labels = names if by_name else None

    def members(k: Any, group: Any) -> Any:
        if not isinstance(group, (list, tuple)):
            return group
        superclass = labels[k] if labels is not None else str(k)
        return [_class_index(m, superclass=superclass, class_names=class_names, what=what) for m in group]

    if isinstance(groups, Mapping):
        groups = {k: members(k, g) for k, g in groups.items()}
    elif isinstance(groups, (list, tuple)):
        groups = [members(k, g) for k, g in enumerate(groups)]
    groups = validate_groups(groups, num_classes=num_classes, what=what, class_names=class_names,
                             superclass_names=labels)
    if names is not None and (not isinstance(names, list) or len(names) != len(groups)):
        raise EdgehalError(what, f"'names' has {len(names) if isinstance(names, list) else '?'} entries",
                           f"{len(groups)} names, one per superclass")
    return _case(str(raw.get("name", p.stem)), str(raw.get("semantics", "custom")), groups, names)


def aux_head_from_case(case: SuperclassCase, *, name: str | None = None,
                       feeds_main: bool = True, level: int = 1) -> Head:
    """The auxiliary head that predicts the superclasses of ``case``."""
    return Head(
        name=name or f"aux_{case.name}",
        kind="aux",
        level=level,
        class_names=case.superclass_names,
        parent_map=case.mapping,
        feeds_main=feeds_main,
        case=case.name,
        description=f"superclass {case.name} ({case.semantics})",
    )
