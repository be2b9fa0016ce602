"""The station end to end: real Mosquitto, real ONNX Runtime, real files."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace

import numpy as np

from .contract import validate


def test_mqtt_triggers_give_one_verdict_per_part_with_its_id(make_config, station_factory, line):
    station = station_factory(make_config(trigger="mqtt"))
    station.start()
    assert line.wait_status("online"), line.statuses
    ids = [f"lot7/part-{i:03d}" for i in range(25)]
    for pid in ids:
        line.trigger(pid)
        time.sleep(0.04)
    verdicts = line.wait_for(len(ids))
    time.sleep(0.3)  # nothing more may arrive
    assert sorted(v["part_id"] for v in line.verdicts) == sorted(ids)  # verbatim, no duplicates
    for v in verdicts:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
        assert v["result"] in ("pass", "fail") and not v["_retain"]
        assert v["reason"] in ("ok", "defect")
        assert v["model_id"] == station.classifier.model_id
        assert v["t_trigger"] <= v["t_capture"] <= v["t_verdict"] <= v["deadline"]
        assert v["_received"] <= v["deadline"]
        assert v["latency_ms"]["e2e"] > 0
        stages = [v["latency_ms"][k] for k in ("preprocess", "queue", "inference", "decide")]
        assert all(t >= 0 for t in stages) and sum(stages) <= v["latency_ms"]["e2e"]
        assert set(v["scores"]) == {"good", "defect"}
    # a verdict leaves as soon as it is decided, though the MQTT thread idles between parts
    delivery = sorted(v["_received"] - v["t_verdict"] for v in verdicts)
    assert delivery[len(delivery) // 2] < 0.05, delivery
    # MQTT 5 expiry is set from the part's deadline (2 s): the broker never delivers it late
    assert all(e is not None and 1 <= e <= 2 for e in line.expiry)
    m = station.metrics
    assert m.value("inspector_parts_total") == len(ids)
    assert m.total("inspector_verdicts_total") == len(ids)
    assert m.value("inspector_e2e_seconds_count") == len(ids)


def test_free_run_from_folder_classifies_every_image_correctly(
    make_config, station_factory, line, parts_dir
):
    station = station_factory(make_config(trigger="free-run", loop=False, rate=100))
    station.start()
    files = sorted(p.name for p in parts_dir.rglob("*.png"))
    verdicts = line.wait_for(len(files))
    assert station.source_ended.wait(5)
    assert len({v["part_id"] for v in verdicts}) == len(verdicts) == len(files)
    assert sorted(v["frame"] for v in verdicts) == files
    for v in verdicts:  # the demo model is right on synthetic parts
        assert (v["result"] == "fail") == ("defect" in v["frame"]), v
    # the replay ended: the station says so instead of pretending all is well
    status = line.wait_status("degraded")
    assert status and status["camera"] == "ended"


def test_source_lost_mid_run_fails_parts_and_recovers(
    make_config, station_factory, line, parts_dir, tmp_path
):
    folder = tmp_path / "cam"
    shutil.copytree(parts_dir, folder)
    station = station_factory(make_config(trigger="mqtt", parts=folder))
    station.start()
    assert line.wait_status("online")
    line.trigger("before")
    assert line.wait_for(1)[0]["reason"] in ("ok", "defect")

    hidden = tmp_path / "unplugged"
    folder.rename(hidden)  # the camera goes away
    status = line.wait_status("degraded", timeout=5)
    assert status and status["camera"] == "reconnecting"
    t0 = time.time()
    line.trigger("during")
    v = line.by_id().get("during") or line.wait_for(2)[-1]
    v = line.by_id()["during"]
    assert (v["result"], v["reason"]) == ("fail", "source_lost")
    assert v["_received"] - t0 < 0.5  # failed at once, not at the deadline

    hidden.rename(folder)  # plugged back in
    assert line.wait_status("online", timeout=10)
    line.trigger("after")
    line.wait_for(3)
    assert line.by_id()["after"]["reason"] in ("ok", "defect")
    assert station.source.reopens >= 1
    assert (
        station.metrics.value("inspector_verdicts_total", result="fail", reason="source_lost") == 1
    )


def test_unreadable_frame_fails_that_part_only(
    make_config, station_factory, line, parts_dir, tmp_path
):
    folder = tmp_path / "imgs"
    shutil.copytree(parts_dir, folder)
    (folder / "good" / "00000_zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    n = len(list(folder.rglob("*.png")))
    station = station_factory(make_config(trigger="free-run", parts=folder, loop=False, rate=100))
    station.start()
    verdicts = line.wait_for(n)
    assert len(verdicts) == n
    bad = [v for v in verdicts if v["reason"] == "unreadable_frame"]
    assert (
        len(bad) == 1 and bad[0]["frame"] == "00000_zz_corrupt.png" and bad[0]["result"] == "fail"
    )
    assert sum(v["reason"] in ("ok", "defect") for v in verdicts) == n - 1


def test_model_error_fails_the_parts_and_the_station_keeps_going(
    make_config, station_factory, line
):
    station = station_factory(make_config(trigger="mqtt"))
    real_run = station.classifier.session.run
    broken = {"on": True}

    def flaky_run(*args, **kwargs):
        if broken["on"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_run(*args, **kwargs)

    station.classifier.session.run = flaky_run
    broken["on"] = False
    station.start()  # warm-up used the real path
    broken["on"] = True
    assert line.wait_status("online")
    line.trigger("p1")
    line.wait_for(1)
    v = line.by_id()["p1"]
    assert (v["result"], v["reason"]) == ("fail", "error") and "illegal memory" in v["detail"]
    broken["on"] = False
    line.trigger("p2")
    line.wait_for(2)
    assert line.by_id()["p2"]["reason"] in ("ok", "defect")


def test_nan_scores_count_as_model_error(make_config, station_factory, line):
    station = station_factory(make_config(trigger="mqtt"))
    station.start()
    real_run = station.classifier.session.run
    station.classifier.session.run = lambda *a, **k: [np.full_like(real_run(*a, **k)[0], np.nan)]
    assert line.wait_status("online")
    line.trigger("nan-part")
    line.wait_for(1)
    assert line.by_id()["nan-part"]["reason"] == "error"


def test_slow_model_fails_part_with_timeout_before_its_deadline(make_config, station_factory, line):
    station = station_factory(make_config(trigger="mqtt", deadline_ms=300))
    station.start()
    real_run = station.classifier.session.run

    def slow(*a, **k):
        time.sleep(0.8)
        return real_run(*a, **k)

    station.classifier.session.run = slow
    assert line.wait_status("online")
    line.trigger("slow-1")
    verdicts = line.wait_for(1, timeout=5)
    time.sleep(1.0)  # the late real verdict must never follow
    assert len(line.verdicts) == 1
    v = verdicts[0]
    assert (v["result"], v["reason"]) == ("fail", "timeout")
    assert v["_received"] <= v["deadline"]
    assert station.metrics.value("inspector_deadline_misses_total") == 1


def test_trigger_flood_overflows_into_fail_verdicts_not_silence(make_config, station_factory, line):
    station = station_factory(
        make_config(trigger="mqtt", rate=2, extra="trigger: {type: mqtt, max_pending: 2}\n")
    )
    station.start()
    assert line.wait_status("online")
    for i in range(8):
        line.trigger(f"flood-{i}")
    verdicts = line.wait_for(8, timeout=8)
    assert len(verdicts) == 8
    reasons = [v["reason"] for v in verdicts]
    assert reasons.count("overflow") >= 5
    assert station.metrics.value("inspector_drops_total", what="trigger_overflow") == reasons.count(
        "overflow"
    )


def test_stop_gives_parts_in_flight_their_verdicts_and_goes_offline(
    make_config, station_factory, line
):
    station = station_factory(make_config(trigger="mqtt", rate=1, deadline_ms=5000))
    station.start()
    assert line.wait_status("online")
    for i in range(3):
        line.trigger(f"late-{i}")
    time.sleep(0.2)
    station.stop()
    verdicts = line.wait_for(3, timeout=5)
    assert sorted(v["part_id"] for v in verdicts) == ["late-0", "late-1", "late-2"]
    assert all(v["result"] in ("pass", "fail") for v in verdicts)
    assert line.wait_status("offline", timeout=5)
    for status in line.statuses:
        validate("status", status)
    for v in line.verdicts:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})


def test_parts_that_queue_up_are_classified_in_batches(make_config, station_factory, line):
    station = station_factory(make_config(trigger="free-run", rate=0, loop=True))
    real_run = station.classifier.session.run

    def slowish(*a, **k):
        time.sleep(0.02)
        return real_run(*a, **k)

    station.classifier.session.run = slowish
    station.start()
    time.sleep(1.0)
    station.stop()
    m = station.metrics
    batches = m.value("inspector_batch_size_count")
    parts = m.value("inspector_batch_size_sum")
    assert batches > 0 and parts / batches > 2  # up to max_batch (8) per run
    assert m.value("inspector_parts_total") == m.total("inspector_verdicts_total")


def test_mqtt_3_1_1_works_without_expiry(make_config, station_factory, line):
    cfg = make_config(trigger="mqtt")
    cfg = replace(cfg, mqtt=replace(cfg.mqtt, protocol="3.1.1"))
    station = station_factory(cfg)
    station.start()
    assert line.wait_status("online")
    line.trigger("v311")
    (v,) = line.wait_for(1)
    assert v["part_id"] == "v311" and line.expiry == [None]


def test_a_replay_can_wait_for_room_instead_of_overflowing(
    make_config, station_factory, line, tmp_path
):
    """pipeline.when_full: fail drops parts a slow model cannot take; wait classifies all."""
    delay = tmp_path / "delay_ms"
    delay.write_text("30")
    counts = {}
    for mode in ("fail", "wait"):
        extra = (
            f"pipeline: {{queue_size: 1, when_full: {mode}}}\n"
            f'testing: {{model_delay_file: "{delay}"}}\n'
        )
        cfg = make_config(trigger="free-run", rate=0, loop=False, extra=extra)
        cfg = replace(cfg, model=replace(cfg.model, max_batch=1))
        station = station_factory(cfg)
        line.verdicts.clear()
        station.start()
        verdicts = line.wait_for(12, timeout=10)
        assert len(verdicts) == 12  # every part gets exactly one verdict either way
        counts[mode] = sum(v["reason"] == "overflow" for v in verdicts)
        station.stop()
    assert counts["fail"] >= 3
    assert counts["wait"] == 0


def test_several_classifier_workers_never_mix_up_parts(
    make_config, station_factory, line, parts_dir
):
    """model.workers run batches side by side; each verdict still belongs to its own image."""
    cfg = make_config(trigger="free-run", rate=0, loop=False, extra="pipeline: {when_full: wait}\n")
    cfg = replace(cfg, model=replace(cfg.model, workers=3, max_batch=4))
    station = station_factory(cfg)
    assert station.classifier.workers == 3
    station.start()
    files = sorted(p.name for p in parts_dir.rglob("*.png"))
    verdicts = line.wait_for(len(files))
    assert station.source_ended.wait(5)
    time.sleep(0.2)
    assert len(line.verdicts) == len(files)  # one each, none twice
    assert sorted(v["frame"] for v in verdicts) == files
    for v in verdicts:
        assert (v["result"] == "fail") == ("defect" in v["frame"]), v
    assert {t.name for t in threading.enumerate()} >= {"infer-1", "infer-2", "infer-3"}


def test_decided_parts_do_not_pile_up_until_their_deadline(make_config, station_factory, line):
    """At full speed with a long deadline, the deadline watch keeps only what is in flight
    (plus a bounded slack), not every part of the last minute."""
    from inspector.station import inflight

    cfg = make_config(trigger="free-run", rate=0, loop=True, extra="pipeline: {when_full: wait}\n")
    cfg = replace(cfg, part=replace(cfg.part, deadline_ms=60_000))
    station = station_factory(cfg)
    station.start()
    end = time.monotonic() + 10
    while station.metrics.value("inspector_parts_total") < 3 * inflight.HEAP_SLACK:
        assert time.monotonic() < end, "the station did not get through enough parts"
        time.sleep(0.05)
    kept, waiting = station.inflight.deadline_entries(), len(station.inflight)
    station.stop()
    assert kept <= 4 * waiting + inflight.HEAP_SLACK + 1
