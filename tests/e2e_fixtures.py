"""The reference bundle with its raw-audio model added (built once per test session), and real test clips.

:func:`e2e_reference_bundle` copies ``export/reference`` to a temporary folder and runs
:func:`edgeemo.exporting.e2e.add_raw_audio_to_bundle` on the copy (the repo's bundle is never touched),
so every test of the raw-audio model, the web page and the Node example uses the same files.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgeemo.bundle import default_bundle_path
from edgeemo.features import FeatureConfig
from tests.realdata import SHARED_DATA

FOURQ_AUDIO = SHARED_DATA / "4q-dev" / "audio"
_CACHE: dict[str, Path] = {}


def e2e_reference_bundle() -> Path:
    """A verified copy of the reference bundle with ``model.e2e.int8.onnx`` and its ORT copy (needs ``onnx``)."""
    if "bundle" not in _CACHE:
        from edgeemo.exporting.e2e import add_raw_audio_to_bundle

        root = Path(tempfile.mkdtemp(prefix="edgeemo-e2e-tests-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        shutil.copytree(default_bundle_path(), root / "src")
        _CACHE["bundle"] = add_raw_audio_to_bundle(root / "src", root / "reference-e2e")
    return _CACHE["bundle"]


def real_clips(n: int) -> list[Path]:
    """``n`` real 4Q clips spread over the folder (empty when the shared data is absent)."""
    files = sorted(FOURQ_AUDIO.glob("*.mp3")) if FOURQ_AUDIO.is_dir() else []
    return files[:: max(1, len(files) // n)][:n] if files else []


def write_wav_16k(path: Path, signal: np.ndarray, cfg: FeatureConfig) -> Path:
    """A mono 16-bit WAV at the bundle rate (no resampling anywhere downstream)."""
    import soundfile as sf

    sf.write(str(path), np.clip(signal, -1, 1), cfg.sample_rate, subtype="PCM_16")
    return path
