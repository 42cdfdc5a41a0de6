"""ONNX export of a musicnn-token teacher, for the verification gate's size and parity figures.

Owns exporting the token ViT (input ``(B, N_TOKENS, 1506)`` token frames -> (valence, arousal))
and musicnn's front end and midend, the part of MSD-musicnn the tokens come from (input ``(B, T,
96)`` musicnn log-mel, any ``T``; output its ``(B, T, 753)`` channel frames). The teacher's fp32
size is the two files together: compression is measured against everything the teacher runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.exporting.onnx import OPSET, check_parity, export_onnx
from edgeemo.train.views import N_TOKENS, TOKEN_DIM, front_end_frames


def export_front_end(model: Any, path: Path) -> Path:
    """musicnn's front end + midend as ONNX (dynamic batch and time)."""
    import torch

    class FrontEnd(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            return front_end_frames(self.net(mel))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = FrontEnd(model).eval()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 187, 96),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["mel"],
            output_names=["frames"],
            dynamic_axes={"mel": {0: "batch", 1: "time"}, "frames": {0: "batch", 1: "time"}},
        )
    return path


def export_token_teacher(teacher: Any, musicnn: Any, out_dir: Path, tokens: np.ndarray) -> tuple[int, float]:
    """Write ``teacher.onnx`` and ``teacher_frontend.onnx`` under ``out_dir``; returns (their bytes together,
    the token ViT's max ONNX-vs-torch difference on ``tokens``)."""
    out_dir = Path(out_dir)
    vit = export_onnx(teacher, out_dir / "teacher.onnx", (N_TOKENS, TOKEN_DIM), channel=False)
    diff = check_parity(teacher, vit, tokens)
    front = export_front_end(musicnn, out_dir / "teacher_frontend.onnx")
    return vit.stat().st_size + front.stat().st_size, max(diff, front_end_parity(musicnn, front))


def front_end_parity(musicnn: Any, path: Path, n_frames: int = 301, tol: float = 1e-3) -> float:
    """Max |ONNX - torch| of the front end on a random log-mel of another length than it was traced with."""
    import torch

    from edgeemo.bundle import open_session
    from edgeemo.exporting.onnx import ExportError

    mel = np.random.default_rng(0).standard_normal((1, n_frames, 96)).astype(np.float32)
    with torch.no_grad():
        ref = front_end_frames(musicnn(torch.from_numpy(mel))).numpy()
    got = open_session(path, 1).run(["frames"], {"mel": mel})[0]
    diff = float(np.max(np.abs(ref - got))) / max(1.0, float(np.max(np.abs(ref))))
    if not diff <= tol:
        raise ExportError(f"the teacher's musicnn front end as ONNX differs from torch by {diff:.2e} (relative)")
    return diff


FRONT_END_MODULES = (
    "input_bn", "timbral_convs", "timbral_bns", "temporal_convs", "temporal_bns", "mid_convs", "mid_bns"
)  # fmt: skip


def front_end_params(musicnn: Any) -> int:
    """Parameters of the part of musicnn the tokens come from (its backend's dense layers are not run)."""
    return sum(p.numel() for name in FRONT_END_MODULES for p in getattr(musicnn, name).parameters())
