"""Augmented views of audio files, cached: what the student sees and what musicnn hears, from the same sound.

Owns the view augmentations (:func:`view_params`: view 0 is the file as is; view ``v > 0`` is
the file played faster or slower, tilted in EQ and changed in level, each drawn from the
file's content digest, ``v`` and a seed, so every view is repeatable), :func:`render_view`,
musicnn's *token frames* of a signal (:func:`musicnn_tokens`: the 753 channels of musicnn's
front end and midend, mean- and max-pooled over groups of :data:`TOKEN_POOL` frames, i.e. one
1506-d token every 0.256 s, computed on the whole file in overlapping segments so a long track
costs no more memory than a clip) and the per-file, per-view cache of the student's log-mel
frames and of the token frames (:func:`file_view`; one entry per stream, so a new front end
recomputes only the log-mel stream and new musicnn weights only the tokens), and mixed views
(:func:`file_mix`: a file mixed with another training file, :func:`mix_partner`, for distillation
on sounds no single song makes). A window of the student (:class:`~edgeemo.features.FeatureConfig`
hop and length) is matched to the :data:`N_TOKENS` tokens centred on the same time
(:func:`token_windows`), so a teacher over tokens and the student over log-mel see one moment of
one augmented sound: distillation is consistent (Beyer et al. 2022) without running musicnn at
every step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.atomic import DAMAGED_ENTRY_ERRORS, atomic_write_npz
from edgeemo.errors import AudioError, DataError
from edgeemo.features import FeatureConfig, log_mel
from edgeemo.filehash import cache_key, content_digest
from edgeemo.runtime.audio import load_audio, resample

SAMPLE_RATE = 16000  # musicnn's rate; the student's features must use it too
TOKEN_POOL = 16  # musicnn frames (16 ms each) per token
N_TOKENS = 15  # tokens per student window: 15 x 0.256 s = 3.84 s, inside a 4 s window
TOKEN_DIM = 2 * 753  # mean and max of musicnn's 753 front-end + midend channels
SPEED_SEMITONES = 3.0
GAIN_DB = (-9.0, 3.0)
TILT_DB_PER_OCTAVE = 3.0
_SEGMENT = 3750  # musicnn frames per segment (60 s), plus a margin each side
_MARGIN = 160  # > the longest temporal filter (128 frames) + the midend's 3 x 7-frame convs
_HOP_S = 256 / SAMPLE_RATE
MAX_SECONDS = 120.0  # by default a longer file is analysed in its middle 120 s
VIEW_FORMAT = "edgeemo-view-v2"
FRONT_END_KEYS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3")  # musicnn outputs the tokens are made of
MIX_SHARE = (0.3, 0.5)  # the partner's share of a mixed view


@dataclass(frozen=True)
class ViewParams:
    """One augmented view: play ``speed`` times faster, tilt the spectrum by ``tilt_db`` per octave
    around 1 kHz, scale by ``gain_db``. View 0 is the identity."""

    speed: float = 1.0
    tilt_db: float = 0.0
    gain_db: float = 0.0


def view_params(digest: str, view: int, seed: int) -> ViewParams:
    """The parameters of ``view`` of the file with content ``digest`` (view 0: the file as is)."""
    if view < 0:
        raise ValueError(f"view must be >= 0, got {view}")
    if view == 0:
        return ViewParams()
    rng = np.random.default_rng([int(seed), int(digest[:12], 16), int(view)])
    semis = rng.uniform(-SPEED_SEMITONES, SPEED_SEMITONES)
    return ViewParams(
        speed=float(2.0 ** (semis / 12.0)),
        tilt_db=float(rng.uniform(-TILT_DB_PER_OCTAVE, TILT_DB_PER_OCTAVE)),
        gain_db=float(rng.uniform(*GAIN_DB)),
    )


def render_view(signal: np.ndarray, params: ViewParams, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``signal`` as heard in the view: speed change (pitch and tempo), spectral tilt, gain; float32."""
    x = np.asarray(signal, dtype=np.float32)
    if params.speed != 1.0:
        x = resample(x, sample_rate * params.speed, sample_rate)
    if params.tilt_db != 0.0 and x.size > 1:
        spec = np.fft.rfft(x.astype(np.float64))
        freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
        octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
        gain_db = np.clip(params.tilt_db * octaves, -12.0, 12.0)
        x = np.fft.irfft(spec * 10.0 ** (gain_db / 20.0), n=x.size).astype(np.float32)
    if params.gain_db != 0.0:
        x = x * np.float32(10.0 ** (params.gain_db / 20.0))
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def musicnn_tokens(model, signal16k: np.ndarray) -> np.ndarray:
    """``(n_tokens, 1506)`` float16 token frames of a 16 kHz signal (mean then max per 753 channels).

    musicnn runs on the whole signal (its convolutions slide in time) in 60 s segments with
    margins, so the frames equal those of one pass over the file.
    """
    import torch

    from edgeemo.pretrained.musicnn import musicnn_input

    mel = musicnn_input(signal16k)  # (T, 96)
    total = mel.shape[0]
    parts = []
    with torch.no_grad():
        for start in range(0, total, _SEGMENT):
            lo, hi = max(0, start - _MARGIN), min(total, start + _SEGMENT + _MARGIN)
            out = model(torch.from_numpy(np.ascontiguousarray(mel[lo:hi], dtype=np.float32))[None])
            mid = front_end_frames(out)[0]
            keep = min(_SEGMENT, total - start)
            parts.append(mid[start - lo : start - lo + keep].numpy())
    frames = np.concatenate(parts)  # (T, 753)
    n = frames.shape[0] // TOKEN_POOL
    if n == 0:
        raise AudioError(f"shorter than one musicnn token ({TOKEN_POOL * _HOP_S:.3f} s)")
    grouped = frames[: n * TOKEN_POOL].reshape(n, TOKEN_POOL, frames.shape[1])
    return np.concatenate([grouped.mean(axis=1), grouped.max(axis=1)], axis=1).astype(np.float16)


def front_end_frames(outputs: dict) -> Any:
    """musicnn's 753 front-end + midend channels per frame, ``(B, T, 753)``, from its output dict."""
    import torch

    return torch.cat([outputs[k] for k in FRONT_END_KEYS], dim=2)


def token_start(center_s: np.ndarray, n_tokens_total: int) -> np.ndarray:
    """Index of the first of the :data:`N_TOKENS` tokens centred on each time (clamped inside the file)."""
    token_center0 = (TOKEN_POOL / 2 + 1) * _HOP_S  # token k is centred at token_center0 + k * 0.256 s
    k0 = np.rint((np.asarray(center_s, dtype=np.float64) - token_center0) / (TOKEN_POOL * _HOP_S) - (N_TOKENS - 1) / 2)
    return np.clip(k0.astype(np.int64), 0, max(0, n_tokens_total - N_TOKENS))


def token_windows(tokens: np.ndarray, center_s: np.ndarray) -> np.ndarray:
    """``(n, N_TOKENS, 1506)``: the tokens centred on each time; a file shorter than that repeats its last."""
    if tokens.shape[0] < N_TOKENS:
        tokens = np.concatenate([tokens, np.repeat(tokens[-1:], N_TOKENS - tokens.shape[0], axis=0)])
    starts = token_start(center_s, tokens.shape[0])
    return tokens[starts[:, None] + np.arange(N_TOKENS)[None, :]]


@dataclass(frozen=True)
class FileView:
    """One file in one view: the student's log-mel frames and musicnn's token frames of the same sound."""

    mel: np.ndarray  # (n_mels, n_frames_total) float16
    tokens: np.ndarray  # (n_tokens, TOKEN_DIM) float16

    def n_windows(self, features: FeatureConfig) -> int:
        return features.n_windows(self.mel.shape[1])


def view_ident(path: Path, view: int, seed: int, max_seconds: float = MAX_SECONDS) -> str:
    """What identifies the rendered sound of ``view`` of the file: its content, the view, the seed, the cut."""
    ident = f"{content_digest(path)}|{view}|{seed}"
    if max_seconds != MAX_SECONDS:
        ident += f"|max{max_seconds!r}"
    return ident


def stream_entries(cache_dir: Path | None, sound: str, features: FeatureConfig, weights_id: str) -> StreamEntries:
    """The cache entries of one rendered sound (``sound``, e.g. :func:`view_ident`): its log-mel frames keyed
    by the front end (``features``), its token frames keyed by musicnn's weights, so a change of either
    recomputes only its own stream."""
    if cache_dir is None:
        return StreamEntries(None, None)
    root = Path(cache_dir) / "views"
    mel = cache_key(f"{VIEW_FORMAT}|mel|{sound}|{features.digest()}")
    tokens = cache_key(f"{VIEW_FORMAT}|tokens|{sound}|{weights_id}|{TOKEN_POOL}")
    return StreamEntries(root / f"mel-{mel}.npz", root / f"tokens-{tokens}.npz")


@dataclass(frozen=True)
class StreamEntries:
    """Where one rendered sound's two streams are cached (``None``: not cached)."""

    mel: Path | None
    tokens: Path | None


def compute_view(
    path: Path, features: FeatureConfig, view: int, seed: int, model, max_seconds: float = MAX_SECONDS
) -> FileView:
    """Render ``view`` of the file (its middle ``max_seconds`` at most) and compute both streams (no cache)."""
    return file_view(path, features, view, seed, model, "", None, max_seconds)


def render_file_view(path: Path, view: int, seed: int, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """The 16 kHz signal of ``view`` of the file, cut to its middle ``max_seconds``."""
    params = view_params(content_digest(path), view, seed)
    return render_view(middle(load_audio(path, SAMPLE_RATE), max_seconds), params)


def _check_rate(features: FeatureConfig) -> None:
    if features.sample_rate != SAMPLE_RATE:
        raise AudioError(f"views need {SAMPLE_RATE} Hz features (musicnn's rate), got {features.sample_rate}")


def middle(signal: np.ndarray, max_seconds: float) -> np.ndarray:
    """The middle ``max_seconds`` of a 16 kHz signal (all of it when shorter)."""
    keep = int(max_seconds * SAMPLE_RATE)
    if signal.size > keep:
        start = (signal.size - keep) // 2
        signal = signal[start : start + keep]
    return signal


def student_frames(signal: np.ndarray, features: FeatureConfig, path: Path) -> np.ndarray:
    """The student's float16 log-mel frames of one rendered 16 kHz signal (at least one whole window)."""
    mel = log_mel(signal, features).astype(np.float16)
    if features.n_windows(mel.shape[1]) == 0:
        raise AudioError(f"shorter than one window ({features.window_seconds:.2f} s)", path=path)
    return mel


def token_frames(model, signal: np.ndarray, path: Path) -> np.ndarray:
    """:func:`musicnn_tokens` of one rendered signal, an error naming ``path``."""
    try:
        return musicnn_tokens(model, signal)
    except AudioError as exc:
        raise AudioError(str(exc), path=path) from None


def cached_view(
    entries: StreamEntries, render: Callable[[], np.ndarray], features: FeatureConfig, model, path: Path
) -> FileView:
    """Both streams of one sound: each read from its cache entry when there and whole, else computed from
    ``render()`` (called at most once, and not at all when both are cached) and written atomically (a
    damaged entry is recomputed)."""
    _check_rate(features)
    mel, tokens = _read(entries.mel, "mel"), _read(entries.tokens, "tokens")
    if mel is None or tokens is None:
        signal = render()
        if mel is None:
            mel = student_frames(signal, features, path)
            if entries.mel is not None:
                atomic_write_npz(entries.mel, mel=mel)
        if tokens is None:
            tokens = token_frames(model, signal, path)
            if entries.tokens is not None:
                atomic_write_npz(entries.tokens, tokens=tokens)
    return FileView(mel, tokens)


def _read(entry: Path | None, name: str) -> np.ndarray | None:
    if entry is None or not entry.is_file():
        return None
    try:
        with np.load(entry) as z:
            return z[name]
    except DAMAGED_ENTRY_ERRORS:
        return None  # a damaged entry is recomputed


def file_view(
    path: Path,
    features: FeatureConfig,
    view: int,
    seed: int,
    model,
    weights_id: str,
    cache_dir: Path | None,
    max_seconds: float = MAX_SECONDS,
) -> FileView:
    """``view`` of the file (its middle ``max_seconds`` at most) rendered once, each stream read from or written
    (atomically) to ``cache_dir/views`` when there is one (``None``: computed, not cached)."""
    entries = stream_entries(cache_dir, view_ident(path, view, seed, max_seconds), features, weights_id)
    return cached_view(entries, lambda: render_file_view(path, view, seed, max_seconds), features, model, path)


def mix_partner(digest: str, candidates: list[str], mix: int, seed: int) -> tuple[int, float]:
    """Mixed view ``mix`` of the file with content ``digest``: the index of its partner among the
    ``candidates`` digests (never the file itself) and the partner's share (``MIX_SHARE``).

    The partner is the candidate that ranks first under a hash of (seed, digest, mix, candidate), so
    a file keeps its partner in every candidate set that contains it (CV folds share cached mixes)."""
    ranked = [
        (hashlib.sha256(f"{seed}|{digest}|{mix}|{c}".encode()).digest(), i)
        for i, c in enumerate(candidates)
        if c != digest
    ]
    if not ranked:
        raise DataError("a mixed view needs another file to mix with")
    rng = np.random.default_rng([int(seed), int(digest[:12], 16), int(mix), 7])
    return min(ranked)[1], float(rng.uniform(*MIX_SHARE))


def render_mix(signal: np.ndarray, partner: np.ndarray, share: float) -> np.ndarray:
    """``(1 - share) x signal + share x partner``, the partner looped or cut to the signal's length and
    brought to its RMS level first (a silent partner adds nothing); float32 in [-1, 1]."""
    x = np.asarray(signal, dtype=np.float32)
    y = np.asarray(partner, dtype=np.float32)
    if y.size == 0:
        return x.copy()
    y = np.resize(y, x.size)  # repeats a shorter partner
    rms_x, rms_y = float(np.sqrt(np.mean(x**2))), float(np.sqrt(np.mean(y**2)))
    y = y * np.float32(rms_x / rms_y) if rms_y > 1e-8 else np.zeros_like(x)
    return np.clip((1.0 - share) * x + share * y, -1.0, 1.0).astype(np.float32)


def mix_ident(path: Path, partner: Path, share: float, max_seconds: float) -> str:
    """What identifies a mixed sound: both files' content, the partner's share, the cut."""
    return f"mix|{content_digest(path)}|{content_digest(partner)}|{share!r}|max{max_seconds!r}"


def file_mix(
    path: Path,
    partner: Path,
    share: float,
    features: FeatureConfig,
    model,
    weights_id: str,
    cache_dir: Path | None,
    max_seconds: float = MAX_SECONDS,
) -> FileView:
    """The file mixed with ``partner`` (:func:`render_mix`, both cut to their middle ``max_seconds``), both
    streams, cached like :func:`file_view`."""

    def render() -> np.ndarray:
        signal = middle(load_audio(path, SAMPLE_RATE), max_seconds)
        return render_mix(signal, middle(load_audio(partner, SAMPLE_RATE), max_seconds), share)

    entries = stream_entries(cache_dir, mix_ident(path, partner, share, max_seconds), features, weights_id)
    return cached_view(entries, render, features, model, path)
