"""int8 stability of a bundle on real music: int8 vs fp32, int16 vs float input, chunkings of a stream.

    python benchmarks/int8_stability.py export/reference                 # measure a bundle
    python benchmarks/int8_stability.py export/reference --requantize OUT  # re-quantise a copy, then measure it

Reads 4q-dev MP3s from shared/data (``$EDGEEMO_SHARED_DATA``): the last ``--songs`` are
measured; ``--requantize`` calibrates the export's first candidate recipe on 8 windows
from each of the first 32 songs (never the measured ones) with
:func:`edgeemo.exporting.quantize.requantize_bundle`. Prints one JSON object; the numbers
in docs/hardening.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from edgeemo.features import frame_windows, log_mel
from edgeemo.runtime import EmotionModel
from edgeemo.runtime.audio import load_audio, resample

DATA = Path(os.environ.get("EDGEEMO_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
CHUNKS = (4096, 1000, 333)  # samples per push at 8 kHz, compared with one push of everything


def _windows(signal: np.ndarray, model: EmotionModel) -> np.ndarray:
    cfg = model.feature_config
    return frame_windows(log_mel(signal, cfg), cfg)[:, None].astype(np.float32).copy()


def _stream(model: EmotionModel, signal: np.ndarray, rate: int, chunk: int) -> np.ndarray:
    stream = model.stream(rate)
    parts = [stream.push(signal[i : i + chunk]) for i in range(0, len(signal), chunk)] + [stream.flush()]
    return np.concatenate([np.stack([p.valence, p.arousal], 1) for p in parts if len(p)])


def measure(bundle: Path, files: list[Path], seconds: float) -> dict[str, float]:
    fp, q8 = EmotionModel.load(bundle, prefer_int8=False), EmotionModel.load(bundle)
    rate = fp.feature_config.sample_rate
    per_window: dict[str, list[np.ndarray]] = {"int8_vs_fp32": [], "i16_int8": [], "i16_fp32": []}
    out: dict[str, float] = {"chunk_int8": 0.0, "chunk_fp32": 0.0}
    song: dict[str, float] = {"song_int8_vs_fp32": 0.0, "song_i16_int8": 0.0, "song_i16_fp32": 0.0}
    for f in files:
        x = load_audio(f, rate, end_s=seconds)
        i16 = np.round(np.clip(x, -1, 1) * 32767).astype(np.float32) / 32768
        wa, wb = _windows(x, fp), _windows(i16, fp)
        fa, fb, qa, qb = (m.predict_windows(w) for m, w in ((fp, wa), (fp, wb), (q8, wa), (q8, wb)))
        for key, a, b in (("int8_vs_fp32", qa, fa), ("i16_int8", qa, qb), ("i16_fp32", fa, fb)):
            per_window[key].append(np.abs(a - b).ravel())
            song[f"song_{key}"] = max(song[f"song_{key}"], float(np.abs(a.mean(0) - b.mean(0)).max()))
        x8 = resample(x, rate, 8000)
        for name, m in (("chunk_int8", q8), ("chunk_fp32", fp)):
            whole = _stream(m, x8, 8000, len(x8))
            out[name] = max([out[name]] + [float(np.abs(_stream(m, x8, 8000, c) - whole).max()) for c in CHUNKS])
    for key, values in per_window.items():
        v = np.concatenate(values)
        out.update({f"{key}_p50": float(np.percentile(v, 50)), f"{key}_p99": float(np.percentile(v, 99))})
        out[f"{key}_max"] = float(v.max())
    return {**out, **song, "songs": len(files), "windows": int(sum(len(v) for v in per_window["i16_fp32"]) // 2)}


def calibration(files: list[Path], model: EmotionModel, seconds: float) -> np.ndarray:
    rate = model.feature_config.sample_rate
    return np.concatenate([_windows(load_audio(f, rate, end_s=seconds), model)[::6][:8] for f in files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--songs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--requantize", type=Path, help="write a re-quantised copy here and measure it")
    args = ap.parse_args()
    files = sorted((DATA / "4q-dev" / "audio").glob("*.mp3"))
    if len(files) < args.songs + 32:
        raise SystemExit(f"needs at least {args.songs + 32} 4q-dev MP3s in {DATA}")
    bundle = args.bundle
    if args.requantize is not None:
        from edgeemo.exporting.quantize import CANDIDATES, requantize_bundle

        calib = calibration(files[:32], EmotionModel.load(bundle, prefer_int8=False), args.seconds)
        bundle = requantize_bundle(bundle, calib, args.requantize, CANDIDATES[0])
    result = measure(bundle, files[-args.songs :], args.seconds)
    print(json.dumps({"bundle": str(bundle), **result}, indent=1))


if __name__ == "__main__":
    main()
