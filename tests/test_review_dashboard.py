"""The dashboard: yield from the recordings (every reject, sampled passes, sequence numbers),
reject reasons, the model and health from the station's retained status, the last parts."""

from __future__ import annotations

import json
import re
import time

import paho.mqtt.client as mqtt
import pytest

from inspector.review.app import create_app
from inspector.review.config import load_review_config
from inspector.review.figures.linestats import line_yield

from .review_helpers import client_as, make_recordings, seed_dataset, write_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


def test_yield_counts_the_parts_between_sequence_numbers_and_restarts():
    # kept: a reject at 1, a sampled pass at 5, a reject at 10: ten parts, two rejected
    y = line_yield([{"seq": 1, "result": "fail"}, {"seq": 5, "result": "pass"},
                    {"seq": 10, "result": "fail"}])  # fmt: skip
    assert (y.inspected, y.rejected, y.kept) == (10, 2, 3) and y.rate == pytest.approx(0.8)
    # a restart (the numbers start again) counts each run on its own: 10 + 3 parts
    rows = [{"seq": s, "result": "fail" if s % 5 == 0 else "pass"} for s in (1, 10, 3, 5)]
    y = line_yield(rows)
    assert y.inspected == 13 and y.rejected == 2
    assert line_yield([]).rate is None


@pytest.fixture
def dash(tmp_path, broker):
    make_recordings(tmp_path / "rec1", 30)  # seq 0..29, every third passed, all kept
    make_recordings(tmp_path / "rec2", 6, station_seed=1)
    seed_dataset(tmp_path / "data")
    path = write_config(tmp_path)
    path.write_text(
        path.read_text()
        + f"""  stations:
    - name: line1
      config: {tmp_path}/line1.yaml
      golden: {tmp_path}/golden
      models: {tmp_path}/models
      mqtt: {{host: {broker.host}, port: {broker.port}, prefix: inspector/line1}}
"""
    )
    app = create_app(load_review_config(path))
    from inspector.review import auth

    from .review_helpers import PASSWORD

    auth.add_user(app.state.bench.store, "viewer", PASSWORD, "viewer")
    yield app, broker
    app.state.bench.stop()


def line1_once(c, *shown: str, timeout: float = 15) -> str:
    """Station line1's section of the dashboard once it shows every text in ``shown`` (the
    retained messages arrive over the broker), or as it is after ``timeout``."""
    deadline = time.time() + timeout
    while True:
        html = c.get("/dashboard").text
        line1 = html.split('data-station="line1"', 1)[1].split("</section>", 1)[0]
        if all(t in line1 for t in shown) or time.time() > deadline:
            return line1
        time.sleep(0.2)


def test_dashboard_shows_each_station_yield_reasons_model_health_and_last_parts(dash):
    app, broker = dash
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    status = {"state": "online", "model_id": "demo-cnn@0123456789ab", "ts": time.time()}
    pub.publish("inspector/line1/status", json.dumps(status), qos=1, retain=True).wait_for_publish()
    alarm = {"schema": 1, "active": [
        {"station": "line1", "chart": "reject", "rule": "we1_beyond_3s",
         "description": "one point beyond 3 sigma", "since": 1796000000.0},
        {"station": "line7", "chart": "reject", "rule": "ewma", "since": 1796000000.0}]}  # fmt: skip
    pub.publish("inspector/spc/alarm", json.dumps(alarm), qos=1, retain=True).wait_for_publish()
    c, _ = client_as(app, "viewer")
    line1 = line1_once(c, 'data-state="online"', "SPC alarm")
    pub.loop_stop()
    pub.disconnect()
    assert 'data-state="online"' in line1, "health from the station's retained status"
    assert '<code class="model-id">demo-cnn@0123456789ab</code>' in line1
    said = re.search(r'<div class="alarms" role="alert">(.*?)</div>', line1, re.S).group(1)
    assert re.findall(r"<li>(.*?)</li>", said) == [
        "reject chart: one point beyond 3 sigma since 2026-11-30 00:53:20Z"
    ], "the station's own alarm, as a sentence; another station's is not listed"
    # 30 parts by sequence number, 20 rejected: 33.3 % yield
    assert re.search(r'class="num inspected">30<', line1) and 'class="num rejected">20<' in line1
    assert "33.3 %" in line1
    reasons = dict(
        re.findall(r"<tr><td><a [^>]*>(\w+)</a></td><td class=\"num\">(\d+)</td>", line1)
    )
    # each reason opens the inbox on that station's parts of that reason
    href = re.search(r'<a href="([^"]+)">uncertain</a>', line1).group(1).replace("&amp;", "&")
    assert c.get(href).text.count('<td class="pid">') == 4
    assert reasons == {"defect": "16", "uncertain": "4"}  # i % 5 == 4 and failed: uncertain
    strip = re.findall(r'<a href="/part/(\d+)" class="(pass|fail)"', line1)
    assert len(strip) == 24 and strip[0][1] == "fail"  # newest first: seq 29 failed
    newest = app.state.bench.store.latest_parts("line1", 1)[0]
    assert int(strip[0][0]) == newest["id"]
    # a station without a broker in the config: health unknown, the model from its parts
    html = c.get("/dashboard").text
    line2 = html.split('data-station="line2"', 1)[1].split("</section>", 1)[0]
    assert 'data-state="unknown"' in line2 and "the last recorded part" in line2
    assert "SPC alarm" not in line2
    # the page asks for itself again: the strip refreshes
    assert 'hx-get="/dashboard?hours=8.0" hx-trigger="every 5s"' in html


def test_dashboard_needs_a_login(dash):
    app, _ = dash
    from starlette.testclient import TestClient

    r = TestClient(app).get("/dashboard", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_dashboard_says_why_a_station_is_degraded_and_draws_its_spc_chart(dash):
    """A degraded station's status detail is shown beside its state; the SPC service's
    retained reject chart of the station is drawn (rate in % and its upper limit)."""
    app, broker = dash
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    status = {"state": "degraded", "detail": "source ended: folder replay done",
              "model_id": "demo-cnn@0123456789ab", "ts": time.time()}  # fmt: skip
    pub.publish("inspector/line1/status", json.dumps(status), qos=1, retain=True).wait_for_publish()
    points = [{"t": 1796000000.0 + i, "n": 20, "x": x, "rate": x / 20, "upper": 0.3}
              for i, x in enumerate([1, 2, 1, 0, 9])]  # fmt: skip
    chart = {"schema": 1, "station": "line1", "chart": "reject", "center": 0.05,
             "baseline": 2, "points": points, "active": ["we1_beyond_3s"]}  # fmt: skip
    pub.publish("inspector/spc/chart/line1", json.dumps(chart), qos=1, retain=True)
    c, _ = client_as(app, "viewer")
    line1 = line1_once(c, 'data-state="degraded"', "spc-chart")
    pub.loop_stop()
    pub.disconnect()
    assert "degraded: source ended: folder replay done" in line1
    svg = line1.split('class="spc-chart"', 1)[1]
    assert re.search(r'<polyline points="[^"]+" class="line rate"', svg)
    assert re.search(r'<polyline points="[^"]+" class="line limit"', svg)
    assert "% rejected" in svg
