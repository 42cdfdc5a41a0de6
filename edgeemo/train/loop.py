"""The one fit loop every supervised stage uses (teacher, student distillation).

Owns: epochs with progress bars, gradient accumulation, gradient-norm clipping,
warm-up + cosine LR schedule, mixed precision on GPU, per-epoch validation with
CCC-based model selection, atomic ``best.pt``/``last.pt``, ``metrics.jsonl`` and
``curves.png``, early stopping, NaN-loss detection, and exact resume from
``last.pt``. Randomness is re-seeded from ``(seed, epoch)`` at every epoch, so a
resumed run draws the same batches and dropout masks as an uninterrupted one.

Under ``torchrun`` (world size > 1, see :mod:`edgeemo.train.distributed`) the same loop
trains data-parallel: the model runs inside DistributedDataParallel, each rank takes a
disjoint share of every epoch's shuffled order, gradients are synchronised only on the
micro-step that updates (``no_sync`` before it), rank 0 validates and hands its figures to
every rank (so selection and early stopping agree), and only rank 0 writes files; every
rank resumes from the same ``last.pt``. The effective batch is micro-batch x accumulation
x world size.

A stage plugs in through :class:`Stage`: its model, its loss on a batch, and any
extra per-epoch figures (e.g. retention).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from edgeemo import __version__
from edgeemo.config import StageContext
from edgeemo.data.windows import WindowSet
from edgeemo.errors import TrainingError
from edgeemo.evaluation import predict_windowset, window_and_song_report
from edgeemo.log import log
from edgeemo.progress import progress_iter
from edgeemo.train import distributed
from edgeemo.train.checkpoint import load_checkpoint, save_checkpoint, write_metrics_jsonl
from edgeemo.train.ema import WeightEma


@dataclass
class FitConfig:
    epochs: int = 10
    batch_size: int = 12
    accum_steps: int = 4
    clip_norm: float = 1.0
    warmup_frac: float = 0.1  # of all optimiser steps
    min_lr_frac: float = 0.05
    patience: int | None = None  # epochs without improvement before stopping
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 64
    num_workers: int = 0
    progress: bool = True
    ema_decay: float = 0.0  # > 0: validate, keep and export an EMA of the weights (train/ema.py)
    select: str = "best"  # best.pt holds the best-validated epoch, or ("last") every epoch in turn: the final one


def stage_fit_config(section: Any, ctx: StageContext, progress: bool = True, ema_decay: float = 0.0) -> FitConfig:
    """The shared loop's settings for a stage: its section's ``epochs``, ``batch_size``, ``accum_steps``
    (1 when the section has none), ``patience`` and ``select`` ("best" when it has none), with the run-wide seed
    and device."""
    return FitConfig(
        epochs=section.epochs,
        batch_size=section.batch_size,
        accum_steps=getattr(section, "accum_steps", 1),
        patience=section.patience,
        seed=ctx.seed,
        device=ctx.device,
        progress=progress,
        ema_decay=ema_decay,
        select=getattr(section, "select", "best"),
    )


class Stage(Protocol):
    """What a trainable stage gives the loop."""

    name: str
    model: nn.Module  # everything whose state is checkpointed (may include projection layers)
    score_key: str  # the validation figure model selection maximises

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...

    def validate(self, val: WindowSet | None, device: torch.device, batch_size: int) -> dict[str, float]: ...

    def epoch_extras(self, val_metrics: dict[str, float]) -> dict[str, float]: ...

    def checkpoint_meta(self) -> dict[str, Any]: ...


class ValenceArousalStage:
    """Shared part of the stages whose model predicts (valence, arousal): validation is window/song CCC on the
    validation windows, and selection maximises ``ccc_mean``."""

    score_key = "ccc_mean"

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, val: WindowSet | None, device: torch.device, batch_size: int) -> dict[str, float]:
        if val is None:
            raise TrainingError(f"{getattr(self, 'name', 'stage')}: no validation windows")
        return window_and_song_report(val, predict_windows(self.predict, val, device, batch_size))

    def epoch_extras(self, val_metrics: dict[str, float]) -> dict[str, float]:
        return {}


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    name = distributed.local_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {name} asked for, but no CUDA GPU is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@torch.no_grad()
def predict_windows(
    predict: Callable[[torch.Tensor], torch.Tensor], windows: WindowSet, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """Predictions ``(N, 2)`` of a torch predictor for every window of a WindowSet."""
    return predict_windowset(
        lambda x: predict(torch.from_numpy(x).to(device)).float().cpu().numpy(), windows, batch_size
    )


def _lr_lambda(total_steps: int, warmup_steps: int, min_frac: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


class _StageLoss(nn.Module):
    """A stage's model with its loss as ``forward``, so DistributedDataParallel sees the whole training step."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.net = stage.model
        self.stage_loss = stage.loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.stage_loss(x, y)


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and validation CCC per epoch as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeemo.atomic import atomic_write_bytes

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_keys = [k for k in history[0] if k.startswith("train_")]
    for k in loss_keys:
        axes[0].plot(ep, [h[k] for h in history], marker=".", label=k.removeprefix("train_"))
    axes[0].set_xlabel("epoch")
    axes[0].set_title("training loss")
    axes[0].legend(fontsize=8)
    val_keys = [k for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean", "val_retention") if k in history[0]]
    if not val_keys:  # a stage with its own validation figures (e.g. pretraining)
        val_keys = [k for k in history[0] if k.startswith("val_")]
    for k in val_keys:
        axes[1].plot(ep, [h[k] for h in history], marker=".", label=k.removeprefix("val_"))
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def fit(
    stage: Stage,
    optimizer: torch.optim.Optimizer,
    train_data: Callable[[int], Dataset],
    val: WindowSet | None,
    out_dir: Path,
    cfg: FitConfig,
    extra_state: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``stage`` with the shared recipe, resuming from ``out_dir/last.pt`` if present.

    ``train_data(epoch)`` returns that epoch's training Dataset (it may mix in generated
    windows). Selection: the stage's ``validate`` figures, maximising its ``score_key``
    (window-level ``ccc_mean`` for the (valence, arousal) stages).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world, main = (distributed.world_size(), distributed.is_main()) if distributed.init() else (1, True)
    device = resolve_device(cfg.device)
    model = stage.model.to(device)
    use_amp = device.type == "cuda"
    effective_batch = cfg.batch_size * cfg.accum_steps * world
    n_batches = math.ceil(math.ceil(len(train_data(0)) / world) / cfg.batch_size)
    steps_per_epoch = max(1, math.ceil(n_batches / cfg.accum_steps))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, int(cfg.warmup_frac * total_steps), cfg.min_lr_frac)
    )
    history: list[dict[str, Any]] = []
    best_epoch, best_score, since_best, start_epoch = 0, -math.inf, 0, 1
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    ema = WeightEma(model, cfg.ema_decay) if cfg.ema_decay else None
    if last_path.is_file():
        ck = load_checkpoint(last_path)
        if ck.get("stage") != stage.name:
            raise TrainingError(f"{last_path} belongs to stage {ck.get('stage')!r}, not {stage.name!r}")
        if (ema is None) != ("train_state_dict" not in ck):
            raise TrainingError(
                f"{last_path} was trained {'with' if ema is None else 'without'} weight averaging (ema_decay); "
                "resume it with the same config or start over (--restart)"
            )
        if ema is not None:
            model.load_state_dict(ck["train_state_dict"])
            ema.load(ck["state_dict"], ck["ema_updates"])
        else:
            model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        history = ck["history"]
        best_epoch, best_score, since_best = ck["best_epoch"], ck["best_score"], ck["since_best"]
        start_epoch = ck["epoch"] + 1
        if start_epoch <= cfg.epochs and main:
            log(f"[{stage.name}] resuming from {last_path} at epoch {start_epoch}/{cfg.epochs}")
    ddp: nn.Module | None = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # batch-norm statistics over every rank's micro-batch (CUDA only in torch)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # rank 0's weights reach every rank here (they are identical after a resume anyway); a stage may leave part
        # of its model out of the loss (pretraining does not use the regression head), so DDP looks for such parts
        ddp = DistributedDataParallel(
            _StageLoss(stage),
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
        if main:
            log(f"[{stage.name}] data-parallel on {world} processes: effective batch {effective_batch}")
    stopped_early = bool(history and history[-1].get("stopped_early"))
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        seed_everything(cfg.seed * 100_003 + epoch)
        dataset = train_data(epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        if world == 1:
            loader = DataLoader(
                dataset,
                batch_size=cfg.batch_size,
                shuffle=True,
                generator=gen,
                num_workers=cfg.num_workers,
                drop_last=False,
            )
        else:  # every rank draws the order one process would (same generator, same draws), then takes its share
            order = [int(i) for i in DataLoader(range(len(dataset)), batch_size=None, shuffle=True, generator=gen)]
            shard = distributed.shard_indices(order, world, distributed.rank())
            loader = DataLoader(Subset(dataset, shard), batch_size=cfg.batch_size, num_workers=cfg.num_workers)
            if not main:  # augmentation and dropout differ between ranks
                seed_everything(cfg.seed * 100_003 + epoch + 7_919 * distributed.rank())
        model.train()
        sums: dict[str, float] = {}
        n_seen = 0
        optimizer.zero_grad(set_to_none=True)
        bar = f"{stage.name} {epoch}/{cfg.epochs}"
        for i, (x, y) in enumerate(progress_iter(loader, cfg.progress and main, bar)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            last_batch = i + 1 == n_batches
            updates = (i + 1) % cfg.accum_steps == 0 or last_batch
            # gradients are all-reduced only on the micro-step that updates the weights
            sync = ddp.no_sync() if ddp is not None and not updates else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, terms = stage.loss(x, y) if ddp is None else ddp(x, y)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"{stage.name}: loss became {loss.item()} at epoch {epoch}, batch {i + 1}; "
                        f"stopped, the last good checkpoint is {last_path if last_path.exists() else 'none yet'}"
                    )
                (loss / cfg.accum_steps).backward()
            if updates:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if ema is not None:
                    ema.update(model)
            bs = x.shape[0]
            n_seen += bs
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * bs
        if world > 1:  # the epoch's loss figures over every rank's share
            keys = sorted(sums)
            totals = distributed.all_reduce_sum([float(n_seen), *(sums[k] for k in keys)])
            n_seen, sums = int(totals[0]), dict(zip(keys, totals[1:], strict=True))
        model.eval()
        score_key = stage.score_key
        val_metrics: dict[str, float] = {}
        extras: dict[str, float] = {}
        state: dict[str, Any] = {}
        raw_state: dict[str, Any] = {}
        if main:  # rank 0 validates; every rank selects with its figures
            with ema.swapped_in(model) if ema is not None else nullcontext({}) as raw_state:
                val_metrics = stage.validate(val, device, cfg.eval_batch_size)
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            extras = stage.epoch_extras(val_metrics)
        if world > 1:
            val_metrics, extras = distributed.broadcast_object((val_metrics, extras))
        score = val_metrics[score_key]
        improved = score > best_score or cfg.select == "last"
        record: dict[str, Any] = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 2)}
        record.update({f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()})
        record.update({f"val_{k}": v for k, v in {**val_metrics, **extras}.items()})
        record["lr"] = optimizer.param_groups[-1]["lr"]
        record["effective_batch"] = effective_batch
        if improved:
            best_epoch, best_score, since_best = epoch, score, 0
        else:
            since_best += 1
        if cfg.patience is not None and since_best >= cfg.patience and epoch < cfg.epochs:
            record["stopped_early"] = True
            stopped_early = True
        history.append(record)
        if not main:
            continue
        payload = {
            "stage": stage.name,
            "edgeemo_version": __version__,
            "state_dict": state,  # the validated weights (the EMA when averaging)
            **({"train_state_dict": raw_state, "ema_updates": ema.updates} if ema is not None else {}),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "history": history,
            "metrics": {**val_metrics, **extras},
            "best_epoch": best_epoch,
            "best_score": best_score,
            "since_best": since_best,
            "fit_config": asdict(cfg),
            **stage.checkpoint_meta(),
            **(extra_state or {}),
        }
        if improved:
            save_checkpoint(best_path, payload)
        save_checkpoint(last_path, payload)
        write_metrics_jsonl(out_dir / "metrics.jsonl", history)
        plot_curves(history, out_dir / "curves.png", f"{stage.name}")
        extra_txt = "".join(f" | {k}: {v:.3f}" for k, v in extras.items())
        loss_txt = " ".join(f"{k} {v / max(n_seen, 1):.4f}" for k, v in sums.items())
        if score_key == "ccc_mean":
            val_txt = (
                f"CCC_V: {val_metrics['ccc_valence']:.3f} | CCC_A: {val_metrics['ccc_arousal']:.3f} | Avg: {score:.3f}"
            )
        else:
            val_txt = " | ".join(f"{k}: {v:.3f}" for k, v in val_metrics.items())
        log(
            f"[{stage.name}] epoch {epoch}/{cfg.epochs} {loss_txt} | {val_txt}{extra_txt} | "
            f"best {best_score:.3f} @{best_epoch} | batch {effective_batch} | {record['seconds']:.1f} s"
            + (" | early stop" if stopped_early else "")
        )
    if not history:
        raise TrainingError(f"{stage.name}: no epochs were run (epochs={cfg.epochs})")
    best = next(h for h in history if h["epoch"] == best_epoch)
    return FitResult(
        best_epoch=best_epoch,
        best_metrics={k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")},
        history=history,
        stopped_early=stopped_early,
    )
