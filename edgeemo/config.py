"""The run config: one frozen section per stage, composed into :class:`RunConfig`; torch-free.

Owns the fields, their defaults, their help text and allowed values (read by the CLI,
which generates its flags from here), strict (de)serialisation, the config digest, dotted
overrides (``teacher.epochs=3``), the reading of flat configs written by edgeemo 0.1
(``runs/*/config.json`` with ``train_config``), and portable paths: a path under
``$EDGEEMO_DATA`` or the user cache is stored as ``$EDGEEMO_DATA/...`` / ``$EDGEEMO_CACHE/...``
so a config or a card never holds a machine's absolute path.

Each stage reads only its own section; the pipeline hands it explicit paths to earlier
stages' outputs (a pretrained backbone, the trained teacher), never a patched field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeemo.errors import EdgeemoError
from edgeemo.features import FeatureConfig

SOURCE_KINDS = ("builtin", "deam", "manifest", "quadrants")
TEACHER_POOLS = ("token", "avg")
SELECTIONS = ("best", "last")  # the epoch a stage keeps: best validation score, or the last of a fixed schedule
TEACHER_STEMS = ("patch", "conv")
TEACHER_LOSSES = ("mse", "ccc", "mix")
QUANT_RECIPES = ("auto", "qdq", "qoperator")
GAN_NETS = ("v1", "v2", "v3")
ROOTS = ("EDGEEMO_DATA", "EDGEEMO_CACHE")


def opt(default: Any, help: str, *, flags: tuple[str, ...] = (), choices: tuple[str, ...] = (), **limits: Any) -> Any:
    """A config field with its CLI help, extra flag names (aliases), allowed values and numeric limits.

    ``limits`` are click range bounds: ``min``, ``max``, ``min_open``, ``max_open``.
    """
    meta = {"help": help, "flags": flags, "choices": choices, "limits": limits}
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- portable paths
def default_cache_root() -> Path:
    """``$EDGEEMO_CACHE`` or ``~/.cache/edgeemo``."""
    return Path(os.environ.get("EDGEEMO_CACHE", Path.home() / ".cache" / "edgeemo"))


def _root(name: str) -> Path | None:
    if name == "EDGEEMO_CACHE":
        return default_cache_root()
    value = os.environ.get(name)
    return Path(value) if value else None


def portable_path(path: str | Path) -> str:
    """``path`` as stored in configs and cards: under a named root -> ``$ROOT/rel``; else relative to the cwd.

    A path already written as ``$ROOT/...`` is kept as it is.
    """
    text = str(path)
    if text.startswith("$"):
        return text
    p = Path(text).expanduser()
    if not p.is_absolute():
        return p.as_posix()
    resolved = p.resolve()
    for name in ROOTS:
        root = _root(name)
        if root is not None:
            try:
                return f"${name}/{resolved.relative_to(root.expanduser().resolve()).as_posix()}"
            except ValueError:
                pass
    return Path(os.path.relpath(resolved, Path.cwd())).as_posix()


def resolve_path(text: str) -> Path:
    """A stored path back to a real one (``$EDGEEMO_DATA/x`` needs ``EDGEEMO_DATA`` set; one-line error if not)."""
    if text.startswith("$"):
        name, _, rest = text[1:].partition("/")
        if name not in ROOTS:
            raise EdgeemoError(f"unknown path root ${name} in {text!r}; known: {', '.join('$' + r for r in ROOTS)}")
        root = _root(name)
        if root is None:
            raise EdgeemoError(f"{text} needs ${name}: set it to the folder that holds {rest.split('/')[0]!r}")
        return root.expanduser() / rest
    return Path(text).expanduser()


@dataclass(frozen=True)
class DataSource:
    """One labelled dataset of a run: ``kind`` is builtin | deam | manifest | quadrants; ``path`` portable."""

    kind: str
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise EdgeemoError(f"unknown data source kind {self.kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
        if (self.kind == "builtin") != (self.path is None):
            raise EdgeemoError(f"data source {self.kind} {'takes no' if self.kind == 'builtin' else 'needs a'} path")
        if self.path is not None:
            object.__setattr__(self, "path", portable_path(self.path))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}

    def resolved(self) -> Path:
        """The dataset folder or file on this machine."""
        if self.path is None:
            raise EdgeemoError("the built-in corpus has no path")
        return resolve_path(self.path)


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    """Which labelled songs, how they are split, how training windows are drawn, the log-mel front end."""

    sources: tuple[DataSource, ...] = opt((DataSource("builtin"),), "Labelled datasets (--builtin/--deam/...).")
    corpus_n: int = opt(400, "Built-in corpus size (songs).", min=10)
    corpus_seed: int = opt(0, "Seed of the built-in corpus.")
    corpus_duration: float = opt(12.0, "Seconds per built-in clip.", min=5.0)
    split_fractions: tuple[float, float, float] = opt((0.7, 0.15, 0.15), "Train/val/test song fractions.")
    split_seed: int = opt(0, "Seed of the song split.")
    windows_per_song: int | None = opt(
        8, "Training windows drawn at random per song per epoch (null: all).", min=1, flags=("--windows-per-song",)
    )
    quadrant_magnitude: float = opt(1.0, "Quadrant songs (4Q) become targets (+-m, +-m).", min=0.0, min_open=True)
    quadrant_confidence: bool = opt(False, "Scale the quadrant magnitude by the song's pquad confidence.")
    features: FeatureConfig = opt(FeatureConfig(), "The log-mel front end (set with --set data.features.FIELD=V).")
    exclude: tuple[str, ...] = opt(
        (), "Song ids left out of every split and of pretraining (a cross-validation fold's held-out songs)."
    )


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining on unlabeled audio: the teacher (and optionally the student) learns MSD-musicnn's outputs."""

    unlabeled: tuple[str, ...] = opt((), "Folders of unlabeled music (the stage runs when any is named).")
    epochs: int = opt(8, "Pretraining epochs.", min=1)
    lr: float = opt(5e-4, "Pretraining learning rate.", min=0.0, min_open=True)
    batch_size: int = opt(32, "Pretraining batch size.", min=1)
    hop_s: float = opt(3.0, "Spacing of the windows taken from each unlabeled file (s).", min=0.0, min_open=True)
    max_windows: int = opt(60, "Windows per unlabeled file.", min=1)
    tag_weight: float = opt(0.5, "Weight of the tag (BCE) term beside the embedding (MSE) term.", min=0.0)
    speed_copies: int = opt(
        0, "Speed-changed copies of each training file (musicnn hears each).", min=0, flags=("--speed-copies",)
    )
    probe_weight: float = opt(0.0, "Weight of the emotion-probe term (0: off).", min=0.0, flags=("--probe-weight",))
    probe_ridge: float = opt(100.0, "Ridge of the emotion probe's fit.", min=0.0)
    val_fraction: float = opt(0.1, "Unlabeled files held out to measure the embedding fit.", min=0.0, max=0.5)
    musicnn_weights: str | None = opt(
        None, "Converted MSD-musicnn weights (default: import-musicnn's).", flags=("--musicnn-weights",)
    )
    student: bool = opt(
        False,
        "The student learns the same targets before it is distilled.",
        flags=("--student-pretrain/--no-student-pretrain",),
    )
    patience: int | None = opt(6, "Early-stopping patience (epochs; null: none).", min=1)
    weight_decay: float = opt(0.05, "AdamW weight decay.", min=0.0)


@dataclass(frozen=True)
class GanConfig:
    """The conditional spectrogram GAN and how many of its windows join teacher training."""

    ratio: float = opt(0.25, "Generated windows per real window in teacher training (0: no GAN).", min=0.0)
    epochs: int = opt(15, "GAN epochs (0 skips the GAN).", min=0)
    lr: float = opt(2e-4, "Generator learning rate.", min=0.0, min_open=True)
    d_lr_mult: float = opt(
        0.5, "Discriminator LR as a multiple of the generator LR.", min=0.0, min_open=True, flags=("--d-lr-mult",)
    )
    d_every: int = opt(2, "Update the discriminator every N iterations.", min=1, flags=("--d-every",))
    g_steps: int = opt(2, "Generator steps per iteration.", min=1, flags=("--g-steps",))
    noise_std: float = opt(0.1, "Initial instance-noise std (decays to noise_min).", min=0.0, flags=("--noise-std",))
    noise_min: float = opt(0.01, "Final instance-noise std.", min=0.0)
    real_label: float = opt(0.9, "Discriminator target for real windows (one-sided smoothing).", min=0.0, max=1.0)
    fake_label: float = opt(0.1, "Discriminator target for generated windows.", min=0.0, max=1.0)
    batch_size: int = opt(32, "GAN batch size.", min=1)
    latent_dim: int = opt(64, "Generator latent size.", min=1)
    nets: str = opt(
        "v1",
        "GAN networks: v1 (small transposed-conv G, plain 4-conv D), v2 (upsample+conv G; wider spectrally "
        "normalised D with a mel-position channel and minibatch-std) or v3 (a narrower v2 G; a wide projection D "
        "reading out multi-scale feature statistics).",
        choices=GAN_NETS,
    )


@dataclass(frozen=True)
class TeacherConfig:
    """The ViT teacher: architecture, fine-tuning, optimiser, loss, batch augmentation."""

    arch: str = opt("vit_tiny_patch16_224", "timm ViT name.")
    depth: int | None = opt(None, "Override the ViT depth (blocks).", min=1)
    pool: str = opt("token", "Pooling: class token or mean of the patch tokens.", choices=TEACHER_POOLS)
    patch: tuple[int, int] | None = opt(None, "Patch as mel bins x frames, e.g. 8x32 (null: the arch's own).")
    stem: str = opt("patch", "Patch embedding: timm's one convolution or a stride-2 conv stem.", choices=TEACHER_STEMS)
    drop_path: float = opt(
        0.0, "Stochastic depth of the last block.", min=0.0, max=1.0, max_open=True, flags=("--drop-path",)
    )
    pretrained: bool = opt(False, "Start from timm's pretrained weights.", flags=("--pretrained",))
    weights: str | None = opt(None, "Local pretrained weights file (offline).", flags=("--teacher-weights",))
    trainable_blocks: int = opt(
        4, "ViT blocks fine-tuned when starting from weights.", min=0, flags=("--trainable-blocks",)
    )
    epochs: int = opt(12, "Teacher epochs.", min=1)
    head_lr: float = opt(3e-5, "Learning rate of the regression head.", min=0.0, min_open=True, flags=("--lr",))
    backbone_lr_mult: float = opt(
        0.1, "Backbone LR as a multiple of the head LR.", min=0.0, flags=("--backbone-lr-mult",)
    )
    loss: str = opt("mse", "Regression loss.", choices=TEACHER_LOSSES, flags=("--loss",))
    augment_shift: int = opt(0, "Shift windows up to N mel bins (0: off).", min=0, flags=("--augment-shift",))
    freq_mask: int = opt(0, "SpecAugment frequency mask up to N mel bins.", min=0, flags=("--freq-mask",))
    time_mask: int = opt(0, "SpecAugment time mask up to N frames.", min=0, flags=("--time-mask",))
    weight_decay: float = opt(0.05, "AdamW weight decay.", min=0.0)
    batch_size: int = opt(12, "Micro-batch size.", min=1, flags=("--batch-size",))
    accum_steps: int = opt(4, "Gradient-accumulation steps.", min=1, flags=("--accum-steps",))
    patience: int | None = opt(6, "Early-stopping patience (epochs; null: none).", min=1, flags=("--patience",))
    views: int = opt(
        1,
        "musicnn_token_vit only: views of each training song (1: as is; more: speed/EQ/level copies, the same "
        "sound for teacher and student).",
        min=1,
        flags=("--views",),
    )
    probe_alpha: float | None = opt(
        None,
        "musicnn_token_vit only: ridge alpha of a frozen linear probe of each window's pooled tokens, fitted "
        "in closed form first; the ViT then learns its correction (null: no probe).",
        min=0.0,
        min_open=True,
        flags=("--probe-alpha",),
    )


@dataclass(frozen=True)
class StudentConfig:
    """The MobileViT student and its distillation loss: task_weight x MSE to the labels + output_weight x MSE to
    the teacher's outputs + feature_weight x (1 - cosine) to the teacher's pooled features."""

    arch: str = opt("mobilevit_xxs", "timm MobileViT name.")
    epochs: int = opt(12, "Student epochs.", min=1)
    lr: float = opt(2e-3, "Student learning rate.", min=0.0, min_open=True)
    ema: float = opt(
        0.0, "Keep and export an EMA of the weights with this decay (0: off).", min=0.0, max=1.0, max_open=True
    )
    batch_size: int = opt(32, "Student batch size.", min=1)
    accum_steps: int = opt(1, "Student gradient-accumulation steps.", min=1)
    patience: int | None = opt(6, "Early-stopping patience (epochs; null: none).", min=1)
    select: str = opt(
        "best",
        "The epoch the student keeps: best (validation CCC) or last (the end of a fixed schedule; no early stop).",
        choices=SELECTIONS,
    )
    weight_decay: float = opt(0.05, "AdamW weight decay.", min=0.0)
    task_weight: float = opt(0.5, "Weight of the ground-truth (label) loss.", min=0.0, flags=("--alpha",))
    output_weight: float = opt(0.5, "Weight of the teacher-output distillation loss.", min=0.0, flags=("--beta",))
    feature_weight: float = opt(
        0.1,
        "Weight of the teacher-feature distillation loss (musicnn_token_vit teacher: the window's pooled musicnn "
        "tokens).",
        min=0.0,
        flags=("--gamma",),
    )
    unlabeled: tuple[str, ...] = opt(
        (),
        "musicnn_token_vit teacher only: unlabeled audio folders whose windows the student also learns the "
        "teacher's outputs on.",
        flags=("--student-unlabeled",),
    )
    backbone_lr_mult: float = opt(
        1.0,
        "The student backbone's learning rate as a multiple of student.lr (the head keeps student.lr); below 1 "
        "for a pretrained student (arch yamnet).",
        min=0.0,
        min_open=True,
    )
    mixup: float = opt(
        0.0,
        "musicnn_token_vit teacher only: blend training windows and their targets pairwise (mixup), "
        "lam ~ Beta(mixup, mixup); 0: off.",
        min=0.0,
    )
    crossfit: int = opt(
        0,
        "musicnn_token_vit teacher only: K >= 2 gives the labelled training songs' windows the outputs of K teachers "
        "each trained without that song's (artist-grouped) part, instead of the run's teacher, which has learnt "
        "those songs (0: off).",
        min=0,
    )
    mixes: int = opt(
        0,
        "musicnn_token_vit teacher only: mixed views per training song (the song mixed with another training "
        "song at 30-50%), whose windows the student learns the teacher's outputs on.",
        min=0,
    )
    unlabeled_max_windows: int = opt(60, "Windows per unlabeled file (evenly spread).", min=1)
    unlabeled_max_seconds: float = opt(30.0, "Analyse the middle N seconds of each unlabeled file.", min=4.0)
    windows_per_song: int | None = opt(
        None, "Windows per song and view an epoch draws (null: data.windows_per_song).", min=1
    )
    views: int | None = opt(
        None, "musicnn_token_vit teacher only: views of each training song the student learns (null: teacher.views).",
        min=1, flags=("--student-views",),
    )  # fmt: skip


@dataclass(frozen=True)
class ExportConfig:
    """``edgeemo export``: int8 quantisation and the verification gate."""

    int8: bool = opt(False, "Also ship a static int8 model (then the bundle's default).", flags=("--int8/--no-int8",))
    calibration: int = opt(256, "Calibration windows for int8.", min=1, flags=("--calibration",))
    quant_recipe: str = opt(
        "auto",
        "int8 recipe: auto (measure all, ship the best passing), qdq or qoperator.",
        choices=QUANT_RECIPES,
        flags=("--quant-recipe",),
    )
    min_compression: float = opt(
        10.0, "Gate: teacher fp32 bytes / shipped student bytes.", flags=("--min-compression",)
    )
    min_retention: float = opt(0.90, "Gate: student CCC / teacher CCC.", flags=("--min-retention",))
    max_int8_drop: float = opt(0.02, "Gate: fp32 - int8 CCC.", flags=("--max-int8-drop",))


# Fields added after the first recipes were registered, with the value that keeps the earlier behaviour. A
# recorded config (a card, a run) that lacks one reads it as that value, and the config digest leaves it out
# while it has that value, so adding a field changes neither an old recipe's meaning nor its digest.
ADDED_FIELDS: dict[str, Any] = {
    "data.exclude": [],
    "gan.nets": "v1",
    "teacher.views": 1,
    "student.unlabeled": [],
    "student.unlabeled_max_windows": 60,
    "student.unlabeled_max_seconds": 30.0,
    "student.windows_per_song": None,
    "teacher.probe_alpha": None,
    "student.views": None,
    "student.select": "best",
    "student.mixes": 0,
    "student.crossfit": 0,
    "student.mixup": 0.0,
    "student.backbone_lr_mult": 1.0,
}

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "pretrain": PretrainConfig,
    "gan": GanConfig,
    "teacher": TeacherConfig,
    "student": StudentConfig,
    "export": ExportConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """A whole run: the recipe it came from, run-wide seed and device, and one section per stage."""

    recipe: str = opt("custom", "Name of the registered recipe this config came from.")
    seed: int = opt(0, "Random seed for training.", flags=("--seed",))
    device: str = opt("auto", "auto | cpu | cuda[:N].", flags=("--device",))
    data: DataConfig = opt(DataConfig(), "Data section.")
    pretrain: PretrainConfig = opt(PretrainConfig(), "Pretraining section.")
    gan: GanConfig = opt(GanConfig(), "GAN section.")
    teacher: TeacherConfig = opt(TeacherConfig(), "Teacher section.")
    student: StudentConfig = opt(StudentConfig(), "Student section.")
    export: ExportConfig = opt(ExportConfig(), "Export section.")

    @property
    def features(self) -> FeatureConfig:
        return self.data.features

    @property
    def uses_gan(self) -> bool:
        return self.gan.ratio > 0 and self.gan.epochs > 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain JSON values (tuples as lists)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = False) -> RunConfig:
        """Rebuild from :meth:`to_dict`'s output. ``strict``: every field must be given (a recorded config)."""
        return _from_json(cls, data, "", strict)

    def digest(self) -> str:
        """sha256 (16 hex) of the canonical JSON of every field (an added field at its neutral value left out)."""
        d = self.to_dict()
        for dotted, neutral in ADDED_FIELDS.items():
            section, _, name = dotted.rpartition(".")
            node = d[section] if section else d
            if node.get(name) == neutral:
                del node[name]
        return config_digest(d)

    def replace(self, values: dict[str, Any]) -> RunConfig:
        """This config with dotted ``values`` applied (``teacher.epochs``, ``data.features.n_mels``)."""
        if not values:
            return self
        d = self.to_dict()
        for key, value in values.items():
            set_dotted(d, key, value)
        return RunConfig.from_dict(d)


def config_digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def to_plain(obj: Any) -> Any:
    """A config object (section, run config, context) as plain JSON values."""
    if isinstance(obj, FeatureConfig):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    return obj


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, value: Any, where: str, strict: bool) -> Any:
    """``value`` (plain JSON) as type ``tp``; a wrong type is a one-line error naming ``where``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, strict)
    if tp is FeatureConfig:
        if isinstance(value, FeatureConfig):
            return value
        if not isinstance(value, dict):
            raise EdgeemoError(f"{where} must be an object of feature settings")
        return FeatureConfig.from_dict(value)
    if tp is DataSource:
        if isinstance(value, DataSource):
            return value
        if not isinstance(value, dict) or "kind" not in value:
            raise EdgeemoError(f"{where} must be {{'kind': ..., 'path': ...}}")
        return DataSource(value["kind"], value.get("path"))
    if dataclasses.is_dataclass(tp):
        return _from_json(tp, value, where + ".", strict)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise EdgeemoError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where, strict) for v in value)
        if len(value) != len(args):
            raise EdgeemoError(f"{where} must have {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where, strict) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise EdgeemoError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise EdgeemoError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EdgeemoError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise EdgeemoError(f"{where} must be a string, got {value!r}")
        return value
    raise EdgeemoError(f"{where}: unsupported field type {tp}")


def _from_json(cls: type, data: Any, prefix: str, strict: bool) -> Any:
    if isinstance(data, cls):
        return data
    name = prefix.rstrip(".") or "run config"
    if not isinstance(data, dict):
        raise EdgeemoError(f"{name} must be an object, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise EdgeemoError(f"unknown config field(s) {', '.join(prefix + u for u in unknown)}")
    missing = sorted(set(fields) - set(data) - {k.removeprefix(prefix) for k in ADDED_FIELDS if k.startswith(prefix)})
    if strict and missing:
        raise EdgeemoError(f"recorded config lacks field(s) {', '.join(prefix + m for m in missing)}")
    values = {k: _convert(hints[k], v, prefix + k, strict) for k, v in data.items()}
    try:
        obj = cls(**values)
    except TypeError as exc:
        raise EdgeemoError(f"{name}: {exc}") from None
    _check_limits(obj, prefix)
    return obj


def _check_limits(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = prefix + f.name
        choices = f.metadata.get("choices") or ()
        if choices and value not in choices:
            raise EdgeemoError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        lim = f.metadata.get("limits") or {}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = lim.get("min"), lim.get("max")
            if lo is not None and (value < lo or (lim.get("min_open") and value == lo)):
                raise EdgeemoError(f"{where} must be {'>' if lim.get('min_open') else '>='} {lo}, got {value}")
            if hi is not None and (value > hi or (lim.get("max_open") and value == hi)):
                raise EdgeemoError(f"{where} must be {'<' if lim.get('max_open') else '<='} {hi}, got {value}")
    if isinstance(obj, DataConfig):
        fr = obj.split_fractions
        if any(v < 0 for v in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise EdgeemoError(f"{prefix}split_fractions must be three non-negative fractions summing to 1, got {fr}")
        if not obj.sources:
            raise EdgeemoError(f"{prefix}sources names no dataset")
    if isinstance(obj, GanConfig) and not obj.fake_label < obj.real_label:
        raise EdgeemoError(f"need {prefix}fake_label < {prefix}real_label, got {obj.fake_label}, {obj.real_label}")
    if isinstance(obj, TeacherConfig) and obj.patch is not None and min(obj.patch) < 1:
        raise EdgeemoError(f"{prefix}patch sides must be at least 1, got {obj.patch}")


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``d[a][b][c] = value`` for ``key`` ``a.b.c`` (flat names of edgeemo 0.1 are mapped first)."""
    key = FLAT_FIELDS.get(key, key)
    parts = key.split(".")
    node = d
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise EdgeemoError(f"unknown config field {'.'.join(parts[: i + 1])!r} (in {key!r})")
        node = node[part]
    if parts[-1] not in node:
        raise EdgeemoError(f"unknown config field {key!r}; `edgeemo recipes show tiny` lists them")
    node[parts[-1]] = value


def field_help(section: type, name: str) -> dict[str, Any]:
    """The metadata (help, flags, choices, limits) of one field."""
    return next(f for f in dataclasses.fields(section) if f.name == name).metadata


# flat field names of edgeemo 0.1's TrainConfig -> dotted names here (runs/*/config.json, old --set lines)
FLAT_FIELDS: dict[str, str] = {
    "preset": "recipe",
    **{k: f"data.{k}" for k in ("corpus_n", "corpus_seed", "corpus_duration", "split_fractions", "split_seed")},
    **{k: f"data.{k}" for k in ("quadrant_magnitude", "quadrant_confidence", "features")},
    "train_windows_per_song": "data.windows_per_song",
    "unlabeled": "pretrain.unlabeled",
    **{
        f"pretrain_{k}": f"pretrain.{k}"
        for k in ("epochs", "lr", "batch_size", "hop_s", "max_windows", "tag_weight", "speed_copies")
    },
    **{f"pretrain_{k}": f"pretrain.{k}" for k in ("probe_weight", "probe_ridge", "val_fraction")},
    "musicnn_weights": "pretrain.musicnn_weights",
    "student_pretrain": "pretrain.student",
    **{f"gan_{k}": f"gan.{k}" for k in (f.name for f in dataclasses.fields(GanConfig))},
    **{
        f"teacher_{k}": f"teacher.{k}"
        for k in ("arch", "depth", "pool", "patch", "stem", "drop_path", "pretrained", "weights", "trainable_blocks")
    },
    "teacher_epochs": "teacher.epochs",
    "teacher_lr": "teacher.head_lr",
    "teacher_backbone_lr_mult": "teacher.backbone_lr_mult",
    "teacher_loss": "teacher.loss",
    "augment_shift": "teacher.augment_shift",
    "augment_freq_mask": "teacher.freq_mask",
    "augment_time_mask": "teacher.time_mask",
    "batch_size": "teacher.batch_size",
    "accum_steps": "teacher.accum_steps",
    **{f"student_{k}": f"student.{k}" for k in ("arch", "epochs", "lr", "ema", "batch_size", "accum_steps")},
    "alpha": "student.task_weight",
    "beta": "student.output_weight",
    "gamma": "student.feature_weight",
}
# flat fields that several sections share now
FLAT_SHARED = {
    "patience": ("pretrain.patience", "teacher.patience", "student.patience"),
    "weight_decay": ("pretrain.weight_decay", "teacher.weight_decay", "student.weight_decay"),
}


def parse_value(text: str) -> Any:
    """A ``FIELD=VALUE`` setting's value as typed: JSON where it parses (numbers, lists, null, true), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def dotted_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """``{name: value}`` with flat edgeemo 0.1 names mapped to dotted ones (a shared flat name sets each section's)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        for target in FLAT_SHARED.get(key, (FLAT_FIELDS.get(key, key),)):
            out[target] = value
    return out


def from_flat(flat: dict[str, Any], sources: list[dict[str, Any]] | None = None) -> RunConfig:
    """A run config from edgeemo 0.1's flat ``train_config`` (and its separate ``sources`` list).

    ``student_weights``/``teacher_weights`` patched in by that version's pipeline are dropped
    unless a user gave the teacher weights.
    """
    d = RunConfig().to_dict()
    for key, value in flat.items():
        if key == "student_weights":
            continue
        if key in FLAT_SHARED:
            for target in FLAT_SHARED[key]:
                set_dotted(d, target, value)
        elif key in ("seed", "device"):
            d[key] = value
        elif key in FLAT_FIELDS:
            set_dotted(d, FLAT_FIELDS[key], value)
        else:
            raise EdgeemoError(f"unknown field {key!r} in an edgeemo 0.1 training config")
    if sources is not None:
        d["data"]["sources"] = [{"kind": s["kind"], "path": s.get("path")} for s in sources]
    return RunConfig.from_dict(d)


@dataclass(frozen=True)
class StageContext:
    """What every training stage takes beside its own section: run-wide seed and device, the front end, and how
    many windows per song an epoch draws."""

    features: FeatureConfig
    seed: int = 0
    device: str = "auto"
    windows_per_song: int | None = None

    @classmethod
    def of(cls, cfg: RunConfig) -> StageContext:
        return cls(cfg.features, cfg.seed, cfg.device, cfg.data.windows_per_song)
