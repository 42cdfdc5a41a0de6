"""The model bundle: a folder with the ONNX student(s) and ``card.json``, written once, verified on every load.

Layout of ``export/<name>/``::

    model.onnx         fp32 student: input ``mel`` (batch, 1, n_mels, n_frames) float32,
                       output ``valence_arousal`` (batch, 2) in [-1, 1]; batch is dynamic
    model.int8.onnx    optional static-int8 student (same I/O)
    model.e2e.int8.onnx  the raw-audio model: input ``pcm`` (batch, window_samples) float32 mono
                       at the card's sample rate, the log-mel front end in the graph, then the
                       default student; output ``valence_arousal`` (``model.e2e.onnx`` wraps an
                       fp32 default); described by the card's ``raw_audio_model``
    model.e2e.int8.ort its ORT-format copy (mobile and minimal onnxruntime builds)
    card.json          the model card (see below) plus ``files``: sha256 and size of each ONNX file

The card (everything in ``card.json`` except ``files``) is also embedded in every ONNX
file's ``metadata_props`` under the key ``edgeemo_card``, so a model file separated from
its folder still says what it is. :func:`verify_bundle` refuses a bundle whose schema
version it does not know, whose card fails the schema check (a card is untrusted input:
types, finite numbers, shapes), whose files do not match their hashes, whose embedded
card differs from ``card.json``, or whose model gives a wrong shape, NaN/inf or values
more than :data:`OUTPUT_TOLERANCE` outside [-1, 1] on the probe windows, always with a
one-line :class:`BundleError`; it also runs a fixed probe signal through each raw-audio
file and the student it wraps and refuses a disagreement above :data:`RAW_AUDIO_TOLERANCE`.

Also owns the one onnxruntime session builder (:func:`open_session`), the model I/O
names (:data:`INPUT_NAME`, :data:`OUTPUT_NAME`) and the output check the runtime applies
to every batch (:func:`check_outputs`). Reading needs only onnxruntime (the embedded card
is read through ``InferenceSession.get_modelmeta()``); writing is export-side and
imports ``onnx``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo import __version__
from edgeemo.errors import BundleError, EdgeemoError
from edgeemo.features import FeatureConfig, log_mel
from edgeemo.filehash import sha256_file

SCHEMA_VERSION = 1
CARD_NAME = "card.json"
METADATA_KEY = "edgeemo_card"
FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
MODEL_NAMES = (FP32_NAME, INT8_NAME)
RAW_AUDIO_NAMES = {FP32_NAME: "model.e2e.onnx", INT8_NAME: "model.e2e.int8.onnx"}  # student -> raw-audio model
PCM_INPUT_NAME = "pcm"
RAW_AUDIO_TOLERANCE = 1e-3  # max |raw-audio model - (features.log_mel + student)| on the probe signal


def raw_audio_name(student_name: str) -> str:
    """File name of the raw-audio model that wraps ``student_name``."""
    return RAW_AUDIO_NAMES[student_name]


def ort_name(onnx_name: str) -> str:
    """File name of the ORT-format copy of ``onnx_name``."""
    return onnx_name.removesuffix(".onnx") + ".ort"


RAW_FILE_NAMES = tuple(n for onnx_name in RAW_AUDIO_NAMES.values() for n in (onnx_name, ort_name(onnx_name)))
FILE_NAMES = MODEL_NAMES + RAW_FILE_NAMES
INPUT_NAME = "mel"
OUTPUT_NAME = "valence_arousal"
OUTPUT_RANGE = (-1.0, 1.0)  # documented valence/arousal range; the runtime clips to it
OUTPUT_TOLERANCE = 0.01  # a model may overshoot the range by this much (an 8-bit output step is 2/255 = 0.0078)
REQUIRED_KEYS = ("schema_version", "feature_config", "input", "output", "default_model")
MAX_CARD_BYTES = 1_000_000
WEIGHTS_ONLY_FORMAT = "weights"  # quantization.recipe.fmt of an int8 model with int8 weights and float activations


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays -> Python, paths -> str, tuples -> lists, NaN/inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _canonical(card: Mapping[str, Any]) -> str:
    """The card as stored in ONNX metadata: sorted keys, no ``files``, strict JSON."""
    return json.dumps(_jsonable({k: v for k, v in card.items() if k != "files"}), sort_keys=True, allow_nan=False)


# ----------------------------------------------------------------------------- writing
def write_bundle(out_dir: str | Path, models: Mapping[str, str | Path], card: Mapping[str, Any]) -> Path:
    """Write a bundle to ``out_dir`` atomically and return its path.

    ``models`` maps ``"model.onnx"`` (required) and optionally ``"model.int8.onnx"`` and a
    raw-audio model (:data:`RAW_AUDIO_NAMES`) to ONNX files. Each is copied in with the card
    embedded in its metadata; a raw-audio model also gets its ORT-format copy, converted
    after embedding; hashes are taken last. Everything is built in a temporary folder beside ``out_dir``
    and renamed into place at the end (an existing bundle there is replaced only then),
    so a failure never leaves a half-written bundle.
    """
    import onnx  # export-side only

    out_dir = Path(out_dir)
    onnx_names = MODEL_NAMES + tuple(RAW_AUDIO_NAMES.values())
    unknown = sorted(set(models) - set(onnx_names))
    if unknown:
        raise BundleError(f"unknown bundle model name(s) {', '.join(unknown)}; expected {' / '.join(onnx_names)}")
    if FP32_NAME not in models:
        raise BundleError(f"a bundle needs {FP32_NAME} (the fp32 student)")
    card = {k: v for k, v in dict(card).items() if k != "files"}
    card.setdefault("schema_version", SCHEMA_VERSION)
    card.setdefault("edgeemo_version", __version__)
    card.setdefault("default_model", INT8_NAME if INT8_NAME in models else FP32_NAME)
    try:
        text = _canonical(card)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"the card is not plain JSON ({exc})") from None
    cfg = _check_card_fields(json.loads(text), where="card to write")  # checked as readers will see it
    if card["default_model"] not in models:
        raise BundleError(f"card default_model {card['default_model']!r} is not among the models given")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        for name in onnx_names:
            if name not in models:
                continue
            src = Path(models[name])
            if not src.is_file():
                raise BundleError(f"{src}: no such ONNX file for {name}")
            proto = onnx.load(str(src))
            _check_io(proto, src, cfg, raw_audio=name in RAW_FILE_NAMES)
            kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
            del proto.metadata_props[:]
            proto.metadata_props.extend(kept)
            entry = proto.metadata_props.add()
            entry.key, entry.value = METADATA_KEY, text
            dst = tmp / name
            onnx.save(proto, str(dst))
            made = [dst]
            if name in RAW_FILE_NAMES:
                from edgeemo.exporting.ortformat import ort_copy

                made.append(ort_copy(dst, tmp / ort_name(name)))
            for file in made:
                files[file.name] = {"sha256": sha256_file(file), "bytes": file.stat().st_size}
        full = {**json.loads(text), "files": files}
        (tmp / CARD_NAME).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp made it private; a bundle is meant to be shared read-only
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _expected_input(cfg: FeatureConfig, raw_audio: bool) -> tuple[str, tuple[int, ...]]:
    """Input name and shape after the batch axis: log-mel windows, or PCM windows for a raw-audio model."""
    return (PCM_INPUT_NAME, (cfg.window_samples,)) if raw_audio else (INPUT_NAME, (1, cfg.n_mels, cfg.n_frames))


def rewrite_bundle(
    bundle_dir: str | Path,
    edit: Callable[[dict[str, Path], dict[str, Any], Path], None],
    out_dir: str | Path | None = None,
) -> Path:
    """Rewrite the verified bundle at ``bundle_dir`` (or write a copy to ``out_dir``) through ``edit``.

    The bundle's ONNX files are copied to a temporary folder first; ``edit(models, card, tmp)``
    may change the card and add or replace entries of ``models`` (file name -> path, new files
    written under ``tmp``); :func:`write_bundle` then writes the result atomically (re-embedding
    the card, re-hashing), and the result is verified. The bundle is read before it is replaced.
    """
    bundle = verify_bundle(bundle_dir)
    out = Path(out_dir) if out_dir is not None else bundle.path
    card = {k: v for k, v in bundle.card.items() if k != "files"}
    with tempfile.TemporaryDirectory(prefix="edgeemo-rewrite-") as tmp_s:
        tmp = Path(tmp_s)
        models = {name: tmp / name for name in bundle.files if not name.endswith(".ort")}
        for name, dst in models.items():
            shutil.copyfile(bundle.path / name, dst)
        edit(models, card, tmp)
        write_bundle(out, models, card)
    verify_bundle(out)
    return out


def _check_io(proto: Any, src: Path, cfg: FeatureConfig, raw_audio: bool = False) -> None:
    input_name, expected = _expected_input(cfg, raw_audio)
    inputs = {i.name: i for i in proto.graph.input}
    outputs = [o.name for o in proto.graph.output]
    if input_name not in inputs or OUTPUT_NAME not in outputs:
        raise BundleError(
            f"{src}: ONNX model must have input {input_name!r} and output {OUTPUT_NAME!r}, "
            f"has inputs {sorted(inputs)} and outputs {outputs}"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[input_name].type.tensor_type.shape.dim]
    if len(dims) != 1 + len(expected) or any(d is not None and d != e for d, e in zip(dims[1:], expected, strict=True)):
        raise BundleError(
            f"{src}: input {input_name!r} has shape {dims}, "
            f"the card's feature_config needs (batch, {', '.join(map(str, expected))})"
        )


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` is swapped out only at this point."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise BundleError(f"{out_dir} exists and is not a bundle folder")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        old.rmdir()
        os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# ----------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, card (with ``files``), FeatureConfig and model files."""

    path: Path
    card: dict[str, Any]
    feature_config: FeatureConfig
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.card.get("name") or self.path.name)


    def model_path(self, prefer_int8: bool = True) -> Path:
        """The ONNX file to run: the card's ``default_model`` (the int8 model when the bundle
        ships it as default) if ``prefer_int8``, else always the fp32 ``model.onnx``."""
        name = self.card["default_model"] if prefer_int8 else FP32_NAME
        return self.path / name


def load_card(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``card.json`` of a bundle folder (no hashing, no ONNX)."""
    path = Path(path)
    card_file = path / CARD_NAME
    if not path.is_dir() or not card_file.is_file():
        raise BundleError(
            f"no bundle at {path} (expected card.json and model.onnx there; "
            "write one with `edgeemo export` or pass --bundle DIR)"
        )
    try:
        if card_file.stat().st_size > MAX_CARD_BYTES:
            raise BundleError(f"{card_file}: card is larger than {MAX_CARD_BYTES // 1_000_000} MB; not an edgeemo card")
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError covers JSON and UTF-8 decoding errors
        raise BundleError(f"{card_file}: unreadable card ({' '.join(str(exc).split())})") from None
    if not isinstance(card, dict):
        raise BundleError(f"{card_file}: the card must be a JSON object")
    _check_schema(card, card_file)
    _check_card_fields(card, where=str(card_file))
    _check_files(card.get("files"), str(card_file))
    files = card["files"]
    if card["default_model"] not in files:
        raise BundleError(f"{card_file}: default_model {card['default_model']!r} is not among the bundle's files")
    return card


def _check_schema(card: Mapping[str, Any], where: Path | str) -> None:
    version = card.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise BundleError(f"{where}: missing or non-integer schema_version ({version!r}); not an edgeemo bundle card")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{where}: bundle schema_version {version} needs a newer edgeemo (this is edgeemo {__version__}, "
            f"which reads schema_version {SCHEMA_VERSION}): pip install -U edgeemo"
        )
    if version < SCHEMA_VERSION:
        raise BundleError(
            f"{where}: bundle schema_version {version} is older than any this edgeemo reads ({SCHEMA_VERSION}); "
            "re-export the model with `edgeemo export`"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_shape(shape: Any, expected: list[int | None], what: str, where: str) -> None:
    """``shape`` (optional) must be a list like ``expected``: ``None`` entries are any dynamic dim."""
    if shape is None:
        return
    ok = isinstance(shape, list) and len(shape) == len(expected)
    ok = ok and all(d is None or (_is_int(d) and d > 0) for d in shape)
    if not ok or any(e is not None and d != e for d, e in zip(shape, expected, strict=True)):
        dims = ", ".join("batch" if e is None else str(e) for e in expected)
        raise BundleError(f"{where}: {what} shape {shape!r} does not match feature_config ({dims})")


OPTIONAL_TEXT_KEYS = ("name", "edgeemo_version", "created", "reproduce")
OPTIONAL_OBJECT_KEYS = ("metrics", "compression", "quantization", "gate", "models")


def _check_card_fields(card: Mapping[str, Any], where: str) -> FeatureConfig:
    """Schema check of every card field the runtime reads: types, finite numbers, shapes, names.

    A card is untrusted input (a bundle may come from anywhere), so each problem is a
    one-line :class:`BundleError` here rather than a TypeError deep in the runtime.
    """
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise BundleError(f"{where}: card lacks {', '.join(missing)}")
    if not isinstance(card["feature_config"], dict):
        raise BundleError(f"{where}: feature_config must be an object")
    try:
        cfg = FeatureConfig.from_dict(card["feature_config"])
    except (EdgeemoError, TypeError, ValueError, OverflowError) as exc:
        raise BundleError(f"{where}: bad feature_config ({exc})") from None
    inp, out = card["input"], card["output"]
    if not isinstance(inp, dict) or inp.get("name") != INPUT_NAME:
        raise BundleError(f"{where}: input must be an object named {INPUT_NAME!r}")
    if not isinstance(out, dict) or out.get("name") != OUTPUT_NAME:
        raise BundleError(f"{where}: output must be an object named {OUTPUT_NAME!r}")
    _check_shape(inp.get("shape"), [None, 1, cfg.n_mels, cfg.n_frames], "input", where)
    _check_shape(out.get("shape"), [None, 2], "output", where)
    if inp.get("dtype", "float32") != "float32":
        raise BundleError(f"{where}: input dtype must be 'float32', got {inp.get('dtype')!r}")
    labels = out.get("labels")
    if labels is not None and (
        not isinstance(labels, list) or len(labels) != 2 or not all(isinstance(x, str) for x in labels)
    ):
        raise BundleError(f"{where}: output labels must be two names, got {labels!r}")
    rng = out.get("range")
    if rng is not None and (
        not isinstance(rng, list) or [float(x) if _is_finite_number(x) else None for x in rng] != list(OUTPUT_RANGE)
    ):
        raise BundleError(f"{where}: output range must be {list(OUTPUT_RANGE)}, got {rng!r}")
    if not isinstance(card["default_model"], str) or card["default_model"] not in MODEL_NAMES:
        raise BundleError(f"{where}: default_model must be one of {', '.join(MODEL_NAMES)}")
    for key in OPTIONAL_TEXT_KEYS:
        if card.get(key) is not None and not isinstance(card[key], str):
            raise BundleError(f"{where}: {key} must be text, got {type(card[key]).__name__}")
    for key in OPTIONAL_OBJECT_KEYS:
        if card.get(key) is not None and not isinstance(card[key], dict):
            raise BundleError(f"{where}: {key} must be an object, got {type(card[key]).__name__}")
    if card.get("training_data") is not None and not isinstance(card["training_data"], (str, dict)):
        raise BundleError(f"{where}: training_data must be text or an object")
    return cfg


def _check_files(files: Any, where: str) -> None:
    if not isinstance(files, dict) or FP32_NAME not in files:
        raise BundleError(f"{where}: card lists no files (needs files.{FP32_NAME} with sha256 and bytes)")
    for name, entry in files.items():
        ok = name in FILE_NAMES and isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        ok = ok and len(entry["sha256"]) == 64 and all(c in "0123456789abcdef" for c in entry["sha256"])
        if not ok or ("bytes" in entry and not (_is_int(entry["bytes"]) and entry["bytes"] >= 0)):
            raise BundleError(
                f"{where}: bad files entry {name!r} (expected {' / '.join(FILE_NAMES)} with a sha256 hex digest "
                "and a byte count)"
            )


# ----------------------------------------------------------------------------- sessions and the probe


def open_session(path: str | Path, threads: int = 1, *, fold_weights: bool = False) -> Any:
    """The one way edgeemo opens an ONNX model: an onnxruntime CPU session with ``threads`` intra-op
    threads, one inter-op thread, quiet logs. Callers taking ``threads`` from a user check it first
    with :func:`edgeemo.runtime.limits.check_threads`.

    ``fold_weights`` is for models in the :data:`WEIGHTS_ONLY_FORMAT` (int8 weights, float
    activations): it turns off onnxruntime's QDQ fusions, which lets constant folding
    dequantize the weights once at load instead of on every run (fp32 speed; measured 7.2 vs
    9.1 ms per window on a busy machine where fp32 took 7.4). Do not set it for QDQ models
    with quantised activations: they would then run unfused.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if fold_weights:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quantization_format(card: Mapping[str, Any]) -> str | None:
    """The card's ``quantization.recipe.fmt`` (e.g. ``"qoperator"`` or :data:`WEIGHTS_ONLY_FORMAT`), if recorded."""
    quant = card.get("quantization")
    recipe = quant.get("recipe") if isinstance(quant, dict) else None
    fmt = recipe.get("fmt") if isinstance(recipe, dict) else None
    return fmt if isinstance(fmt, str) else None


def probe_windows(cfg: FeatureConfig) -> Any:
    """Three fixed log-mel windows ``(3, 1, n_mels, n_frames)``: silence, a tone chord and loud noise."""

    n = cfg.window_samples
    t = np.arange(n) / cfg.sample_rate
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    noise = 0.5 * np.random.default_rng(0).uniform(-1.0, 1.0, n)
    signals = [np.zeros(n), chord, noise]
    return np.stack([log_mel(x.astype(np.float32), cfg)[:, : cfg.n_frames] for x in signals])[:, None]


def check_outputs(out: Any, n_windows: int, what: str) -> Any:
    """``out`` as float32 ``(n_windows, 2)`` clipped to :data:`OUTPUT_RANGE`; :class:`BundleError` when its
    shape is wrong, it holds NaN/inf, or it leaves the range by more than :data:`OUTPUT_TOLERANCE`."""
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (n_windows, 2):
        raise BundleError(f"{what} returned shape {out.shape} for {n_windows} window(s); expected ({n_windows}, 2)")
    if not np.all(np.isfinite(out)):
        raise BundleError(f"{what} returned NaN/inf valence/arousal")
    lo, hi = OUTPUT_RANGE
    worst = float(np.max(np.abs(out))) if out.size else 0.0
    if worst > hi + OUTPUT_TOLERANCE:
        raise BundleError(
            f"{what} returned {worst:.4g}, outside the documented range [{lo:g}, {hi:g}] "
            f"(tolerance {OUTPUT_TOLERANCE:g}); not a valid edgeemo model"
        )
    return np.clip(out, lo, hi)


def probe_session(session: Any, cfg: FeatureConfig, what: str) -> None:
    """Run the model on :func:`probe_windows` and apply :func:`check_outputs` (one line on failure)."""
    x = probe_windows(cfg)
    try:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise BundleError(f"{what} fails on a probe window ({' '.join(str(exc).split())[:160]})") from None
    check_outputs(out, len(x), what)


def verify_bundle(path: str | Path) -> Bundle:
    """Check a bundle completely (schema, card, sizes, sha256, embedded cards, a probe run of every model).

    Raises :class:`BundleError` with one line on any problem.
    """
    bundle, sessions = open_bundle(path)
    for name, diff in raw_audio_disagreement(bundle, sessions).items():
        if not diff <= RAW_AUDIO_TOLERANCE:
            raise BundleError(
                f"{bundle.path}: {name} disagrees with its student by {diff:.2e} (> {RAW_AUDIO_TOLERANCE:g}) on the "
                "probe signal; re-export the bundle"
            )
    return bundle


def open_bundle(
    path: str | Path, *, models: tuple[str, ...] | None = None, threads: int = 1
) -> tuple[Bundle, dict[str, Any]]:
    """Verify the bundle: card schema, sizes and sha256 of every file; then open an onnxruntime
    session (:func:`open_session`, ``threads`` threads) for each model file, or only those named in
    ``models``, and check its embedded card, I/O and outputs on a probe window
    (:func:`probe_session`). Returns the bundle and the sessions by file name."""
    path = Path(path)
    card = load_card(path)
    cfg = FeatureConfig.from_dict(card["feature_config"])
    files = card["files"]
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: {name} is listed in card.json but missing")
        size = file.stat().st_size
        if "bytes" in entry and entry["bytes"] != size:
            raise BundleError(
                f"{path}: {name} does not match its card hash (tampered or corrupt: {size} bytes, "
                f"card says {entry['bytes']})"
            )
        if sha256_file(file) != entry["sha256"]:
            raise BundleError(f"{path}: {name} does not match its card hash (tampered or corrupt)")
    expected = json.loads(_canonical(card))
    sessions: dict[str, Any] = {}
    for name in files:
        if models is not None and name not in models:
            continue
        try:
            int8 = name == INT8_NAME or (name in RAW_FILE_NAMES and "int8" in name)
            fold = int8 and quantization_format(card) == WEIGHTS_ONLY_FORMAT
            session = open_session(path / name, threads, fold_weights=fold)
        except EdgeemoError:
            raise
        except Exception as exc:
            msg = " ".join(str(exc).split())[:200]
            raise BundleError(f"{path}: onnxruntime cannot load {name} ({msg})") from None
        meta = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise BundleError(f"{path}: {name} has no embedded edgeemo card (not written by write_bundle)")
        try:
            embedded = json.loads(meta[METADATA_KEY])
        except json.JSONDecodeError:
            raise BundleError(f"{path}: {name} has an unreadable embedded card") from None
        if embedded != expected:
            diff = sorted(k for k in set(embedded) | set(expected) if embedded.get(k) != expected.get(k))
            raise BundleError(
                f"{path}: the card embedded in {name} differs from card.json (keys: {', '.join(diff)}); "
                "the files come from different exports"
            )
        _check_session_io(session, name, path, cfg)
        if name not in RAW_FILE_NAMES:  # raw-audio files are probed against their student (verify_bundle)
            probe_session(session, cfg, f"{path}: {name}")
        sessions[name] = session
    return Bundle(path=path, card=card, feature_config=cfg, files=dict(files)), sessions


def _check_session_io(session: Any, name: str, path: Path, cfg: FeatureConfig) -> None:
    input_name, expected = _expected_input(cfg, name in RAW_FILE_NAMES)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if input_name not in inputs or OUTPUT_NAME not in outputs:
        raise BundleError(
            f"{path}: {name} must have input {input_name!r} and output {OUTPUT_NAME!r} "
            f"(has {sorted(inputs)} -> {sorted(outputs)})"
        )
    shape = inputs[input_name]
    if len(shape) != 1 + len(expected) or any(
        isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True)
    ):
        raise BundleError(f"{path}: {name} input shape {shape} does not match feature_config")
    out_shape = outputs[OUTPUT_NAME]
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != 2):
        raise BundleError(f"{path}: {name} output shape {out_shape} is not (batch, 2)")


def raw_audio_disagreement(bundle: Bundle, sessions: Mapping[str, Any]) -> dict[str, float]:
    """Max |output| difference, per raw-audio file in ``sessions``, between it on a fixed probe signal's PCM
    windows and the student it wraps (the card's ``raw_audio_model.student``) on ``features.log_mel`` windows."""
    from edgeemo.features import frame_windows, log_mel
    from edgeemo.rawaudio import pcm_windows, probe_signal

    raw = [n for n in sessions if n in RAW_FILE_NAMES]
    if not raw:
        return {}
    student = (bundle.card.get("raw_audio_model") or {}).get("student")
    if student not in sessions:
        raise BundleError(f"{bundle.path}: card's raw_audio_model.student {student!r} is not among the bundle's files")
    cfg = bundle.feature_config
    signal = probe_signal(cfg)
    mel = np.ascontiguousarray(frame_windows(log_mel(signal, cfg), cfg)[:, None])
    ref = np.clip(sessions[student].run([OUTPUT_NAME], {INPUT_NAME: mel})[0], *OUTPUT_RANGE)  # as the runtime clips
    pcm = pcm_windows(signal, cfg)
    return {n: float(np.max(np.abs(sessions[n].run([OUTPUT_NAME], {PCM_INPUT_NAME: pcm})[0] - ref))) for n in raw}


# ----------------------------------------------------------------------------- reference bundle
def default_bundle_path() -> Path:
    """The reference bundle: packaged ``edgeemo/assets/reference`` if present, else ``<repo>/export/reference``."""
    candidates: list[Path] = []
    try:
        from importlib.resources import files

        packaged = files("edgeemo") / "assets" / "reference"
        if (packaged / CARD_NAME).is_file():
            return Path(str(packaged))
        candidates.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError, OSError):
        pass
    repo = Path(__file__).resolve().parent.parent / "export" / "reference"
    if (repo / CARD_NAME).is_file():
        return repo
    candidates.append(repo)
    raise BundleError(
        f"no reference bundle found (looked in {' and '.join(str(c) for c in candidates)}); "
        "export one with `edgeemo export RUN --out export/reference` or pass --bundle DIR"
    )


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``{}`` (descriptive card sections are free-form)."""
    return value if isinstance(value, dict) else {}


def card_summary(bundle: Bundle) -> str:
    """Human-readable summary of a verified bundle (used by ``edgeemo bundle check``)."""
    card = bundle.card
    cfg = bundle.feature_config
    lines = [
        f"bundle {bundle.path}: {bundle.name} (schema {card['schema_version']}, "
        f"edgeemo {card.get('edgeemo_version', '?')}, created {card.get('created', '?')})",
        f"  features: {cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}, {cfg.n_mels} mels "
        f"{cfg.fmin:g}-{cfg.fmax:g} Hz, windows of {cfg.n_frames} frames ({cfg.window_seconds:.2f} s) "
        f"every {cfg.window_hop_s:g} s",
        f"  input {card['input'].get('name')} {card['input'].get('shape')} -> output "
        f"{card['output'].get('name')} {card['output'].get('shape')} {card['output'].get('labels', '')}",
    ]
    data = card.get("training_data")
    if isinstance(data, dict):
        lines.append(f"  trained on: {data.get('description') or data.get('dataset', '?')}")
        if data.get("licence"):
            lines.append(f"  data licence: {data['licence']}")
        pre = data.get("pretraining")
        if isinstance(pre, dict):
            hours = sum(h for h in _object(pre.get("hours")).values() if _is_finite_number(h))
            signal = _object(pre.get("teacher_signal"))
            folders = pre.get("unlabeled_folders")
            folders = [str(f) for f in folders] if isinstance(folders, list) else []
            lines.append(
                f"  teacher pretrained on: {hours:.2f} h of unlabeled audio in "
                f"{', '.join(folders)}; teacher signal {signal.get('name', '?')} "
                f"({signal.get('licence', 'licence not recorded')})"
                + ("; the student was pretrained on it too" if pre.get("student") else "")
            )
            probe = pre.get("emotion_probe")
            if isinstance(probe, dict):
                lines.append(
                    f"  emotion probe: weight {probe.get('weight')}, fitted on {probe.get('songs')} labelled "
                    f"training songs ({probe.get('windows')} windows)"
                )
    elif data:
        lines.append(f"  trained on: {data}")
    metrics = _object(card.get("metrics"))

    def numbers(d: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in d.items())

    for key, value in metrics.items():
        if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            lines.append(f"  {key}: {numbers(value)}")
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):  # e.g. quadrants
            lines.extend(f"  {key} {name}: {numbers(sub)}" for name, sub in value.items())
        elif isinstance(value, float):
            lines.append(f"  {key}: {value:.4g}")
        elif not isinstance(value, (dict, list)):
            lines.append(f"  {key}: {value}")
    if card.get("reproduce"):
        lines.append(f"  reproduce: {card['reproduce']}")
    comp = _object(card.get("compression"))
    if isinstance(comp, dict) and comp:
        lines.append(
            "  compression: " + ", ".join(f"{k} {v}" for k, v in comp.items() if isinstance(v, (int, float, str)))
        )
    lines.append("  files:")
    for name, entry in bundle.files.items():
        default = " (default)" if name == card["default_model"] else ""
        lines.append(
            f"    {name:<20} {entry.get('bytes', 0) / 1e6:8.2f} MB  sha256 {entry['sha256'][:16]}… ok{default}"
        )
    raw = card.get("raw_audio_model")
    if isinstance(raw, dict) and any(n in bundle.files for n in RAW_FILE_NAMES):
        lines.append(
            f"  raw-audio model: {' + '.join(raw.get('files') or [])}: input {PCM_INPUT_NAME} (batch, "
            f"{cfg.window_samples}) mono PCM at {cfg.sample_rate} Hz, one window every {raw.get('hop_samples')} "
            f"samples; wraps {raw.get('student')} (agrees on the probe signal within {RAW_AUDIO_TOLERANCE:g})"
        )
    lines.append("  hashes ok, embedded cards match card.json, probe windows give (N, 2) outputs in [-1, 1]")
    return "\n".join(lines)
