"""`edgeemo bench`: every row measured, numbers sane, JSON written, peak RSS from the runtime process itself."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeemo.cli import main
from tests.runtime_fixtures import make_test_bundle


def test_bench_table_and_json(tmp_path):
    bundle = make_test_bundle(tmp_path, int8=True)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--bundle", str(bundle), "--runs", "50", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "student onnx int8" in result.output and "student onnx fp32" in result.output
    data = json.loads(out.read_text())
    for name, row in data["rows"].items():
        assert 0 < row["latency_ms_median"] <= row["latency_ms_p95"], name
        assert row["batch8_windows_per_s"] > 0
        assert 0 < row["runtime_rtf"] < 1.0  # faster than real time even on a loaded CI core
        assert row["runtime_windows"] >= 100  # 60 s at 2 Hz
        assert 10 < row["runtime_peak_rss_mb"] < 1000
        assert 0 < row["runtime_import_s"] < 5
    fp32, int8 = data["rows"]["student onnx fp32"], data["rows"]["student onnx int8"]
    assert int8["file_mb"] == pytest.approx((bundle / "model.int8.onnx").stat().st_size / 1e6)
    assert fp32["file_mb"] == pytest.approx((bundle / "model.onnx").stat().st_size / 1e6)
