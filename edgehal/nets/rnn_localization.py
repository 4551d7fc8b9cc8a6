"""Hierarchical localization by recurrence (Elesawi and Kim 2021): building, then floor, then coordinates.

    raw RSSI (520, dBm, 100 = not detected)
      -> in-graph preprocessing (``rssi.RssiTransform``, buffers fitted on training data)
      -> shared layers -> features f
      -> one recurrent cell (``edgehal.nets.rnn``: rnn | lstm | peephole_lstm | gru), three steps:
           step 1: x_1 = [f, 0,          0         ] -> h_1 -> building logits (B)
           step 2: x_2 = [f, softmax(b), 0         ] -> h_2 -> floor logits (F floor levels)
           step 3: x_3 = [f, 0,          softmax(fl)] -> h_3 -> position in the building's frame -> metres

Each step's input is the shared features concatenated with the previous
step's output. Building and floor probabilities have their own slots of the
input (zeros where a step has nothing to put), so one column of the cell's W
always means the same thing although the cell is shared by all three steps.
In training, ``teacher_forcing`` is the probability, per sample and step, that
the true building (step 2) or floor (step 3), one-hot, replaces the predicted
distribution.

The decision ``building_floor`` is the hierarchical head of
``edgehal.nets.hierarchical`` applied to the floor step: branch k is the floor
logits restricted to building k's floors, routed by the building step
(``combine: hard``, a gather), so the predicted floor is always one of the
predicted building's floors. The heads, their names and meanings are those of
``hier_localization`` (main ``building_floor`` and ``coordinates``; aux
``building`` and ``floor_b<k>``, building k's floor logits), built by the same
``localization_heads.localization_manifest``, with the same evaluator, so
``edgehal eval``/``parity``/``serve`` handle it unchanged. There are no
``coords_b<k>``: one regressor reads h_3, which already carries the building
and floor. The input side (RSSI transform, training augmentation, shared
layers) is ``localization.FingerprintModel``, ``hier_localization``'s too.

Coordinates: step 3 predicts the position around the predicted building's
centre, in units of that building's spread (RMS distance from the centre:
41-61 m on UJIIndoorLoc, against 140 m for the whole campus); training places
it in the true building's frame. Centre and spread are running statistics of
the training coordinates (buffers: in the checkpoint and in the graph). Besides
letting the regressor work at a building's scale, this matters for parity:
1e-4 m is 3 float32 ulps of a 400 m coordinate, and a 2-layer regressor on a
campus-wide scale alone puts PyTorch fp32 ~1e-4 m from an fp64 reference;
a building's scale divides that part of the error by 2.3-3.4.
(``coord_frame: global`` keeps ``hier_localization``'s single frame.)

Export: the three steps are a fixed unroll of the cell's one-step function, not
the native ONNX ``RNN``/``LSTM``/``GRU`` operator. A native operator takes its
whole input sequence X before the recurrence starts, while here x_{t+1} is a
function (head, softmax) of h_t; three is fixed by the hierarchy, not by the
data, so the unroll is a static graph (MatMul, Gemm and elementwise nodes; no
Loop, Scan or If) with a dynamic batch, which onnxruntime and TensorRT's parser
take as is. One step is the cell's ``forward(x, state)``: the step functions of
``edgehal.nets.rnn`` that its tests check against ``torch.nn`` and the ONNX
operators, so the unrolled graph carries exactly the equations of ``edgehal.nets.rnn``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgehal.errors import EdgehalError
from edgehal.manifest import HeadManifest
from edgehal.nets.hierarchical import HierarchicalHead
from edgehal.nets.localization import FingerprintModel, mlp
from edgehal.nets.localization_heads import (check_localization_args, floor_branch_classes, localization_loss,
                                             localization_manifest)
from edgehal.nets.registry import register_model
from edgehal.nets.rnn import ACTIVATIONS, CELLS, make_cell

STEPS = ("building", "floor", "coordinates")
COORD_FRAMES = ("building", "global")


class _Columns(nn.Module):
    """``x[:, columns]`` (one Gather with a constant index): building k's floors of the floor logits."""

    def __init__(self, columns: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("index", torch.tensor([int(c) for c in columns], dtype=torch.int64),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


class RecurrentLocalization(FingerprintModel):
    """Shared layers, then one recurrent cell unrolled over building -> floor -> coordinates."""

    def __init__(self, *, manifest: HeadManifest, building_floors: Sequence[Sequence[int]],
                 heard: Sequence[int], undetected_dbm: float, coord_mean: Sequence[float], coord_scale: float,
                 cell: str, hidden_size: int, activation: str, hidden: Sequence[int],
                 coord_hidden: Sequence[int], coord_frame: str, combine: str, dropout: float,
                 input_dropout: float, rssi_shift_db: float, rssi_noise_db: float, batchnorm: bool,
                 power: float, teacher_forcing: float, building_weight: float, floor_weight: float,
                 coord_weight: float) -> None:
        super().__init__()
        self.manifest = manifest
        self.building_floors = [list(f) for f in building_floors]
        self.num_buildings = len(self.building_floors)
        self.num_floors = max(max(f) for f in self.building_floors) + 1   # floor levels 0..F-1
        self.teacher_forcing = float(teacher_forcing)
        d = self.init_input(heard=heard, undetected_dbm=undetected_dbm, power=power, hidden=hidden, dropout=dropout,
                            batchnorm=batchnorm, input_dropout=input_dropout, rssi_shift_db=rssi_shift_db,
                            rssi_noise_db=rssi_noise_db)
        self.cell = make_cell(cell, d + self.num_buildings + self.num_floors, hidden_size, activation=activation)
        self.building_head = nn.Linear(hidden_size, self.num_buildings)
        self.floor_head = nn.Linear(hidden_size, self.num_floors)
        self.coord_head = mlp(hidden_size, coord_hidden, 2, dropout=dropout, batchnorm=batchnorm)
        branch_classes = floor_branch_classes(self.building_floors)
        # Routing only (no parameters): the floor step's logits restricted to each building's floors.
        self.floors = HierarchicalHead(coarse=None, branches=[_Columns(f) for f in self.building_floors],
                                       combine=combine, num_fine=sum(len(c) for c in branch_classes),
                                       branch_classes=branch_classes)
        self.register_buffer("coord_scale", torch.tensor(float(coord_scale)))
        # Step 3's output is a position in a building's frame: metres = centre[b] + spread[b] * output.
        # Centre and spread (RMS distance from the centre) are running statistics of the training
        # coordinates of each building, kept as batch norm keeps its own (coord_frame "building"),
        # starting from the data set's global normalisation, where coord_frame "global" leaves them.
        self.coord_frame = coord_frame
        b = self.num_buildings
        mean = torch.tensor([float(v) for v in coord_mean])
        self.register_buffer("building_centre", mean.repeat(b, 1))
        self.register_buffer("building_mean_sq", torch.full((b,), float(mean.square().sum()) + float(coord_scale) ** 2))
        self.register_buffer("building_spread", torch.full((b,), float(coord_scale)))
        self.register_buffer("building_seen", torch.zeros(b))
        self.weights = {"building": float(building_weight), "floor": float(floor_weight),
                        "coords": float(coord_weight)}

    def _feedback(self, logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """What the next step sees: the predicted distribution, or (teacher forcing) the one-hot truth."""
        probs = torch.softmax(logits, dim=1)
        if target is None or not self.teacher_forcing:
            return probs
        forced = torch.rand(logits.shape[0], 1, device=logits.device) < self.teacher_forcing
        return torch.where(forced, F.one_hot(target, logits.shape[1]).to(probs.dtype), probs)

    def steps(self, features: torch.Tensor, *, building: torch.Tensor | None = None,
              floor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three steps: (building logits, floor-level logits, position in a building's frame).

        ``building``/``floor`` (true labels) are fed back instead of the
        predictions with probability ``teacher_forcing``; None (inference) never.
        """
        n = features.shape[0]
        no_building = features.new_zeros(n, self.num_buildings)
        no_floor = features.new_zeros(n, self.num_floors)
        h, state = self.cell(torch.cat([features, no_building, no_floor], dim=1))
        building_logits = self.building_head(h)
        h, state = self.cell(torch.cat([features, self._feedback(building_logits, building), no_floor], dim=1),
                             state)
        floor_logits = self.floor_head(h)
        h, state = self.cell(torch.cat([features, no_building, self._feedback(floor_logits, floor)], dim=1),
                             state)
        return building_logits, floor_logits, self.coord_head(h)

    def metres(self, position: torch.Tensor, building: torch.Tensor) -> torch.Tensor:
        """Step 3's output in metres from the origin, in the frame of ``building``.

        ``building``: indices (N,) (the true building in training), or logits
        (N, B): the predicted building's frame (``combine: hard``, a gather) or
        the frames weighted by building probability (``weighted``).
        """
        if building.dim() == 1 or self.floors.combine == "hard":
            index = building if building.dim() == 1 else building.argmax(dim=1)
            centre = self.building_centre.index_select(0, index)
            spread = self.building_spread.index_select(0, index)
        else:
            p = torch.softmax(building, dim=1)
            centre, spread = p @ self.building_centre, p @ self.building_spread
        return centre + spread.unsqueeze(1) * position

    @torch.no_grad()
    def update_frames(self, building: torch.Tensor, coords: torch.Tensor) -> None:
        """Fold a training batch into each building's running mean and mean square of its coordinates.

        A cumulative average (each sample of each epoch weighs the same), so the
        frames settle on the training statistics and stop moving, unlike an
        exponential average, whose last batches would shift them under a
        network that can no longer follow at the end of the schedule. Always in
        float32 (an fp16 autocast sum of coordinates would be metres off).
        """
        with torch.autocast(coords.device.type, enabled=False):
            onehot = F.one_hot(building, self.num_buildings).to(self.building_centre.dtype)
            n = onehot.sum(dim=0)
            seen = self.building_seen + n
            w = n / seen.clamp(min=1.0)
            per = n.clamp(min=1.0)
            c = coords.to(onehot.dtype)
            self.building_centre += w.unsqueeze(1) * (onehot.t() @ c / per.unsqueeze(1) - self.building_centre)
            self.building_mean_sq += w * (onehot.t() @ c.square().sum(dim=1) / per - self.building_mean_sq)
            self.building_seen.copy_(seen)
            var = (self.building_mean_sq - self.building_centre.square().sum(dim=1)).clamp(min=1.0)
            self.building_spread.copy_(torch.where(seen > 0, var.sqrt(), self.building_spread))

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        building, floor, position = self.steps(features)
        fl = self.floors(floor, coarse_logits=building)
        out = {"building_floor": fl.combined, "coordinates": self.metres(position, building), "building": building}
        for k, logits in enumerate(fl.branches):
            out[f"floor_b{k}"] = logits
        heads = {h.name: out[h.name] for h in self.manifest.heads}
        if self.training:   # for loss(): step 3 in the true building's frame; the steps rerun with the labels
            heads["_position"] = position
            if self.teacher_forcing:
                heads["_features"] = features
        return heads

    def loss(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], *,
             aux_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(building, step 1) + NLL(floor among the true building's floors, step 2) + mean 2D error (step 3).

        As in ``hier_localization``: ``aux_weight`` scales the building term,
        the floor term routes each sample to its true building's floors, the
        coordinate term is the mean Euclidean error in units of the data set's
        ``coord_scale``, of the position placed in the *true* building's frame.
        With ``teacher_forcing`` > 0 the steps are rerun from the features with
        the true building and floor fed back (each with that probability). In
        training mode the batch first updates the building frames.
        """
        building_t = labels["building"]
        if self.training and self.coord_frame == "building":
            self.update_frames(building_t, labels["coords"])
        if "_features" in outputs:
            building, floor, position = self.steps(outputs["_features"], building=building_t,
                                                   floor=labels["floor"])
            branches = self.floors.branch_outputs(floor)
        else:
            building = outputs["building"]
            branches = tuple(outputs[f"floor_b{k}"] for k in range(self.num_buildings))
            position = outputs.get("_position")
        # Outside training (no _position), the coordinates output as it is: the predicted building's frame.
        xy = self.metres(position, building_t) if position is not None else outputs["coordinates"]
        return localization_loss(building, self.floors.scores(branches), xy, labels, coord_scale=self.coord_scale,
                                 weights=self.weights, aux_weight=aux_weight)


@register_model("recurrent_localization")
def recurrent_localization(*, building_floors: Sequence[Sequence[int]], coord_mean: Sequence[float],
                           coord_scale: float, access_points_heard: Sequence[int] | None = None,
                           undetected_dbm: float = -110.0, coordinate_origin: Sequence[float] | None = None,
                           class_names: Sequence[str] | None = None, input_shape: Sequence[int] | None = None,
                           cell: str = "lstm", hidden_size: int = 128, activation: str = "tanh",
                           hidden: Sequence[int] = (512, 256), coord_hidden: Sequence[int] = (128,),
                           coord_frame: str = "building", combine: str = "hard", dropout: float = 0.2,
                           input_dropout: float = 0.0, rssi_shift_db: float = 0.0, rssi_noise_db: float = 0.0,
                           batchnorm: bool = True,
                           power: float = 1.0, teacher_forcing: float = 0.0, building_weight: float = 1.0,
                           floor_weight: float = 1.0, coord_weight: float = 1.0) -> RecurrentLocalization:
    """Hierarchical localization by recurrence: building, floor, coordinates as three steps of one cell.

    ``cell``: ``rnn``, ``lstm``, ``peephole_lstm`` or ``gru`` (the
    equations), ``hidden_size`` its state size, ``activation`` the vanilla
    ``rnn``'s (tanh, relu or sigmoid). ``teacher_forcing``: probability, in
    training, of feeding the true building / floor to the next step instead of
    the predicted distribution (defaults to 0: always the prediction).
    ``coord_frame``: ``building`` (step 3 predicts the position around the
    predicted building's centre, in units of that building's spread, both fitted
    on the training coordinates while training) or ``global`` (the data set's
    ``coord_mean``/``coord_scale``, as ``hier_localization``).
    Everything else as in ``hier_localization``: the data set supplies
    ``building_floors``, ``coord_mean``/``coord_scale``, ``access_points_heard``
    and ``undetected_dbm``; ``combine`` is ``hard`` or ``weighted``;
    ``input_dropout``, ``rssi_shift_db``, ``rssi_noise_db`` are training-only
    augmentation; ``power`` the "powed" RSSI representation.
    """
    if cell not in CELLS:
        raise EdgehalError(f"model.cell {cell!r}", "is not a recurrent cell", f"one of {list(CELLS)}")
    if activation not in ACTIVATIONS:
        raise EdgehalError(f"model.activation {activation!r}", "is unknown", f"one of {sorted(ACTIVATIONS)}")
    if hidden_size < 1:
        raise EdgehalError("model.hidden_size", f"is {hidden_size}", "at least 1")
    if coord_frame not in COORD_FRAMES:
        raise EdgehalError("model.coord_frame", f"is {coord_frame!r}", f"one of {COORD_FRAMES}")
    if not 0.0 <= teacher_forcing <= 1.0:
        raise EdgehalError("model.teacher_forcing", f"is {teacher_forcing}", "a probability in [0, 1]")
    heard, pairs, names = check_localization_args(
        combine=combine, building_floors=building_floors, access_points_heard=access_points_heard,
        input_shape=input_shape, class_names=class_names, dropout=dropout, input_dropout=input_dropout,
        rssi_shift_db=rssi_shift_db, rssi_noise_db=rssi_noise_db)
    if any(f < 0 for _, f in pairs) or any(len(set(floors)) != len(floors) for floors in building_floors):
        raise EdgehalError("model.building_floors", f"is {building_floors!r}",
                           "distinct floor numbers >= 0 per building (the floor step predicts floor levels)")
    descriptions = {
        "building_floor": "building-floor decision: log-probabilities; the floor step (2) restricted to the "
                          "building predicted at step 1 decides" if combine == "hard" else
                          "building-floor log-probabilities: floor step (2) per building, weighted by the "
                          "building step's (1) probabilities",
        "coordinates": "position in metres east (x) and north (y) of coordinate_origin (EPSG:3857): "
                       "recurrent step 3, placed in the predicted building's frame",
        "building": "building logits, recurrent step 1 (fed to step 2)",
        "floor_b": "floor logits of recurrent step 2 over building {k}'s floors "
                   "(parent_map -1: pair not in building {k})",
    }
    notes = {"cell": cell,
             "recurrence": {"steps": list(STEPS), "unroll": "fixed, 3 steps of one cell",
                            "step_input": "shared features + previous step's softmax output"},
             "coordinate_step_frame": coord_frame}
    manifest = localization_manifest(
        model="recurrent_localization", building_floors=building_floors, class_names=names, num_inputs=len(heard),
        combine=combine, coordinate_origin=coordinate_origin, undetected_dbm=undetected_dbm,
        coords_per_building=False, descriptions=descriptions, notes=notes)
    return RecurrentLocalization(
        manifest=manifest, building_floors=[[int(f) for f in fl] for fl in building_floors], heard=heard,
        undetected_dbm=undetected_dbm, coord_mean=coord_mean, coord_scale=coord_scale, cell=cell,
        hidden_size=int(hidden_size), activation=activation, hidden=tuple(hidden), coord_hidden=tuple(coord_hidden),
        coord_frame=coord_frame, combine=combine, dropout=dropout, input_dropout=input_dropout,
        rssi_shift_db=rssi_shift_db, rssi_noise_db=rssi_noise_db, batchnorm=batchnorm, power=power,
        teacher_forcing=teacher_forcing,
        building_weight=building_weight, floor_weight=floor_weight, coord_weight=coord_weight)
