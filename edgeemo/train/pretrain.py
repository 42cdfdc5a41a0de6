"""The ``pretrain`` stage: the ViT teacher learns MSD-musicnn's view of music from unlabeled audio.

Owns building the pretraining examples (for each unlabeled file: our log-mel windows,
and for each window the musicnn embedding of a 3 s patch centred on it: the 200-d
penultimate layer and the 50 tag probabilities, cached on disk), the pretraining
model (the teacher's backbone plus a projection head), its loss (MSE on the
standardised embedding + ``pretrain_tag_weight`` x BCE on the tags), its validation
on held-out files (embedding R², cosine, tag BCE; selection on R²) and the
``backbone.pt`` file the teacher stage then starts from (partial fine-tuning, as with
any pretrained weights). With ``student_pretrain`` the MobileViT student learns the same
targets from the same examples (``pretrain/student/``), and the student stage starts from
that backbone before it is distilled. Training itself is the shared loop
(:func:`edgeemo.train.loop.fit`), so it checkpoints, resumes and stops on NaN the same way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgeemo.atomic import DAMAGED_ENTRY_ERRORS, atomic_write_npz
from edgeemo.config import PretrainConfig, StageContext, resolve_path, to_plain
from edgeemo.data.unlabeled import find_unlabeled, holdout_split, window_indices
from edgeemo.errors import AudioError, DataError, TrainingError
from edgeemo.features import FeatureConfig, frame_windows, log_mel
from edgeemo.filehash import cache_key, content_digest
from edgeemo.log import log
from edgeemo.progress import progress_iter
from edgeemo.runtime.audio import load_audio, resample
from edgeemo.train.checkpoint import history_seconds, load_checkpoint, save_checkpoint
from edgeemo.train.loop import FitResult, fit, stage_fit_config
from edgeemo.train.models import Regressor, build_model, rebuild_spec
from edgeemo.train.probe import EmotionProbe, fit_probe

TARGET_KEYS = ("penultimate", "tags")  # musicnn outputs the teacher learns to predict, in this order
EMBEDDER_SAMPLE_RATE = 16000
EMBED_BATCH = 4  # musicnn on CPU: small batches are faster per patch (its timbral maps are ~9 MB a patch)


class Embedder(Protocol):
    """What pretraining needs from a teacher signal (see :class:`edgeemo.pretrained.musicnn.MusicnnEmbedder`)."""

    def embed_at(
        self, signal16k: np.ndarray, centers_s: np.ndarray, batch_size: int = ...
    ) -> dict[str, np.ndarray]: ...


@dataclass
class PretrainSet:
    """Windows ``(N, n_mels, n_frames)`` float16 and their targets ``(N, D)`` = penultimate | tags.

    ``file_of[i]`` indexes the file (in ``files``) window ``i`` was taken from.
    """

    x: np.ndarray
    y: np.ndarray
    n_files: int
    failed: list[str]
    dims: tuple[int, int]  # (embedding dims, tag dims)
    files: list[Path] = field(default_factory=list)
    file_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.x.shape[0])


class PretrainWindows(Dataset):
    def __init__(self, data: PretrainSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.data.x[i].astype(np.float32))[None], torch.from_numpy(self.data.y[i])


def _file_key(path: Path, features: FeatureConfig, cfg: PretrainConfig, embedder_id: str) -> str:
    """Cache key of a file's pretraining examples: its content (not path or mtime) and the settings they use."""
    ident = f"{content_digest(path)}|{features.digest()}|{cfg.hop_s}|{cfg.max_windows}|{embedder_id}"
    return cache_key(ident)


SPEED_SEMITONES = (0.5, 3.0)  # a speed-changed copy moves pitch by this many semitones (either way) and tempo alike


def speed_factors(path: Path, copies: int, seed: int) -> list[float]:
    """The playback-speed factors of ``copies`` augmented copies of a file, fixed by its content and ``seed``.

    Each is ``2 ** (s / 12)`` for ``s`` drawn uniformly from ±[0.5, 3] semitones: the copy is the
    file played that much faster or slower (pitch and tempo together, as a turntable does).
    """
    rng = np.random.default_rng([seed, int(content_digest(path)[:12], 16)])
    semis = rng.uniform(*SPEED_SEMITONES, size=copies) * rng.choice([-1.0, 1.0], size=copies)
    return [float(2.0 ** (s / 12.0)) for s in semis]


def _played_at(signal: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    return signal if speed == 1.0 else resample(signal, sample_rate * speed, sample_rate)


def file_examples(
    path: Path, cfg: PretrainConfig, features: FeatureConfig, embedder: Embedder, speed: float = 1.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Windows and targets of one file: ``(x (k, n_mels, n_frames) float16, y (k, D) float32, n_embedding_dims)``.

    With ``speed`` != 1 both come from the file played ``speed`` times faster (the teacher
    signal hears exactly what the network sees: a consistent augmentation).
    """
    signal16k = _played_at(load_audio(path, EMBEDDER_SAMPLE_RATE), EMBEDDER_SAMPLE_RATE, speed)
    signal = (
        signal16k
        if features.sample_rate == EMBEDDER_SAMPLE_RATE
        else _played_at(load_audio(path, features.sample_rate), features.sample_rate, speed)
    )
    frames = log_mel(signal, features)
    idx = window_indices(frames.shape[1], features, cfg.hop_s, cfg.max_windows)
    if idx.size == 0:
        raise AudioError(f"shorter than one window ({features.window_seconds:.2f} s)", path=path)
    x = frame_windows(frames, features)[idx].astype(np.float16)
    out = embedder.embed_at(signal16k, features.window_center_s(idx), batch_size=EMBED_BATCH)
    parts = [np.asarray(out[k], dtype=np.float32).reshape(len(idx), -1) for k in TARGET_KEYS]
    y = np.concatenate(parts, axis=1)
    if not np.all(np.isfinite(y)):
        raise AudioError("the teacher signal (musicnn) gave non-finite outputs", path=path)
    return x, y, parts[0].shape[1]


def build_pretrain_set(
    files: Sequence[Path],
    cfg: PretrainConfig,
    ctx: StageContext,
    embedder: Embedder,
    embedder_id: str,
    cache_dir: Path | None = None,
    progress: bool = True,
    desc: str = "pretrain data",
    speed_copies: int = 0,
) -> PretrainSet:
    """Examples of every file (cached under ``cache_dir/pretrain``); undecodable files are listed in ``failed``.

    ``speed_copies`` adds that many speed-changed copies of each file (:func:`speed_factors`);
    their windows count as the same file in ``file_of``.
    """
    xs, ys, failed, used, file_of = [], [], [], [], []
    n_emb = 0
    for path in progress_iter(files, progress, desc, unit="file", tty_only=False):
        path = Path(path)
        try:
            speeds = [1.0] + (speed_factors(path, speed_copies, ctx.seed) if speed_copies else [])
            got = [_cached_examples(path, cfg, ctx.features, embedder, embedder_id, cache_dir, s) for s in speeds]
        except AudioError as exc:
            failed.append(str(exc))
            continue
        for x, y, dims in got:
            xs.append(x)
            ys.append(y)
            file_of.append(np.full(len(x), len(used), dtype=np.int64))
            n_emb = dims
        used.append(path)
    if not xs:
        raise DataError(f"no usable unlabeled audio out of {len(files)} file(s)" + (f": {failed[0]}" if failed else ""))
    y = np.concatenate(ys).astype(np.float32)
    return PretrainSet(
        np.concatenate(xs), y, len(used), failed, (n_emb, y.shape[1] - n_emb), used, np.concatenate(file_of)
    )


def _cached_examples(
    path: Path,
    cfg: PretrainConfig,
    features: FeatureConfig,
    embedder: Embedder,
    embedder_id: str,
    cache_dir: Path | None,
    speed: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`file_examples`, read from or written to ``cache_dir/pretrain`` when there is one."""
    if cache_dir is None:
        return file_examples(path, cfg, features, embedder, speed)
    key = _file_key(path, features, cfg, embedder_id)
    if speed != 1.0:
        key = cache_key(f"{key}|speed{speed!r}")
    cache = Path(cache_dir) / "pretrain" / f"{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return z["x"], z["y"], int(z["n_emb"])
        except DAMAGED_ENTRY_ERRORS:
            pass  # damaged cache entry: recompute
    got = file_examples(path, cfg, features, embedder, speed)
    atomic_write_npz(cache, x=got[0], y=got[1], n_emb=got[2])
    return got


class PretrainModel(nn.Module):
    """The network being pretrained (a teacher or, with ``student_pretrain``, the student; its regression
    head is unused here) plus a projection to the musicnn targets. The attribute keeps the name
    ``teacher`` so checkpoints of either role share one layout."""

    def __init__(self, teacher: Regressor, out_dims: int) -> None:
        super().__init__()
        self.teacher = teacher
        width = teacher.width
        self.proj = nn.Sequential(nn.Linear(width, 512), nn.GELU(), nn.Linear(512, out_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.teacher.forward_features(x))


class PretrainStage:
    """Embedding distillation: standardised penultimate (MSE) + tags (BCE on logits vs probabilities),
    plus, with an :class:`EmotionProbe`, ``probe_weight`` x the probe term."""

    name = "pretrain"
    score_key = "emb_r2"

    def __init__(
        self,
        model: PretrainModel,
        dims: tuple[int, int],
        stats: tuple[np.ndarray, np.ndarray],
        cfg: PretrainConfig,
        ctx: StageContext,
        val: PretrainSet | None,
        probe: EmotionProbe | None = None,
    ) -> None:
        self.model = model
        self.probe = probe
        self.dims = dims
        self.mean = torch.as_tensor(stats[0], dtype=torch.float32)
        self.std = torch.as_tensor(stats[1], dtype=torch.float32)
        self.cfg = cfg
        self.ctx = ctx
        self.val = val

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        pred = self.model(x).float()
        n = self.dims[0]
        z_true = (y[:, :n] - self.mean.to(y.device)) / self.std.to(y.device)
        emb = nn.functional.mse_loss(pred[:, :n], z_true)
        tags = nn.functional.binary_cross_entropy_with_logits(pred[:, n:], y[:, n:].clamp(0, 1))
        loss = emb + self.cfg.tag_weight * tags
        logs = {"emb_mse": emb.item(), "tag_bce": tags.item()}
        if self.probe is not None:
            probe = self.probe.loss(pred[:, :n], z_true)
            loss = loss + self.cfg.probe_weight * probe
            logs["probe_mse"] = probe.item()
        return loss, {"loss": loss.item(), **logs}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.no_grad()
    def validate(self, val: Any, device: torch.device, batch_size: int) -> dict[str, float]:
        """Embedding/tag figures on the held-out unlabeled files (``val`` windows are unused: there are none)."""
        if self.val is None or len(self.val) == 0:
            raise TrainingError("pretraining needs held-out unlabeled files to validate on")
        preds = []
        for s in range(0, len(self.val), 64):
            xb = torch.from_numpy(self.val.x[s : s + 64].astype(np.float32))[:, None].to(device)
            preds.append(self.model(xb).float().cpu())
        pred, y = torch.cat(preds), torch.from_numpy(self.val.y)
        report = embedding_report(pred, y, self.dims, self.mean, self.std)
        if self.probe is not None:
            n = self.dims[0]
            report["probe_r2"] = self.probe.r2(pred[:, :n], (y[:, :n] - self.mean) / self.std)
        return report

    def epoch_extras(self, val_metrics: dict[str, float]) -> dict[str, float]:
        return {}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "model_spec": rebuild_spec(self.model.teacher.spec),
            "feature_config": self.ctx.features.to_dict(),
            "stage_config": {"pretrain": to_plain(self.cfg), "context": to_plain(self.ctx)},
            "target_keys": list(TARGET_KEYS),
            "target_dims": list(self.dims),
            "target_mean": self.mean.numpy(),
            "target_std": self.std.numpy(),
            "emotion_probe": None if self.probe is None else self.probe.to_meta(),
        }


def embedding_report(
    pred: torch.Tensor, y: torch.Tensor, dims: tuple[int, int], mean: torch.Tensor, std: torch.Tensor
) -> dict[str, float]:
    """How well predictions match the targets: R² and cosine of the standardised embedding, tag BCE and MAE.

    R² is ``1 - SSE/SST`` over all standardised embedding dimensions with SST around the
    training mean (zero after standardising), so 0 means "no better than always predicting
    the training set's mean embedding".
    """
    n = dims[0]
    z_true = (y[:, :n] - mean) / std
    z_pred = pred[:, :n]
    sse = float(((z_pred - z_true) ** 2).sum())
    sst = float((z_true**2).sum())
    cos = nn.functional.cosine_similarity(z_pred * std + mean, y[:, :n], dim=1).mean()
    tags_true = y[:, n:].clamp(0, 1)
    bce = nn.functional.binary_cross_entropy_with_logits(pred[:, n:], tags_true)
    mae = (torch.sigmoid(pred[:, n:]) - tags_true).abs().mean()
    return {
        "emb_r2": 1.0 - sse / max(sst, 1e-12),
        "emb_cos": float(cos),
        "tag_bce": float(bce),
        "tag_mae": float(mae),
    }


def target_stats(data: PretrainSet) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the embedding part of the targets (std floored: dead ReLU units)."""
    emb = data.y[:, : data.dims[0]]
    return emb.mean(0).astype(np.float32), np.maximum(emb.std(0), 1e-3).astype(np.float32)


def train_pretrain(
    train: PretrainSet,
    val: PretrainSet,
    cfg: PretrainConfig,
    ctx: StageContext,
    spec: dict[str, Any],
    out_dir: Path,
    progress: bool = True,
    probe: EmotionProbe | None = None,
) -> FitResult:
    """Pretrain the network ``spec`` describes, from scratch (or resume), into ``out_dir``; writes ``backbone.pt``
    (the best epoch's backbone).

    With ``probe`` the loss adds ``cfg.probe_weight`` x its term (see :mod:`edgeemo.train.probe`).
    """
    torch.manual_seed(ctx.seed)
    dims = train.dims
    model = PretrainModel(build_model(spec), sum(dims))
    head_params = [p for n, p in model.named_parameters() if not n.startswith("teacher.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": list(model.teacher.backbone.parameters()), "lr": cfg.lr},
            {"params": head_params, "lr": cfg.lr},
        ],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    stage = PretrainStage(model, dims, target_stats(train), cfg, ctx, val, probe)
    fit_cfg = stage_fit_config(cfg, ctx, progress)
    result = fit(stage, optimizer, lambda epoch: PretrainWindows(train), None, out_dir, fit_cfg)
    write_backbone(Path(out_dir) / "best.pt", Path(out_dir) / "backbone.pt")
    return result


def write_backbone(checkpoint: Path, out: Path) -> Path:
    """Save a pretraining checkpoint's backbone weights as a plain state dict (what ``--teacher-weights`` reads)."""
    ck = load_checkpoint(checkpoint)
    if ck.get("stage") != "pretrain":
        raise TrainingError(f"{checkpoint} is not a pretraining checkpoint (stage {ck.get('stage')!r})")
    prefix = "teacher.backbone."
    state = {k.removeprefix(prefix): v for k, v in ck["state_dict"].items() if k.startswith(prefix)}
    save_checkpoint(out, state)
    return out


def pretrain_from_folders(
    cfg: PretrainConfig,
    ctx: StageContext,
    out_dir: Path,
    *,
    teacher_spec: dict[str, Any],
    student_spec: dict[str, Any] | None = None,
    exclude: Sequence[Path] = (),
    cache_dir: Path | None = None,
    progress: bool = True,
    embedder: Embedder | None = None,
    embedder_id: str | None = None,
    labels: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """The whole stage: find the files of ``cfg.unlabeled``, hold out some, build examples, train.

    ``teacher_spec`` is the network pretrained (from scratch); with ``cfg.student`` the
    network ``student_spec`` describes learns the same targets too.

    ``labels`` (resolved path -> song ``(valence, arousal)`` of the run's labelled training
    songs) feeds the emotion probe when ``cfg.probe_weight`` > 0.

    Returns the stage's ``done.json`` record (files, hours, windows, held-out figures,
    seconds). ``embedder`` defaults to MSD-musicnn loaded from ``cfg.musicnn_weights``
    (or the cache ``edgeemo pretrained import-musicnn`` wrote).
    """
    found = find_unlabeled([resolve_path(d) for d in cfg.unlabeled], exclude=exclude)
    train_files, val_files = holdout_split(found.files, cfg.val_fraction, ctx.seed)
    if not val_files:
        raise DataError(f"pretraining needs at least 2 unlabeled files (found {len(found.files)})")
    teacher_signal: dict[str, Any] = {"name": "custom"}
    if embedder is None:
        from edgeemo.pretrained.musicnn import MusicnnEmbedder, load_musicnn

        model = load_musicnn(Path(cfg.musicnn_weights) if cfg.musicnn_weights else None)
        embedder = MusicnnEmbedder(model)
        teacher_signal = musicnn_signal_info(model)
        embedder_id = teacher_signal["id"]
    embedder_id = embedder_id or "custom"
    log(
        f"[pretrain] {len(found.files)} unlabeled files ({found.hours():.2f} h): {len(train_files)} train, "
        f"{len(val_files)} held out; {found.excluded} excluded (labelled val/test songs), "
        f"{len(found.skipped)} skipped"
    )
    t0 = time.perf_counter()
    train = build_pretrain_set(
        train_files, cfg, ctx, embedder, embedder_id, cache_dir, progress, "pretrain data/train", cfg.speed_copies
    )
    val = build_pretrain_set(val_files, cfg, ctx, embedder, embedder_id, cache_dir, progress, "pretrain data/held-out")
    data_seconds = time.perf_counter() - t0
    probe, probe_info = None, {}
    if cfg.probe_weight > 0:
        mean, std = target_stats(train)
        z = (train.y[:, : train.dims[0]] - mean) / std
        probe = fit_probe(z, train.file_of, train.files, labels or {}, cfg.probe_ridge)
        probe_info = {
            "emotion_probe": {
                "weight": cfg.probe_weight,
                "ridge": cfg.probe_ridge,
                "songs": probe.n_songs,
                "windows": probe.n_windows,
                "fit_r2": [round(v, 4) for v in probe.fit_r2],
            }
        }
        log(
            f"[pretrain] emotion probe on {probe.n_songs} labelled songs ({probe.n_windows} windows): "
            f"in-sample R² valence {probe.fit_r2[0]:.3f}, arousal {probe.fit_r2[1]:.3f}"
        )
    result = train_pretrain(train, val, cfg, ctx, teacher_spec, out_dir, progress, probe=probe)
    student: dict[str, Any] = {}
    if cfg.student:
        if student_spec is None:
            raise TrainingError("pretrain.student is set but no student architecture was given")
        student_dir = Path(out_dir) / "student"
        log(f"[pretrain] the student ({student_spec['arch']}) learns the same targets")
        got = train_pretrain(train, val, cfg, ctx, student_spec, student_dir, progress, probe=probe)
        student = {
            "student": {
                "arch": student_spec["arch"],
                "best_epoch": got.best_epoch,
                "val": got.best_metrics,
                "seconds": round(history_seconds(got.history), 2),
                "backbone": str(student_dir / "backbone.pt"),
            }
        }
    return {
        "seconds": round(data_seconds + history_seconds(result.history), 2),
        "data_seconds": round(data_seconds, 2),
        "best_epoch": result.best_epoch,
        "val": result.best_metrics,
        "folders": list(cfg.unlabeled),
        "files_digest": files_digest([*train_files, *val_files]),
        "files": {"train": train.n_files, "held_out": val.n_files},
        "hours": {"train": round(found.hours(train_files), 3), "held_out": round(found.hours(val_files), 3)},
        "windows": {"train": len(train), "held_out": len(val)},
        "excluded": found.excluded,
        "skipped": len(found.skipped) + len(train.failed) + len(val.failed),
        "teacher_signal": teacher_signal,
        "backbone": str(Path(out_dir) / "backbone.pt"),
        **probe_info,
        **student,
    }


def files_digest(files: Sequence[Path]) -> str:
    """sha256 (16 hex) over the sorted content digests of ``files``: which audio a stage read, not where."""
    return hashlib.sha256("\n".join(sorted(content_digest(Path(f)) for f in files)).encode()).hexdigest()[:16]


def musicnn_signal_info(model: Any) -> dict[str, Any]:
    """What the card says about the teacher signal: model name, targets, licence, weights identity."""
    meta = dict(getattr(model, "metadata", {}) or {})
    return {
        "name": meta.get("model", "MSD_musicnn"),
        "targets": list(TARGET_KEYS),
        "licence": "musicnn weights: " + meta.get("licence", "ISC (musicnn, Jordi Pons)"),
        "id": f"{meta.get('model', 'musicnn')}-{meta.get('source_sha256', '')[:16]}",
    }
