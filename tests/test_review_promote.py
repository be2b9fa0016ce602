"""Promotion from the workbench, end to end and without fakes: a real Mosquitto, a real
station (``inspector run CONFIG`` as a process of its own) whose config folder is read-only
(as under the shipped unit's ``ProtectSystem=strict``), real ONNX models, the real
``inspector verify`` when the station is down, and the workbench served by uvicorn. As root
the config folder's mode does not stop a write, so the tests also compare the folder before
and after, and one test runs ``inspector review`` in a mount namespace where everything but
the workbench's own folders is a read-only bind mount, as the shipped unit's
``ProtectSystem=strict`` with ``ReadWritePaths`` makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from inspector.lab.modelkit import build_contrast_model, synthetic_part
from inspector.review.app import create_app
from inspector.review.config import load_review_config
from inspector.review.work import registry

from .conftest import station_yaml
from .review_helpers import Http, login_http, serve, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")
PREFIX = "inspector/test"


def _tree(folder: Path) -> dict[str, tuple]:
    """Every entry below ``folder`` (and the folder) with its size, mode and times."""
    out = {}
    for p in [folder, *sorted(folder.rglob("*"))]:
        st = os.lstat(p)
        out[str(p.relative_to(folder))] = (st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns)
    return out


def _model(folder: Path, name: str, **kw) -> Path:
    folder.mkdir(parents=True)
    build_contrast_model(folder / "model.onnx", size=32, name=name, **kw)
    assert (folder / "model.json").is_file()
    return folder


def _golden(folder: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(11)
    for label, defect in (("pass", False), ("fail", True)):
        (folder / label).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(folder / label / f"{i:03d}.png"), synthetic_part(rng, defect, 48))
    return folder


class Status:
    """The station's retained status, as any subscriber on the broker sees it."""

    def __init__(self, broker) -> None:
        self.last: dict | None = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on
        self.c.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/status", qos=1)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def _on(self, _c, _u, msg) -> None:
        if msg.payload:
            self.last = json.loads(msg.payload)

    def model_id(self) -> str:
        s = self.last or {}
        return (s.get("model") or {}).get("id") or s.get("model_id") or ""

    def wait(self, pred, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.last is not None and pred(self.last):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def make_plant(tmp_path, parts_dir, station_mqtt: str, review_mqtt: str, answer_s: float = 120):
    """A station config in a read-only folder, its models folder with `current` -> model-a,
    a golden set, a registry with three more models, and a workbench that promotes there.
    ``station_mqtt`` / ``review_mqtt``: each one's ``mqtt:`` mapping (flow YAML)."""
    models = tmp_path / "var" / "models"
    a = _model(models / "model-a", "model-a")
    (models / "current").symlink_to("model-a")
    golden = _golden(tmp_path / "var" / "golden")
    reg = tmp_path / "registry"
    found = {
        "b": _model(reg / "b", "model-b", threshold=0.45),
        "c": _model(reg / "c", "model-c", threshold=0.48),
        # calls half the contrast a defect: some good golden parts fail, the check refuses it
        "strict": _model(reg / "strict", "strict", contrast_at_half=4, threshold=0.3),
    }
    etc = tmp_path / "etc"
    etc.mkdir()
    station_cfg = etc / "station.yaml"
    text = station_yaml(
        models / "current" / "model.onnx",
        parts_dir,
        SimpleNamespace(host="localhost", port=1),
        trigger="free-run",
        rate=20.0,
        extra=f'recorder: {{path: "{tmp_path / "var" / "rec"}"}}\n',
    ).replace("warmup_runs: 1}", f'warmup_runs: 1, golden: "{golden}"}}')
    lines = [f"mqtt: {station_mqtt}" if ln.startswith("mqtt:") else ln for ln in text.splitlines()]
    station_cfg.write_text("\n".join(lines) + "\n")
    first = workbench(tmp_path)[1]  # recordings, dataset, users; its config is extended below
    first.state.bench.stop()
    review_yaml = tmp_path / "review.yaml"
    review_yaml.write_text(
        review_yaml.read_text()
        + f"""  stations:
    - name: test
      config: {station_cfg}
      golden: {golden}
      models: {models}
      answer_timeout_s: {answer_s}
      verify_timeout_s: 120
      mqtt: {review_mqtt}
"""
    )
    os.chmod(etc, 0o555)  # the unit's ProtectSystem=strict: the station's config is read-only
    return {
        "review_yaml": review_yaml,
        "cfg": station_cfg,
        "models": models,
        "a": a,
        "reg": found,
        "etc": etc,
        "etc_before": _tree(etc),
    }


@pytest.fixture
def plant(tmp_path, broker, parts_dir):
    where = f"host: {broker.host}, port: {broker.port}"
    p = make_plant(
        tmp_path,
        parts_dir,
        f"{{{where}, reconnect_max_s: 0.3}}",
        f"{{{where}, prefix: {PREFIX}, username: admin}}",
    )
    p["app"] = create_app(load_review_config(p["review_yaml"]))
    yield p
    p["app"].state.bench.stop()
    os.chmod(p["etc"], 0o755)


class Station:
    """``inspector run CONFIG`` as a process of its own."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "run", str(config)],
            stdout=open(log, "wb"),  # noqa: SIM115 - the process keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _promote(c: Http, token: str, model: str, path="/models/promote") -> tuple[int, float]:
    """POST the promote form; (the promotion's id, the wall time its answer came)."""
    status, body, headers = c.form(path, {"csrf": token, "station": "test", "model": model})
    assert status == 303, body[-2000:]
    return int(headers["location"].rsplit("-", 1)[1]), time.time()


def _follow(app, c: Http, pid: int, timeout: float = 180.0) -> tuple[dict, list[tuple]]:
    """Poll the promotion's block as the page does, and the inbox meanwhile; (the finished
    promotion, each inbox call's (start, end) wall times)."""
    store = app.state.bench.store
    calls = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        t = time.time()
        status, body, _ = c.send("GET", "/")
        calls.append((t, time.time()))
        assert status == 200 and b"part(s)" in body, c.errors
        status, block, _ = c.send("GET", f"/models/promotion/{pid}", headers={"HX-Request": "1"})
        assert status == 200, c.errors
        if b'data-status="running"' not in block:
            return store.promotion(pid), calls
        time.sleep(0.1)
    raise AssertionError(f"promotion {pid} did not end: {store.promotion(pid)}")


def _answered_meanwhile(done: dict, returned_at: float, calls: list[tuple]) -> None:
    """The promote request only started the work, and other pages were answered in full
    while it ran (a promotion on the event loop allows neither)."""
    took = done["ended"] - done["t"]
    assert returned_at < done["ended"], f"the promote answer came after the {took:.1f} s work"
    inside = [c for c in calls if done["t"] <= c[0] and c[1] <= done["ended"]]
    assert len(inside) >= 2, f"{len(inside)} inbox pages answered during the {took:.1f} s work"


def test_promote_through_the_running_station_and_through_the_link_when_it_is_down(
    plant, broker, tmp_path
):
    app, models, reg = plant["app"], plant["models"], plant["reg"]
    id_a, id_b, id_c = (registry.model_id(p) for p in (plant["a"], reg["b"], reg["c"]))
    status = Status(broker)
    station = Station(plant["cfg"], tmp_path / "station.log")
    try:
        assert status.wait(lambda s: s["state"] == "online" and status.model_id() == id_a), (
            status.last,
            station.log.read_text()[-3000:],
        )
        with serve(app) as (host, port):
            c = Http(host, port)
            token = login_http(c, "admin")
            page = c.send("GET", "/models")[1].decode()
            assert f'<code class="running-model">{id_a}</code>' in page, c.errors
            assert "model-a" in page and "registry/b" in page

            # 1. the station runs: the request goes to it; it checks and swaps
            pid, returned = _promote(c, token, "registry/b")
            done, calls = _follow(app, c, pid)
            assert done["status"] == "swapped" and done["via"] == "station", done["verify"]
            _answered_meanwhile(done, returned, calls)
            assert status.wait(lambda s: status.model_id() == id_b, 30), status.last
            assert os.readlink(models / "current") == "registry-b"
            page = c.send("GET", "/models")[1].decode()
            assert f'<code class="running-model">{id_b}</code>' in page
            assert "differs from" not in page

            # 2. a model that fails the station's golden set is refused; nothing changes
            pid, _ = _promote(c, token, "registry/strict")
            done, _ = _follow(app, c, pid)
            assert done["status"] == "refused" and done["via"] == "station", done["verify"]
            assert "golden" in done["verify"]
            assert os.readlink(models / "current") == "registry-b"
            assert not (models / "registry-strict").exists(), "the refused copy is removed"
            time.sleep(1.5)  # a status or two later: still model-b
            assert status.model_id() == id_b

            # 3. the station stops: verify with the real `inspector verify`, then the link
            station.stop()
            assert status.wait(lambda s: s["state"] == "offline", 30), status.last
            pid, returned = _promote(c, token, "registry/c")
            done, calls = _follow(app, c, pid)
            assert done["status"] == "linked" and done["via"] == "link", done["verify"]
            _answered_meanwhile(done, returned, calls)
            assert "inspector verify" in done["verify"] and "golden parts agree" in done["verify"]
            assert os.readlink(models / "current") == "registry-c"
            assert "runs it at its next start" in c.send("GET", "/models")[1].decode()
            pid, _ = _promote(c, token, "registry/strict")
            done, _ = _follow(app, c, pid)
            assert done["status"] == "refused" and done["via"] == "link", done["verify"]
            assert os.readlink(models / "current") == "registry-c"

            # 4. the station started later runs what the link names
            station = Station(plant["cfg"], tmp_path / "station2.log")
            assert status.wait(
                lambda s: s["state"] == "online" and status.model_id() == id_c, 60
            ), (status.last, station.log.read_text()[-3000:])
            page = c.send("GET", "/models")[1].decode()
            assert f'<code class="running-model">{id_c}</code>' in page

            # 5. roll back: the model before (model-b), through the running station again
            status_code, _, headers = c.form("/models/rollback", {"csrf": token, "station": "test"})
            assert status_code == 303
            pid = int(headers["location"].rsplit("-", 1)[1])
            done, _ = _follow(app, c, pid)
            assert done["status"] == "swapped" and done["kind"] == "rollback", done["verify"]
            assert status.wait(lambda s: status.model_id() == id_b, 30)
            assert os.readlink(models / "current") == "registry-b"
            assert c.resets == 0
    finally:
        station.stop()
        status.close()
    # the station's config folder: not one file added, changed or removed
    assert _tree(plant["etc"]) == plant["etc_before"]
    # the workbench wrote only into the models folder it manages (and its database)
    assert sorted(p.name for p in models.iterdir()) == [
        "current",
        "model-a",
        "registry-b",
        "registry-c",
    ]


def test_the_models_page_says_when_the_station_is_unknown(plant):
    app = plant["app"]
    from starlette.testclient import TestClient

    from .review_helpers import PASSWORD, csrf_of

    c = TestClient(app)
    token = csrf_of(c.get("/login").text)
    c.post("/login", data={"name": "viewer", "password": PASSWORD, "csrf": token})
    page = c.get("/models").text
    assert "promotion needs the admin role" in page
    assert "unknown (no status heard)" in page  # no station has published a status
    r = c.get("/models/promotion/99999999999999999999")
    assert r.status_code == 404


def test_only_the_admin_user_gets_a_promotion_through_the_locked_down_broker(tmp_path, parts_dir):
    """deploy/mosquitto's broker (TLS, passwords, the shipped ACL): a workbench configured
    with a user other than admin sees the station's status but its request never arrives,
    so nothing changes; as admin, the station swaps."""
    from starlette.testclient import TestClient

    from inspector.lab.broker import free_port, wait_for_port

    from .review_helpers import PASSWORD, csrf_of
    from .test_deploy import DEPLOY

    out, port = tmp_path / "broker", free_port()
    broker = subprocess.Popen(
        [str(DEPLOY / "mosquitto" / "dev-broker.sh"), str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    station = None
    try:
        assert wait_for_port("127.0.0.1", port, 20)
        users = dict(line.split(":", 1) for line in (out / "passwords.txt").read_text().split())
        for user in ("inspector", "viewer", "admin"):
            (tmp_path / f"{user}.pw").write_text(users[user])

        def mqtt_of(user: str, prefix: str = "") -> str:
            return (
                f'{{host: localhost, port: {port}, username: {user}, {prefix}password_file: "'
                f'{tmp_path / (user + ".pw")}", tls: {{ca: "{out / "ca.crt"}"}}}}'
            )

        p = make_plant(
            tmp_path, parts_dir, mqtt_of("inspector"), mqtt_of("viewer", f"prefix: {PREFIX}, "), 4
        )
        id_a, id_b = registry.model_id(p["a"]), registry.model_id(p["reg"]["b"])
        station = Station(p["cfg"], tmp_path / "station.log")

        def promote_as_admin_of_the_workbench(app) -> dict:
            watch = app.state.bench.promoter.watches["test"]
            end = time.monotonic() + 60
            while not watch.running() and time.monotonic() < end:
                time.sleep(0.1)
            assert watch.running(), (watch.snapshot(), station.log.read_text()[-3000:])
            c = TestClient(app)
            token = csrf_of(c.get("/login").text)
            c.post("/login", data={"name": "admin", "password": PASSWORD, "csrf": token})
            token = csrf_of(c.get("/models").text)
            r = c.post(
                "/models/promote",
                data={"csrf": token, "station": "test", "model": "registry/b"},
                follow_redirects=False,
            )
            assert r.status_code == 303
            pid = int(r.headers["location"].rsplit("-", 1)[1])
            app.state.bench.promoter.join(pid, 120)
            return app.state.bench.store.promotion(pid)

        app = create_app(load_review_config(p["review_yaml"]))
        try:
            done = promote_as_admin_of_the_workbench(app)
            watch = app.state.bench.promoter.watches["test"]
            assert done["status"] == "error" and "no answer" in done["verify"], done["verify"]
            assert os.readlink(p["models"] / "current") == "model-a"
            time.sleep(1.5)
            assert watch.snapshot()["model_id"] == id_a, "the request never reached the station"
        finally:
            app.state.bench.stop()

        review = p["review_yaml"]
        review.write_text(
            review.read_text()
            .replace("username: viewer", "username: admin")
            .replace("viewer.pw", "admin.pw")
        )
        app = create_app(load_review_config(review))
        try:
            done = promote_as_admin_of_the_workbench(app)
            assert done["status"] == "swapped", done["verify"]
            watch = app.state.bench.promoter.watches["test"]
            end = time.monotonic() + 30
            while watch.snapshot()["model_id"] != id_b and time.monotonic() < end:
                time.sleep(0.1)
            assert watch.snapshot()["model_id"] == id_b
            assert os.readlink(p["models"] / "current") == "registry-b"
        finally:
            app.state.bench.stop()
        assert _tree(p["etc"]) == p["etc_before"]
    finally:
        if station is not None:
            station.stop()
        os.chmod(tmp_path / "etc", 0o755)
        broker.terminate()
        broker.wait(10)


def test_a_station_that_cannot_be_seen_is_left_alone(tmp_path, parts_dir):
    """No broker where the workbench looks: it cannot tell whether the station runs, so it
    neither asks nor moves the link."""
    from inspector.lab.broker import free_port

    nowhere = f"{{host: 127.0.0.1, port: {free_port()}, prefix: {PREFIX}, username: admin}}"
    p = make_plant(tmp_path, parts_dir, nowhere, nowhere)
    app = create_app(load_review_config(p["review_yaml"]))
    try:
        b = app.state.bench
        station = b.cfg.models.stations[0]
        pid = b.promoter.start(station, "registry/b", p["reg"]["b"], "admin")
        b.promoter.join(pid, 60)
        done = b.store.promotion(pid)
        assert done["status"] == "error" and "cannot tell whether" in done["verify"]
        assert os.readlink(p["models"] / "current") == "model-a"
        assert not (p["models"] / "registry-b").exists(), "the unused copy is removed"
    finally:
        app.state.bench.stop()
        os.chmod(p["etc"], 0o755)


def _unshare_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return r.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare -m for a ro bind mount")
def test_the_workbench_process_promotes_on_a_read_only_file_system(tmp_path, broker, parts_dir):
    """``inspector review`` as its own process in a mount namespace where everything under the
    test folder is read-only except the workbench's own folders (ProtectSystem=strict with
    ReadWritePaths, as the shipped unit has it): a write anywhere else fails, so a promotion
    that passes here writes nowhere else, through the station and through the link."""
    import re

    from inspector.lab.broker import free_port, wait_for_port

    where = f"host: {broker.host}, port: {broker.port}"
    p = make_plant(
        tmp_path,
        parts_dir,
        f"{{{where}, reconnect_max_s: 0.3}}",
        f"{{{where}, prefix: {PREFIX}, username: admin}}",
    )
    port = free_port()
    review = p["review_yaml"]
    review.write_text(review.read_text() + f"server: {{host: 127.0.0.1, port: {port}}}\n")
    writable = ["var", "db", "cache", "data", "runs"]
    for w in writable:
        (tmp_path / w).mkdir(exist_ok=True)
    t = str(tmp_path)
    script = " && ".join(
        [f"mount --bind {t} {t}", f"mount -o remount,bind,ro {t}"]
        + [f"mount --bind {t}/{w} {t}/{w} && mount -o remount,bind,rw {t}/{w}" for w in writable]
        + [f"(touch {t}/etc/probe 2>/dev/null && exit 3 || true)"]
        + [f'exec "{sys.executable}" -m inspector.cli review --config {review}']
    )
    log = open(tmp_path / "var" / "review.log", "wb")  # noqa: SIM115 - the process keeps it
    server = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=log, stderr=log)
    status = Status(broker)
    station = Station(p["cfg"], tmp_path / "var" / "station.log")
    id_b, id_c = registry.model_id(p["reg"]["b"]), registry.model_id(p["reg"]["c"])

    def follow(c: Http, pid: int) -> tuple[str, str]:
        end = time.monotonic() + 180
        while time.monotonic() < end:
            code, block, _ = c.send("GET", f"/models/promotion/{pid}", headers={"HX-Request": "1"})
            assert code == 200
            state = re.search(rb'class="promotion"[^>]*data-status="(\w+)"', block).group(1)
            if state != b"running":
                return state.decode(), block.decode()
            time.sleep(0.2)
        raise AssertionError(f"promotion {pid} did not end")

    try:
        assert wait_for_port("127.0.0.1", port, 60), (tmp_path / "var" / "review.log").read_text()
        assert status.wait(lambda s: s["state"] == "online", 60), station.log.read_text()[-2000:]
        c = Http("127.0.0.1", port)
        token = login_http(c, "admin")
        pid, _ = _promote(c, token, "registry/b")
        state, block = follow(c, pid)
        assert state == "swapped", block
        assert status.wait(lambda s: status.model_id() == id_b, 30)
        assert os.readlink(p["models"] / "current") == "registry-b"
        station.stop()
        assert status.wait(lambda s: s["state"] == "offline", 30)
        pid, _ = _promote(c, token, "registry/c")
        state, block = follow(c, pid)
        assert state == "linked", block
        assert os.readlink(p["models"] / "current") == "registry-c"
        station = Station(p["cfg"], tmp_path / "var" / "station2.log")
        assert status.wait(lambda s: s["state"] == "online" and status.model_id() == id_c, 60)
    finally:
        station.stop()
        status.close()
        server.terminate()
        server.wait(20)
        log.close()
        os.chmod(p["etc"], 0o755)
    assert "Read-only file system" not in (tmp_path / "var" / "review.log").read_text()
