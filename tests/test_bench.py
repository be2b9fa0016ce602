"""`inspector bench` measures the model alone and the station side by side and writes JSON."""

from __future__ import annotations

import json

import pytest

from inspector.cli import main


def test_bench_writes_the_side_by_side_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--frames", "300", "--paced-fps", "50", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["bare"]["throughput_fps"] > 0 and r["station"]["throughput_fps"] > 0
    assert r["ratios"]["station_over_bare_throughput"] > 0
    # the model alone is measured before and after the station; the ratio uses the mean
    before, after = r["bare"]["batch8"], r["bare"]["batch8_after_station"]
    mean = (before["throughput_fps"] + after["throughput_fps"]) / 2
    assert abs(r["bare"]["throughput_fps"] - mean) <= 0.1
    assert abs(r["bare"]["drift"] - (after["throughput_fps"] / before["throughput_fps"] - 1)) < 1e-3
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
    # the same station with verdicts kept in-process: the pipeline's cost told from MQTT's
    alone = r["station"]["without_mqtt"]
    assert alone["classified"] >= 300 and alone["subscriber"].startswith("in-process")
    assert (
        "delivery" not in alone["stage_latency_ms"] and "mosquitto" not in alone["cpu_us_per_part"]
    )
    ratio = alone["throughput_fps"] / r["bare"]["throughput_fps"]
    assert abs(r["ratios"]["station_without_mqtt_over_bare_throughput"] - ratio) < 1e-3
    gap = 1e6 / r["station"]["throughput_fps"] - 1e6 / alone["throughput_fps"]
    assert abs(r["ratios"]["mqtt_us_per_part"] - gap) < 0.1
    # the Keras baseline: the demo model's twin (demo.keras), run the way users would
    assert r["keras"]["call_batch1"]["throughput_fps"] > 0
    assert r["keras"]["predict_batch1"]["latency_ms"]["p50"] > 0
    assert r["ratios"]["ort_over_keras_batch1"] > 1  # ONNX Runtime is faster per frame
    assert r["machine"]["providers"] == ["CPUExecutionProvider"]
    assert r["station"]["paced"]["frames"] >= 300
    # latency per stage, exact percentiles from every verdict's own timings
    for run in ("paced", "full_speed"):
        stages = r["station"][run]["stage_latency_ms"]
        assert set(stages) == {"preprocess", "queue", "inference", "decide", "delivery"}
        assert all(0 <= s["p50"] <= s["p99"] for s in stages.values())
        # the stages of a part add up to (a little less than) its trigger-to-received time
        assert sum(s["p50"] for s in stages.values()) <= r["station"][run]["e2e_latency_ms"]["p99"]
    # the bench's parts decided as the station decides them: each rate with k of n and its
    # exact interval, beside the bounds the demo model's threshold reported on validation
    a = r["accuracy"]
    assert a["parts"] == 64 and a["method"] == "clopper-pearson" and a["level"] == 0.95
    e, f = a["escape_rate"], a["false_reject_rate"]
    assert e["n"] + f["n"] == 64 and e["n"] > 0 and f["n"] > 0
    assert e["interval"][0] <= e["rate"] <= e["interval"][1]
    t = a["threshold"]["defect"]
    assert t["escape_rate"]["n"] > 0 and t["escape_rate"]["upper"] is not None
    assert t["on"] == "validation" and set(t["false_reject_rate"]) >= {"k", "n", "upper"}
    printed = capsys.readouterr().out
    assert "station/bare throughput" in printed
    assert (
        f"escapes {e['k']} of {e['n']}" in printed and "threshold defect on validation" in printed
    )


def test_every_accuracy_figure_carries_k_of_n_and_the_exact_interval():
    from inspector.lab.scorecard import accuracy, accuracy_line, interval
    from training.common import bounds

    for k, n in ((0, 10), (3, 100), (7, 7), (1, 2000), (40, 64)):
        ours, ref = interval(k, n), bounds.interval(k, n)
        assert ours[0] == pytest.approx(ref[0], abs=1e-9) and ours[1] == pytest.approx(
            ref[1], abs=1e-9
        )
    manifest = {
        "thresholds": {
            "defect": {
                "value": 0.4,
                "policy": "max_escape_rate",
                "target": 0.02,
                "confidence": {
                    "on": "validation",
                    "level": 0.95,
                    "escape_rate": bounds.rate_block(2, 300),
                    "false_reject_rate": bounds.rate_block(9, 700),
                },
            }
        }
    }
    defect = [True] * 20 + [False] * 80
    failed = [True] * 19 + [False] + [True] * 3 + [False] * 77
    a = accuracy(defect, failed, manifest)
    assert (a["escape_rate"]["k"], a["escape_rate"]["n"]) == (1, 20)
    assert (a["false_reject_rate"]["k"], a["false_reject_rate"]["n"]) == (3, 80)
    assert a["escape_rate"]["interval"] == pytest.approx(list(bounds.interval(1, 20)), abs=1e-6)
    t = a["threshold"]["defect"]
    assert t["escape_rate"]["upper"] == pytest.approx(bounds.upper(2, 300))
    line = accuracy_line(a)
    assert "escapes 1 of 20 = 5.0 % (0.1 % to 24.9 %)" in line
    assert "threshold defect on validation: escapes 2 of 300" in line
    # a model without bounds in its manifest: the figures still carry theirs
    assert accuracy(defect, failed, {"thresholds": {"defect": {"value": 0.5}}})["threshold"] is None


def test_both_subscribers_time_every_verdict_and_its_stages(broker, tmp_path, monkeypatch):
    """mosquitto_sub when installed, else a paho subscriber: the same lines, the same result."""
    import shutil
    import time

    import paho.mqtt.client as mqtt

    from inspector.lab import benchgate

    kinds = ["paho"]
    if shutil.which("mosquitto_sub") and shutil.which("stdbuf"):
        kinds.append("mosquitto_sub")
    real_which = shutil.which
    for kind in kinds:
        if kind == "paho":
            monkeypatch.setattr(
                shutil, "which", lambda n: None if n == "mosquitto_sub" else real_which(n)
            )
        else:
            monkeypatch.setattr(shutil, "which", real_which)
        sub = benchgate.VerdictTimer(broker, f"bench/{kind}/verdict", 3, tmp_path)
        assert sub.kind == kind
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        now = time.time()
        for _ in range(3):
            v = {"reason": "ok", "t_trigger": now - 0.010, "t_verdict": now - 0.002}
            v["latency_ms"] = {"preprocess": 0.5, "queue": 1.0, "inference": 2.0, "decide": 0.1}
            pub.publish(f"bench/{kind}/verdict", json.dumps(v), qos=1).wait_for_publish(2)
        deadline = time.time() + 10
        while sub.running() and time.time() < deadline:
            time.sleep(0.05)
        pub.loop_stop()
        r = sub.result()
        assert r["reasons"] == {"ok": 3} and len(r["latency_ms"]) == 3
        assert all(lat >= 10.0 for lat in r["latency_ms"])  # trigger 10 ms before sending
        assert r["stages"]["inference"] == [2.0, 2.0, 2.0]
        assert all(d >= 2.0 for d in r["stages"]["delivery"])
