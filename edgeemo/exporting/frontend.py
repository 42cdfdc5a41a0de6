"""The log-mel front end of :mod:`edgeemo.features` as an ONNX graph (raw PCM window -> model input).

Owns :func:`frontend_model`: input ``pcm`` ``(batch, window_samples)`` float32 mono at
``cfg.sample_rate``, output ``mel`` ``(batch, 1, n_mels, n_frames)`` float32, equal to
:func:`edgeemo.features.log_mel` of the same samples. Only basic ONNX ops (Pad, Reshape,
Slice, Concat, Mul, MatMul, Sub, Add, Sqrt, Log, Transpose, Cast), so every onnxruntime build
(native, WASM, mobile ORT format) runs it:

* framing: the window is padded to whole hops and cut into ``(n_frames, hop)`` chunks;
  frame ``t`` is chunks ``t, t+1, ...`` concatenated (``n_fft`` samples), the same
  uncentred frames as ``sliding_window_view(x, n_fft)[::hop]``;
* |DFT|^2: a two-stage Cooley-Tukey DFT with fixed bases (``n_fft = N1 * N2``; size-N1
  DFTs as one MatMul, twiddle factors, size-N2 DFTs as a MatMul), computed in float64
  like :mod:`numpy.fft` is in ``features.py``; only the half spectrum is formed;
* a window shorter than ``n_fft`` (``cfg.win_length``) frames ``win_length`` samples and pads each
  frame with zeros to ``n_fft``; ``cfg.power`` 1 takes the magnitude (Sqrt) before the mel matrix;
* the config's mel matrix (Slaney or HTK; its rows permuted to the two-stage bin order) and the log scaling
  ``(10*log10(p + amin) - db_offset) / db_scale``, still in float64, rounded once to float32
  at the end, exactly as ``features.py`` does: the two agree bit for bit on all but ~3e-7 of
  the values (measured on 4Q clips), so even an int8 student's first ``QuantizeLinear``
  sees the same codes.

The periodic Hann window is applied in float64, as in ``features.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeemo.features import FeatureConfig, hann_window, mel_filterbank

PCM_NAME = "pcm"
MEL_NAME = "mel"
OPSET = 17


def dft_split(n_fft: int) -> tuple[int, int]:
    """``(N1, N2)`` with ``N1 * N2 == n_fft`` and ``N1`` the largest divisor not above ``sqrt(n_fft)``."""
    n1 = max(d for d in range(1, math.isqrt(n_fft) + 1) if n_fft % d == 0)
    return n1, n_fft // n1


def frontend_constants(cfg: FeatureConfig, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """The fixed tensors of the graph: window and DFT bases in ``dtype``, the float32 mel matrix (cast to
    ``dtype`` in the graph) with its rows permuted to the two-stage bin order (zero rows above ``n_fft/2``)."""
    n = cfg.n_fft
    n1, n2 = dft_split(n)
    k2_count = n2 // 2 + 1  # bins k = k1 + N1*k2 with k2 <= N2/2 cover 0..n_fft/2
    a1 = -2.0 * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1  # (k1, n1)
    tw = -2.0 * np.pi * np.outer(np.arange(n1), np.arange(n2)) / n  # (k1, n2)
    a2 = -2.0 * np.pi * np.outer(np.arange(n2), np.arange(k2_count)) / n2  # (n2, k2)
    length = cfg.frame_length
    window = np.zeros(n)
    window[:length] = hann_window(length)  # zero-padded to n_fft
    fb = mel_filterbank(cfg)  # (n_mels, n_fft//2 + 1) float32
    k = (np.arange(n1)[:, None] + n1 * np.arange(k2_count)[None, :]).reshape(-1)  # bin of flat (k1, k2)
    fb_perm = np.zeros((k.size, cfg.n_mels), np.float32)
    keep = k <= n // 2
    fb_perm[keep] = fb[:, k[keep]].T
    bases = {
        "window": window.reshape(n1, n2),
        "dft1_re": np.cos(a1),
        "dft1_im": np.sin(a1),
        "twiddle_re": np.cos(tw),
        "twiddle_im": np.sin(tw),
        "dft2_re": np.cos(a2),
        "dft2_im": np.sin(a2),
    }
    return {**{k: v.astype(dtype) for k, v in bases.items()}, "mel_matrix32": fb_perm}


def frontend_nodes(
    cfg: FeatureConfig, pcm: str = PCM_NAME, mel: str = MEL_NAME, prefix: str = "frontend/", dft_dtype: Any = np.float64
) -> tuple[list[Any], list[Any]]:
    """``(nodes, initializers)`` computing ``mel`` from ``pcm``; names inside start with ``prefix``.

    ``dft_dtype`` is the precision of everything after framing (float64 as in ``features.py``)."""
    from onnx import TensorProto, helper, numpy_helper

    n1, n2 = dft_split(cfg.n_fft)
    hop, length, t = cfg.hop_length, cfg.frame_length, cfg.n_frames
    span = -(-length // hop)  # chunks a frame touches
    n_chunks = t - 1 + span
    pad = n_chunks * hop - cfg.window_samples
    consts = frontend_constants(cfg, dft_dtype)
    dft_type = helper.np_dtype_to_tensor_dtype(np.dtype(dft_dtype))
    inits = [numpy_helper.from_array(v, prefix + k) for k, v in consts.items()]

    def p(name: str) -> str:
        return prefix + name

    def const(name: str, values: Any, dtype: Any = np.int64) -> str:
        if all(i.name != p(name) for i in inits):
            inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), p(name)))
        return p(name)

    nodes = [
        helper.make_node("Pad", [pcm, const("pads", [0, 0, 0, pad])], [p("padded")], mode="constant"),
        helper.make_node("Reshape", [p("padded"), const("chunk_shape", [0, n_chunks, hop])], [p("chunks")]),
    ]
    parts = []
    for j in range(span):
        width = min(hop, length - j * hop)
        out = p(f"part{j}")
        nodes.append(
            helper.make_node(
                "Slice",
                [
                    p("chunks"),
                    const(f"s{j}_start", [j, 0]),
                    const(f"s{j}_end", [j + t, width]),
                    const("axes12", [1, 2]),
                ],
                [out],
            )
        )
        parts.append(out)
    short = length < cfg.n_fft  # a shorter window: each frame zero-padded to n_fft at its end
    nodes.append(helper.make_node("Concat", parts, [p("frames_raw" if short else "frames32")], axis=2))  # (B, T, L)
    if short:
        pad_end = const("frame_pads", [0, 0, 0, 0, 0, cfg.n_fft - length])
        nodes.append(helper.make_node("Pad", [p("frames_raw"), pad_end], [p("frames32")], mode="constant"))
    nodes += [
        helper.make_node("Cast", [p("frames32")], [p("frames")], to=dft_type),
        helper.make_node("Reshape", [p("frames"), const("grid_shape", [0, t, n1, n2])], [p("grid")]),
        helper.make_node("Mul", [p("grid"), p("window")], [p("windowed")]),
        # stage 1: size-N1 DFTs over n1 for each n2 (real input): A = F1 @ x
        helper.make_node("MatMul", [p("dft1_re"), p("windowed")], [p("a_re")]),
        helper.make_node("MatMul", [p("dft1_im"), p("windowed")], [p("a_im")]),
        # twiddle factors: B = A * exp(-2 pi i k1 n2 / n_fft)
        helper.make_node("Mul", [p("a_re"), p("twiddle_re")], [p("ar_tr")]),
        helper.make_node("Mul", [p("a_im"), p("twiddle_im")], [p("ai_ti")]),
        helper.make_node("Mul", [p("a_re"), p("twiddle_im")], [p("ar_ti")]),
        helper.make_node("Mul", [p("a_im"), p("twiddle_re")], [p("ai_tr")]),
        helper.make_node("Sub", [p("ar_tr"), p("ai_ti")], [p("b_re")]),
        helper.make_node("Add", [p("ar_ti"), p("ai_tr")], [p("b_im")]),
        # stage 2: size-N2 DFTs over n2 (half spectrum): Y = B @ F2
        helper.make_node("MatMul", [p("b_re"), p("dft2_re")], [p("br_fr")]),
        helper.make_node("MatMul", [p("b_im"), p("dft2_im")], [p("bi_fi")]),
        helper.make_node("MatMul", [p("b_re"), p("dft2_im")], [p("br_fi")]),
        helper.make_node("MatMul", [p("b_im"), p("dft2_re")], [p("bi_fr")]),
        helper.make_node("Sub", [p("br_fr"), p("bi_fi")], [p("y_re")]),
        helper.make_node("Add", [p("br_fi"), p("bi_fr")], [p("y_im")]),
        helper.make_node("Mul", [p("y_re"), p("y_re")], [p("y_re2")]),
        helper.make_node("Mul", [p("y_im"), p("y_im")], [p("y_im2")]),
        helper.make_node("Add", [p("y_re2"), p("y_im2")], [p("power_grid")]),  # (B, T, N1, K2)
    ]
    spec_grid = p("power_grid")
    if cfg.power == 1:  # the magnitude spectrum
        spec_grid = p("magnitude_grid")
        nodes.append(helper.make_node("Sqrt", [p("power_grid")], [spec_grid]))
    nodes += [
        helper.make_node("Reshape", [spec_grid, const("power_shape", [0, t, -1])], [p("power")]),
        helper.make_node("Cast", [p("mel_matrix32")], [p("mel_matrix")], to=dft_type),  # stored float32: half the bytes
        helper.make_node("MatMul", [p("power"), p("mel_matrix")], [p("mel_power")]),  # (B, T, n_mels)
        helper.make_node("Add", [p("mel_power"), const("amin", cfg.amin, dft_dtype)], [p("floored")]),
        helper.make_node("Log", [p("floored")], [p("ln")]),
        helper.make_node("Mul", [p("ln"), const("db_per_neper", 10.0 / math.log(10.0), dft_dtype)], [p("db")]),
        helper.make_node("Sub", [p("db"), const("db_offset", cfg.db_offset, dft_dtype)], [p("db_shifted")]),
        helper.make_node("Div", [p("db_shifted"), const("db_scale", cfg.db_scale, dft_dtype)], [p("scaled")]),
        helper.make_node("Cast", [p("scaled")], [p("scaled32")], to=TensorProto.FLOAT),  # features.log_scale
        helper.make_node("Transpose", [p("scaled32")], [p("mel_t")], perm=[0, 2, 1]),  # (B, n_mels, T)
        helper.make_node("Unsqueeze", [p("mel_t"), const("axis1", [1])], [mel]),
    ]
    return nodes, inits


def frontend_model(cfg: FeatureConfig, dft_dtype: Any = np.float64) -> Any:
    """A standalone ONNX model ``pcm (batch, window_samples) -> mel (batch, 1, n_mels, n_frames)``."""
    from onnx import TensorProto, checker, helper

    nodes, inits = frontend_nodes(cfg, dft_dtype=dft_dtype)
    graph = helper.make_graph(
        nodes,
        "edgeemo_log_mel",
        [helper.make_tensor_value_info(PCM_NAME, TensorProto.FLOAT, ["batch", cfg.window_samples])],
        [helper.make_tensor_value_info(MEL_NAME, TensorProto.FLOAT, ["batch", 1, cfg.n_mels, cfg.n_frames])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeemo")
    model.ir_version = 8
    checker.check_model(model)
    return model
