"""``train-all``: data -> [pretrain] -> GAN -> teacher -> student in one resumable run directory.

Owns the run directory contract (``runs/<name>/config.json``, ``split.json``, one
folder per stage with ``done.json`` when finished, ``summary.json`` and
``summary.png`` at the end), skipping finished stages, resuming interrupted ones,
``--restart``, and the final test-split report (teacher vs student, retention,
parameters, wall time per stage).

Under ``torchrun`` only rank 0 writes the run's files (config, split, caches, ``done.json``,
summary); the other ranks wait at a barrier and then read what it wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo import __version__
from edgeemo.atomic import atomic_write_json
from edgeemo.config import RunConfig, StageContext, from_flat
from edgeemo.errors import EdgeemoError, TrainingError
from edgeemo.evaluation import window_and_song_report
from edgeemo.log import log
from edgeemo.metrics import retention
from edgeemo.train import distributed
from edgeemo.train.checkpoint import history_seconds, read_json
from edgeemo.train.rundata import RunData, prepare_run_data

STAGES = ("pretrain", "gan", "teacher", "student")


@dataclass
class Run:
    """A run directory with its resolved config."""

    dir: Path
    cfg: RunConfig

    @property
    def ctx(self) -> StageContext:
        return StageContext.of(self.cfg)

    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def done(self, stage: str) -> dict[str, Any] | None:
        p = self.stage_dir(stage) / "done.json"
        return read_json(p) if p.is_file() else None


def read_run_config(path: Path) -> RunConfig:
    """A run's ``config.json`` (or the flat ``train_config`` + ``sources`` that edgeemo 0.1 wrote)."""
    saved = read_json(path)
    if "config" in saved:
        return RunConfig.from_dict(saved["config"], strict=True)
    if "train_config" in saved:
        return from_flat(saved["train_config"], saved.get("sources"))
    raise EdgeemoError(f"{path} holds no run config")


def open_run(run_dir: Path, cfg: RunConfig | None, restart: bool = False) -> Run:
    """Create or reopen ``run_dir``. An existing run must have the same config unless ``restart``.
    Under torchrun rank 0 creates it first and the other ranks then open what it wrote."""
    with distributed.main_first():
        return _open_run(Path(run_dir), cfg, restart and distributed.is_main())


def _open_run(run_dir: Path, cfg: RunConfig | None, restart: bool) -> Run:
    cfg_path = run_dir / "config.json"
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    if cfg_path.is_file():
        saved_cfg = read_run_config(cfg_path)
        if cfg is not None and cfg != saved_cfg:
            diff = changed_fields(saved_cfg.to_dict(), cfg.to_dict())
            raise EdgeemoError(
                f"run {run_dir} exists with a different config ({', '.join(diff[:6])}"
                f"{', ...' if len(diff) > 6 else ''}); use --restart to start over or --name for a new run"
            )
        return Run(run_dir, saved_cfg)
    if cfg is None:
        raise EdgeemoError(f"no run at {run_dir} (missing config.json); start one with `edgeemo train-all`")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        cfg_path, {"edgeemo_version": __version__, "config_digest": cfg.digest(), "config": cfg.to_dict()}
    )
    return Run(run_dir, cfg)


def changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(prefix + k)
    return out


def fit_done(result: Any) -> dict[str, Any]:
    """A trained stage's ``done.json`` content from its :class:`~edgeemo.train.loop.FitResult`."""
    return {"seconds": history_seconds(result.history), "best_epoch": result.best_epoch, "val": result.best_metrics}


def finish_stage(run: Run, stage: str, done: dict[str, Any]) -> dict[str, Any]:
    """Record a finished stage in its ``done.json`` (rank 0), then let every rank go on to the next stage."""
    if distributed.is_main():
        atomic_write_json(run.stage_dir(stage) / "done.json", done)
    distributed.barrier()
    return done


def run_gan(run: Run, data: RunData, progress: bool = True) -> dict[str, Any] | None:
    if not run.cfg.uses_gan:
        return None
    done = run.done("gan")
    if done:
        log(f"[gan] done earlier ({run.stage_dir('gan')}), skipping")
        return done
    if not distributed.is_main():  # the GAN trains on rank 0 alone; the others wait for its generator
        distributed.barrier()
        return run.done("gan")
    from edgeemo.train.gan import train_gan

    result = train_gan(data.windows("train"), run.cfg.gan, run.ctx, run.stage_dir("gan"), progress=progress)
    done = {
        "seconds": history_seconds(result.history),
        "health": result.health,
        "diversity_ratio": result.diversity_ratio,
        "generator": str(result.generator_path.relative_to(run.dir)),
    }
    return finish_stage(run, "gan", done)


def _gan_sampler(run: Run) -> Any:
    if not run.cfg.uses_gan:
        return None
    from edgeemo.train.gan import GanSampler

    path = run.stage_dir("gan") / "gen.pt"
    if not path.is_file():
        raise TrainingError(f"gan.ratio {run.cfg.gan.ratio} needs a trained GAN ({path} is missing): run train-gan")
    return GanSampler.load(path, device="cpu" if run.cfg.device == "auto" else run.cfg.device)


def run_pretrain(run: Run, data: RunData, progress: bool = True) -> dict[str, Any] | None:
    """Pretrain the teacher on ``pretrain.unlabeled`` (nothing to do when no folder is named)."""
    if not run.cfg.pretrain.unlabeled:
        return None
    done = run.done("pretrain")
    if done:
        log(f"[pretrain] done earlier ({run.stage_dir('pretrain')}), skipping")
        return done
    from edgeemo.train.models import student_spec
    from edgeemo.train.pretrain import pretrain_from_folders
    from edgeemo.train.teacher import config_teacher_spec

    exclude = held_out_paths(data)
    # the emotion probe learns from the labelled training songs that are whole files among the unlabeled ones
    labels = {
        str(Path(s.path).resolve()): (s.valence, s.arousal)
        for s in data.splits["train"]
        if s.start_s == 0 and s.end_s is None
    }
    shape = run.cfg.features.shape
    done = pretrain_from_folders(
        run.cfg.pretrain,
        run.ctx,
        run.stage_dir("pretrain"),
        teacher_spec=config_teacher_spec(run.cfg.teacher, shape, from_scratch=True),
        student_spec=student_spec(run.cfg.student.arch, shape),
        exclude=exclude,
        cache_dir=data.cache_dir,
        progress=progress,
        labels=labels,
    )
    return finish_stage(run, "pretrain", done)


def held_out_paths(data: RunData) -> list[Path]:
    """The files of the run's labelled validation/test songs and of the songs it leaves out: they never reach
    training, not even without labels."""
    return [s.path for split in ("val", "test") for s in data.splits[split]] + [s.path for s in data.excluded]


def pretrained_backbone(run: Run, role: str) -> Path | None:
    """The pretrain stage's backbone file ``role`` starts from (None when the run does not pretrain it)."""
    if not run.cfg.pretrain.unlabeled or (role == "student" and not run.cfg.pretrain.student):
        return None
    path = run.stage_dir("pretrain") / ("backbone.pt" if role == "teacher" else "student/backbone.pt")
    if not path.is_file():
        raise TrainingError(f"the {role} starts from {path}, which the pretrain stage did not write; rerun it")
    return path


def run_teacher(run: Run, data: RunData, progress: bool = True) -> dict[str, Any]:
    done = run.done("teacher")
    if done:
        log(f"[teacher] done earlier ({run.stage_dir('teacher')}), skipping")
        return done
    if run.cfg.pretrain.unlabeled and not run.done("pretrain"):
        raise TrainingError(f"the teacher starts from the pretrain stage, which has not finished ({run.dir}); run it")
    from edgeemo.train.teacher import train_teacher
    from edgeemo.train.tokenvit import TOKEN_VIT

    if run.cfg.teacher.arch == TOKEN_VIT:
        from edgeemo.train.hybrid_stages import train_hybrid_teacher

        result = train_hybrid_teacher(
            data.splits, run.cfg.teacher, run.ctx, run.stage_dir("teacher"), data.cache_dir, progress
        )
    else:
        result = train_teacher(
            data,
            run.cfg.teacher,
            run.ctx,
            run.stage_dir("teacher"),
            backbone=pretrained_backbone(run, "teacher"),
            gan_sampler=_gan_sampler(run),
            gan_ratio=run.cfg.gan.ratio,
            progress=progress,
        )
    done = fit_done(result)
    if run.cfg.uses_gan and distributed.is_main():
        done["gan_conditions"] = teacher_gan_conditions(run)
    return finish_stage(run, "teacher", done)


def teacher_gan_conditions(run: Run) -> list[dict[str, Any]]:
    """Do the GAN's windows carry their condition? :func:`~edgeemo.train.gan.condition_scores` under the run's
    trained teacher (the GAN trains before any model that could score it), logged per condition."""
    import torch

    from edgeemo.train.gan import condition_scores, log_condition_scores
    from edgeemo.train.models import load_model

    teacher, _ = load_model(run.stage_dir("teacher") / "best.pt")
    teacher.eval()

    def scorer(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return teacher(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()

    rows = condition_scores(_gan_sampler(run), scorer, seed=run.ctx.seed)
    log_condition_scores(rows, "[teacher] GAN windows")
    return rows


def run_student(run: Run, data: RunData, progress: bool = True) -> dict[str, Any]:
    done = run.done("student")
    if done:
        log(f"[student] done earlier ({run.stage_dir('student')}), skipping")
        return done
    teacher_ckpt = run.stage_dir("teacher") / "best.pt"
    if not run.done("teacher") or not teacher_ckpt.is_file():
        raise TrainingError(f"distillation needs a finished teacher ({teacher_ckpt}); run train-teacher first")
    from edgeemo.train.distill import train_student
    from edgeemo.train.tokenvit import TOKEN_VIT

    if run.cfg.teacher.arch == TOKEN_VIT:
        from edgeemo.train.hybrid_stages import train_hybrid_student

        result = train_hybrid_student(
            data.splits,
            run.cfg.student,
            run.cfg.teacher,
            run.ctx,
            teacher_ckpt,
            run.stage_dir("student"),
            data.cache_dir,
            exclude=held_out_paths(data),
            backbone=pretrained_backbone(run, "student"),
            progress=progress,
        )
    else:
        result = train_student(
            data,
            run.cfg.student,
            run.ctx,
            teacher_ckpt,
            run.stage_dir("student"),
            backbone=pretrained_backbone(run, "student"),
            progress=progress,
        )
    return finish_stage(run, "student", fit_done(result))


def evaluate_run(run: Run, data: RunData, split: str = "test") -> dict[str, Any]:
    """Teacher and student ``best.pt`` on a split: metrics, retention, parameters; predictions for plots."""
    from edgeemo.train.models import count_params, load_model

    windows = data.windows(split)
    out: dict[str, Any] = {"split": split, "windows": len(windows), "songs": len(windows.songs)}
    preds = {}
    for role in ("teacher", "student"):
        model, _ = load_model(run.stage_dir(role) / "best.pt")
        preds[role] = model_window_predictions(model, windows, data.cache_dir)
        out[role] = {
            "params": count_params(model),
            "arch": model.spec["arch"],
            **window_and_song_report(windows, preds[role]),
        }
    teacher_ccc = out["teacher"]["ccc_mean"]
    out["retention"] = retention(out["student"]["ccc_mean"], teacher_ccc) if teacher_ccc > 0 else None
    out["param_ratio"] = out["teacher"]["params"] / out["student"]["params"]
    out["_preds"] = preds
    out["_targets"] = windows.targets
    return out


def model_window_predictions(model: Any, windows: Any, cache_dir: Path) -> np.ndarray:
    """A trained teacher's or student's predictions on ``windows`` (a musicnn-token teacher hears the same
    moments through its own front end)."""
    import torch

    from edgeemo.train.loop import predict_windows
    from edgeemo.train.tokenvit import TOKEN_VIT

    if model.spec["arch"] == TOKEN_VIT:
        from edgeemo.train.hybrid_stages import teacher_window_predictions

        return teacher_window_predictions(model, windows, cache_dir)
    return predict_windows(model, windows, torch.device("cpu"))


def format_table(summary: dict[str, Any]) -> str:
    """The final train-all table."""
    t, s = summary["test"]["teacher"], summary["test"]["student"]
    lines = [
        f"test split: {summary['test']['songs']} songs, {summary['test']['windows']} windows",
        f"{'model':<10}{'arch':<24}{'params':>12}{'CCC_V':>8}{'CCC_A':>8}{'Avg':>8}{'songAvg':>9}",
    ]
    for name, m in (("teacher", t), ("student", s)):
        lines.append(
            f"{name:<10}{m['arch']:<24}{m['params']:>12,}{m['ccc_valence']:>8.3f}{m['ccc_arousal']:>8.3f}"
            f"{m['ccc_mean']:>8.3f}{m.get('song_ccc_mean', float('nan')):>9.3f}"
        )
    ret = summary["test"]["retention"]
    lines.append(
        f"retention (student/teacher CCC): {'n/a (teacher CCC <= 0)' if ret is None else f'{ret:.3f}'}   "
        f"parameter ratio: {summary['test']['param_ratio']:.1f}x"
    )
    lines.append("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items()))
    return "\n".join(lines)


def plot_summary(run: Run, test: dict[str, Any], path: Path) -> None:
    """Training curves and predicted-vs-true scatter (teacher, student) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for role, ax in (("teacher", axes[0, 0]), ("student", axes[0, 1])):
        hist = [json.loads(line) for line in (run.stage_dir(role) / "metrics.jsonl").read_text().splitlines()]
        ep = [h["epoch"] for h in hist]
        for k in ("val_ccc_valence", "val_ccc_arousal", "val_ccc_mean", "val_retention"):
            if k in hist[0]:
                ax.plot(ep, [h[k] for h in hist], marker=".", label=k.removeprefix("val_"))
        ax2 = ax.twinx()
        ax2.plot(ep, [h["train_loss"] for h in hist], color="grey", ls="--", label="train loss")
        ax.set_title(f"{role}: validation CCC (grey: train loss)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8, loc="lower right")
    gan_metrics = run.stage_dir("gan") / "metrics.jsonl"
    ax = axes[0, 2]
    if gan_metrics.is_file():
        hist = [json.loads(line) for line in gan_metrics.read_text().splitlines()]
        for k in ("D_loss", "G_loss", "D_real", "D_fake"):
            if k in hist[0]:
                ax.plot([h["epoch"] for h in hist], [h[k] for h in hist], marker=".", label=k)
        ax.legend(fontsize=8)
        ax.set_title("GAN")
    else:
        ax.set_axis_off()
    y = test["_targets"]
    for col, role in enumerate(("teacher", "student")):
        ax = axes[1, col]
        p = test["_preds"][role]
        for d, (name, color) in enumerate((("valence", "tab:blue"), ("arousal", "tab:red"))):
            ax.scatter(
                y[:, d], p[:, d], s=4, alpha=0.4, color=color, label=f"{name} CCC {test[role]['ccc_' + name]:.3f}"
            )
        ax.plot([-1, 1], [-1, 1], color="k", lw=0.8)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(f"{role} on the test split (windows)")
        ax.legend(fontsize=8)
    axes[1, 2].set_axis_off()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def train_all(
    run: Run, stages: tuple[str, ...] = STAGES, progress: bool = True, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Run the stages in order, skipping finished ones; returns (and writes) ``summary.json``."""
    t0 = time.perf_counter()
    progress = progress and distributed.is_main()
    from edgeemo.train.tokenvit import TOKEN_VIT

    if run.cfg.teacher.arch == TOKEN_VIT and {"teacher", "student"} & set(stages):
        from edgeemo.train.hybrid_stages import preflight

        preflight(run.cfg.teacher, run.cfg.student)
    with distributed.main_first():  # rank 0 writes split.json and the caches; the others then read them
        data = prepare_run_data(run.dir, run.cfg.data, cache_dir)
        for split in ("train", "val", "test"):
            data.windows(split, progress=progress)
    seconds: dict[str, float] = {"features": time.perf_counter() - t0}
    for stage, fn in (("pretrain", run_pretrain), ("gan", run_gan), ("teacher", run_teacher), ("student", run_student)):
        if stage in stages:
            done = fn(run, data, progress)
            if done:
                seconds[stage] = done["seconds"]
    if "student" not in stages:
        return {}
    if not distributed.is_main():  # rank 0 evaluates and writes the summary
        distributed.barrier()
        return read_json(run.dir / "summary.json")
    test = evaluate_run(run, data, "test")
    summary = {
        "edgeemo_version": __version__,
        "run": str(run.dir),
        "recipe": run.cfg.recipe,
        "config_digest": run.cfg.digest(),
        "data": data.describe(),
        "seconds": seconds,
        "test": {k: v for k, v in test.items() if not k.startswith("_")},
        "gan": run.done("gan"),
        "pretrain": run.done("pretrain"),
    }
    atomic_write_json(run.dir / "summary.json", summary)
    plot_summary(run, test, run.dir / "summary.png")
    np.save(
        run.dir / "test_predictions.npy",
        np.concatenate([test["_targets"], test["_preds"]["teacher"], test["_preds"]["student"]], 1),
    )
    distributed.barrier()
    return summary
