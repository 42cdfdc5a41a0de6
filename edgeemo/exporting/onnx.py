"""ONNX export of a trained teacher/student and the fp32 parity check against torch.

Owns the exporter choice (the TorchScript-based ``torch.onnx.export(dynamo=False)``:
it handles timm's MobileViT and ViT graphs in one pass and gives a plain opset-17
graph that onnxruntime's quantiser understands), the I/O names the runtime expects
(:data:`edgeemo.bundle.INPUT_NAME` -> :data:`edgeemo.bundle.OUTPUT_NAME`, dynamic batch axis)
and the parity gate: ONNX fp32 must match torch within ``tol`` on real windows or the export fails.
torch is imported only by the functions that need it, so the session and predictor helpers serve
torch-free callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeemo.bundle import INPUT_NAME, OUTPUT_NAME, OUTPUT_RANGE, open_session
from edgeemo.errors import EdgeemoError
from edgeemo.runtime.limits import check_threads

OPSET = 17

if TYPE_CHECKING:
    import torch


class ExportError(EdgeemoError):
    """An export step failed (parity, quantisation, the gate)."""


def export_onnx(
    model: torch.nn.Module, path: Path, input_shape: tuple[int, int], opset: int = OPSET, *, channel: bool = True
) -> Path:
    """Export ``model`` (eval mode, outputs clamped to [-1, 1]) with a fixed input shape and dynamic batch.

    The input is ``(B, 1, *input_shape)`` (a log-mel window), or ``(B, *input_shape)`` without ``channel``
    (e.g. a token teacher's ``(tokens, dim)``).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.zeros(1, 1, *input_shape) if channel else torch.zeros(1, *input_shape)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    return path


def is_weights_only(path: Path) -> bool:
    """True for a model in the ``weights`` format: DequantizeLinear nodes but no QuantizeLinear."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return "DequantizeLinear" in ops and "QuantizeLinear" not in ops


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime session over ``path`` opened as the runtime opens it (:func:`edgeemo.bundle.open_session`,
    threads checked, the weights of a ``weights``-format model folded)."""
    return open_session(path, check_threads(threads), fold_weights=is_weights_only(Path(path)))


def onnx_predict(session, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run an edgeemo ONNX model over ``(N, 1, n_mels, n_frames)`` windows in batches."""
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x[s : s + batch_size], dtype=np.float32)})[0]
        for s in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def check_parity(model: torch.nn.Module, onnx_path: Path, windows: np.ndarray, tol: float = 1e-4) -> float:
    """Max |ONNX - torch| over ``windows``; raises :class:`ExportError` above ``tol``."""
    import torch

    model = model.eval().cpu()
    with torch.no_grad():
        ref = model(torch.from_numpy(np.asarray(windows, dtype=np.float32))).numpy()
    got = onnx_predict(onnx_session(onnx_path), windows)
    diff = float(np.max(np.abs(ref - got)))
    if not diff <= tol:
        raise ExportError(
            f"ONNX fp32 output differs from torch by {diff:.2e} (> {tol:.0e}) on {len(windows)} real windows: "
            "the export is wrong, refusing to continue"
        )
    return diff


def onnx_predictor(path: Path, threads: int = 1):
    """A numpy predictor ``(B, 1, n_mels, n_frames) -> (B, 2)`` over an ONNX file, as the runtime runs it: the same
    session options and outputs clipped to [-1, 1] (so the figures an export measures are what apps get)."""
    session = onnx_session(path, threads)
    return lambda x: np.clip(onnx_predict(session, x), *OUTPUT_RANGE)
