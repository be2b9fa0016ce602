"""`inspector bench` measures the model alone and the station side by side and writes JSON."""

from __future__ import annotations

import json

from inspector.cli import main


def test_bench_writes_the_side_by_side_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--frames", "300", "--paced-fps", "50", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["bare"]["throughput_fps"] > 0 and r["station"]["throughput_fps"] > 0
    assert r["ratios"]["station_over_bare_throughput"] > 0
    assert r["ratios"]["e2e_p99_minus_bare_p99_ms"] is not None
    # the Keras baseline: the demo model's twin (demo.keras), run the way users would
    assert r["keras"]["call_batch1"]["throughput_fps"] > 0
    assert r["keras"]["predict_batch1"]["latency_ms"]["p50"] > 0
    assert r["ratios"]["ort_over_keras_batch1"] > 1  # ONNX Runtime is faster per frame
    assert r["machine"]["providers"] == ["CPUExecutionProvider"]
    assert r["station"]["paced"]["frames"] >= 300
    assert "station/bare throughput" in capsys.readouterr().out
