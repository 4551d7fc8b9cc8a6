"""The head manifest: the one typed contract that travels with every model.

Every model declares its heads once (name, kind, level, class names, and for
an auxiliary head the mapping from main classes to its superclasses) together
with everything downstream code needs to know to score and deploy it: which
evaluator scores it, which input axis is a sequence, how HD-CNN's fine
branches split the classes, which building-floor pair each localization class
is. That one object is stored in every artifact (checkpoint, ONNX
``metadata_props``, engine sidecar, served model metadata) through
:mod:`edgehal.artifact`, and nothing downstream guesses output names or reads
string keys out of a free-form dict.

The JSON form carries a schema version. :meth:`HeadManifest.from_dict` reads
the current version exactly, upgrades version 1 (the untyped ``extra`` dict of
earlier releases, still in shipped checkpoints) and refuses a newer version or
any unknown key with an error that names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

from edgehal.errors import EdgehalError

MANIFEST_VERSION = 2
PREPROCESSING_VERSION = 2

HEAD_KINDS = ("main", "aux")
HEAD_TASKS = ("classification", "regression")
EVALUATORS = ("classification", "hdcnn", "localization")
LAYOUTS = ("NCHW", "NC")


def _what(what: str | None) -> str:
    return what or "head manifest"


def _tuple_of_ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in value):
        raise EdgehalError(what, f"is {value!r}", "a list of integers")
    return tuple(int(v) for v in value)


def _tuple_of_floats(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in value):
        raise EdgehalError(what, f"is {value!r}", "a list of numbers")
    return tuple(float(v) for v in value)


def _check_keys(d: Mapping[str, Any], cls: type, what: str, *, required: Sequence[str] = ()) -> None:
    if not isinstance(d, Mapping):
        raise EdgehalError(what, f"is a {type(d).__name__}", "a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise EdgehalError(what, f"has the unknown key {unknown[0]!r}", f"keys among {sorted(known)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise EdgehalError(what, f"lacks the key {missing[0]!r}", f"keys {list(required)} at least")


# --------------------------------------------------------------------------
# Heads


@dataclass(frozen=True)
class Head:
    """One named output of a model.

    ``parent_map`` (aux classification heads only) maps each main class index
    to this head's class index, so a main prediction can be lifted to the
    head's level; -1 marks main classes the head does not apply to (a floor
    head of another building), whose samples that head is not scored on.
    ``feeds_main`` says whether the head's output is an input of the main head
    (HAL) or a training-only branch (deep supervision), which is what decides
    whether pruning removes nodes.
    """

    name: str
    kind: str
    level: int
    task: str = "classification"
    class_names: tuple[str, ...] = ()
    parent_map: tuple[int, ...] | None = None
    feeds_main: bool = False
    case: str | None = None
    units: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise EdgehalError("head", f"name {self.name!r} is not a non-empty string")
        if self.kind not in HEAD_KINDS:
            raise EdgehalError(f"head {self.name!r}", f"kind {self.kind!r} is unknown", f"one of {HEAD_KINDS}")
        if self.task not in HEAD_TASKS:
            raise EdgehalError(f"head {self.name!r}", f"task {self.task!r} is unknown", f"one of {HEAD_TASKS}")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.parent_map is not None:
            pm = tuple(int(v) for v in self.parent_map)
            bad = [v for v in pm if v < -1 or v >= max(len(self.class_names), 1)]
            if bad:
                raise EdgehalError(f"head {self.name!r}", f"parent_map has the index {bad[0]}",
                                   f"-1 or 0..{len(self.class_names) - 1} (one of its {len(self.class_names)} "
                                   "classes)")
            object.__setattr__(self, "parent_map", pm)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "level": self.level, "task": self.task,
                "class_names": list(self.class_names),
                "parent_map": list(self.parent_map) if self.parent_map is not None else None,
                "feeds_main": self.feeds_main, "case": self.case, "units": self.units,
                "description": self.description}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "head") -> "Head":
        _check_keys(d, cls, what, required=("name", "kind", "level"))
        try:
            return cls(**{**d, "class_names": tuple(d.get("class_names", ())),
                          "parent_map": tuple(d["parent_map"]) if d.get("parent_map") is not None else None})
        except TypeError as exc:
            raise EdgehalError(what, f"is malformed ({exc})") from None


# --------------------------------------------------------------------------
# What downstream code needs to know about particular model families


@dataclass(frozen=True)
class SequenceAxis:
    """An input axis that is a sequence (time) dimension: a recurrent model runs
    on any length, so export makes it dynamic and build-engine profiles it."""

    axis: int
    name: str = "sequence"

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "name": self.name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "sequence") -> "SequenceAxis":
        _check_keys(d, cls, what, required=("axis",))
        return cls(axis=int(d["axis"]), name=str(d.get("name", "sequence")))


@dataclass(frozen=True)
class CoarseToFine:
    """HD-CNN's split of the fine classes into coarse categories.

    ``groups[k]`` lists the fine classes of coarse category k (its fine branch
    ``fine_b<k>``). ``branch_classes`` is ``all`` when every branch scores every
    fine class, ``group`` when branch k scores only the classes of ``groups[k]``
    in that order. ``combine`` is how the branches are mixed into the main output.
    """

    case: str
    groups: tuple[tuple[int, ...], ...]
    branch_classes: str = "all"
    combine: str = "soft"

    def __post_init__(self) -> None:
        if self.branch_classes not in ("all", "group"):
            raise EdgehalError("coarse_to_fine.branch_classes", f"is {self.branch_classes!r}", "all or group")
        flat = sorted(c for g in self.groups for c in g)
        if flat != list(range(len(flat))):
            raise EdgehalError("coarse_to_fine.groups", f"cover the classes {flat}",
                               "every fine class 0..N-1 exactly once")

    @property
    def coarse_of(self) -> tuple[int, ...]:
        """Coarse category of each fine class."""
        out = [0] * sum(len(g) for g in self.groups)
        for k, g in enumerate(self.groups):
            for c in g:
                out[c] = k
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "groups": [list(g) for g in self.groups],
                "branch_classes": self.branch_classes, "combine": self.combine}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "coarse_to_fine") -> "CoarseToFine":
        _check_keys(d, cls, what, required=("case", "groups"))
        if not isinstance(d["groups"], (list, tuple)):
            raise EdgehalError(f"{what}.groups", f"is {d['groups']!r}", "a list of lists of class indices")
        groups = tuple(_tuple_of_ints(g, f"{what}.groups[{k}]") for k, g in enumerate(d["groups"]))
        return cls(case=str(d["case"]), groups=groups, branch_classes=str(d.get("branch_classes", "all")),
                   combine=str(d.get("combine", "soft")))


@dataclass(frozen=True)
class BuildingFloors:
    """Hierarchical localization: which (building, floor) each class of the
    ``building_floor`` head is, where coordinates are measured from, and the
    IPIN competition's penalties used by the localization evaluator."""

    pairs: tuple[tuple[int, int], ...]
    combine: str = "hard"
    coordinate_origin: tuple[float, float] | None = None
    coordinate_frame: str = "EPSG:3857 metres relative to coordinate_origin"
    undetected_dbm: float = -110.0
    penalty_per_floor_m: float = 4.0
    penalty_wrong_building_m: float = 50.0

    def __post_init__(self) -> None:
        if not self.pairs:
            raise EdgehalError("building_floors.pairs", "is empty", "one (building, floor) pair per class")
        if len(set(self.pairs)) != len(self.pairs):
            raise EdgehalError("building_floors.pairs", "repeats a (building, floor) pair", "each pair once")

    @property
    def num_buildings(self) -> int:
        return max(b for b, _ in self.pairs) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [list(p) for p in self.pairs], "combine": self.combine,
                "coordinate_origin": list(self.coordinate_origin) if self.coordinate_origin is not None else None,
                "coordinate_frame": self.coordinate_frame, "undetected_dbm": self.undetected_dbm,
                "penalty_per_floor_m": self.penalty_per_floor_m,
                "penalty_wrong_building_m": self.penalty_wrong_building_m}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "building_floors") -> "BuildingFloors":
        _check_keys(d, cls, what, required=("pairs",))
        if not isinstance(d["pairs"], (list, tuple)):
            raise EdgehalError(f"{what}.pairs", f"is {d['pairs']!r}", "a list of [building, floor] pairs")
        pairs = []
        for k, p in enumerate(d["pairs"]):
            pair = _tuple_of_ints(p, f"{what}.pairs[{k}]")
            if len(pair) != 2:
                raise EdgehalError(f"{what}.pairs[{k}]", f"is {list(pair)}", "[building, floor]")
            pairs.append((pair[0], pair[1]))
        origin = d.get("coordinate_origin")
        if origin is not None:
            origin = _tuple_of_floats(origin, f"{what}.coordinate_origin")
            if len(origin) != 2:
                raise EdgehalError(f"{what}.coordinate_origin", f"is {list(origin)}", "[x, y]")
        return cls(pairs=tuple(pairs), combine=str(d.get("combine", "hard")), coordinate_origin=origin,
                   coordinate_frame=str(d.get("coordinate_frame", cls.coordinate_frame)),
                   undetected_dbm=float(d.get("undetected_dbm", cls.undetected_dbm)),
                   penalty_per_floor_m=float(d.get("penalty_per_floor_m", cls.penalty_per_floor_m)),
                   penalty_wrong_building_m=float(d.get("penalty_wrong_building_m",
                                                        cls.penalty_wrong_building_m)))


# --------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class HeadManifest:
    """Every head of a model, what its input looks like, and how it is scored.

    ``notes`` holds descriptive facts for people (the recurrence's steps, a
    frame's description); edgehal's own code never reads it: anything code
    needs is a typed field.
    """

    model: str
    input_name: str
    input_shape: tuple[int, ...]
    heads: tuple[Head, ...]
    input_dtype: str = "float32"
    evaluator: str = "classification"
    dataset: str | None = None
    sequence: SequenceAxis | None = None
    coarse_to_fine: CoarseToFine | None = None
    building_floors: BuildingFloors | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "notes", _jsonable(dict(self.notes)))
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise EdgehalError("head manifest", f"duplicate head names in {names}")
        if not any(h.kind == "main" for h in self.heads):
            raise EdgehalError("head manifest", "has no main head", "at least one head of kind 'main'")
        if self.evaluator not in EVALUATORS:
            raise EdgehalError("head manifest", f"evaluator {self.evaluator!r} is unknown", f"one of {EVALUATORS}")
        if self.evaluator == "hdcnn" and self.coarse_to_fine is None:
            raise EdgehalError("head manifest", "uses the hdcnn evaluator without coarse_to_fine",
                               "the coarse-to-fine groups of the fine branches")
        if self.evaluator == "localization" and self.building_floors is None:
            raise EdgehalError("head manifest", "uses the localization evaluator without building_floors",
                               "the (building, floor) pair of each class")
        if self.sequence is not None and not 0 < self.sequence.axis <= len(self.input_shape):
            raise EdgehalError("head manifest", f"sequence axis {self.sequence.axis} is not an input axis",
                               f"1..{len(self.input_shape)} (axis 0 is the batch)")
        if self.version != MANIFEST_VERSION:
            raise EdgehalError("head manifest", f"version {self.version}",
                               f"version {MANIFEST_VERSION}; read older ones with HeadManifest.from_dict")

    # -- heads -------------------------------------------------------------
    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    @property
    def main_heads(self) -> tuple[Head, ...]:
        return tuple(h for h in self.heads if h.kind == "main")

    @property
    def aux_heads(self) -> tuple[Head, ...]:
        return tuple(h for h in self.heads if h.kind == "aux")

    @property
    def main(self) -> Head:
        """The first main head: the one a classifier's accuracy is quoted for."""
        return self.main_heads[0]

    def head(self, name: str) -> Head:
        for h in self.heads:
            if h.name == name:
                return h
        raise EdgehalError(f"head {name!r}", "does not exist in this model", f"one of {list(self.head_names)}")

    def select(self, aux: str) -> "HeadManifest":
        """The manifest of an artifact exported with ``aux='keep'`` or ``'prune'``."""
        if aux == "keep":
            return self
        if aux == "prune":
            return replace(self, heads=self.main_heads)
        raise EdgehalError("aux", f"{aux!r} is not a choice", "keep or prune")

    def only(self, names: Sequence[str]) -> "HeadManifest":
        """The manifest restricted to the heads ``names`` (in manifest order)."""
        for n in names:
            self.head(n)
        return replace(self, heads=tuple(h for h in self.heads if h.name in set(names)))

    def order(self, names: Sequence[str]) -> list[str]:
        """``names`` sorted into manifest order; names that are not heads keep their order, last."""
        rank = {n: i for i, n in enumerate(self.head_names)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), list(names).index(n)))

    # -- comparison --------------------------------------------------------
    def differences(self, other: "HeadManifest") -> list[str]:
        """Dotted names of the fields where ``other`` differs (heads compared by name)."""
        out: list[str] = []
        a, b = self.to_dict(), other.to_dict()
        for key in a:
            if key == "heads":
                if [h["name"] for h in a["heads"]] != [h["name"] for h in b["heads"]]:
                    out.append("heads (names: {} vs {})".format([h["name"] for h in a["heads"]],
                                                                [h["name"] for h in b["heads"]]))
                    continue
                for ha, hb in zip(a["heads"], b["heads"]):
                    out += [f"heads[{ha['name']}].{k}" for k in ha if ha[k] != hb[k]]
            elif a[key] != b[key]:
                out.append(key)
        return out

    # -- JSON --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "model": self.model, "input_name": self.input_name,
            "input_shape": list(self.input_shape), "input_dtype": self.input_dtype,
            "heads": [h.to_dict() for h in self.heads], "evaluator": self.evaluator, "dataset": self.dataset,
            "sequence": self.sequence.to_dict() if self.sequence else None,
            "coarse_to_fine": self.coarse_to_fine.to_dict() if self.coarse_to_fine else None,
            "building_floors": self.building_floors.to_dict() if self.building_floors else None,
            "notes": _jsonable(dict(self.notes)),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any, *, what: str | None = None) -> "HeadManifest":
        what = _what(what)
        if not isinstance(d, Mapping):
            raise EdgehalError(what, f"is a {type(d).__name__}", "a JSON object")
        version = d.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise EdgehalError(what, f"version {version!r} is not an integer")
        if version > MANIFEST_VERSION:
            raise EdgehalError(what, f"has schema version {version}, newer than this edgehal reads "
                               f"({MANIFEST_VERSION})", "upgrade edgehal to read it")
        if version < 1:
            raise EdgehalError(what, f"has schema version {version}", f"1..{MANIFEST_VERSION}")
        if version == 1:
            d = _upgrade_v1(d, what)
        _check_keys(d, cls, what, required=("model", "input_name", "input_shape", "heads"))
        if not isinstance(d["heads"], (list, tuple)):
            raise EdgehalError(f"{what}.heads", f"is {d['heads']!r}", "a list of heads")
        heads = tuple(Head.from_dict(h, what=f"{what}.heads[{i}]") for i, h in enumerate(d["heads"]))
        seq, c2f, bf = d.get("sequence"), d.get("coarse_to_fine"), d.get("building_floors")
        notes = d.get("notes") or {}
        if not isinstance(notes, Mapping):
            raise EdgehalError(f"{what}.notes", f"is {notes!r}", "a JSON object")
        return cls(model=str(d["model"]), input_name=str(d["input_name"]),
                   input_shape=_tuple_of_ints(d["input_shape"], f"{what}.input_shape"), heads=heads,
                   input_dtype=str(d.get("input_dtype", "float32")),
                   evaluator=str(d.get("evaluator", "classification")), dataset=d.get("dataset"),
                   sequence=SequenceAxis.from_dict(seq, what=f"{what}.sequence") if seq is not None else None,
                   coarse_to_fine=CoarseToFine.from_dict(c2f, what=f"{what}.coarse_to_fine")
                   if c2f is not None else None,
                   building_floors=BuildingFloors.from_dict(bf, what=f"{what}.building_floors")
                   if bf is not None else None,
                   notes=dict(notes))

    @classmethod
    def from_json(cls, text: str, *, what: str | None = None) -> "HeadManifest":
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EdgehalError(_what(what), f"is not valid JSON ({getattr(exc, 'msg', exc)})") from None
        return cls.from_dict(raw, what=what)

    # -- declaring a user's model ------------------------------------------
    @classmethod
    def classifier(cls, *, class_names: Sequence[str],
                   superclasses: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                   input_shape: Sequence[int], input_name: str = "input", model: str = "custom",
                   feeds_main: bool = True) -> "HeadManifest":
        """The manifest of a classifier with a main head ``logits`` and one auxiliary head per
        entry of ``superclasses``.

        ``superclasses`` maps an auxiliary head's name to ``{superclass name: [class names]}``;
        every class of ``class_names`` must be in exactly one superclass of each head. The heads'
        ``parent_map`` (main class index -> superclass index) is computed from it. ``feeds_main``
        says whether the auxiliary heads feed the main head (HAL; pruning them then keeps their
        nodes) or are training-only branches. ``input_shape`` excludes the batch axis.

        Returns the manifest; raises :class:`EdgehalError` naming the first unknown, repeated or
        missing class.
        """
        names = _class_names(class_names, what="class_names")
        heads = [Head(name="logits", kind="main", level=0, class_names=names,
                      description=f"{len(names)} classes")]
        if superclasses is not None and not isinstance(superclasses, Mapping):
            raise EdgehalError("superclasses", f"is a {type(superclasses).__name__}",
                               "a mapping of head name -> {superclass name: [class names]}")
        for head_name, groups in (superclasses or {}).items():
            heads.append(_superclass_head(str(head_name), groups, names, feeds_main=feeds_main))
        return cls(model=model, input_name=input_name, input_shape=tuple(input_shape), heads=tuple(heads))


def _class_names(values: Any, *, what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise EdgehalError(what, f"is {values!r}", "a non-empty list of class names")
    names = tuple(str(v) for v in values)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EdgehalError(what, f"repeats {repeated[0]!r}", "each class name once")
    return names


def _superclass_head(name: str, groups: Any, class_names: tuple[str, ...], *, feeds_main: bool) -> Head:
    """An auxiliary head from ``{superclass name: [class names]}``, refusing unknown, repeated and
    missing classes by name (close matches suggested)."""
    import difflib

    from edgehal.hierarchy import validate_groups  # hierarchy imports this module

    what = f"superclasses[{name!r}]"
    if not isinstance(groups, Mapping) or not groups:
        raise EdgehalError(what, f"is {groups!r}", "a non-empty mapping of superclass name -> [class names]")
    index = {c: i for i, c in enumerate(class_names)}
    owner: dict[str, str] = {}
    indices = []
    for superclass, members in groups.items():
        if isinstance(members, str) or not isinstance(members, Sequence) or not members:
            raise EdgehalError(f"{what}[{superclass!r}]", f"is {members!r}", "a non-empty list of class names")
        for c in map(str, members):
            if c not in index:
                close = difflib.get_close_matches(c, class_names, n=3)
                raise EdgehalError(f"{what}[{superclass!r}]", f"names the unknown class {c!r}",
                                   f"did you mean {' or '.join(map(repr, close))}?" if close else
                                   f"class names among {list(class_names)}")
            if c in owner:
                raise EdgehalError(what, f"puts class {c!r} in both {owner[c]!r} and {superclass!r}",
                                   "each class in exactly one superclass")
            owner[c] = str(superclass)
        indices.append([index[c] for c in map(str, members)])
    missing = [c for c in class_names if c not in owner]
    if missing:
        raise EdgehalError(what, f"leaves out the class{'es' if len(missing) > 1 else ''} "
                           f"{', '.join(map(repr, missing))}", "every class in exactly one superclass")
    validated = validate_groups(indices, num_classes=len(class_names), what=what)
    parent = [0] * len(class_names)
    for k, group in enumerate(validated):
        for c in group:
            parent[c] = k
    return Head(name=name, kind="aux", level=1, class_names=tuple(map(str, groups)), parent_map=tuple(parent),
                feeds_main=feeds_main, description=f"{len(groups)} superclasses")


def _jsonable(value: Any) -> Any:
    """Tuples become lists so that a JSON round trip returns an equal manifest."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# Keys of version 1's free-form ``extra`` that code read, and where they live now.
def _upgrade_v1(d: Mapping[str, Any], what: str) -> dict[str, Any]:
    extra = dict(d.get("extra") or {})
    out = {k: v for k, v in d.items() if k not in ("extra", "version")}
    out["version"] = MANIFEST_VERSION
    out["evaluator"] = extra.pop("evaluator", "classification")
    out["dataset"] = extra.pop("dataset", None)
    if "sequence_axis" in extra:
        out["sequence"] = {"axis": int(extra.pop("sequence_axis")), "name": str(extra.pop("sequence", "sequence"))}
    if "superclass_groups" in extra:
        out["coarse_to_fine"] = {"case": extra.pop("case", "custom"), "groups": extra.pop("superclass_groups"),
                                 "branch_classes": extra.pop("branch_classes", "all"),
                                 "combine": extra.pop("combine", "soft")}
    if "building_floor_pairs" in extra:
        penalty = extra.pop("penalty_m", {}) or {}
        bf: dict[str, Any] = {"pairs": extra.pop("building_floor_pairs"), "combine": extra.pop("combine", "hard"),
                              "coordinate_origin": extra.pop("coordinate_origin", None)}
        for src, dst in (("coordinate_frame", "coordinate_frame"), ("undetected_dbm", "undetected_dbm")):
            if src in extra:
                bf[dst] = extra.pop(src)
        if "per_floor" in penalty:
            bf["penalty_per_floor_m"] = penalty["per_floor"]
        if "wrong_building" in penalty:
            bf["penalty_wrong_building_m"] = penalty["wrong_building"]
        out["building_floors"] = bf
    out["notes"] = extra
    return out


# --------------------------------------------------------------------------
# Preprocessing: what a deployed model expects of its input


@dataclass(frozen=True)
class Preprocessing:
    """What the deployed graph takes and what it does to it.

    edgehal models normalise inside the graph, so a deployed model takes raw
    values (``input_range``: pixels 0..255, RSSI in dBm) and computes
    ``(x * scale - mean) / std`` itself. ``layout`` is declared by the data set
    (``NCHW`` images, ``NC`` feature vectors), never guessed from a rank.
    ``augment`` is the training-time augmentation (not deployed); ``details``
    records data-set facts for people (fitted statistics, source files).
    """

    layout: str
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"
    input_range: tuple[float, float] | None = None
    scale: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    normalization: str = ""
    dataset: str | None = None
    augment: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    version: int = PREPROCESSING_VERSION

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise EdgehalError("preprocessing", f"layout {self.layout!r} is unknown", f"one of {LAYOUTS}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.input_range is not None:
            object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
        if len(self.mean) != len(self.std):
            raise EdgehalError("preprocessing", f"has {len(self.mean)} means and {len(self.std)} stds",
                               "one of each per channel")
        if any(s <= 0 for s in self.std):
            raise EdgehalError("preprocessing", f"std {list(self.std)} has a value <= 0", "positive stds")
        object.__setattr__(self, "augment", _jsonable(dict(self.augment)))
        object.__setattr__(self, "details", _jsonable(dict(self.details)))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "layout": self.layout, "input_shape": list(self.input_shape),
                "input_dtype": self.input_dtype,
                "input_range": list(self.input_range) if self.input_range is not None else None,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "normalization": self.normalization, "dataset": self.dataset,
                "augment": _jsonable(dict(self.augment)), "details": _jsonable(dict(self.details))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any, *, what: str = "preprocessing") -> "Preprocessing":
        if not isinstance(d, Mapping):
            raise EdgehalError(what, f"is a {type(d).__name__}", "a JSON object")
        version = d.get("version", 1)
        if not isinstance(version, int) or version > PREPROCESSING_VERSION or version < 1:
            raise EdgehalError(what, f"has schema version {version!r}",
                               f"1..{PREPROCESSING_VERSION}; upgrade edgehal to read a newer one")
        if version == 1:
            d = _upgrade_preprocessing_v1(d)
        _check_keys(d, cls, what, required=("layout", "input_shape"))
        rng = d.get("input_range")
        return cls(layout=str(d["layout"]), input_shape=_tuple_of_ints(d["input_shape"], f"{what}.input_shape"),
                   input_dtype=str(d.get("input_dtype", "float32")),
                   input_range=_tuple_of_floats(rng, f"{what}.input_range") if rng is not None else None,
                   scale=float(d.get("scale", 1.0)),
                   mean=_tuple_of_floats(d.get("mean", []), f"{what}.mean"),
                   std=_tuple_of_floats(d.get("std", []), f"{what}.std"),
                   normalization=str(d.get("normalization", "")), dataset=d.get("dataset"),
                   augment=dict(d.get("augment") or {}), details=dict(d.get("details") or {}))

    @classmethod
    def from_json(cls, text: str, *, what: str = "preprocessing") -> "Preprocessing":
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EdgehalError(what, f"is not valid JSON ({getattr(exc, 'msg', exc)})") from None
        return cls.from_dict(raw, what=what)


def _upgrade_preprocessing_v1(d: Mapping[str, Any]) -> dict[str, Any]:
    """Version 1 was a free dict; its layout key was there, its image scale implied by the text."""
    d = dict(d)
    out: dict[str, Any] = {"version": PREPROCESSING_VERSION}
    for key in ("layout", "input_shape", "input_dtype", "mean", "std", "normalization", "dataset", "augment"):
        if key in d:
            out[key] = d.pop(key)
    rng = d.pop("input_range", None)
    if isinstance(rng, Mapping):  # UJIIndoorLoc wrote {"rssi_dbm": [lo, hi], "not_detected": 100}
        out["input_range"] = rng.get("rssi_dbm")
        d["input_range"] = dict(rng)
    else:
        out["input_range"] = rng
    if out.get("layout") == "NCHW":
        out["scale"] = 1.0 / 255.0
    out.setdefault("layout", "NC")
    out.setdefault("input_shape", [])
    out["details"] = d
    return out
