"""Training-side commands of the ``edgeemo`` CLI: train-all, pretrain, train-gan, train-teacher, distill, export.

Owns only the flags and how they map onto :class:`edgeemo.presets.TrainConfig` fields
(one flag, one field; ``--set FIELD=VALUE`` reaches any other field). Torch is
imported inside the commands, never at import time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeemo.cli import main
from edgeemo.errors import EdgeemoError


class PatchShape(click.ParamType):
    """``ROWSxCOLS`` (mel bins x frames), e.g. ``8x32``."""

    name = "ROWSxCOLS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            rows, cols = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not ROWSxCOLS (e.g. 8x32)", param, ctx)
        if rows < 1 or cols < 1:
            self.fail(f"{value!r}: both sides must be at least 1", param, ctx)
        return rows, cols


# flag name -> (TrainConfig field, click type, help)
_FIELD_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--seed", "seed", int, "Random seed for training."),
    ("--device", "device", str, "auto | cpu | cuda[:N]."),
    ("--corpus-n", "corpus_n", click.IntRange(min=10), "Built-in corpus size (songs)."),
    ("--split-seed", "split_seed", int, "Seed of the song split."),
    (
        "--windows-per-song",
        "train_windows_per_song",
        click.IntRange(min=1),
        "Training windows drawn per song per epoch.",
    ),
    (
        "--pretrain-epochs",
        "pretrain_epochs",
        click.IntRange(min=1),
        "Epochs of teacher pretraining on --unlabeled audio.",
    ),
    (
        "--speed-copies",
        "pretrain_speed_copies",
        click.IntRange(min=0),
        "Pretraining: speed-changed copies of each unlabeled training file (musicnn hears each copy too).",
    ),
    (
        "--probe-weight",
        "pretrain_probe_weight",
        click.FloatRange(min=0),
        "Pretraining: weight of the emotion-probe term (needs labelled songs among --unlabeled; 0: off).",
    ),
    (
        "--musicnn-weights",
        "musicnn_weights",
        str,
        "Converted MSD-musicnn weights (default: what `edgeemo pretrained import-musicnn` wrote).",
    ),
    ("--gan-epochs", "gan_epochs", click.IntRange(min=0), "GAN epochs (0 skips the GAN)."),
    (
        "--gan-ratio",
        "gan_ratio",
        click.FloatRange(min=0),
        "Generated windows per real window in teacher training (0 disables).",
    ),
    ("--gan-lr", "gan_lr", float, "Generator learning rate (the discriminator gets --d-lr-mult x this)."),
    ("--d-lr-mult", "gan_d_lr_mult", float, "Discriminator LR as a multiple of the generator LR."),
    ("--d-every", "gan_d_every", click.IntRange(min=1), "Update the discriminator every N iterations."),
    ("--g-steps", "gan_g_steps", click.IntRange(min=1), "Generator steps per iteration."),
    ("--noise-std", "gan_noise_std", float, "Initial instance-noise std (decays to --noise-min)."),
    ("--teacher-arch", "teacher_arch", str, "timm ViT name for the teacher."),
    ("--teacher-depth", "teacher_depth", click.IntRange(min=1), "Override the ViT depth (blocks)."),
    (
        "--teacher-patch",
        "teacher_patch",
        PatchShape(),
        "ViT patch as mel bins x frames, e.g. 8x32 (default: the architecture's 16x16).",
    ),
    ("--teacher-pool", "teacher_pool", click.Choice(["token", "avg"]), "ViT pooling: class token or patch mean."),
    ("--teacher-stem", "teacher_stem", click.Choice(["patch", "conv"]), "ViT patch embedding: one conv or conv stem."),
    ("--drop-path", "teacher_drop_path", click.FloatRange(0, 1, max_open=True), "Teacher stochastic depth."),
    ("--teacher-weights", "teacher_weights", str, "Local pretrained weights file for the teacher (offline)."),
    ("--trainable-blocks", "teacher_trainable_blocks", click.IntRange(min=0), "ViT blocks fine-tuned when pretrained."),
    ("--teacher-epochs", "teacher_epochs", click.IntRange(min=1), "Teacher epochs."),
    ("--lr", "teacher_lr", float, "Teacher head learning rate."),
    ("--backbone-lr-mult", "teacher_backbone_lr_mult", float, "Teacher backbone LR as a multiple of --lr."),
    ("--loss", "teacher_loss", click.Choice(["mse", "ccc", "mix"]), "Teacher loss."),
    ("--augment-shift", "augment_shift", click.IntRange(min=0), "Teacher: shift windows up to N mel bins (0: off)."),
    ("--freq-mask", "augment_freq_mask", click.IntRange(min=0), "Teacher: SpecAugment mask up to N mel bins."),
    ("--time-mask", "augment_time_mask", click.IntRange(min=0), "Teacher: SpecAugment mask up to N frames."),
    ("--batch-size", "batch_size", click.IntRange(min=1), "Teacher micro-batch size."),
    ("--accum-steps", "accum_steps", click.IntRange(min=1), "Teacher gradient-accumulation steps."),
    ("--patience", "patience", click.IntRange(min=1), "Early-stopping patience (epochs)."),
    ("--student-arch", "student_arch", str, "timm MobileViT name for the student."),
    ("--student-epochs", "student_epochs", click.IntRange(min=1), "Student epochs."),
    ("--student-lr", "student_lr", float, "Student learning rate."),
    (
        "--student-ema",
        "student_ema",
        click.FloatRange(0, 1, max_open=True),
        "Keep an EMA of the student's weights with this decay (0: off).",
    ),
    ("--alpha", "alpha", click.FloatRange(min=0), "Weight of the ground-truth task loss."),
    ("--beta", "beta", click.FloatRange(min=0), "Weight of the teacher-output distillation loss."),
    ("--gamma", "gamma", click.FloatRange(min=0), "Weight of the feature distillation loss."),
    (
        "--student-pretrain/--no-student-pretrain",
        "student_pretrain",
        bool,
        "With --unlabeled: the student also learns the musicnn targets before it is distilled.",
    ),
]


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise EdgeemoError(f"--set expects FIELD=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def run_options(fn: Callable) -> Callable:
    """Options shared by every training command: run location, preset, data, overrides."""
    for flag, field, typ, help_ in reversed(_FIELD_FLAGS):
        fn = click.option(flag, field, type=typ, default=None, help=help_)(fn)
    decorators = [
        click.option("--name", default="default", show_default=True, help="Run name: runs/<name>."),
        click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True),
        click.option(
            "--preset", type=click.Choice(["tiny", "small", "base"]), default=None, help="Preset (default tiny)."
        ),
        click.option("--deam", "deam", type=click.Path(path_type=Path), multiple=True, help="A DEAM folder."),
        click.option("--manifest", "manifest", type=click.Path(path_type=Path), multiple=True, help="A CSV manifest."),
        click.option(
            "--quadrants", "quadrants", type=click.Path(path_type=Path), multiple=True, help="A 4Q-style folder."
        ),
        click.option(
            "--unlabeled",
            "unlabeled",
            type=click.Path(path_type=Path),
            multiple=True,
            help="A folder of unlabeled music: pretrain the teacher on it (musicnn embedding distillation).",
        ),
        click.option(
            "--builtin/--no-builtin",
            "builtin",
            default=None,
            help="Include the built-in corpus (default: only when no other data is given).",
        ),
        click.option("--pretrained", "teacher_pretrained", is_flag=True, default=None, help="timm pretrained teacher."),
        click.option("--set", "set_values", multiple=True, help="Override any config field: FIELD=VALUE (JSON value)."),
        click.option("--restart", is_flag=True, help="Delete the run and start over."),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Feature/corpus cache."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for d in reversed(decorators):
        fn = d(fn)
    return fn


def _open(kw: dict[str, Any], restart_ok: bool = True):
    from edgeemo.presets import make_config, with_values
    from edgeemo.train.pipeline import open_run
    from edgeemo.train.rundata import DataSource

    run_dir = Path(kw.pop("runs_dir")) / kw.pop("name")
    sources = [DataSource("deam", str(p)) for p in kw.pop("deam")]
    sources += [DataSource("manifest", str(p)) for p in kw.pop("manifest")]
    sources += [DataSource("quadrants", str(p)) for p in kw.pop("quadrants")]
    builtin = kw.pop("builtin")
    if builtin or (builtin is None and not sources):
        sources.insert(0, DataSource("builtin"))
    overrides = {f: kw.pop(f) for _, f, _, _ in _FIELD_FLAGS}
    overrides["teacher_pretrained"] = kw.pop("teacher_pretrained")
    unlabeled = kw.pop("unlabeled")
    overrides["unlabeled"] = tuple(str(p) for p in unlabeled) if unlabeled else None
    set_values = _parse_set(kw.pop("set_values"))
    preset = kw.pop("preset")
    restart = kw.pop("restart") and restart_ok
    explicit = any(v is not None for v in overrides.values()) or preset is not None or bool(set_values)
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file() and not explicit and not restart:
        return open_run(run_dir, None, None), kw  # reopen with the run's own config
    cfg = make_config(preset or "tiny", **overrides)
    cfg = with_values(cfg, set_values)  # last and as given: --set FIELD=null resets an optional field
    return open_run(run_dir, cfg, sources, restart=restart), kw


def _run_stages(kw: dict[str, Any], stages: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    from edgeemo.train.pipeline import train_all

    run, kw = _open(kw)
    progress = not kw.pop("quiet")
    click.echo(f"run: {run.dir}  preset: {run.cfg.preset}  data: {', '.join(s.kind for s in run.sources)}", err=True)
    return train_all(run, stages=stages, progress=progress, cache_dir=kw.pop("cache_dir")), run


@main.command("train-all")
@run_options
def train_all_cmd(**kw: Any) -> None:
    """Data -> [pretrain] -> GAN -> teacher -> student into runs/<name>/, resuming interrupted stages."""
    from edgeemo.train.pipeline import format_table

    summary, run = _run_stages(kw, ("pretrain", "gan", "teacher", "student"))
    click.echo(format_table(summary))
    click.echo(f"summary: {run.dir / 'summary.json'}  plot: {run.dir / 'summary.png'}")


@main.command("pretrain")
@run_options
def pretrain_cmd(**kw: Any) -> None:
    """Pretrain the run's teacher on --unlabeled audio: it learns to predict MSD-musicnn's embeddings and tags."""
    _, run = _run_stages(kw, ("pretrain",))
    done = run.done("pretrain")
    if not done:
        raise EdgeemoError("nothing to pretrain: name folders of unlabeled music with --unlabeled DIR")
    v = done["val"]
    click.echo(
        f"pretrain best epoch {done['best_epoch']}: held-out embedding R² {v['emb_r2']:.3f}, cosine "
        f"{v['emb_cos']:.3f}, tag BCE {v['tag_bce']:.4f} -> {done['backbone']}"
    )


@main.command("train-gan")
@run_options
def train_gan_cmd(**kw: Any) -> None:
    """Train the conditional spectrogram GAN (augmentation) of a run."""
    _, run = _run_stages(kw, ("gan",))
    click.echo(f"GAN: {run.dir / 'gan'}")


@main.command("train-teacher")
@run_options
def train_teacher_cmd(**kw: Any) -> None:
    """Train the ViT teacher of a run (uses the run's GAN when --gan-ratio > 0)."""
    _, run = _run_stages(kw, ("pretrain", "gan", "teacher"))
    done = run.done("teacher")
    v = done["val"]
    click.echo(
        f"teacher best epoch {done['best_epoch']}: CCC_V: {v['ccc_valence']:.3f} | CCC_A: {v['ccc_arousal']:.3f} | "
        f"Avg: {v['ccc_mean']:.3f} (validation)  -> {run.dir / 'teacher' / 'best.pt'}"
    )


@main.command("distill")
@run_options
def distill_cmd(**kw: Any) -> None:
    """Distil the run's teacher into the MobileViT student."""
    from edgeemo.train.pipeline import format_table

    summary, _ = _run_stages(kw, ("student",))
    click.echo(format_table(summary))


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path), default=Path("runs/default"), required=False)
@click.option(
    "--int8/--no-int8", default=False, help="Also ship a static int8 model (the default model of the bundle)."
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Bundle folder (default export/<run name>).")
@click.option("--calibration", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration windows.")
@click.option(
    "--recipe",
    default="auto",
    show_default=True,
    help="auto (measure all, ship the fastest passing), qdq or qoperator.",
)
@click.option("--min-compression", type=float, default=10.0, show_default=True)
@click.option("--min-retention", type=float, default=0.90, show_default=True)
@click.option("--max-int8-drop", type=float, default=0.02, show_default=True)
def export_cmd(
    run_dir: Path,
    int8: bool,
    out_dir: Path | None,
    calibration: int,
    recipe: str,
    min_compression: float,
    min_retention: float,
    max_int8_drop: float,
) -> None:
    """Export a finished run to an ONNX bundle (RUN_DIR defaults to runs/default), behind the verification gate."""
    from edgeemo.exporting.export import export_run
    from edgeemo.exporting.verify import GateThresholds

    export_run(
        run_dir,
        out_dir,
        int8=int8,
        calibration_count=calibration,
        recipe=recipe,
        thresholds=GateThresholds(min_compression, min_retention, max_int8_drop),
    )
