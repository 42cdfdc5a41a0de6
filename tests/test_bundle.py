"""The bundle contract: write atomically, embed the card, verify hashes / schema / embedded cards, CLI check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")  # writing bundles is export-side

import edgeemo.bundle as bundle_mod
from edgeemo.bundle import (
    METADATA_KEY,
    SCHEMA_VERSION,
    default_bundle_path,
    load_card,
    verify_bundle,
    write_bundle,
)
from edgeemo.cli import main
from edgeemo.errors import BundleError
from edgeemo.runtime import EmotionModel
from tests.runtime_fixtures import SMALL_CFG, cached_bundle, make_test_bundle, sample_card


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return cached_bundle(tmp_path_factory, SMALL_CFG, int8=True)


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    """A private copy of the bundle to tamper with."""
    return Path(shutil.copytree(bundle, tmp_path / "b"))


def _edit_card(path: Path, **changes) -> None:
    card = json.loads((path / "card.json").read_text())
    card.update(changes)
    (path / "card.json").write_text(json.dumps(card))


def test_round_trip_card_json_equals_embedded_cards(bundle):
    import onnx
    import onnxruntime as ort

    card = json.loads((bundle / "card.json").read_text())
    assert card["schema_version"] == SCHEMA_VERSION
    assert set(card["files"]) == {"model.onnx", "model.int8.onnx"}
    assert card["default_model"] == "model.int8.onnx"
    without_files = {k: v for k, v in card.items() if k != "files"}
    assert without_files == {**json.loads(json.dumps(sample_card(SMALL_CFG, int8=True)))}
    for name in card["files"]:
        props = {p.key: p.value for p in onnx.load(str(bundle / name)).metadata_props}
        assert json.loads(props[METADATA_KEY]) == without_files
        meta = ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"]).get_modelmeta()
        assert json.loads(meta.custom_metadata_map[METADATA_KEY]) == without_files
        assert card["files"][name]["bytes"] == (bundle / name).stat().st_size
    b = verify_bundle(bundle)
    assert b.feature_config == SMALL_CFG
    assert b.model_path() == bundle / "model.int8.onnx"
    assert b.model_path(prefer_int8=False) == bundle / "model.onnx"
    assert load_card(bundle) == card


def test_model_loads_default_or_fp32(bundle):
    assert EmotionModel.load(bundle).model_file == "model.int8.onnx"
    m = EmotionModel.load(bundle, prefer_int8=False, threads=2)
    assert m.model_file == "model.onnx" and m.feature_config == SMALL_CFG and m.card["name"] == "test"


def test_torch_exported_model_works_in_a_bundle(tmp_path):
    pytest.importorskip("torch")
    import numpy as np

    from tests.runtime_fixtures import reference_windows_predict

    path = make_test_bundle(tmp_path, SMALL_CFG, exporter="torch")
    model = EmotionModel.load(path)
    x = np.random.default_rng(0).normal(0, 1, (3, 1, SMALL_CFG.n_mels, SMALL_CFG.n_frames)).astype(np.float32)
    np.testing.assert_allclose(model.predict_windows(x), reference_windows_predict(x[:, 0], SMALL_CFG), atol=1e-5)


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_changed_byte_is_refused(copy, name):
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name} does not match its card hash \(tampered or corrupt\)") as e:
        verify_bundle(copy)
    assert "\n" not in str(e.value)
    with pytest.raises(BundleError, match="tampered"):
        EmotionModel.load(copy)


def test_truncated_file_is_refused(copy):
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[:-10])
    with pytest.raises(BundleError, match=r"model.onnx does not match its card hash"):
        verify_bundle(copy)


def test_newer_schema_needs_newer_edgeemo(copy):
    _edit_card(copy, schema_version=99)
    with pytest.raises(BundleError, match="needs a newer edgeemo"):
        verify_bundle(copy)
    with pytest.raises(BundleError, match="needs a newer edgeemo"):
        EmotionModel.load(copy)


@pytest.mark.parametrize("version", [0, "1", None, 1.5])
def test_older_or_unknown_schema_is_refused(copy, version):
    _edit_card(copy, schema_version=version)
    with pytest.raises(BundleError, match="schema_version"):
        verify_bundle(copy)


def test_card_json_differing_from_embedded_card_is_refused(copy):
    _edit_card(copy, metrics={"student_fp32": {"ccc_mean": 0.99}})
    with pytest.raises(BundleError, match=r"differs from card.json .*metrics"):
        verify_bundle(copy)


def test_missing_model_file_and_bad_card(copy):
    (copy / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model.int8.onnx is listed in card.json but missing"):
        verify_bundle(copy)
    (copy / "card.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable card"):
        verify_bundle(copy)


def test_missing_bundle_is_one_line(tmp_path):
    for path in (tmp_path / "nope", tmp_path):
        with pytest.raises(BundleError, match=r"no bundle at .*expected card.json") as e:
            verify_bundle(path)
        assert "\n" not in str(e.value)


def test_write_bundle_replaces_atomically_and_cleans_up_on_failure(bundle, tmp_path):
    out = tmp_path / "out"
    models = {"model.onnx": bundle / "model.onnx"}
    write_bundle(out, models, sample_card(SMALL_CFG, name="first"))
    assert verify_bundle(out).name == "first"
    # a failing write (a file that is not ONNX) leaves the existing bundle untouched and no temp folders
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(Exception):  # noqa: B017 - onnx's own decode error
        write_bundle(out, {"model.onnx": tmp_path / "junk.onnx"}, sample_card(SMALL_CFG, name="second"))
    assert verify_bundle(out).name == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "out"]
    # a successful write replaces it (re-embedding over an existing card in the metadata)
    write_bundle(out, models, sample_card(SMALL_CFG, name="second"))
    assert verify_bundle(out).name == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "out"]
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.onnx"]


def test_write_bundle_rejects_bad_input(bundle, tmp_path):
    with pytest.raises(BundleError, match=r"needs model.onnx"):
        write_bundle(tmp_path / "x", {"model.int8.onnx": bundle / "model.int8.onnx"}, sample_card(SMALL_CFG))
    with pytest.raises(BundleError, match="unknown bundle model name"):
        write_bundle(tmp_path / "x", {"model.onnx": bundle / "model.onnx", "m.onnx": bundle / "model.onnx"}, {})
    bad = sample_card(SMALL_CFG)
    bad["input"]["shape"] = [None, 1, 64, 128]
    with pytest.raises(BundleError, match="does not match feature_config"):
        write_bundle(tmp_path / "x", {"model.onnx": bundle / "model.onnx"}, bad)
    assert not (tmp_path / "x").exists()


def test_default_bundle_path(tmp_path, monkeypatch):
    fake_pkg = tmp_path / "edgeemo"
    fake_pkg.mkdir()
    monkeypatch.setattr(bundle_mod, "__file__", str(fake_pkg / "bundle.py"))
    with pytest.raises(BundleError, match=r"no reference bundle found .*edgeemo export") as e:
        default_bundle_path()
    assert "\n" not in str(e.value)
    ref = tmp_path / "export" / "reference"
    ref.mkdir(parents=True)
    (ref / "card.json").write_text("{}")
    assert default_bundle_path() == ref


def test_cli_bundle_check(bundle, copy):
    runner = CliRunner()
    res = runner.invoke(main, ["bundle", "check", str(bundle)])
    assert res.exit_code == 0, res.output
    assert "hashes ok" in res.output and "model.int8.onnx" in res.output and "32 mels" in res.output
    assert "trained on: none: a fixed linear function" in res.output  # what the card says the model learned from
    assert "reproduce: tests/runtime_fixtures.py make_test_bundle" in res.output
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"x")
    res = runner.invoke(main, ["bundle", "check", str(copy)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: ")
    assert "model.onnx does not match its card hash" in res.output


def test_card_values_are_made_plain_json(bundle, tmp_path):
    import numpy as np

    card = sample_card(SMALL_CFG)
    card["metrics"] = {"ccc": np.float32(0.5), "per_dim": np.array([0.25, 0.75]), "bad": float("nan")}
    card["reproduce"] = Path("runs/x")
    out = write_bundle(tmp_path / "b", {"model.onnx": bundle / "model.onnx"}, card)
    b = verify_bundle(out)
    assert b.card["metrics"] == {"ccc": 0.5, "per_dim": [0.25, 0.75], "bad": None}
    assert b.card["reproduce"] == "runs/x"


def test_write_bundle_refuses_a_model_of_another_shape(tmp_path_factory, tmp_path):
    from edgeemo.features import FeatureConfig

    other = cached_bundle(tmp_path_factory, FeatureConfig())  # a 64 x 128 model
    with pytest.raises(BundleError, match=r"has shape \[None, 1, 64, 128\].*needs \(batch, 1, 32, 64\)"):
        write_bundle(tmp_path / "x", {"model.onnx": other / "model.onnx"}, sample_card(SMALL_CFG))
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


def test_bundle_check_names_the_pretraining_data_and_teacher_signal(bundle, tmp_path):
    card = sample_card(SMALL_CFG)
    card["training_data"] = {
        "description": "4Q",
        "licence": "research use only",
        "pretraining": {
            "unlabeled_folders": ["/music/a", "/music/b"],
            "hours": {"train": 6.93, "held_out": 1.02},
            "teacher_signal": {"name": "MSD_musicnn", "licence": "musicnn weights: ISC"},
        },
    }
    out = write_bundle(tmp_path / "b", {"model.onnx": bundle / "model.onnx"}, card)
    res = CliRunner().invoke(main, ["bundle", "check", str(out)])
    assert res.exit_code == 0, res.output
    assert "teacher pretrained on: 7.95 h of unlabeled audio in /music/a, /music/b" in res.output
    assert "teacher signal MSD_musicnn (musicnn weights: ISC)" in res.output
    assert "student was pretrained" not in res.output

    from edgeemo.exporting.export import pretraining_note

    note = pretraining_note({"folders": ["/music/a"], "hours": {"train": 1.0}, "student": {"arch": "m", "val": {}}})
    assert note["student"]["arch"] == "m" and "the student learnt the same targets" in note["note"]
    card["training_data"]["pretraining"] = {**card["training_data"]["pretraining"], **note}
    out = write_bundle(tmp_path / "c", {"model.onnx": bundle / "model.onnx"}, card)
    res = CliRunner().invoke(main, ["bundle", "check", str(out)])
    assert res.exit_code == 0, res.output
    assert "1.00 h of unlabeled audio in /music/a" in res.output
    assert "the student was pretrained on it too" in res.output
    assert "emotion probe" not in res.output

    probe = {"weight": 1.0, "ridge": 100.0, "songs": 383, "windows": 2680, "fit_r2": [0.5, 0.7]}
    note = pretraining_note({"folders": ["/music/a"], "hours": {"train": 1.0}, "emotion_probe": probe})
    assert note["emotion_probe"] == probe and "emotion probe" in note["note"]
    card["training_data"]["pretraining"] = note
    out = write_bundle(tmp_path / "d", {"model.onnx": bundle / "model.onnx"}, card)
    res = CliRunner().invoke(main, ["bundle", "check", str(out)])
    assert res.exit_code == 0, res.output
    assert "emotion probe: weight 1.0, fitted on 383 labelled training songs (2680 windows)" in res.output
