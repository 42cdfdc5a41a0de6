"""Speed and parity of edgeemo's numpy log-mel against librosa on a 30 s clip.

Times :func:`edgeemo.features.log_mel` against ``librosa.feature.melspectrogram`` (uncentred
STFT, Slaney mel, power 2) followed by the same :func:`edgeemo.features.log_scale`, for the
default (64 x 128) and the 128 x 256 feature configs, once with BLAS/OpenMP limited to one
thread and once with the library defaults. Each thread setting runs in its own child process,
because thread counts must be set before numpy is imported.

The clip is the first 4Q-dev MP3 when ``../shared/data`` exists beside the checkout, else 30 s
of generated audio (tones + noise). Prints a markdown table (median ms over ``--runs`` timed
calls after ``--warmup`` calls, the two interleaved; speed-up = librosa / edgeemo) and the max
abs parity error.

    .venv/bin/python benchmarks/features_speed.py [--runs 30] [--warmup 3] [--json out.json]

Needs the [train] extra (librosa).
"""

from __future__ import annotations

import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_FRAMEWORK_THREADS")

if __name__ == "__main__" and "--worker" in sys.argv:  # before numpy is imported
    _threads = sys.argv[sys.argv.index("--worker") + 1]
    for _var in _THREAD_VARS:
        if _threads == "default":
            os.environ.pop(_var, None)
        else:
            os.environ[_var] = _threads

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO.parent / "shared" / "data" / "4q-dev" / "audio"
CLIP_SECONDS = 30.0
THREAD_SETTINGS = ("1", "default")


def _configs():
    from edgeemo.features import FeatureConfig

    return {
        "default 64x128": FeatureConfig(),
        "128x256": FeatureConfig(n_mels=128, hop_length=250, n_frames=256),
    }


def _clip(sample_rate: int, clip: str | None):
    import numpy as np

    from edgeemo.runtime.audio import load_audio

    path = Path(clip) if clip else None
    if path is None and REAL_AUDIO.is_dir():
        mp3s = sorted(REAL_AUDIO.glob("*.mp3"))
        path = mp3s[0] if mp3s else None
    if path is not None:
        y = load_audio(path, sample_rate, end_s=CLIP_SECONDS)
        return y, f"{path.name} ({y.size / sample_rate:.1f} s)"
    rng = np.random.default_rng(0)
    t = np.arange(int(CLIP_SECONDS * sample_rate)) / sample_rate
    y = 0.05 * rng.standard_normal(t.size)
    for f0 in (110.0, 220.0, 330.0, 440.0, 1760.0):
        y += 0.1 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    return y.astype(np.float32), f"generated ({CLIP_SECONDS:.0f} s)"


def _median_ms(fns, runs: int, warmup: int) -> list[float]:
    """Median ms of each function; calls are interleaved so a change in machine load hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def worker(threads: str, runs: int, warmup: int, clip: str | None) -> dict:
    import librosa
    import numpy as np

    from edgeemo.features import librosa_log_mel, log_mel

    out: dict = {"threads": threads, "configs": {}}
    for name, cfg in _configs().items():
        y, label = _clip(cfg.sample_rate, clip)

        def ours(y=y, cfg=cfg):
            return log_mel(y, cfg)

        def ref(y=y, cfg=cfg):
            return librosa_log_mel(y, cfg)

        a, b = ours(), ref()
        assert a.shape == b.shape, (a.shape, b.shape)
        ours_ms, ref_ms = _median_ms([ours, ref], runs, warmup)
        out["clip"] = label
        out["configs"][name] = {
            "shape": list(a.shape),
            "edgeemo_ms": round(ours_ms, 3),
            "librosa_ms": round(ref_ms, 3),
            "speedup": round(ref_ms / ours_ms, 3),
            "max_abs_err": float(np.abs(a - b).max()),
        }
    out["versions"] = {"numpy": np.__version__, "librosa": librosa.__version__, "python": platform.python_version()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="timed calls per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    ap.add_argument("--clip", default=None, help="audio file to use instead of the first 4q-dev mp3")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")

    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.runs, args.warmup, args.clip)))
        return 0

    results = []
    for threads in THREAD_SETTINGS:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", threads]
        cmd += ["--runs", str(args.runs), "--warmup", str(args.warmup)]
        if args.clip:
            cmd += ["--clip", args.clip]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"error: benchmark worker ({threads} threads) failed", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    cpus = os.cpu_count()
    print(f"clip: {results[0]['clip']}; median of {args.runs} runs after {args.warmup} warm-up; {cpus} CPU(s)")
    print()
    print("| config | threads | edgeemo log_mel (ms) | librosa melspectrogram + log (ms) | speed-up | max abs err |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        threads = "1" if r["threads"] == "1" else f"default ({cpus})"
        for name, c in r["configs"].items():
            print(
                f"| {name} | {threads} | {c['edgeemo_ms']:.2f} | {c['librosa_ms']:.2f} | "
                f"{c['speedup']:.2f}x | {c['max_abs_err']:.1e} |"
            )
    worst = max(c["max_abs_err"] for r in results for c in r["configs"].values())
    print()
    print(f"max abs parity error (log-mel units): {worst:.2e}")
    if args.json:
        payload = {
            "benchmark": "features_speed",
            "runs": args.runs,
            "warmup": args.warmup,
            "cpu_count": cpus,
            "machine": platform.machine(),
            "results": results,
            "max_abs_err": worst,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
