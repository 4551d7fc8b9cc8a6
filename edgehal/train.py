"""The training loop (the config -> data -> model wiring it uses is :mod:`edgehal.pipeline`).

SGD with momentum (or AdamW) and a cosine schedule with linear warm-up, per
step; a progress bar with loss, accuracy and throughput; validation every
epoch; an atomic checkpoint every epoch, so ``--resume`` continues where a run
stopped. CUDA with mixed precision when present; several processes through
``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgehal.checkpoint import load_checkpoint, save_checkpoint
from edgehal.config import Config
from edgehal.data import DataBundle
from edgehal.errors import EdgehalError
from edgehal.pipeline import build_model_from_config, checkpoint_config, evaluate, load_data, resolve_device, to_input

Log = Callable[[str], None]


def main_metric(metrics: dict[str, Any], manifest) -> str:
    m = metrics.get(manifest.main.name, {})
    if "error_rate" in m:
        return f"{manifest.main.name} error {m['error_rate']:.2f}%"
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.get("summary", {}).items())


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size())


def _lr_at(step: int, total: int, warmup: int, base: float, schedule: str) -> float:
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0)


# -- staged training (HD-CNN): which parameters train in which epochs ----------

@dataclass(frozen=True)
class Stage:
    """``epochs`` epochs training only the parameters whose names start with a prefix in ``train``,
    on the loss terms named in ``loss`` (empty: the model's whole loss)."""

    first_epoch: int
    epochs: int
    train: tuple[str, ...]
    lr: float
    loss: tuple[str, ...] = ()


STAGE_KEYS = ("epochs", "train", "lr", "loss")


def parse_stages(cfg: Config, *, world: int = 1) -> list[Stage]:
    """``train.stages`` checked before any work: ``[{epochs, train: [prefixes] | 'all', lr?, loss?}, ...]``.

    Empty means joint training (every parameter, every epoch). The stages'
    epochs must add up to ``train.epochs``, so a resumed run lands in its stage.
    ``loss`` names the terms of the model's loss that count in the stage (for
    HD-CNN: ``fine``, ``coarse``, ``branches``), so that a stage pretraining the
    trunk is not pushed by a head that is still random.
    """
    t = cfg.train
    stages, first = [], 0
    for i, raw in enumerate(t.stages):
        what = f"train.stages[{i}]"
        if not isinstance(raw, dict) or set(raw) - set(STAGE_KEYS) or "epochs" not in raw:
            raise EdgehalError(what, f"is {raw!r}", "{epochs: N, train: [parameter-name prefixes] or all, "
                                                    "lr: optional, loss: [loss terms], optional}")
        epochs, names, lr = raw["epochs"], raw.get("train", "all"), raw.get("lr", t.lr)
        names = [names] if isinstance(names, str) else names
        terms = raw.get("loss", [])
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise EdgehalError(f"{what}.epochs", f"is {epochs!r}", "an integer >= 1")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise EdgehalError(f"{what}.train", f"is {raw.get('train')!r}", "a list of parameter-name prefixes, or all")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise EdgehalError(f"{what}.lr", f"is {lr!r}", "a positive learning rate")
        if not isinstance(terms, list) or not all(isinstance(n, str) and n for n in terms):
            raise EdgehalError(f"{what}.loss", f"is {terms!r}", "a list of the model's loss terms")
        stages.append(Stage(first, epochs, tuple(names), float(lr), tuple(terms)))
        first += epochs
    if stages and world > 1:
        raise EdgehalError("train.stages", f"are set for {world} processes",
                           "staged training in one process (DDP cannot change frozen parameters mid-run)")
    if stages and first != t.epochs:
        raise EdgehalError("train.stages", f"add up to {first} epochs but train.epochs is {t.epochs}",
                           f"train.epochs: {first}")
    return stages


def check_stages(model: nn.Module, stages: list[Stage]) -> None:
    """Refuse a prefix that names no parameter (a typo would silently freeze everything) and a loss
    term the model does not have."""
    names = [n for n, _ in model.named_parameters()]
    terms = tuple(getattr(model, "loss_terms", ()))
    for i, stage in enumerate(stages):
        for prefix in stage.train:
            if prefix != "all" and not any(n == prefix or n.startswith(prefix + ".") for n in names):
                tops = sorted({".".join(n.split(".")[:2]) for n in names} | {"all"})[:12]
                raise EdgehalError(f"train.stages[{i}].train", f"prefix {prefix!r} names no parameter",
                                   f"a prefix of the model's parameter names, e.g. {tops}")
        unknown = [term for term in stage.loss if term not in terms]
        if unknown:
            raise EdgehalError(f"train.stages[{i}].loss", f"names {unknown}, which {type(model).__name__}'s "
                               "loss does not have",
                               f"some of {list(terms)}" if terms else
                               "no loss key: this model's loss has no named terms to choose from")


def apply_stage(model: nn.Module, stages: list[Stage], epoch: int, cfg: Config) -> Stage:
    """Freeze every parameter outside ``epoch``'s stage and return that stage.

    Frozen parameters get no gradient, so the optimiser skips them (no update,
    no weight decay). Without stages: one stage of ``train.epochs`` at
    ``train.lr`` in which everything trains on the whole loss.
    """
    stage = next((s for s in stages if s.first_epoch <= epoch < s.first_epoch + s.epochs), None)
    if stage is None:
        return Stage(0, cfg.train.epochs, ("all",), cfg.train.lr)
    for name, p in model.named_parameters():
        p.requires_grad_("all" in stage.train or any(name == pre or name.startswith(pre + ".")
                                                      for pre in stage.train))
    return stage


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def hold_frozen_batch_norms(model: nn.Module) -> None:
    """Put every batch norm whose parameters are all frozen in eval mode, after ``model.train()``.

    A frozen part is then frozen whole: its running statistics stay those it
    was trained with, instead of following features from layers that now train
    (or, for a frozen trunk, drifting while the head above it learns).
    """
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, BATCH_NORMS) and params and not any(p.requires_grad for p in params):
            module.eval()


def train(cfg: Config, *, resume: str | Path | None = None, log: Log = print,
          progress: bool | None = None) -> Path:
    """Train ``cfg``; return the path of the final checkpoint (``<run_dir>/checkpoint.pt``)."""
    from tqdm.auto import tqdm

    from edgehal.data.images import augment_batch

    t = cfg.train
    device = resolve_device(t.device)
    stages = parse_stages(cfg, world=int(os.environ.get("WORLD_SIZE", "1")))
    dist_info = _init_distributed(device)
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed + dist_info.rank)
    data = load_data(cfg)
    # A resumed run loads its weights from the checkpoint: a pretrained file it started from is not read again.
    model, kwargs = build_model_from_config(cfg, data, initialise=not resume)
    model = model.to(device)
    manifest = model.manifest
    optimizer = _optimizer(cfg, model)
    check_stages(model, stages)
    amp = (device.type == "cuda") if t.amp is None else bool(t.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    run_dir = cfg.run_dir
    ckpt_path = run_dir / "checkpoint.pt"
    start_epoch, history = 0, []
    if resume:
        state = load_checkpoint(resume, map_location=str(device)).payload
        if state.get("model_name") != cfg.model["name"]:
            raise EdgehalError(f"--resume {resume}", f"holds model {state.get('model_name')!r}",
                               f"a checkpoint of {cfg.model['name']!r}")
        model.load_state_dict(state["state_dict"])
        if "optimizer" in state.get("training", {}):
            optimizer.load_state_dict(state["training"]["optimizer"])
        start_epoch = int(state.get("training", {}).get("epoch", 0))
        history = list(state.get("history", []))
        log(f"resuming {cfg.name} from epoch {start_epoch} ({resume})")

    train_model: nn.Module = model
    if dist_info.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    n = len(data.train)
    per_rank = max(1, t.batch_size // dist_info.world)
    steps_per_epoch = math.ceil(n / dist_info.world / per_rank)
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(t.seed)
    aug_gen = torch.Generator().manual_seed(t.seed * 7919 + dist_info.rank)
    show = dist_info.is_main and (progress if progress is not None else None)
    val = data.val if len(data.val) else data.test

    for epoch in range(start_epoch, t.epochs):
        stage = apply_stage(model, stages, epoch, cfg)
        train_model.train()
        if stages:
            hold_frozen_batch_norms(model)
        loss_terms = {"terms": stage.loss} if stage.loss else {}
        # Same permutation on every rank (seeded by epoch), each rank takes its stride.
        gen.manual_seed(t.seed * 1000 + epoch)
        perm = torch.randperm(n, generator=gen)[dist_info.rank::dist_info.world]
        seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
        bar = tqdm(total=len(perm), desc=f"epoch {epoch + 1}/{t.epochs}", unit="img",
                   disable=not show if show is not None else None, leave=False, dynamic_ncols=True)
        for i in range(0, len(perm), per_rank):
            step = (epoch - stage.first_epoch) * steps_per_epoch + i // per_rank
            lr = _lr_at(step, steps_per_epoch * stage.epochs, warmup, stage.lr, t.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = data.train.subset(perm[i:i + per_rank])
            x = batch.x
            if data.augment:
                x = augment_batch(x, data.augment, aug_gen)
            x = to_input(x, device)
            labels = {k: v.to(device, non_blocking=True) for k, v in batch.labels.items()}
            with torch.autocast(device.type, enabled=amp):
                outputs = train_model(x)
                loss, _ = model.loss(outputs, labels, aux_weight=t.aux_weight, **loss_terms)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            bs = len(x)
            seen += bs
            loss_sum += float(loss.detach()) * bs
            main = outputs[manifest.main.name]
            if manifest.main.task == "classification" and "label" in labels:
                correct += int((main.argmax(1) == labels["label"]).sum())
            elapsed = time.perf_counter() - t0
            bar.update(bs)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}%",
                            lr=f"{lr:.3g}", ips=f"{seen / max(elapsed, 1e-9):.0f}/s", refresh=False)
        bar.close()
        seconds = time.perf_counter() - t0
        if not dist_info.is_main:
            continue
        val_metrics = evaluate(model, val, batch_size=t.eval_batch_size, device=device)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                  "train_acc": 100.0 * correct / max(seen, 1), "val": val_metrics, "seconds": seconds,
                  "images_per_second": seen / max(seconds, 1e-9)}
        history.append(record)
        log(f"epoch {epoch + 1}/{t.epochs}: loss {record['train_loss']:.4f}, "
            f"val {main_metric(val_metrics, manifest)}, {seconds:.1f}s ({record['images_per_second']:.0f} img/s)")
        _save(ckpt_path, cfg, kwargs, model, data, optimizer, epoch + 1, history, {"val": val_metrics})

    if dist_info.is_main:
        test_metrics = evaluate(model, data.test, batch_size=t.eval_batch_size, device=device)
        last_val = history[-1]["val"] if history else {}
        _save(ckpt_path, cfg, kwargs, model, data, optimizer, t.epochs, history,
              {"val": last_val, "test": test_metrics})
        log(f"test: {main_metric(test_metrics, manifest)}; checkpoint {ckpt_path}")
    if dist_info.world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return ckpt_path


def _save(path: Path, cfg: Config, kwargs: dict, model: nn.Module, data: DataBundle,
          optimizer: torch.optim.Optimizer, epoch: int, history: list, metrics: dict) -> None:
    save_checkpoint(path, {
        "name": cfg.name,
        "config": checkpoint_config(cfg),
        "model_name": cfg.model["name"],
        "model_kwargs": kwargs,
        "manifest": model.manifest.to_dict(),
        "class_names": list(data.class_names),
        "preprocessing": data.preprocessing().to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics,
        "history": history,
        "training": {"epoch": epoch, "optimizer": optimizer.state_dict(), "seed": cfg.train.seed},
    })
