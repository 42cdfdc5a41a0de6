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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.bundle import (
    FP32_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PCM_INPUT_NAME,
    RAW_FILE_NAMES,
    Bundle,
    check_outputs,
    default_bundle_path,
    load_card,
    open_bundle,
)
from edgeemo.errors import AudioError, BundleError, EdgeemoError
from edgeemo.features import FeatureConfig
from edgeemo.mood import mood_name, quadrant_code
from edgeemo.rawaudio import PcmWindower
from edgeemo.runtime.audio import SILENCE_PEAK, StreamResampler, audio_info, iter_audio_blocks
from edgeemo.runtime.limits import check_threads
from edgeemo.runtime.stream import (
    PredictionChunk,
    StreamingPredictor,
    as_mono,
    check_smoothing,
    ema_smooth,
)

MAX_BATCH = 64  # windows per ONNX run (bounds memory when a long signal is pushed at once)
MODEL_CHOICES = ("default", "e2e", "e2e-ort")  # EmotionModel.load(model=...)
CSV_FIELDS = ("file", "time_s", "valence", "arousal", "quadrant", "mood")


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
            "quadrant": quadrant_code(mv, ma) if n else None,
            "mood": mood_name(mv, ma) if n else None,
            "windows": n,
            "duration_s": float(self.duration_s),
            "padded": bool(self.padded),
        }

    def __len__(self) -> int:
        return int(self.times.size)

    def quadrants(self) -> list[str]:
        """``"Q1"``..``"Q4"`` per window."""
        return [quadrant_code(v, a) for v, a in zip(self.valence, self.arousal, strict=True)]

    def moods(self) -> list[str]:
        """``"happy"``/``"tense"``/``"sad"``/``"calm"`` per window."""
        return [mood_name(v, a) for v, a in zip(self.valence, self.arousal, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: path, summary and the per-window series."""
        return {
            "path": self.path,
            "summary": dict(self.summary),
            "smoothing": self.smoothing,
            "windows": [
                {"time_s": round(float(t), 4), "valence": float(v), "arousal": float(a), "quadrant": q, "mood": m}
                for t, v, a, q, m in zip(
                    self.times, self.valence, self.arousal, self.quadrants(), self.moods(), strict=True
                )
            ],
        }

    def to_csv_rows(self) -> list[dict[str, Any]]:
        """One dict per window with keys :data:`CSV_FIELDS` (for ``csv.DictWriter``)."""
        return [
            {
                "file": self.path or "",
                "time_s": f"{t:.3f}",
                "valence": f"{v:.6f}",
                "arousal": f"{a:.6f}",
                "quadrant": q,
                "mood": m,
            }
            for t, v, a, q, m in zip(
                self.times, self.valence, self.arousal, self.quadrants(), self.moods(), strict=True
            )
        ]


class EmotionModel:
    """A loaded, verified bundle. Thread-safe: share one model between streams and threads."""

    def __init__(self, bundle: Bundle, session: Any, model_file: str, threads: int) -> None:
        self.bundle = bundle
        self.card: dict[str, Any] = bundle.card
        self.feature_config: FeatureConfig = bundle.feature_config
        self.model_file = model_file
        self.threads = threads
        self.raw_audio = model_file in RAW_FILE_NAMES  # the model takes PCM windows (see predict_pcm)
        self._session = session
        cfg = self.feature_config
        self._window_shape = (1, cfg.n_mels, cfg.n_frames)

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, threads: int = 1, prefer_int8: bool = True, model: str = "default"
    ) -> EmotionModel:
        """Verify the bundle at ``path`` (default: the reference bundle) and open its model.

        ``prefer_int8`` runs the card's default model (the int8 one when the bundle ships
        it as default), else the fp32 ``model.onnx``. ``threads`` sets onnxruntime's
        intra-op threads (1 suits several concurrent streams; inter-op is always 1).
        ``model="e2e"`` opens the bundle's raw-audio model instead (``"e2e-ort"``: its ORT-format
        copy): the log-mel front end runs inside ONNX; files and signals are cut into PCM windows
        (:meth:`predict_pcm`); :meth:`predict_windows` and :meth:`stream` need the default model.
        """
        threads = check_threads(threads)
        if model not in MODEL_CHOICES:
            raise EdgeemoError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
        path = check_path(path, "bundle path") if path is not None else default_bundle_path()
        card = load_card(path)
        chosen = card["default_model"] if prefer_int8 else FP32_NAME
        if model != "default":
            raw = [n for n in (card.get("raw_audio_model") or {}).get("files") or [] if n in card["files"]]
            if len(raw) < (2 if model == "e2e-ort" else 1):
                raise BundleError(
                    f"{path}: this bundle has no raw-audio model; re-export it with `edgeemo export` "
                    "(or add one with edgeemo.exporting.e2e.add_raw_audio_to_bundle)"
                )
            chosen = raw[1] if model == "e2e-ort" else raw[0]
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
        if self.raw_audio:
            raise EdgeemoError(f"{self.model_file} takes PCM windows: use predict_pcm, or load model='default'")
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
        return self._run(INPUT_NAME, x)

    def predict_pcm(self, pcm: np.ndarray) -> np.ndarray:
        """Raw-audio model only: ``(B, window_samples)`` mono PCM windows at the bundle rate -> ``(B, 2)``."""
        if not self.raw_audio:
            raise EdgeemoError("predict_pcm needs the raw-audio model: EmotionModel.load(..., model='e2e')")
        n = self.feature_config.window_samples
        if not isinstance(pcm, np.ndarray) or pcm.ndim != 2 or pcm.shape[1] != n or pcm.dtype.kind != "f":
            got = pcm.shape if isinstance(pcm, np.ndarray) else type(pcm).__name__
            raise EdgeemoError(f"predict_pcm expects float PCM windows of shape (batch, {n}), got {got}")
        if pcm.shape[0] == 0:
            return np.zeros((0, 2), np.float32)
        return self._run(PCM_INPUT_NAME, as_mono(pcm.reshape(-1), "pcm windows").reshape(pcm.shape))

    def _run(self, input_name: str, x: np.ndarray) -> np.ndarray:
        outs = [
            self._session.run([OUTPUT_NAME], {input_name: x[s : s + MAX_BATCH]})[0]
            for s in range(0, x.shape[0], MAX_BATCH)
        ]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return check_outputs(out, x.shape[0], f"{self.bundle.path}: {self.model_file}")

    # --- streams and files ------------------------------------------------------
    def stream(self, sample_rate: int, *, smoothing: float = 0.0) -> StreamingPredictor:
        """A new :class:`StreamingPredictor` for audio at ``sample_rate`` (resampled inside)."""
        if self.raw_audio:
            raise EdgeemoError("streams run the log-mel model: load the bundle with model='default'")
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
        if self.raw_audio:
            cfg = self.feature_config
            return self._predict_raw(
                str(path), iter_audio_blocks(path, cfg.sample_rate), smoothing, refuse_silence=True
            )
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
        if self.raw_audio:
            from edgeemo.runtime.limits import check_sample_rate

            check_smoothing(smoothing)
            resampler = StreamResampler(check_sample_rate(sample_rate), self.feature_config.sample_rate)
            mono = as_mono(samples, name or "signal")
            blocks = [resampler.push(mono), resampler.push(np.zeros(0, np.float32), last=True)]
            return self._predict_raw(name, iter(blocks), smoothing, seconds=mono.size / sample_rate)
        predictor = StreamingPredictor(self, sample_rate, smoothing=smoothing, source=name or "signal")
        chunks = [predictor.push(samples), predictor.flush()]
        return self._prediction(name, chunks, predictor)

    def _predict_raw(
        self,
        name: str | None,
        blocks: Iterator[np.ndarray],
        smoothing: float,
        *,
        refuse_silence: bool = False,
        seconds: float | None = None,
    ) -> Prediction:
        """The raw-audio path: model-rate blocks -> PCM windows (:class:`PcmWindower`) -> the e2e model."""
        cfg = self.feature_config
        windower = PcmWindower(cfg)
        outs: list[np.ndarray] = []
        peak, n_samples = 0.0, 0
        try:
            for block in blocks:
                if block.size:
                    peak, n_samples = max(peak, float(np.max(np.abs(block)))), n_samples + block.size
                outs.append(self.predict_pcm(windower.push(block)))
        except EdgeemoError:
            raise
        except (RuntimeError, ValueError, OSError, EOFError) as exc:  # decoder surprises on odd files
            raise AudioError(f"decoding failed ({' '.join(str(exc).split())[:160]})", path=name) from None
        outs.append(self.predict_pcm(windower.flush()))
        if refuse_silence and peak < SILENCE_PEAK:
            raise AudioError("audio is all silent", path=name)
        va, _ = ema_smooth(np.concatenate(outs), check_smoothing(smoothing))
        return Prediction(
            path=name,
            times=np.asarray(cfg.window_center_s(np.arange(len(va))), dtype=np.float64),
            valence=va[:, 0].astype(np.float32),
            arousal=va[:, 1].astype(np.float32),
            padded=windower.padded,
            duration_s=n_samples / cfg.sample_rate if seconds is None else seconds,
            smoothing=check_smoothing(smoothing),
        )

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
        lines.append(f"  {'time_s':>8}  {'valence':>8}  {'arousal':>8}  quadrant  mood")
        for t, v, a, q, m in zip(p.times, p.valence, p.arousal, p.quadrants(), p.moods(), strict=True):
            lines.append(f"  {t:8.2f}  {v:+8.3f}  {a:+8.3f}  {q:<8}  {m}")
        lines.append(f"  {'mean':>8}  {s['valence']:+8.3f}  {s['arousal']:+8.3f}  {s['quadrant']:<8}  {s['mood']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
