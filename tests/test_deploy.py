"""The shipped deployment: a locked-down broker, systemd units, containers, example configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from inspector.cli import main
from inspector.contract.mqtt import MqttSection, TlsSection
from inspector.gate.config import GateConfig, GateHttpSection, GateSection
from inspector.gate.service import GateService
from inspector.lab.broker import free_port, wait_for_port
from inspector.station.config import load_config

from .conftest import station_yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """deploy/mosquitto/dev-broker.sh: the production config with TLS, passwords and the ACL."""
    out = tmp_path_factory.mktemp("broker")
    port = free_port()
    proc = subprocess.Popen(
        [str(DEPLOY / "mosquitto" / "dev-broker.sh"), str(out), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 20), (
            proc.stdout.read().decode() if proc.poll() else ""
        )
        users = dict(line.split(":", 1) for line in (out / "passwords.txt").read_text().split())
        yield out, port, users
    finally:
        proc.terminate()
        proc.wait(10)


def tls_client(out: Path, port: int, user: str | None, password: str | None, client_id: str):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(out / "ca.crt"))
    if user:
        c.username_pw_set(user, password)
    result = {}
    c.on_connect = lambda cl, u, f, rc, p=None: result.setdefault("rc", rc)
    c.connect("localhost", port)
    c.loop_start()
    end = time.monotonic() + 5
    while "rc" not in result and time.monotonic() < end:
        time.sleep(0.02)
    return c, result.get("rc")


def secure_station_config(secure_broker, tmp_path, model_path, parts_dir):
    """A test station's config pointed at the secure broker: TLS and the inspector's password."""
    out, port, users = secure_broker
    (out / "inspector.pw").write_text(users["inspector"])
    from types import SimpleNamespace

    B = SimpleNamespace(host="localhost", port=port)  # noqa: N806
    cfg_path = tmp_path / "station.yaml"
    cfg_path.write_text(
        station_yaml(model_path, parts_dir, B) + f'recorder: {{path: "{tmp_path}/rec"}}\n'
    )
    cfg = load_config(cfg_path)
    tls = TlsSection(ca=out / "ca.crt")
    return replace(
        cfg,
        mqtt=replace(cfg.mqtt, username="inspector", password_file=out / "inspector.pw", tls=tls),
    )


def secure_gate(secure_broker, prefix: str) -> GateService:
    out, port, users = secure_broker
    return GateService(
        GateConfig(
            gate=GateSection(id="g", station_prefix=prefix, travel_ms=3000),
            mqtt=MqttSection(
                host="localhost",
                port=port,
                username="gate",
                password=users["gate"],
                tls=TlsSection(ca=out / "ca.crt"),
            ),
            http=GateHttpSection(port=0),
        )
    )


def test_tls_password_and_acl_hold_and_verdicts_reach_the_gate(
    secure_broker, tmp_path, model_path, parts_dir, station_factory
):
    out, port, users = secure_broker
    # the station, over TLS with its password
    cfg = secure_station_config(secure_broker, tmp_path, model_path, parts_dir)
    station = station_factory(cfg)
    station.start()
    assert station.publisher.connected.wait(10), station.publisher.last_error

    gate = secure_gate(secure_broker, cfg.prefix)
    gate.start()
    try:
        assert gate.connected.wait(10)
        time.sleep(1.5)  # the station's status heartbeat reaches the gate
        plc, rc = tls_client(out, port, "plc", users["plc"], "plc")
        assert rc is not None and not rc.is_failure
        for i in range(3):
            plc.publish(
                f"{cfg.prefix}/trigger", json.dumps({"part_id": f"S-{i}", "ts": time.time()}), qos=1
            )
        end = time.monotonic() + 10
        while len(gate.core.decided) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        decided = {p: g.reason for p, g in gate.core.decided.items()}
        assert set(decided) == {"S-0", "S-1", "S-2"}
        assert set(decided.values()) <= {"pass", "defect"}  # real verdicts, not fail-safe

        # no password: refused
        anon, rc = tls_client(out, port, None, None, "anon")
        assert rc is None or rc.is_failure
        anon.loop_stop()

        # a password but not the right: a forged verdict never reaches the gate
        def forge(user: str, part_id: str) -> None:
            c, rc = tls_client(out, port, user, users[user], f"forger-{user}")
            assert rc is not None and not rc.is_failure
            info = c.publish(
                f"{cfg.prefix}/verdict",
                json.dumps({"part_id": part_id, "result": "pass", "reason": "ok", "seq": 99}),
                qos=1,
            )
            info.wait_for_publish(5)
            time.sleep(0.3)
            c.loop_stop()
            c.disconnect()

        for user in ("viewer", "plc", "gate"):
            forge(user, f"GHOST-{user}")
        assert gate.core.counts["unknown_verdicts"] == 0
        forge("inspector", "GHOST-inspector")  # control: the one user allowed to publish verdicts
        assert gate.core.counts["unknown_verdicts"] == 1
        plc.loop_stop()
    finally:
        gate.stop()


def acl_rules(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Mosquitto's acl_file: {user: [(access, topic pattern)]} ('topic PATTERN' is readwrite)."""
    rules: dict[str, list[tuple[str, str]]] = {}
    user = None
    for raw in path.read_text().splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
        elif words[0] == "topic":
            access, pattern = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            rules.setdefault(user, []).append((access, pattern))
    return rules


def topic_matches(pattern: str, topic: str) -> bool:
    want, got = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or level not in ("+", got[i]):
            return False
    return len(want) == len(got)


def acl_allows(rules, user: str, topic: str, access: str) -> bool:
    return any(
        a in (access, "readwrite") and topic_matches(pattern, topic)
        for a, pattern in rules.get(user, [])
    )


def test_acl_allows_every_topic_the_station_gate_and_verify_publish(
    secure_broker, tmp_path, model_path, parts_dir, station_factory, monkeypatch
):
    """Every (user, topic) the line's clients publish (will included) passes the shipped ACL,
    and the locked-down broker really delivers each to a viewer (the golden-sample result too)."""
    from calibration.golden import publish_outcome

    out, port, users = secure_broker
    published: set[tuple[str, str]] = set()
    real_publish, real_will = mqtt.Client.publish, mqtt.Client.will_set

    def publish(self, topic, *args, **kwargs):
        published.add((self.username, topic))
        return real_publish(self, topic, *args, **kwargs)

    def will_set(self, topic, *args, **kwargs):
        published.add((self.username, topic))
        return real_will(self, topic, *args, **kwargs)

    seen: set[str] = set()
    viewer, rc = tls_client(out, port, "viewer", users["viewer"], "acl-viewer")
    assert rc is not None and not rc.is_failure
    viewer.on_message = lambda c, u, msg: seen.add(msg.topic)
    viewer.subscribe("inspector/#", qos=1)
    monkeypatch.setattr(mqtt.Client, "publish", publish)
    monkeypatch.setattr(mqtt.Client, "will_set", will_set)

    cfg = secure_station_config(secure_broker, tmp_path, model_path, parts_dir)
    cfg = replace(cfg, station=replace(cfg.station, id="acl"))
    station = station_factory(cfg)
    station.start()
    gate = secure_gate(secure_broker, cfg.prefix)
    gate.start()
    plc, rc = tls_client(out, port, "plc", users["plc"], "acl-plc")
    try:
        assert station.publisher.connected.wait(10) and gate.connected.wait(10)
        time.sleep(1.5)  # the station's status reaches the gate
        for i in range(2):
            plc.publish(
                f"{cfg.prefix}/trigger", json.dumps({"part_id": f"A-{i}", "ts": time.time()})
            )
        end = time.monotonic() + 10
        while len(gate.core.decided) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(gate.core.decided) == 2
        assert publish_outcome(cfg, [], "acl-model")  # `inspector verify`, as the inspector user
        end = time.monotonic() + 5
        while f"{cfg.prefix}/status/verify" not in seen and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        plc.loop_stop()
        gate.stop()
        station.stop()
        viewer.loop_stop()

    rules = acl_rules(DEPLOY / "mosquitto" / "acl")
    sent = {(u, t) for u, t in published if u in users}
    assert {u for u, _ in sent} == {"inspector", "gate", "plc"}, sent
    assert ("inspector", f"{cfg.prefix}/status/verify") in sent  # the golden-sample result
    denied = sorted((u, t) for u, t in sent if not acl_allows(rules, u, t, "write"))
    assert not denied, f"the shipped ACL denies {denied}"
    missing = sorted({t for _, t in sent} - seen)  # (the will's topic is status: seen too)
    assert not missing, f"the locked-down broker did not deliver {missing}"


# The largest legitimate message: a trigger at the schema's largest trigger.max_payload_bytes
# (verdicts, status, gate events and the golden-sample result are a few kB).
LARGEST_TRIGGER = 65536


def test_broker_refuses_an_oversize_packet_and_passes_the_largest_legitimate_one(secure_broker):
    out, port, users = secure_broker
    got: list[int] = []
    viewer, rc = tls_client(out, port, "viewer", users["viewer"], "size-viewer")
    viewer.on_message = lambda c, u, msg: got.append(len(msg.payload))
    viewer.subscribe("inspector/size/trigger", qos=1)
    time.sleep(0.3)

    def send(size: int) -> bool:
        """Publish SIZE bytes as the PLC over MQTT 3.1.1; False when the broker hangs up."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"plc-{size}")
        c.tls_set(ca_certs=str(out / "ca.crt"))
        c.username_pw_set("plc", users["plc"])
        gone = []
        c.on_disconnect = lambda *a: gone.append(True)
        c.connect("localhost", port)
        c.loop_start()
        try:
            info = c.publish("inspector/size/trigger", b"x" * size, qos=1)
            end = time.monotonic() + 5
            while not info.is_published() and not gone and time.monotonic() < end:
                time.sleep(0.02)
            return info.is_published()
        finally:
            c.loop_stop()
            c.disconnect()

    try:
        assert send(LARGEST_TRIGGER)
        assert not send(1 << 20)  # 1 MiB: the broker hangs up instead of reading it all
        assert send(100)
        end = time.monotonic() + 3
        while len(got) < 2 and time.monotonic() < end:
            time.sleep(0.02)
        assert got == [LARGEST_TRIGGER, 100]
    finally:
        viewer.loop_stop()
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().split()
    limit = int(conf[conf.index("max_packet_size") + 1])
    # a trigger at the schema's limit, with its topic and header, fits; a flood does not
    assert LARGEST_TRIGGER + 1024 <= limit <= 1 << 18


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed")
    inspector_bin = Path(sys.executable).with_name("inspector")
    names = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/inspector/venv/bin/inspector", str(inspector_bin))
        (tmp_path / unit.name).write_text(text)
        names.append(unit.name.replace("@.", "@line3."))
    r = subprocess.run(
        [analyze, "verify", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "RestartSteps" not in line and "RestartMaxDelaySec" not in line
    ]
    # RestartSteps/RestartMaxDelaySec (the backoff) need systemd >= 254; older ones ignore them
    assert r.returncode == 0 and not problems, problems


def test_dockerfiles_lint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    files = sorted(str(p) for p in (DEPLOY / "docker").glob("Dockerfile.*"))
    assert len(files) == 3
    r = subprocess.run(
        [hadolint, "--config", str(DEPLOY / "docker" / ".hadolint.yaml"), *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    out = []
    for logical in text.replace("\\\n", " ").splitlines():
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copied_paths(path: Path) -> set[str]:
    """Top-level paths of the build context a Dockerfile COPYs into the image."""
    copied = set()
    for word, args in dockerfile_instructions(path):
        if word == "COPY" and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            copied |= {Path(a).parts[0] for a in sources}
    return copied


# Each verb with arguments that fail as soon as its imports are done (no such file).
LINE_VERBS = [
    ["check", "missing.yaml"],
    ["run", "missing.yaml"],
    ["gate", "missing.yaml"],
    ["verify", "missing.yaml", "empty"],
    ["calibrate", "camera", "empty", "--board", "9x6", "--square-mm", "10"],
    ["calibrate", "baseline", "empty"],
    ["simulate", "--data", "empty", "--model", "missing.onnx"],
    ["bench", "--model", "missing.onnx"],
    ["demo", "--prepare", "prepared", "--parts", "1"],
]
TRAIN_VERBS = [["train", "--help"], ["export", "--help"], ["evaluate", "--help"]]

# Runs the CLI with only the packages an image copies: the editable install's finder and the
# source tree leave sys.path, the image's folder (the current directory) takes their place.
IMAGE_PYTHON = """
import importlib.util, sys
root = sys.argv[1]
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path = ["."] + [p for p in sys.path if p not in ("", root)]
if importlib.util.find_spec(sys.argv[2]) is not None:
    sys.exit(99)  # the project is installed non-editable: its packages cannot be hidden
from inspector.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.train"])
def test_images_copy_every_package_their_verbs_import(dockerfile, tmp_path):
    """In an image holding only what its Dockerfile COPYs, no verb fails with an ImportError:
    the line images run the line PC's verbs (verify and calibrate need calibration/), the
    training image those and the QA verbs (training/)."""
    copied = copied_paths(DEPLOY / "docker" / dockerfile)
    first_party = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    absent = sorted(first_party - copied - {"tests"}) or ["no_such_package"]
    image = tmp_path / "image"
    image.mkdir()
    (image / "empty").mkdir()
    for name in copied & first_party:
        (image / name).symlink_to(ROOT / name)
    verbs = LINE_VERBS + (TRAIN_VERBS if dockerfile == "Dockerfile.train" else [])
    for verb in verbs:
        r = subprocess.run(
            [sys.executable, "-c", IMAGE_PYTHON, str(ROOT), absent[0], *verb],
            cwd=image,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode == 99:
            pytest.skip("the project is not installed in editable mode here")
        output = r.stdout + r.stderr
        assert "No module named" not in output and "invalid choice" not in output, (
            f"{dockerfile} copies {sorted(copied)}; inspector {' '.join(verb)}:\n{output}"
        )


def test_images_keep_their_requirements_and_pip_check_them():
    """No image uninstalls a package the project requires, and each build runs `pip check`."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    required = {
        Requirement(r).name.lower()
        for r in requires("defect-inspector") or []
        if "extra ==" not in r
    }
    problems = []
    for dockerfile in sorted((DEPLOY / "docker").glob("Dockerfile.*")):
        runs = [args for word, args in dockerfile_instructions(dockerfile) if word == "RUN"]
        for args in runs:
            for part in args.split("&&"):
                words = part.split()
                if "uninstall" in words:
                    removed = {w.lower() for w in words[words.index("uninstall") + 1 :]}
                    if removed & required:
                        problems.append(
                            f"{dockerfile.name} uninstalls {sorted(removed & required)}"
                        )
        if not any("pip check" in args for args in runs):
            problems.append(f"{dockerfile.name} never runs pip check")
    assert not problems, problems


def test_compose_file_wires_broker_inspector_and_gate_with_health_checks():
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "inspector", "gate"}
    assert "/health" in " ".join(services["inspector"]["healthcheck"]["test"])
    assert "9109/health" in " ".join(services["gate"]["healthcheck"]["test"])
    assert all("healthcheck" in s and s.get("restart") for s in services.values())
    assert services["inspector"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.gpu"
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        r = subprocess.run(
            ["docker", "compose", "-f", str(DEPLOY / "docker" / "compose.yaml"), "config", "-q"],
            capture_output=True,
            text=True,
            env={
                "INSPECTOR_MQTT_PASSWORD": "x",
                "GATE_MQTT_PASSWORD": "y",
                "PATH": "/usr/bin:/bin",
            },
        )
        assert r.returncode == 0, r.stderr


STATION_EXAMPLES = [
    p for p in sorted((DEPLOY / "examples").glob("*.yaml")) if p.name != "gate.yaml"
]


def _line_pc(tmp_path: Path, monkeypatch) -> Path:
    """A line PC laid out as deploy/README.md says, under tmp_path: the demo model as
    ``models/current``, the broker's CA and password; returns INSPECTOR_HOME."""
    home, etc = tmp_path / "var", tmp_path / "etc"
    assert main(["demo", "--prepare", str(tmp_path / "demo"), "--parts", "4"]) == 0
    (home / "models" / "current").mkdir(parents=True)
    shutil.copy(
        tmp_path / "demo" / "model" / "demo.onnx",
        home / "models" / "current" / "model.onnx",
    )
    etc.mkdir()
    (etc / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (etc / "broker-password").write_text("secret\n")
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    monkeypatch.setenv("INSPECTOR_ETC", str(etc))
    monkeypatch.setenv("INSPECTOR_MQTT_PASSWORD", "secret")
    return home


@pytest.mark.parametrize("example", STATION_EXAMPLES, ids=lambda p: p.name)
def test_every_example_station_passes_check(example, tmp_path, monkeypatch, capsys):
    """On a line PC laid out as deploy/README.md says (here under tmp_path), `inspector check` passes."""
    home = _line_pc(tmp_path, monkeypatch)
    target = tmp_path / "deploy" / "examples" / example.name
    target.parent.mkdir(parents=True)
    target.write_text(example.read_text())
    # the model a plant runs there was trained on that station's recordings: it carries the
    # station's frame setup (a model of other frames is refused, as the next test shows)
    _as_trained_on(home / "models" / "current" / "model.onnx", target)
    code = main(["check", str(target)])
    assert code == 0, capsys.readouterr().err


def _as_trained_on(model: Path, station_yaml: Path) -> None:
    """Write into ``model``'s manifest the frame setup (geometry, bit depth) that training
    on ``station_yaml``'s recordings records."""
    import onnx
    import yaml

    from inspector.contract.geometry import FrameSetup
    from inspector.contract.manifest import METADATA_KEY, embed
    from inspector.station.config import load_config

    if "source" not in (yaml.safe_load(station_yaml.read_text()) or {}):
        return  # a service's config (review, SPC), not a station's
    cfg = load_config(station_yaml)
    setup = FrameSetup(cfg.preprocess.geometry(), cfg.source.bit_depth)
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    manifest = json.loads(props[METADATA_KEY])
    manifest["preprocess"].update(setup.to_dict())
    embed(model, manifest, write_sidecar=False)


def test_an_example_station_refuses_a_model_of_other_frames(tmp_path, monkeypatch, capsys):
    """The demo model (whole synthetic frames) on a station that takes a region of a camera's
    frame: check names both setups and fails, rather than run with silent skew."""
    _line_pc(tmp_path, monkeypatch)
    example = DEPLOY / "examples" / "usb-free-run.yaml"
    target = tmp_path / example.name
    target.write_text(example.read_text())
    assert main(["check", str(target)]) == 2
    err = capsys.readouterr().err
    assert "roi" in err and "trained on frames prepared with the whole frame" in err


def test_readme_says_what_is_measured_on_a_gpu_and_what_gpu_check_reports():
    """The README states what the project has measured (nothing on a GPU yet), not who was
    lent which machine, and describes gpu_check.py's report by the names it writes."""
    text = (ROOT / "README.md").read_text()
    (para,) = [p for p in text.split("\n\n") if "deploy/gpu_check.py --out" in p]
    assert para.startswith("Not yet measured on a GPU")
    assert not {"lent", "session", "sessions"} & set(para.replace(",", " ").split()), para
    script = (DEPLOY / "gpu_check.py").read_text()
    for name in ("gpu_ran", "ok", "unavailable", "error"):
        assert f"`{name}`" in para and f'"{name}"' in script, name
    assert "exits 3" in para and "else 3" in script


def test_gpu_check_reports_every_combination_and_says_when_no_gpu_ran(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        [sys.executable, str(DEPLOY / "gpu_check.py"), "--runs", "20", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    combos = {(x["provider"], x["precision"], x["batch"]) for x in report["results"]}
    assert {("cuda", p, b) for p in ("fp32", "fp16") for b in (1, 32)} <= combos
    assert {("tensorrt", p, b) for p in ("fp32", "fp16") for b in (1, 32)} <= combos
    assert all(
        x["status"] == "ok" and x["throughput_fps"] > 0
        for x in report["results"]
        if x["provider"] == "cpu"
    )
    if report["gpu_ran"]:
        assert r.returncode == 0
    else:  # this machine: no GPU; nothing may claim to have run on one
        assert r.returncode == 3
        assert all(x["status"] != "ok" for x in report["results"] if x["provider"] != "cpu")


def test_acl_lets_the_spc_service_read_what_it_subscribes_and_publish_its_alarms(monkeypatch):
    """The SPC service's user in the shipped ACL covers its example config's subscriptions
    and its retained alarm topic (else the locked-down broker drops them silently)."""
    from inspector.spc.config import load_spc_config

    cfg = load_spc_config(DEPLOY / "examples" / "spc.yaml")
    rules = acl_rules(DEPLOY / "mosquitto" / "acl")
    wanted = [*cfg.subscribe.verdicts, *cfg.subscribe.gate_events, *cfg.subscribe.context]
    assert wanted, "the example subscribes to something"
    not_readable = [t for t in wanted if not acl_allows(rules, "spc", t, "read")]
    assert not not_readable, f"the ACL does not let spc read {not_readable}"
    assert acl_allows(rules, "spc", cfg.alarm_topic, "write")
    assert not acl_allows(rules, "spc", "inspector/line1/verdict", "write")  # read-only there
    users = re.search(
        r"^for user in ([\w ]+);", (DEPLOY / "mosquitto" / "dev-broker.sh").read_text(), re.M
    )
    assert users and "spc" in users.group(1).split()  # the dev broker creates the spc user
