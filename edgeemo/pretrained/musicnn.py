"""PyTorch port of musicnn (Pons & Serra, 2019): model, TF-checkpoint conversion, loading, embedding.

Owns :class:`Musicnn` (an exact eval-mode port of musicnn's ``build_musicnn`` for 96
mel bands), :func:`convert_checkpoint` / :func:`import_musicnn` (the original TF1
checkpoint shipped in the ``musicnn==0.1.0`` wheel -> a ``safetensors`` file with
the tag list and provenance in its metadata), :func:`load_musicnn` (the model's
``weights_id`` is :func:`weights_digest`, a digest of its tensors that two imports of
one checkpoint share) and :class:`MusicnnEmbedder`. The numpy front end lives in
:mod:`edgeemo.pretrained.musicnn_frontend` (no torch) and is re-exported here.

The weights are ISC-licensed (musicnn, Jordi Pons). The ``musicnn`` package is only
ever *located* (its data files are read), never imported: its modules import
TensorFlow and librosa. Install it with ``pip install --no-deps musicnn==0.1.0``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeemo.errors import EdgeemoError
from edgeemo.filehash import sha256_file
from edgeemo.pretrained.musicnn_frontend import (
    MUSICNN_FEATURES,
    N_FRAMES,
    N_MELS,
    musicnn_input,
    patch_at,
    patch_start,
    patches,
    patches_at,
)
from edgeemo.pretrained.tfcheckpoint import read_checkpoint

__all__ = [
    "MODELS",
    "MUSICNN_FEATURES",
    "N_FRAMES",
    "N_MELS",
    "OUTPUT_KEYS",
    "Musicnn",
    "MusicnnEmbedder",
    "convert_checkpoint",
    "default_weights_path",
    "find_musicnn_package",
    "import_musicnn",
    "load_musicnn",
    "musicnn_input",
    "patch_at",
    "patch_start",
    "patches",
    "patches_at",
]

MODELS = ("MSD_musicnn", "MTT_musicnn")
LICENCE = "ISC (musicnn, Jordi Pons)"
PIP_HINT = "pip install --no-deps musicnn==0.1.0"
FORMAT = "edgeemo-musicnn-v1"
OUTPUT_KEYS = (
    "timbral",
    "temporal",
    "cnn1",
    "cnn2",
    "cnn3",
    "mean_pool",
    "max_pool",
    "penultimate",
    "logits",
    "tags",
)
EMBED_KEYS = ("mean_pool", "max_pool", "penultimate", "tags")
_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default

# architecture numbers of build_musicnn(num_filt_frontend=1.6, num_filt_midend=64, num_units_backend=200), 96 mels
_TIMBRAL_FILTERS = int(1.6 * 128)  # 204
_TIMBRAL_WIDTHS = (int(0.4 * N_MELS), int(0.7 * N_MELS))  # 38, 67
_TEMPORAL_FILTERS = int(1.6 * 32)  # 51
_TEMPORAL_LENGTHS = (128, 64, 32)
_FRONT = 2 * _TIMBRAL_FILTERS + 3 * _TEMPORAL_FILTERS  # 561
_MID = 64
_POOL = _FRONT + 3 * _MID  # 753
_UNITS = 200


def _conv_relu_bn_maxfreq(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``max over frequency of BN(ReLU(conv(x)))``, shape ``(B, C, T)``.

    In eval mode BN is a per-channel affine map, so ReLU-then-BN is monotone per
    channel (increasing where ``gamma / sqrt(var + eps) >= 0``, decreasing elsewhere)
    and commutes with the max: take the max (or min) of the raw conv output first and
    apply ReLU + BN to ``(B, C, T)`` only. Same result, ~2x faster on CPU at batch 32
    (the ``(B, 204, T, 59)`` map is read once instead of three times).
    """
    z = conv(x)
    if bn.training:
        return bn(F.relu(z)).amax(dim=3)
    zmin, zmax = torch.aminmax(z, dim=3)
    assert bn.running_var is not None
    increasing = (bn.weight * torch.rsqrt(bn.running_var + bn.eps) >= 0).view(1, -1, 1)
    picked = torch.where(increasing, zmax, zmin).unsqueeze(3)  # (B, C, T, 1)
    return bn(F.relu(picked)).squeeze(3)


class Musicnn(nn.Module):
    """musicnn (``build_musicnn``) in PyTorch; eval-mode semantics of the TF graph.

    Input ``(B, T, 96)`` log-mel (:func:`musicnn_input`), any ``T >= 1`` (187 = the
    3 s the model was trained on). :meth:`forward` returns a dict named like
    musicnn's extractor: ``timbral (B,T,408)``, ``temporal (B,T,153)``, ``cnn1..3
    (B,T,64)``, ``mean_pool``/``max_pool (B,753)``, ``penultimate (B,200)``, plus
    ``logits`` and ``tags`` (sigmoid), ``(B, num_classes)``.

    TF layout is NHWC with H = time, W = frequency; here NCHW with the same H/W.
    Every conv is conv -> ReLU -> BatchNorm (eps 1e-3), front-end convs then
    max-pool over all frequency.
    """

    def __init__(self, num_classes: int = 50) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.tags: list[str] = []
        self.metadata: dict[str, str] = {}
        self.weights_id = ""  # :func:`weights_digest` of the loaded weights
        self.input_bn = nn.BatchNorm2d(1, eps=_BN_EPS)
        self.timbral_convs = nn.ModuleList(nn.Conv2d(1, _TIMBRAL_FILTERS, (7, w)) for w in _TIMBRAL_WIDTHS)
        self.timbral_bns = nn.ModuleList(nn.BatchNorm2d(_TIMBRAL_FILTERS, eps=_BN_EPS) for _ in _TIMBRAL_WIDTHS)
        self.temporal_convs = nn.ModuleList(nn.Conv2d(1, _TEMPORAL_FILTERS, (k, 1)) for k in _TEMPORAL_LENGTHS)
        self.temporal_bns = nn.ModuleList(nn.BatchNorm2d(_TEMPORAL_FILTERS, eps=_BN_EPS) for _ in _TEMPORAL_LENGTHS)
        # midend convs have kernel [7, full width] on a 1-channel map: a Conv1d over time with width channels
        self.mid_convs = nn.ModuleList(nn.Conv1d(c, _MID, 7, padding=3) for c in (_FRONT, _MID, _MID))
        self.mid_bns = nn.ModuleList(nn.BatchNorm1d(_MID, eps=_BN_EPS) for _ in range(3))
        self.pool_bn = nn.BatchNorm1d(2 * _POOL, eps=_BN_EPS)
        self.dense = nn.Linear(2 * _POOL, _UNITS)
        self.dense_bn = nn.BatchNorm1d(_UNITS, eps=_BN_EPS)
        self.out = nn.Linear(_UNITS, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 3 or x.shape[2] != N_MELS or x.shape[1] < 1:
            raise EdgeemoError(f"musicnn expects input (batch, time >= 1, {N_MELS}), got {tuple(x.shape)}")
        h = self.input_bn(x.unsqueeze(1))  # (B, 1, T, 96)
        padded = F.pad(h, (0, 0, 3, 3))  # tf.pad 3 frames each side, then 'valid'
        timbral = [
            _conv_relu_bn_maxfreq(conv, bn, padded)
            for conv, bn in zip(self.timbral_convs, self.timbral_bns, strict=True)
        ]  # (B, 204, T) each
        temporal = []
        for conv, bn, k in zip(self.temporal_convs, self.temporal_bns, _TEMPORAL_LENGTHS, strict=True):
            before = (k - 1) // 2  # TF 'same': the extra pad goes after
            temporal.append(_conv_relu_bn_maxfreq(conv, bn, F.pad(h, (0, 0, before, k - 1 - before))))
        front = torch.cat(timbral + temporal, dim=1)  # (B, 561, T)
        c1 = self.mid_bns[0](F.relu(self.mid_convs[0](front)))
        c2 = self.mid_bns[1](F.relu(self.mid_convs[1](c1))) + c1
        c3 = self.mid_bns[2](F.relu(self.mid_convs[2](c2))) + c2
        mid = torch.cat([front, c1, c2, c3], dim=1)  # (B, 753, T)
        max_pool = mid.amax(dim=2)
        mean_pool = mid.mean(dim=2)
        # tf.concat([max_pool, mean_pool], 2) then flatten: interleaved [max_0, mean_0, max_1, mean_1, ...]
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(flat))))
        logits = self.out(penultimate)
        return {
            "timbral": torch.cat(timbral, dim=1).transpose(1, 2),
            "temporal": torch.cat(temporal, dim=1).transpose(1, 2),
            "cnn1": c1.transpose(1, 2),
            "cnn2": c2.transpose(1, 2),
            "cnn3": c3.transpose(1, 2),
            "mean_pool": mean_pool,
            "max_pool": max_pool,
            "penultimate": penultimate,
            "logits": logits,
            "tags": torch.sigmoid(logits),
        }


# ----------------------------------------------------------------------------- conversion
def _tf_to_torch_names() -> list[tuple[str, str, str]]:
    """(TF variable scope, torch module prefix, kind) in TF creation order."""
    names: list[tuple[str, str, str]] = [("batch_normalization", "input_bn", "bn")]
    conv, bn = 0, 1

    def nxt(torch_conv: str, torch_bn: str, kind: str) -> None:
        nonlocal conv, bn
        names.append((f"conv2d_{conv}" if conv else "conv2d", torch_conv, kind))
        names.append((f"batch_normalization_{bn}", torch_bn, "bn"))
        conv += 1
        bn += 1

    for i in range(2):
        nxt(f"timbral_convs.{i}", f"timbral_bns.{i}", "conv2d")
    for i in range(3):
        nxt(f"temporal_convs.{i}", f"temporal_bns.{i}", "conv2d")
    for i in range(3):
        nxt(f"mid_convs.{i}", f"mid_bns.{i}", "conv1d")
    names += [
        ("batch_normalization_9", "pool_bn", "bn"),
        ("dense", "dense", "dense"),
        ("batch_normalization_10", "dense_bn", "bn"),
        ("dense_1", "out", "dense"),
    ]
    return names


def convert_checkpoint(src_dir: Path) -> dict[str, torch.Tensor]:
    """Read musicnn's TF checkpoint folder (``src_dir/.index`` + ``.data-*``) into a :class:`Musicnn` state dict.

    Conv kernels TF ``(kh, kw, in, out)`` -> torch ``(out, in, kh, kw)`` (the mid-end's
    ``[7, width]`` kernels on 1 channel become Conv1d ``(out, width, 7)``); dense
    ``(in, out)`` -> ``(out, in)``; BatchNorm gamma/beta/moving stats -> weight/bias/
    running stats. Adam slots and ``beta*_power`` are ignored.
    """
    tf = read_checkpoint(str(Path(src_dir)) + "/")
    sd: dict[str, torch.Tensor] = {}

    def get(name: str) -> np.ndarray:
        if name not in tf:
            raise EdgeemoError(f"checkpoint has no variable {name!r} (not a musicnn checkpoint?)", path=src_dir)
        return tf[name]

    for scope, prefix, kind in _tf_to_torch_names():
        if kind == "bn":
            sd[f"{prefix}.weight"] = torch.from_numpy(get(f"{scope}/gamma"))
            sd[f"{prefix}.bias"] = torch.from_numpy(get(f"{scope}/beta"))
            sd[f"{prefix}.running_mean"] = torch.from_numpy(get(f"{scope}/moving_mean"))
            sd[f"{prefix}.running_var"] = torch.from_numpy(get(f"{scope}/moving_variance"))
            sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
            continue
        k = get(f"{scope}/kernel")
        if kind == "conv2d":
            w = k.transpose(3, 2, 0, 1)
        elif kind == "conv1d":
            if k.shape[2] != 1:
                raise EdgeemoError(f"{scope}: expected a 1-channel kernel, got {k.shape}", path=src_dir)
            w = k[:, :, 0, :].transpose(2, 1, 0)
        else:
            w = k.T
        sd[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        sd[f"{prefix}.bias"] = torch.from_numpy(get(f"{scope}/bias"))
    return sd


def find_musicnn_package() -> Path:
    """Folder of the installed ``musicnn`` package, located without importing it (it imports TensorFlow)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeemoError(f"the musicnn package (the source of the weights) is not installed: {PIP_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_tags(configuration_py: Path, model: str) -> list[str]:
    """The tag list of ``model`` from musicnn's configuration.py, parsed with ``ast`` (never imported)."""
    var = f"{model.split('_')[0]}_LABELS"
    try:
        tree = ast.parse(configuration_py.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        raise EdgeemoError(f"cannot read musicnn's tag list ({exc})", path=configuration_py) from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in node.targets):
            tags = ast.literal_eval(node.value)
            if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
                return tags
    raise EdgeemoError(f"no {var} list found", path=configuration_py)


def default_weights_path(model: str = "MSD_musicnn") -> Path:
    """``<user cache>/pretrained/<model>.safetensors`` (:func:`edgeemo.config.default_cache_root`)."""
    from edgeemo.config import default_cache_root

    return default_cache_root().expanduser() / "pretrained" / f"{model}.safetensors"


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise EdgeemoError(f"unknown musicnn model {model!r}; choose one of {', '.join(MODELS)}")


def import_musicnn(model: str = "MSD_musicnn", source: Path | None = None, out: Path | None = None) -> Path:
    """Convert musicnn's TF checkpoint to ``safetensors`` and return the written path.

    ``source`` is either the model folder (holding ``.index``) or a musicnn package
    folder (holding ``<model>/.index`` and ``configuration.py``); by default the
    installed ``musicnn`` package is used. The file's metadata records the model,
    the tag list (JSON), the sha256 of the source ``.data`` file and the licence.
    Written atomically to ``out`` (default :func:`default_weights_path`).
    """
    _check_model(model)
    pkg = find_musicnn_package() if source is None else Path(source)
    if (pkg / ".index").is_file():
        ckpt_dir, config_py = pkg, pkg.parent / "configuration.py"
    else:
        ckpt_dir, config_py = pkg / model, pkg / "configuration.py"
    if not (ckpt_dir / ".index").is_file():
        raise EdgeemoError(f"no musicnn checkpoint (.index) found in {ckpt_dir}")
    if not config_py.is_file():  # a bare model folder: take the tag list from the installed package
        config_py = find_musicnn_package() / "configuration.py"
    tags = _read_tags(config_py, model)
    sd = convert_checkpoint(ckpt_dir)
    if sd["out.weight"].shape[0] != len(tags):
        raise EdgeemoError(f"checkpoint has {sd['out.weight'].shape[0]} outputs but {len(tags)} tags", path=ckpt_dir)
    data_files = sorted(ckpt_dir.glob(".data-*"))
    metadata = {
        "format": FORMAT,
        "model": model,
        "tags": json.dumps(tags),
        "source_sha256": sha256_file(data_files[0]) if data_files else "",
        "licence": LICENCE,
    }
    out = default_weights_path(model) if out is None else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors (names, dtypes, shapes, values, in name order): the same weights give the same
    digest whatever file holds them (safetensors writes its metadata in no fixed order, so the file's own
    bytes differ between two imports of one checkpoint)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load_musicnn(path: Path | None = None, model: str = "MSD_musicnn") -> Musicnn:
    """Load converted weights (default :func:`default_weights_path`) into a :class:`Musicnn` in eval mode.

    The model's ``.tags`` holds the tag names and ``.metadata`` the file's metadata.
    """
    _check_model(model)
    path = default_weights_path(model) if path is None else Path(path)
    if not path.is_file():
        raise EdgeemoError(
            f"musicnn weights not found at {path}: run `edgeemo pretrained import-musicnn` (needs `{PIP_HINT}`)"
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
    except (SafetensorError, OSError) as exc:
        raise EdgeemoError(f"cannot read musicnn weights ({exc})", path=path) from None
    if metadata.get("format") != FORMAT or "out.weight" not in sd:
        raise EdgeemoError("not a musicnn weights file written by `edgeemo pretrained import-musicnn`", path=path)
    net = Musicnn(num_classes=int(sd["out.weight"].shape[0]))
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise EdgeemoError(f"weights do not fit the musicnn architecture ({first})", path=path) from None
    net.tags = list(json.loads(metadata.get("tags", "[]")))
    net.metadata = metadata
    net.weights_id = weights_digest(sd)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class MusicnnEmbedder:
    """Runs a loaded :class:`Musicnn` on 16 kHz audio; outputs are float32 numpy, one row per patch."""

    def __init__(self, model: Musicnn | None = None, *, device: str = "cpu") -> None:
        self.model = load_musicnn() if model is None else model
        self.model.eval()
        self.device = device
        self.model.to(device)
        self.tags: list[str] = list(getattr(self.model, "tags", []))

    def run(self, batch: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Model outputs ``EMBED_KEYS`` for patches ``(n, T, 96)``."""
        batch = np.asarray(batch, dtype=np.float32)
        outs: dict[str, list[np.ndarray]] = {k: [] for k in EMBED_KEYS}
        with torch.no_grad():
            for i in range(0, batch.shape[0], max(1, int(batch_size))):
                res = self.model(torch.from_numpy(batch[i : i + batch_size]).to(self.device))
                for k in EMBED_KEYS:
                    outs[k].append(res[k].float().cpu().numpy())
        dims = {"mean_pool": _POOL, "max_pool": _POOL, "penultimate": _UNITS, "tags": self.model.num_classes}
        return {
            k: np.concatenate(v).astype(np.float32, copy=False) if v else np.zeros((0, dims[k]), np.float32)
            for k, v in outs.items()
        }

    def embed(self, signal16k: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Per non-overlapping 187-frame (~3 s) patch.

        Keys ``mean_pool``/``max_pool (n, 753)``, ``penultimate (n, 200)``, ``tags (n, C)``.
        """
        return self.run(patches(musicnn_input(signal16k)), batch_size)

    def embed_at(self, signal16k: np.ndarray, centers_s: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Same keys, one patch centred at each time in ``centers_s`` (seconds; clamped at the clip's edges)."""
        return self.run(patches_at(musicnn_input(signal16k), np.asarray(centers_s)), batch_size)
