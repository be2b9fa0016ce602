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
    # the model alone with the station's parallelism, for the second ratio
    par = r["bare"]["parallel"]
    assert par["workers"] == r["machine"]["station_workers"] and par["throughput_fps"] > 0
    assert r["ratios"]["station_over_bare_parallel_throughput"] > 0
    # the subscriber that times verdicts is mosquitto_sub when installed (light on the CPU)
    assert r["station"]["full_speed"]["subscriber"] in ("mosquitto_sub", "paho")
    assert r["station"]["full_speed"]["classified"] >= 300
    # where the CPU went, per part, by thread (and broker, subscriber)
    cpu = r["station"]["full_speed"]["cpu_us_per_part"]
    assert cpu["infer"] > 0 and {"capture", "mqtt"} <= set(cpu)
    assert r["ratios"]["e2e_p99_minus_bare_p99_ms"] is not None
    # the Keras baseline: the demo model's twin (demo.keras), run the way users would
    assert r["keras"]["call_batch1"]["throughput_fps"] > 0
    assert r["keras"]["predict_batch1"]["latency_ms"]["p50"] > 0
    assert r["ratios"]["ort_over_keras_batch1"] > 1  # ONNX Runtime is faster per frame
    assert r["machine"]["providers"] == ["CPUExecutionProvider"]
    assert r["station"]["paced"]["frames"] >= 300
    assert "station/bare throughput" in capsys.readouterr().out
