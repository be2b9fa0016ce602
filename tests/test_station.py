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
        assert v["model_id"] == station.unit.classifier.model_id
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
    v = line.wait_for(2, timeout=2)[-1]  # the verdict that came after "before"
    assert v["part_id"] == "during" and (v["result"], v["reason"]) == ("fail", "source_lost")
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
    real_run = station.unit.classifier.session.run
    broken = {"on": True}

    def flaky_run(*args, **kwargs):
        if broken["on"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_run(*args, **kwargs)

    station.unit.classifier.session.run = flaky_run
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
    real_run = station.unit.classifier.session.run
    station.unit.classifier.session.run = lambda *a, **k: [
        np.full_like(real_run(*a, **k)[0], np.nan)
    ]
    assert line.wait_status("online")
    line.trigger("nan-part")
    line.wait_for(1)
    assert line.by_id()["nan-part"]["reason"] == "error"


def test_slow_model_fails_part_with_timeout_before_its_deadline(make_config, station_factory, line):
    # a margin a loaded line PC needs: the fail verdict is sent 80 ms before the deadline
    cfg = make_config(trigger="mqtt", deadline_ms=300, timeout_margin_ms=80)
    station = station_factory(cfg)
    station.start()
    real_run = station.unit.classifier.session.run

    def slow(*a, **k):
        time.sleep(0.8)
        return real_run(*a, **k)

    station.unit.classifier.session.run = slow
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
    real_run = station.unit.classifier.session.run

    def slowish(*a, **k):
        time.sleep(0.02)
        return real_run(*a, **k)

    station.unit.classifier.session.run = slowish
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
    assert station.unit.classifier.workers == 3
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


def _one_worker(cfg):
    return replace(cfg, model=replace(cfg.model, workers=1))


def test_a_part_timed_out_while_its_batch_forms_is_skipped_and_its_batch_classified(
    make_config, station_factory, line, tmp_path
):
    """The watchdog fails a part between its batch forming and the copy into the model's
    input: that part keeps its one 'timeout' verdict, the rest of its batch is classified,
    and the worker goes on with the parts after it."""
    from inspector.contract.records import Reason

    delay = tmp_path / "delay_ms"
    cfg = make_config(trigger="mqtt", extra=f'testing: {{model_delay_file: "{delay}"}}\n')
    station = station_factory(_one_worker(cfg))
    formed = station.inflight.live

    def formed_then_timed_out(parts):
        live = formed(parts)
        for part in live:
            if part.part_id == "late":
                station._fail(part, Reason.TIMEOUT, "no verdict before the part's deadline")
        return live

    station.inflight.live = formed_then_timed_out
    station.start()
    assert line.wait_status("online")
    delay.write_text("400")
    line.trigger("first")  # the only worker is busy with it while the next two queue up
    time.sleep(0.15)
    line.trigger("late")
    line.trigger("other")
    time.sleep(0.1)
    delay.write_text("0")
    assert len(line.wait_for(3)) == 3
    line.trigger("after")
    line.wait_for(4)
    time.sleep(0.3)  # nothing more may arrive
    got = line.by_id()
    assert len(line.verdicts) == 4
    assert got["late"]["reason"] == "timeout"
    for pid in ("first", "other", "after"):
        assert got[pid]["reason"] in ("ok", "defect"), got[pid]
    assert got["other"]["_received"] < got["other"]["deadline"] - 1  # not failed at its deadline
    assert station.metrics.value("inspector_batch_size_sum") == 3  # first, other, after


def test_an_unexpected_error_in_a_batch_fails_its_parts_and_the_worker_goes_on(
    make_config, station_factory, line, caplog
):
    station = station_factory(_one_worker(make_config(trigger="mqtt")))
    decide = station.unit.decider.decide
    broken = {"on": True}

    def flaky_decide(row):
        if broken["on"]:
            raise KeyError("scratch")
        return decide(row)

    station.unit.decider.decide = flaky_decide
    station.start()
    assert line.wait_status("online")
    line.trigger("p1")
    (v,) = line.wait_for(1)
    assert (v["result"], v["reason"]) == ("fail", "error") and "KeyError" in v["detail"]
    assert v["_received"] < v["deadline"] - 1  # at once, not when the part's deadline passed
    logged = [r for r in caplog.records if "batch of 1 parts failed" in r.getMessage()]
    assert logged and logged[0].exc_info  # with the traceback
    broken["on"] = False
    line.trigger("p2")
    line.wait_for(2)
    assert line.by_id()["p2"]["reason"] in ("ok", "defect")


def test_io_binding_run_error_fails_the_parts_and_the_station_keeps_going(
    make_config, station_factory, line
):
    """The IO-binding path (the default with a GPU; forced on here) failing at run time."""
    cfg = make_config(trigger="mqtt")
    station = station_factory(replace(cfg, model=replace(cfg.model, io_binding="on", workers=1)))
    station.start()
    assert station.unit.classifier.io_binding  # warm-up kept it
    session = station.unit.classifier.session
    bound_run = session.run_with_iobinding
    broken = {"on": True}

    def flaky_bound_run(*args, **kwargs):
        if broken["on"]:
            raise RuntimeError("CUDA failure 700: an illegal memory access was encountered")
        return bound_run(*args, **kwargs)

    session.run_with_iobinding = flaky_bound_run
    session.run = None  # the plain path is not the one under test
    assert line.wait_status("online")
    line.trigger("b1")
    (v,) = line.wait_for(1)
    assert (v["result"], v["reason"]) == ("fail", "error") and "illegal memory" in v["detail"]
    broken["on"] = False
    line.trigger("b2")
    line.wait_for(2)
    assert line.by_id()["b2"]["reason"] in ("ok", "defect")


def _health(station) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{station.http.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_health(station, code: int, timeout: float = 5.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        got, body = _health(station)
        if got == code or time.monotonic() > end:
            assert got == code, body
            return body
        time.sleep(0.05)


def test_health_is_503_while_a_classifier_worker_is_stuck(
    make_config, station_factory, line, tmp_path
):
    delay = tmp_path / "delay_ms"
    cfg = make_config(trigger="mqtt", extra=f'testing: {{model_delay_file: "{delay}"}}\n')
    cfg = replace(cfg, metrics=replace(cfg.metrics, max_frame_age_s=1.0))
    station = station_factory(cfg)
    station.start()
    assert line.wait_status("online")
    _wait_health(station, 200)
    delay.write_text("3000")  # the model hangs for 3 s on the next part
    line.trigger("stuck")
    body = _wait_health(station, 503, timeout=2.5)
    assert "classifier worker infer-" in body["reason"] and "stuck" in body["reason"]
    assert body["broker_connected"] and body["camera"] == "ok"
    delay.unlink()
    _wait_health(station, 200, timeout=5)


def test_health_of_a_triggered_camera_idle_between_parts_and_stuck_on_one(
    make_config, station_factory, line, tmp_path, parts_dir, monkeypatch
):
    """trigger.type camera: no frame for long is normal (no part came); 200 while the camera
    and the broker are connected. The capture loop stuck on a frame is a 503."""
    import cv2

    from inspector.station import pipeline
    from inspector.station.sources import SpoolSourceConfig

    spool = tmp_path / "spool"
    spool.mkdir()
    cfg = make_config(trigger="camera")
    cfg = replace(cfg, source=SpoolSourceConfig(path=spool))
    cfg = replace(cfg, metrics=replace(cfg.metrics, max_frame_age_s=1.0))
    real_preprocess = pipeline.preprocess
    release = threading.Event()
    release.set()
    monkeypatch.setattr(
        pipeline, "preprocess", lambda *a, **k: release.wait(10) and real_preprocess(*a, **k)
    )
    station = station_factory(cfg)
    station.start()
    assert line.wait_status("online")
    time.sleep(1.5)  # longer than max_frame_age_s without a part
    body = _wait_health(station, 200, timeout=0)
    assert body["last_frame_age_s"] is None and body["camera"] == "ok" and body["reason"] == ""

    release.clear()  # the next frame hangs in preprocessing
    image = cv2.imread(str(next(parts_dir.rglob("*.png"))))
    cv2.imwrite(str(tmp_path / "part-1.png"), image)
    (tmp_path / "part-1.png").rename(spool / "part-1.png")
    body = _wait_health(station, 503, timeout=3)
    assert "capture loop stuck on a frame" in body["reason"]
    release.set()
    (v,) = line.wait_for(1)
    assert v["frame"] == "part-1.png"
    _wait_health(station, 200, timeout=3)


def test_frames_that_do_not_fit_the_geometry_degrade_the_station_until_they_fit_again(
    make_config, station_factory, line, parts_dir, tmp_path
):
    """Someone changes the camera's resolution: the frames really are smaller than the model's
    region of interest. Each part fails as unreadable with the reason, the station is degraded
    while it lasts and online again once the frames fit."""
    import cv2

    from .test_unit_acceptance import roi_model

    model = roi_model(tmp_path / "roi.onnx", roi=(4, 4, 40, 40))  # needs 44x44 frames at least
    camera = tmp_path / "cam"
    shutil.copytree(parts_dir, camera)
    images = sorted(camera.rglob("*.png"))
    originals = {p: p.read_bytes() for p in images}

    def frames_of(size: int | None) -> None:
        for p in images:
            tmp = p.with_name("new-" + p.name)  # same extension: the writer goes by it
            if size is None:
                tmp.write_bytes(originals[p])
            else:
                frame = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                cv2.imwrite(str(tmp), cv2.resize(frame, (size, size)))
            tmp.replace(p)  # the camera never hands over half a file

    cfg = make_config(
        trigger="mqtt",
        model=model,
        parts=camera,
        extra="preprocess: {roi: [4, 4, 40, 40]}\n",
    )
    cfg = replace(cfg, source=replace(cfg.source, cache_mb=0.0))  # read each frame as it is now
    station = station_factory(cfg)
    station.start()
    assert line.wait_status("online")
    line.trigger("fits-before")
    assert line.wait_for(1)[0]["reason"] in ("ok", "defect")

    frames_of(32)  # the camera now sends 32x32 frames
    time.sleep(0.3)  # frames read before the change have gone by
    line.trigger("odd")
    v = line.wait_for(2)[-1]
    assert v["part_id"] == "odd"
    assert (v["result"], v["reason"]) == ("fail", "unreadable_frame")
    assert "outside the 32x32 frame" in v["detail"], v["detail"]
    status = line.wait_status("degraded", timeout=3)
    assert status and status["camera"] == "ok" and "32x32" in status["detail"]
    validate("status", status)
    code, body = _health(station)
    assert code == 503 and body["state"] == "degraded" and "32x32" in body["reason"]

    frames_of(None)  # back to the resolution the model was trained for
    time.sleep(0.3)
    line.trigger("fits")
    line.wait_for(3)
    assert line.by_id()["fits"]["reason"] in ("ok", "defect")
    status = line.wait_status("online", timeout=3)
    assert status and status["detail"] == ""
    assert _health(station)[0] == 200
