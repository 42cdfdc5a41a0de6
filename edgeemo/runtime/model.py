"""The embeddable emotion model: a verified bundle + one onnxruntime session.

Owns :class:`EmotionModel` (load a bundle, run windows, predict a file, open streams),
:class:`Prediction` (a file's per-window series and its summary) and the check of the
path arguments (:func:`check_path`). Files are decoded block by block at their own
sample rate and pushed through the same :class:`StreamingPredictor` that live audio
uses, so a file and a stream of it agree and an hour-long file never sits in memory
whole. onnxruntime is imported only when a model is loaded, which keeps ``import
edgeemo.runtime`` cheap.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.bundle import (
    FP32_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    Bundle,
    check_outputs,
    default_bundle_path,
    load_card,
    open_bundle,
)
from edgeemo.errors import AudioError, EdgeemoError
from edgeemo.features import FeatureConfig
from edgeemo.runtime.audio import audio_info, iter_audio_blocks
from edgeemo.runtime.limits import check_threads
from edgeemo.runtime.stream import PredictionChunk, StreamingPredictor, check_smoothing, quadrant

MAX_BATCH = 64  # windows per ONNX run (bounds memory when a long signal is pushed at once)
CSV_FIELDS = ("file", "time_s", "valence", "arousal", "quadrant")


def check_path(path: object, what: str = "audio path") -> Path:
    """``path`` as a :class:`Path` when it is a ``str`` or ``os.PathLike[str]``, else a one-line :class:`EdgeemoError`.

    File objects (``open(..., "rb")``, ``io.BytesIO``) are refused with a hint: the
    decoder (:mod:`edgeemo.runtime.audio`) reads paths only.
    """
    if hasattr(path, "read"):
        raise EdgeemoError(
            f"{what} must be a path, got a file object ({type(path).__name__}); "
            "save it to a file, or decode it yourself and use predict_signal(samples, sample_rate)"
        )
    if isinstance(path, str):
        return Path(path)
    if isinstance(path, os.PathLike):
        fs = os.fspath(path)
        if isinstance(fs, str):
            return Path(fs)
    raise EdgeemoError(f"{what} must be a str or os.PathLike, got {type(path).__name__}")


@dataclass
class Prediction:
    """Valence/arousal of one file (or signal), one value per window, in [-1, 1].

    ``times`` are window centre times (s). ``padded`` is True when the clip was shorter
    than one window and was zero-padded (silence after it) to one window, exactly as
    training pads short clips: its single prediction is then less reliable.
    ``smoothing`` is the EMA coefficient applied to the series (0 = none).
    """

    path: str | None
    times: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    padded: bool = False
    duration_s: float = 0.0
    smoothing: float = 0.0
    summary: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        n = int(self.times.size)
        mv = float(np.mean(self.valence, dtype=np.float64)) if n else math.nan
        ma = float(np.mean(self.arousal, dtype=np.float64)) if n else math.nan
        self.summary = {
            "valence": mv,
            "arousal": ma,
            "quadrant": quadrant(mv, ma) if n else None,
            "windows": n,
            "duration_s": float(self.duration_s),
            "padded": bool(self.padded),
        }

    def __len__(self) -> int:
        return int(self.times.size)

    def quadrants(self) -> list[str]:
        return [quadrant(v, a) for v, a in zip(self.valence, self.arousal, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: path, summary and the per-window series."""
        return {
            "path": self.path,
            "summary": dict(self.summary),
            "smoothing": self.smoothing,
            "windows": [
                {"time_s": round(float(t), 4), "valence": float(v), "arousal": float(a), "quadrant": q}
                for t, v, a, q in zip(self.times, self.valence, self.arousal, self.quadrants(), strict=True)
            ],
        }

    def to_csv_rows(self) -> list[dict[str, Any]]:
        """One dict per window with keys :data:`CSV_FIELDS` (for ``csv.DictWriter``)."""
        return [
            {"file": self.path or "", "time_s": f"{t:.3f}", "valence": f"{v:.6f}", "arousal": f"{a:.6f}", "quadrant": q}
            for t, v, a, q in zip(self.times, self.valence, self.arousal, self.quadrants(), strict=True)
        ]


class EmotionModel:
    """A loaded, verified bundle. Thread-safe: share one model between streams and threads."""

    def __init__(self, bundle: Bundle, session: Any, model_file: str, threads: int) -> None:
        self.bundle = bundle
        self.card: dict[str, Any] = bundle.card
        self.feature_config: FeatureConfig = bundle.feature_config
        self.model_file = model_file
        self.threads = threads
        self._session = session
        cfg = self.feature_config
        self._window_shape = (1, cfg.n_mels, cfg.n_frames)

    @classmethod
    def load(cls, path: str | Path | None = None, *, threads: int = 1, prefer_int8: bool = True) -> EmotionModel:
        """Verify the bundle at ``path`` (default: the reference bundle) and open its model.

        ``prefer_int8`` runs the card's default model (the int8 one when the bundle ships
        it as default), else the fp32 ``model.onnx``. ``threads`` sets onnxruntime's
        intra-op threads (1 suits several concurrent streams; inter-op is always 1).
        """
        threads = check_threads(threads)
        path = check_path(path, "bundle path") if path is not None else default_bundle_path()
        card = load_card(path)
        chosen = card["default_model"] if prefer_int8 else FP32_NAME
        bundle, sessions = open_bundle(path, models=(chosen,), threads=threads)
        return cls(bundle, sessions[chosen], chosen, threads)

    def __repr__(self) -> str:
        return f"EmotionModel({str(self.bundle.path)!r}, model={self.model_file!r}, threads={self.threads})"

    # --- windows ----------------------------------------------------------------
    def predict_windows(self, mel: np.ndarray) -> np.ndarray:
        """``(B, 1, n_mels, n_frames)`` log-mel windows -> ``(B, 2)`` float32 (valence, arousal) in [-1, 1].

        Outputs are clipped to [-1, 1]; a model that overshoots by more than
        :data:`edgeemo.bundle.OUTPUT_TOLERANCE`, or returns NaN/inf or a wrong shape, raises
        :class:`BundleError` (it is not a valid edgeemo model).
        """
        if not isinstance(mel, np.ndarray):
            raise EdgeemoError(f"predict_windows expects a numpy array, got {type(mel).__name__}")
        if mel.ndim != 4 or mel.shape[1:] != self._window_shape:
            raise EdgeemoError(
                f"predict_windows expects shape (batch, {', '.join(map(str, self._window_shape))}), got {mel.shape}"
            )
        if mel.dtype.kind != "f":
            raise EdgeemoError(f"predict_windows expects float32 log-mel windows, got dtype {mel.dtype}")
        if mel.shape[0] == 0:
            return np.zeros((0, 2), np.float32)
        x = np.ascontiguousarray(mel, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise EdgeemoError("predict_windows got NaN/inf values in the log-mel windows")
        outs = [
            self._session.run([OUTPUT_NAME], {INPUT_NAME: x[s : s + MAX_BATCH]})[0]
            for s in range(0, x.shape[0], MAX_BATCH)
        ]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return check_outputs(out, x.shape[0], f"{self.bundle.path}: {self.model_file}")

    # --- streams and files ------------------------------------------------------
    def stream(self, sample_rate: int, *, smoothing: float = 0.0) -> StreamingPredictor:
        """A new :class:`StreamingPredictor` for audio at ``sample_rate`` (resampled inside)."""
        return StreamingPredictor(self, sample_rate, smoothing=smoothing)

    def predict_file(self, path: str | os.PathLike[str], *, smoothing: float = 0.0) -> Prediction:
        """Predict a whole file, decoded and streamed block by block (bounded memory).

        ``path`` is a ``str`` or ``os.PathLike`` (bytes paths and file objects raise a
        one-line :class:`EdgeemoError`). The file is decoded at its own sample rate (which
        must lie within :mod:`edgeemo.runtime.limits`' range) and pushed through one
        :class:`StreamingPredictor`, exactly as a live stream at that rate would be, so
        ``predict_file`` and a stream of the same samples agree.

        A clip shorter than one window is zero-padded to one window (``padded=True``).
        A missing, corrupt, empty or NaN-holding file raises :class:`AudioError`, and so
        does a silent one (:attr:`StreamingPredictor.silent`: no sample swing above
        -100 dBFS, which includes DC-only and one-sample files): silence carries no
        emotion to report. (A live stream or a signal may be silent; only files are refused.)
        """
        path = check_path(path)
        check_smoothing(smoothing)
        rate = audio_info(path)[0]  # the header's rate, checked by the predictor like any stream's
        predictor = StreamingPredictor(self, rate, smoothing=smoothing, source=str(path))
        chunks: list[PredictionChunk] = []
        try:
            for block in iter_audio_blocks(path, rate):
                chunks.append(predictor.push(block))
        except EdgeemoError:
            raise
        except (RuntimeError, ValueError, OSError, EOFError) as exc:  # decoder surprises on odd files
            raise AudioError(f"decoding failed ({' '.join(str(exc).split())[:160]})", path=path) from None
        chunks.append(predictor.flush())
        if predictor.silent:
            raise AudioError("audio is all silent (or constant)", path=path)
        return self._prediction(str(path), chunks, predictor)

    def predict_signal(
        self, samples: np.ndarray, sample_rate: int, *, smoothing: float = 0.0, name: str | None = None
    ) -> Prediction:
        """Predict an in-memory signal (``(n,)`` or ``(n, channels)`` at ``sample_rate``) via one stream.

        ``sample_rate`` is checked like :meth:`stream`'s; ``samples`` like
        :meth:`StreamingPredictor.push`'s. Silence is not refused here (unlike
        :meth:`predict_file`); a signal shorter than one window gives one padded window.
        """
        if name is not None and not isinstance(name, str):
            raise EdgeemoError(f"name must be a str or None, got {type(name).__name__}")
        predictor = StreamingPredictor(self, sample_rate, smoothing=smoothing, source=name or "signal")
        chunks = [predictor.push(samples), predictor.flush()]
        return self._prediction(name, chunks, predictor)

    def _prediction(self, name: str | None, chunks: list[PredictionChunk], predictor: StreamingPredictor) -> Prediction:
        series = PredictionChunk.concat(chunks)
        return Prediction(
            path=name,
            times=series.times,
            valence=series.valence,
            arousal=series.arousal,
            padded=predictor.padded,
            duration_s=predictor.seconds,
            smoothing=predictor.smoothing,
        )


def format_predictions(preds: list[Prediction], fmt: str = "table") -> str:
    """Predictions as ``table`` (per-window rows + summary per file), ``csv`` (:data:`CSV_FIELDS`) or ``json``."""
    if fmt == "json":
        import json

        return json.dumps([p.to_dict() for p in preds], indent=2) + "\n"
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for p in preds:
            writer.writerows(p.to_csv_rows())
        return buf.getvalue()
    if fmt != "table":
        raise EdgeemoError(f"unknown format {fmt!r} (table, csv or json)")
    blocks = []
    for p in preds:
        s = p.summary
        padded = ", padded: shorter than one window" if p.padded else ""
        smooth = f", smoothing {p.smoothing:g}" if p.smoothing else ""
        lines = [f"{p.path}  ({s['duration_s']:.1f} s, {s['windows']} window(s){padded}{smooth})"]
        lines.append(f"  {'time_s':>8}  {'valence':>8}  {'arousal':>8}  mood")
        for t, v, a, q in zip(p.times, p.valence, p.arousal, p.quadrants(), strict=True):
            lines.append(f"  {t:8.2f}  {v:+8.3f}  {a:+8.3f}  {q}")
        lines.append(f"  {'mean':>8}  {s['valence']:+8.3f}  {s['arousal']:+8.3f}  {s['quadrant']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
