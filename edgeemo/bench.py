"""``edgeemo bench``: one table of size, latency, throughput, streaming real-time factor, memory, import time.

Owns the measurement protocol (torch only for the optional ``--run`` rows, imported
there, so the runtime-only install benchmarks its bundles): 1 thread everywhere (``torch.set_num_threads(1)``,
onnxruntime ``intra_op_num_threads=1``), warm-up runs, then the median and p95 of at
least 50 single-window runs; batch-8 throughput; the streaming real-time factor of
the runtime including decoding-free feature extraction (synthetic audio pushed in
100 ms chunks, 44.1 kHz input so resampling is included); and, in a fresh subprocess that only imports the runtime, the
``import edgeemo.runtime`` time and the process's peak RSS while streaming.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WARMUP = 10


def _latency(fn, x1: np.ndarray, x8: np.ndarray, runs: int) -> dict[str, float]:
    for _ in range(WARMUP):
        fn(x1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x1)
        times.append((time.perf_counter() - t) * 1e3)
    fn(x8)
    t = time.perf_counter()
    reps = max(5, runs // 10)
    for _ in range(reps):
        fn(x8)
    batch_s = (time.perf_counter() - t) / reps
    return {
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p95": float(np.percentile(times, 95)),
        "batch8_windows_per_s": 8.0 / batch_s,
    }


_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import edgeemo.runtime as rt
import_s = time.perf_counter() - t0
import numpy as np
model = rt.EmotionModel.load(sys.argv[1], threads=1, prefer_int8=sys.argv[2] == "int8")
sr, seconds = 44100, float(sys.argv[3])
rng = np.random.default_rng(0)
chunk = sr // 10
stream = model.stream(sr)
n, busy = 0, 0.0
for s in range(0, int(seconds * sr), chunk):  # the test signal is made chunk by chunk, outside the timing
    t = (s + np.arange(chunk)) / sr
    x = (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(np.pi * t)) + 0.05 * rng.standard_normal(chunk))
    x = x.astype(np.float32)
    t1 = time.perf_counter()
    n += len(stream.push(x).times)
    busy += time.perf_counter() - t1
t1 = time.perf_counter()
n += len(stream.flush().times)
busy += time.perf_counter() - t1
# VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the (torch-sized) parent
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"import_s": import_s, "rtf": busy / seconds, "windows": n, "peak_rss_mb": hwm / 1024}))
"""


def runtime_process(bundle: Path, model: str, seconds: float = 60.0) -> dict[str, float]:
    """Import time, streaming RTF (44.1 kHz input, 100 ms chunks, 1 thread) and peak RSS in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(bundle), model, str(seconds)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_bench(bundle: Path | None = None, run_dir: Path | None = None, runs: int = 50) -> dict[str, Any]:
    """Benchmark a bundle's ONNX models through the runtime (and, with ``run_dir``, the run's torch models)."""
    from edgeemo.bundle import default_bundle_path, verify_bundle
    from edgeemo.runtime import EmotionModel

    bundle_path = Path(bundle) if bundle else default_bundle_path()
    b = verify_bundle(bundle_path)
    shape = b.feature_config.shape
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 1, *shape)).astype(np.float32)
    x8 = rng.standard_normal((8, 1, *shape)).astype(np.float32)
    rows: dict[str, dict[str, Any]] = {}
    if run_dir is not None:
        import torch

        from edgeemo.train.models import count_params, load_model

        torch.set_num_threads(1)
        for role in ("teacher", "student"):
            ckpt = Path(run_dir) / role / "best.pt"
            model, ck = load_model(ckpt)
            spec = ck["model_spec"]

            def fn(x, m=model):
                with torch.no_grad():
                    return m(torch.from_numpy(x))

            label, a1, a8 = f"{role} torch fp32", x1, x8
            files = [Path(run_dir) / "export" / "teacher.onnx"] if role == "teacher" else []
            if spec.get("input") == "musicnn_tokens":  # a token teacher reads musicnn token windows, not log-mel
                tokens = tuple(spec["input_shape"])
                a1, a8 = (rng.standard_normal((n, *tokens)).astype(np.float32) for n in (1, 8))
                label = f"{role} torch fp32 (token ViT; musicnn's front end not timed)"
                files.append(Path(run_dir) / "export" / "teacher_frontend.onnx")
            found = bool(files) and all(f.is_file() for f in files)
            rows[label] = {
                "params": count_params(model),
                "file_mb": sum(f.stat().st_size for f in files) / 1e6 if found else None,
                **_latency(fn, a1, a8, runs),
            }
    params = b.card.get("models", {}).get("student", {}).get("params")
    for label, name, int8 in (
        ("student onnx fp32", "model.onnx", False),
        ("student onnx int8", "model.int8.onnx", True),
    ):
        path = bundle_path / name
        if not path.is_file():
            continue
        model = EmotionModel.load(bundle_path, threads=1, prefer_int8=int8)  # the runtime's own session and checks
        if model.model_file != name:  # the card's default model is not this file
            continue
        rows[label] = {
            "params": params,
            "file_mb": path.stat().st_size / 1e6,
            **_latency(model.predict_windows, x1, x8, runs),
            **{
                f"runtime_{k}": v for k, v in runtime_process(bundle_path, "int8" if "int8" in name else "fp32").items()
            },
        }
    return {"bundle": str(bundle_path), "window": list(shape), "runs": runs, "threads": 1, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = (
        "| model | params | file MB | latency ms (median / p95) | batch-8 windows/s | stream RTF | peak RSS MB "
        "| import s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for name, r in result["rows"].items():

        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return "" if v is None else format(v, fmt)

        lines.append(
            f"| {name} | {f('params', ',')} | {f('file_mb', '.2f')} | {r['latency_ms_median']:.2f} / "
            f"{r['latency_ms_p95']:.2f} | {r['batch8_windows_per_s']:.0f} | {f('runtime_rtf', '.4f')} | "
            f"{f('runtime_peak_rss_mb', '.0f')} | {f('runtime_import_s', '.3f')} |"
        )
    return "\n".join(lines)
