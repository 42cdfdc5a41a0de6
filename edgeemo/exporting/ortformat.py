"""ORT-format copies of ONNX files for mobile and minimal onnxruntime builds.

Owns :func:`ort_copy`, which runs onnxruntime's own converter
(``python -m onnxruntime.tools.convert_onnx_models_to_ort``) in a subprocess. The ONNX
file's ``metadata_props`` (the embedded edgeemo card) survive the conversion.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeemo.errors import BundleError


def ort_copy(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Convert an ONNX file to ORT format with onnxruntime's converter (``Fixed`` optimisations, ARM target:
    no x86-only layouts, so the file runs on phones and here alike)."""
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeemo-ort-") as tmp_s:
        tmp = Path(tmp_s)
        src = tmp / "model.onnx"
        shutil.copyfile(onnx_path, src)
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            str(src),
            "--output_dir",
            str(tmp / "out"),
            "--optimization_style",
            "Fixed",
            "--target_platform",
            "arm",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        made = tmp / "out" / "model.ort"
        if proc.returncode != 0 or not made.is_file():
            tail = " ".join((proc.stderr or proc.stdout).split())[-200:]
            raise BundleError(f"{onnx_path}: ORT-format conversion failed ({tail})")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(made), out_path)
    return out_path
