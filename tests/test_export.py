"""Export: ONNX parity gate, static int8, the verification gate, bundle contents and round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgeemo.config import DataSource  # noqa: E402
from edgeemo.errors import EdgeemoError  # noqa: E402
from edgeemo.evaluation import predict_windowset, window_and_song_report  # noqa: E402
from edgeemo.exporting.export import export_run  # noqa: E402
from edgeemo.exporting.onnx import ExportError, check_parity, export_onnx, onnx_predictor  # noqa: E402
from edgeemo.exporting.quantize import quantize_int8  # noqa: E402
from edgeemo.exporting.verify import GateThresholds, enforce_gate, gate_figures  # noqa: E402
from edgeemo.train.models import build_model, student_spec  # noqa: E402
from edgeemo.train.pipeline import open_run, train_all  # noqa: E402
from edgeemo.train.rundata import prepare_run_data  # noqa: E402
from tests.train_fixtures import tiny_config  # noqa: E402

LOOSE = {"min_compression": 1.0, "min_retention": -10.0, "max_int8_drop": 1.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_run")
    from tests.data_fixtures import write_miniature_quadrants

    quads = write_miniature_quadrants(root / "mini4q", n_per_quadrant=3, n_artists=8, seconds=4.0)
    sources = [DataSource("builtin").to_dict(), DataSource("quadrants", str(quads)).to_dict()]
    cfg = tiny_config(
        corpus_n=24, corpus_duration=6.0, gan_ratio=0.0, teacher_epochs=3, student_epochs=2, teacher_depth=2
    ).replace({"data.sources": sources})
    r = open_run(root / "runs" / "mini", cfg)
    train_all(r, progress=False, cache_dir=root / "cache")
    return r, root / "cache"


def test_parity_check_catches_a_perturbed_model(tmp_path):
    model = build_model(student_spec("mobilevit_xxs", (32, 64))).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (32, 64))
    x = np.random.default_rng(0).standard_normal((8, 1, 32, 64)).astype(np.float32)
    assert check_parity(model, path, x) <= 1e-4
    with torch.no_grad():
        model.head[1].bias += 0.01
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(model, path, x)


def test_int8_model_is_smaller_and_close(tmp_path):
    torch.manual_seed(0)
    model = build_model(student_spec("mobilevit_xxs", (32, 64))).eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", (32, 64))
    x = np.random.default_rng(0).standard_normal((64, 1, 32, 64)).astype(np.float32)
    q = quantize_int8(fp32, tmp_path / "q.onnx", x)
    assert q.stat().st_size < 0.5 * fp32.stat().st_size
    a, b = onnx_predictor(fp32)(x), onnx_predictor(q)(x)
    assert np.abs(a - b).max() < 0.1


def test_recipe_choice_is_the_smallest_of_the_most_accurate_fastest_passing_ones():
    from edgeemo.exporting.export import pick_recipe

    def row(name, drop, ms, size=100):
        return {"name": name, "drop": drop, "latency_ms": ms, "bytes": size}

    rows = [
        row("qdq", 0.0014, 2.28, 183),
        row("qop-minmax", 0.0040, 2.52, 150),
        row("qop-pct", -0.0004, 2.64, 150),  # 16 % slower than the fastest: not a tie
        row("s8s8", 0.0005, 6.07),
        {"name": "broken", "error": "ValueError: no"},
        row("inaccurate", 0.05, 1.0),  # fastest, but fails the drop limit
    ]
    assert pick_recipe(rows, 0.02)["name"] == "qdq"  # qop-minmax is as fast (within 15 %) but 0.0026 less accurate
    more = row("qop-more", 0.0010, 2.52, 150)  # within 15 % of 2.28 ms and more accurate than qdq
    assert pick_recipe([*rows, more], 0.02)["name"] == "qop-more"
    assert pick_recipe([*rows[:1], row("same", 0.0014, 2.3, 150)], 0.02)["name"] == "same"  # equal drop: smaller
    # 0.0001 better but 22 % bigger: a tie on accuracy, the smaller file ships
    assert pick_recipe([row("qdq", 0.0023, 1.68, 1828982), row("qop", 0.0024, 1.67, 1501819)], 0.02)["name"] == "qop"
    assert pick_recipe([row("big", 0.0010, 1.0, 200), row("small", 0.0021, 1.0, 100)], 0.02)["name"] == "big"
    assert pick_recipe([row("a", 0.05, 1.0), row("b", 0.03, 3.0)], 0.02)["name"] == "b"  # none passes
    with pytest.raises(ExportError, match="every int8 recipe failed"):
        pick_recipe([{"error": "ValueError: no"}], 0.02)


def test_gate_fails_with_the_failed_check_named():
    ccc = {"teacher_torch": 0.8, "student_torch": 0.75, "student_fp32": 0.75, "student_int8": 0.70}
    sizes = {"teacher_fp32": 20_000_000, "student_fp32": 4_000_000, "student_int8": 1_500_000}
    fig = gate_figures(ccc, sizes, {"teacher": 5_000_000, "student": 1_000_000}, "student_int8")
    assert fig["compression"] == pytest.approx(20_000_000 / 1_500_000)
    assert fig["retention"] == pytest.approx(0.70 / 0.8)
    assert fig["int8_drop"] == pytest.approx(0.05)
    with pytest.raises(ExportError) as err:
        enforce_gate(fig, GateThresholds())
    msg = str(err.value)
    assert "retention 0.875" in msg and "int8 CCC drop 0.0500" in msg and "compression" not in msg
    assert "\n" not in msg
    enforce_gate(fig, GateThresholds(min_retention=0.85, max_int8_drop=0.06))  # passes when relaxed


@pytest.mark.slow
def test_export_writes_a_verified_bundle(run, tmp_path, monkeypatch):
    r, cache = run
    monkeypatch.setenv("EDGEEMO_CACHE", str(cache))
    out = tmp_path / "bundle"
    card = export_run(r.dir, out, overrides={"int8": True, "calibration": 32, **LOOSE})
    raw = {"model.e2e.int8.onnx", "model.e2e.int8.ort"}  # the raw-audio model + its ORT copy
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.int8.onnx", "card.json", *raw}
    saved = json.loads((out / "card.json").read_text())
    assert saved["metrics"]["student_int8"]["ccc_mean"] == pytest.approx(card["metrics"]["student_int8"]["ccc_mean"])
    assert saved["compression"]["compression"] == pytest.approx(
        saved["compression"]["teacher_fp32_onnx_bytes"] / saved["compression"]["student_int8_onnx_bytes"]
    )
    assert (r.dir / "export" / "teacher.onnx").is_file()
    # mixed data (built-in + a 4Q-style set): the card names both, the licence caveat and quadrant figures
    assert [s["kind"] for s in saved["training_data"]["sources"]] == ["builtin", "quadrants"]
    assert "research use only" in saved["training_data"]["licence"]
    # the card records the whole resolved config (export settings as used) and rebuilds it exactly
    from edgeemo.cli_train import config_from_card
    from edgeemo.config import RunConfig

    assert saved["recipe"] == "tiny" and saved["config"]["teacher"]["depth"] == 2
    rebuilt, run_name = config_from_card(out)
    assert run_name == "mini" and rebuilt == RunConfig.from_dict(saved["config"], strict=True)
    assert rebuilt == r.cfg.replace(
        {"export.int8": True, "export.calibration": 32, **{f"export.{k}": v for k, v in LOOSE.items()}}
    )
    assert rebuilt.digest() == saved["config_digest"]
    assert saved["reproduce"].startswith("edgeemo train-all --from-card ")
    assert [s["songs"] for s in saved["training_data"]["sources"]] == [24, 12]
    assert all(len(s["digest"]) == 16 for s in saved["training_data"]["sources"])
    quads = saved["metrics"]["quadrants"]
    assert set(quads) == {"teacher_torch", "student_torch", "student_fp32", "student_int8"}
    assert 0.0 <= quads["student_int8"]["quadrant_accuracy"] <= 1.0 and quads["student_int8"]["n_songs"] >= 1

    from edgeemo.runtime import EmotionModel

    model = EmotionModel.load(out)
    data = prepare_run_data(r.dir, r.cfg.data, cache)
    test = data.windows("test")
    int8_ccc = window_and_song_report(test, predict_windowset(model.predict_windows, test))["ccc_mean"]
    assert int8_ccc == pytest.approx(saved["metrics"]["student_int8"]["ccc_mean"], abs=1e-6)
    assert saved["metrics"]["int8_drop"] <= LOOSE["max_int8_drop"]
    # the card also travels inside each ONNX file
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out / "model.int8.onnx")).metadata_props}
    embedded = json.loads(meta["edgeemo_card"])
    assert embedded["metrics"]["student_int8"] == pytest.approx(saved["metrics"]["student_int8"])


@pytest.mark.slow
def test_failed_gate_leaves_no_bundle(run, tmp_path, monkeypatch):
    r, cache = run
    monkeypatch.setenv("EDGEEMO_CACHE", str(cache))
    out = tmp_path / "never"
    with pytest.raises(ExportError, match=r"compression [0-9.]+x \(need >= 1000x\)"):
        export_run(r.dir, out, overrides={"int8": True, "calibration": 16, "min_compression": 1000})
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_export_refuses_an_unfinished_run(tmp_path):
    r = open_run(tmp_path / "runs" / "x", tiny_config())
    with pytest.raises(EdgeemoError, match="no finished teacher"):
        export_run(r.dir, tmp_path / "b")


def test_card_licence_note_and_quadrant_table():
    from edgeemo.exporting.export import data_licence_note, quadrant_table

    assert "no third-party audio" in data_licence_note((DataSource("builtin"),))
    note = data_licence_note((DataSource("builtin"), DataSource("quadrants", "x")))
    assert "quadrants" in note and "research use only" in note
    pre = data_licence_note((DataSource("builtin"),), ("$EDGEEMO_CACHE/unlabeled/debian",))
    assert "no third-party audio" in pre and "$EDGEEMO_CACHE/unlabeled/debian" in pre and "musicnn" in pre
    yam = data_licence_note((DataSource("quadrants", "x"),), musicnn_teacher=True, yamnet_student=True)
    assert "ISC" in yam and "YAMNet" in yam and "Apache-2.0" in yam and "YAMNet" not in note
    q = {"quadrant_accuracy": 0.5, "quadrant_macro_f1": 0.25, "valence_auc": 0.75, "arousal_auc": 1.0, "n_songs": 8}
    lines = quadrant_table({"student_int8": q}).splitlines()
    assert lines[1].split() == ["student_int8", "0.500", "0.250", "0.750", "1.000"]


@pytest.mark.slow
def test_train_all_from_card_reruns_the_identical_run(run, tmp_path, monkeypatch):
    """train, export, rebuild from the card: the same config digest and, on CPU with the same seed, the same weights."""
    from click.testing import CliRunner

    from edgeemo.cli import main

    r, cache = run
    monkeypatch.setenv("EDGEEMO_CACHE", str(cache))
    out = tmp_path / "bundle"
    export_run(r.dir, out, overrides=LOOSE)
    res = CliRunner().invoke(
        main,
        ["train-all", "--from-card", str(out), "--runs-dir", str(tmp_path / "again"), "--cache-dir", str(cache),
         "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    again = open_run(tmp_path / "again" / "mini", None)
    assert again.cfg.digest() == json.loads((out / "card.json").read_text())["config_digest"]
    for stage in ("teacher", "student"):
        a = torch.load(r.dir / stage / "best.pt", weights_only=False)["state_dict"]
        b = torch.load(again.dir / stage / "best.pt", weights_only=False)["state_dict"]
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # config flags beside --from-card would not rerun the card's config: refused
    res = CliRunner().invoke(main, ["train-all", "--from-card", str(out), "--teacher-epochs", "1"])
    assert res.exit_code == 2 and "--from-card reruns the card's config exactly" in res.output
