"""Atomic checkpoint files and the run-directory bookkeeping every stage shares.

Owns: writing ``best.pt`` / ``last.pt`` atomically (temp file in the same folder,
fsync, rename), reading them back with a one-line error when damaged, rewriting
``metrics.jsonl`` from a checkpoint's history (so a resumed run ends with the same
files as an uninterrupted one), and atomic JSON writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from edgeemo.atomic import atomic_write_bytes, json_default
from edgeemo.errors import TrainingError


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict; a missing or damaged file raises :class:`TrainingError`."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TrainingError(
            f"checkpoint {path} is damaged or not an edgeemo checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise TrainingError(f"{path} is not an edgeemo checkpoint")
    return payload


def write_metrics_jsonl(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` (one JSON line per epoch) from the full history, atomically."""
    text = "".join(json.dumps(h, sort_keys=True, default=json_default) + "\n" for h in history)
    atomic_write_bytes(path, text.encode())


def history_seconds(history: list[dict[str, Any]]) -> float:
    """Training seconds of a stage: the sum of its per-epoch ``seconds`` (a resumed stage counts every epoch once)."""
    return float(sum(h.get("seconds", 0.0) for h in history))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TrainingError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
