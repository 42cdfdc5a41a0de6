"""The raw-audio model: the in-graph log-mel front end joined to a bundle's student, and its ORT-format copy.

Owns :func:`build_raw_audio_model` (``pcm (batch, window_samples)`` -> ``valence_arousal
(batch, 2)``: :func:`edgeemo.exporting.frontend.frontend_nodes` feeding the student's
graph in one ONNX file), :func:`raw_audio_card` (what the card says about the raw-audio model) and
:func:`add_raw_audio_to_bundle` (rewrite an existing bundle with both files added, through
:func:`edgeemo.bundle.write_bundle`, so ``card.json`` and every embedded card agree).
Export-side: needs ``onnx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeemo.bundle import (
    INPUT_NAME,
    OUTPUT_NAME,
    PCM_INPUT_NAME,
    ort_name,
    raw_audio_name,
    rewrite_bundle,
)
from edgeemo.errors import BundleError
from edgeemo.exporting.frontend import frontend_nodes
from edgeemo.features import FeatureConfig

FRONTEND_PREFIX = "frontend/"


def build_raw_audio_model(student_path: str | Path, cfg: FeatureConfig, out_path: str | Path) -> Path:
    """Write ``out_path``: the front end of ``cfg`` followed by the student ONNX at ``student_path``.

    The student's input ``mel`` becomes an inner tensor fed by the front end; the new graph
    input is ``pcm`` ``(batch, cfg.window_samples)`` float32 at ``cfg.sample_rate``. The output is
    clipped to [-1, 1] in the graph, as the runtime clips the log-mel model's (an int8 output layer
    can step 1/255 past the range).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    student = onnx.load(str(student_path))
    graph = student.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in graph.output]:
        raise BundleError(f"{student_path}: expected one input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    clash = sorted(n for n in taken if n.startswith(FRONTEND_PREFIX))
    if clash:
        raise BundleError(f"{student_path}: tensor names {clash[:3]} clash with the front end's")
    nodes, inits = frontend_nodes(cfg, pcm=PCM_INPUT_NAME, mel=INPUT_NAME, prefix=FRONTEND_PREFIX)
    student_nodes = list(graph.node)
    unclipped = FRONTEND_PREFIX + "unclipped"
    for node in student_nodes:
        node.output[:] = [unclipped if o == OUTPUT_NAME else o for o in node.output]
    bounds = [
        numpy_helper.from_array(np.array(v, np.float32), FRONTEND_PREFIX + name) for name, v in (("lo", -1), ("hi", 1))
    ]
    clip = helper.make_node(
        "Clip", [unclipped, *(b.name for b in bounds)], [OUTPUT_NAME], name=FRONTEND_PREFIX + "clip"
    )
    del graph.node[:]
    graph.node.extend([*nodes, *student_nodes, clip])
    graph.initializer.extend([*inits, *bounds])
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(PCM_INPUT_NAME, TensorProto.FLOAT, ["batch", cfg.window_samples]))
    graph.name = "edgeemo_raw_audio"
    if not any(o.domain in ("", "ai.onnx") for o in student.opset_import):
        student.opset_import.append(helper.make_opsetid("", 17))
    onnx.checker.check_model(student)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(student, str(out_path))
    return out_path


def raw_audio_card(cfg: FeatureConfig, student_name: str) -> dict[str, Any]:
    """The card's ``raw_audio_model`` entry: the files, their input contract and the student they wrap."""
    onnx_name = raw_audio_name(student_name)
    return {
        "files": [onnx_name, ort_name(onnx_name)],
        "student": student_name,
        "input": {
            "name": PCM_INPUT_NAME,
            "shape": [None, cfg.window_samples],
            "dtype": "float32",
            "sample_rate": cfg.sample_rate,
            "meaning": "one analysis window of mono PCM in [-1, 1] at sample_rate (resample outside the model)",
        },
        "output": {"name": OUTPUT_NAME, "shape": [None, 2], "labels": ["valence", "arousal"], "range": [-1, 1]},
        "window_samples": cfg.window_samples,
        "hop_samples": cfg.window_hop_frames * cfg.hop_length,
        "window_seconds": cfg.window_seconds,
        "hop_seconds": cfg.window_hop_s,
        "short_clips": "zero-pad a clip shorter than one window to one window (silence after it)",
        "front_end": front_end_description(cfg),
    }


def front_end_description(cfg: FeatureConfig) -> str:
    """One line saying what the graph's front end computes for ``cfg``."""
    window = f"a {cfg.frame_length}-sample periodic Hann window in a {cfg.n_fft}-point float64 DFT"
    mel = "HTK mel triangles" if cfg.htk else "Slaney mel matrix"
    spec = "of the magnitude" if cfg.power == 1 else "of the power"
    return (
        f"edgeemo.features.log_mel in the graph: uncentred frames, {window}, {mel} {spec}, "
        "(10*log10(p + amin) - db_offset) / db_scale"
    )


def add_raw_audio(models: dict[str, Path], card: dict[str, Any], cfg: FeatureConfig, tmp: Path) -> None:
    """Add the raw-audio model built from the card's default model to ``models`` and describe it in ``card``.

    :func:`edgeemo.bundle.write_bundle` then embeds the card and makes the ORT copy
    (:func:`edgeemo.exporting.ortformat.ort_copy`)."""
    student = card.get("default_model") or ("model.int8.onnx" if "model.int8.onnx" in models else "model.onnx")
    name = raw_audio_name(student)
    models[name] = build_raw_audio_model(models[student], cfg, Path(tmp) / name)
    card["raw_audio_model"] = raw_audio_card(cfg, student)


def add_raw_audio_to_bundle(bundle_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Rewrite the bundle at ``bundle_dir`` (or write a copy to ``out_dir``) with the raw-audio model and its
    ORT copy added; ``card.json``'s ``files`` and the card embedded in every file are rewritten consistently.

    Returns the bundle folder. The bundle is verified before and after.
    """

    def edit(models: dict[str, Path], card: dict[str, Any], tmp: Path) -> None:
        add_raw_audio(models, card, FeatureConfig.from_dict(card["feature_config"]), tmp)

    return rewrite_bundle(bundle_dir, edit, out_dir)
