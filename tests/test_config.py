"""Station config: every mistake is named by key path and line; `inspector check` exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.errors import ConfigError
from inspector.station.config import load_config

from .conftest import station_yaml


class FakeBroker:
    host, port = "127.0.0.1", 1883


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "station.yaml"
    p.write_text(text)
    return p


@pytest.fixture
def good_yaml(model_path, parts_dir, tmp_path):
    return (
        station_yaml(model_path, parts_dir, FakeBroker) + f'recorder: {{path: "{tmp_path}/rec"}}\n'
    )


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


def test_valid_config_loads_with_defaults(tmp_path, good_yaml):
    cfg = load_config(write(tmp_path, good_yaml))
    assert cfg.trigger.type == "mqtt"
    assert cfg.prefix == "inspector/test" and cfg.topic("verdict") == "inspector/test/verdict"
    assert cfg.mqtt.protocol == "5" and cfg.model.providers[0].type == "cpu"


def test_unknown_key_names_path_and_line(tmp_path, good_yaml):
    p = write(tmp_path, good_yaml + "mqtt_extra: 1\n")
    text = "\n".join(problems_of(p))
    assert "mqtt_extra: unknown key" in text
    line = good_yaml.count("\n") + 1
    assert f"station.yaml:{line}:" in text


def test_nested_unknown_key_and_wrong_type_reported_together(tmp_path, model_path, parts_dir):
    text = f"""\
source:
  type: folder
  path: "{parts_dir}"
  rate_fps: fast
model:
  path: "{model_path}"
  max_batch: 4
  colour: rgb
mqtt:
  port: "not a port"
"""
    problems = problems_of(write(tmp_path, text))
    joined = "\n".join(problems)
    assert "station.yaml:4: source.rate_fps: expected a number, got 'fast'" in joined
    assert "station.yaml:8: model.colour: unknown key" in joined
    assert "station.yaml:10: mqtt.port: expected a whole number" in joined
    assert len(problems) == 3


def test_unknown_source_type_lists_the_choices(tmp_path, model_path):
    p = write(tmp_path, f'source: {{type: webcam}}\nmodel: {{path: "{model_path}"}}\n')
    assert any("unknown source type 'webcam'" in x and "folder" in x for x in problems_of(p))


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    sub = tmp_path / "station"
    sub.mkdir()
    p = sub / "s.yaml"
    p.write_text("source: {type: folder, path: images}\nmodel: {path: models/m.onnx}\n")
    cfg = load_config(p)
    assert cfg.source.path == sub / "images"
    assert cfg.model.path == sub / "models" / "m.onnx"


def test_password_from_environment_and_file(tmp_path, good_yaml, monkeypatch):
    monkeypatch.setenv("LINE_BROKER_PW", "s3cret")
    p = write(
        tmp_path,
        good_yaml.replace(
            "reconnect_max_s: 0.3", "reconnect_max_s: 0.3, password_env: LINE_BROKER_PW"
        ),
    )
    assert load_config(p).mqtt.resolved_password() == "s3cret"
    monkeypatch.delenv("LINE_BROKER_PW")
    assert any("LINE_BROKER_PW is not set" in x for x in problems_of(p))
    (tmp_path / "pw").write_text("from-file\n")
    p = write(
        tmp_path,
        good_yaml.replace("reconnect_max_s: 0.3", "reconnect_max_s: 0.3, password_file: pw"),
    )
    assert load_config(p).mqtt.resolved_password() == "from-file"


def test_broken_yaml_and_missing_file(tmp_path):
    p = write(tmp_path, "source: {type: folder\nmodel: [")
    (problem,) = problems_of(p)
    assert "not valid YAML" in problem and "station.yaml:" in problem
    assert "config file not found" in problems_of(tmp_path / "nope.yaml")[0]


def test_check_accepts_a_valid_station(tmp_path, good_yaml, capsys):
    p = write(tmp_path, good_yaml)
    assert main(["check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "first frame 48x48 -> model input [32, 32, 1]" in out


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda y: y + "bogus: 1\n", "bogus: unknown key"),
        (
            lambda y: y.replace("warmup_runs: 1", "warmup_runs: many"),
            "model.warmup_runs: expected a whole number",
        ),
        (lambda y: y.replace("contrast.onnx", "missing.onnx"), "model file not found"),
        (
            lambda y: y + "preprocess: {size: [64, 64]}\n",
            "preprocess.size: [64, 64] does not match",
        ),
        (lambda y: y + "preprocess: {color: rgb}\n", "preprocess.color: 'rgb' does not match"),
        (
            lambda y: y + "preprocess: {roi: [40, 40, 30, 30]}\n",
            "ROI [40, 40, 30, 30] lies outside the 48x48 frame",
        ),
        (
            lambda y: y + "decision: {thresholds: {scratch: 0.3}}\n",
            "decision.thresholds.scratch: not a defect class",
        ),
    ],
)
def test_check_and_run_reject_bad_configs_with_exit_2(
    tmp_path, good_yaml, capsys, change, expected
):
    p = write(tmp_path, change(good_yaml))
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err


def test_run_exits_2_with_one_clear_line(tmp_path, good_yaml):
    p = write(tmp_path, good_yaml.replace("warmup_runs: 1", "warmup_runs: many") + "bogus: 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "run", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.stderr
    assert any("model.warmup_runs" in x for x in lines) and any("bogus" in x for x in lines)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("deadline_ms: 2000", "deadline_ms: .nan", "part.deadline_ms: must be a finite number"),
        ("reconnect_max_s: 0.3", "reconnect_max_s: .inf", "mqtt.reconnect_max_s: must be a finite"),
        ("port: 0}", "port: 0, max_frame_age_s: -.inf}", "metrics.max_frame_age_s: must be a fin"),
        ("warmup_runs: 1}", "warmup_runs: 1}\ndecision: {uncertainty_margin: .NaN}", "finite"),
        ("recorder: {", "recorder: {queue_size: 0, ", "recorder.queue_size: must be at least 1"),
        ("reconnect_max_s: 0.3", "reconnect_max_s: 0", "mqtt.reconnect_max_s: must be more than 0"),
        ("reconnect_max_s: 0.3", "reconnect_max_s: 0.3, keepalive_s: 0", "mqtt.keepalive_s: must"),
        ("reconnect_max_s: 0.3", "reconnect_max_s: 0.3, keepalive_s: 70000", "mqtt.keepalive_s"),
        ("reconnect_max_s: 0.3", "reconnect_max_s: 0.3, connect_timeout_s: 0", "connect_timeout_s"),
        ("reconnect_max_s: 0.3", "reconnect_max_s: 0.3, status_interval_s: 0", "status_interval_s"),
        ("metrics: {port: 0}", "metrics: {port: 70000}", "metrics.port: must be between 0 and"),
        ("metrics: {port: 0}", "metrics: {port: -1}", "metrics.port: must be between 0 and"),
        ("metrics: {port: 0}", "metrics: {port: 0, max_frame_age_s: 0}", "max_frame_age_s: must"),
        ("{type: mqtt}", "{type: mqtt, max_payload_bytes: 0}", "trigger.max_payload_bytes: must"),
        ("{type: mqtt}", "{type: mqtt, max_payload_bytes: 1000000}", "trigger.max_payload_bytes"),
        ("{type: mqtt}", "{type: mqtt, max_part_id_chars: 0}", "trigger.max_part_id_chars: must"),
    ],
)
def test_out_of_range_settings_are_one_clear_line_each(
    tmp_path, good_yaml, capsys, old, new, expected
):
    assert old in good_yaml
    p = write(tmp_path, good_yaml.replace(old, new, 1))
    assert main(["check", str(p)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith(f"{p}:"), "the line number is named"


def test_run_with_its_metrics_port_in_use_is_one_clear_line(tmp_path, good_yaml):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = write(tmp_path, good_yaml.replace("metrics: {port: 0}", f"metrics: {{port: {port}}}"))
        r = subprocess.run(
            [sys.executable, "-m", "inspector.cli", "run", str(p)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    errors = [line for line in r.stderr.splitlines() if line.startswith("inspector run:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and "metrics.port" in errors[0] and "in use" in errors[0], r.stderr


def test_check_tells_a_gate_config_from_a_station_config(tmp_path, capsys):
    gate = tmp_path / "gate.yaml"
    gate.write_text("gate:\n  station_prefix: inspector/line3\n  travel_ms: -5\n")
    assert main(["check", str(gate)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{gate}:3: gate.travel_ms: must be positive"]
    gate.write_text("gate: {station_prefix: inspector/line3}\nhttp: {port: 0}\n")
    assert main(["check", str(gate)]) == 0
    assert "valid gate config" in capsys.readouterr().out


def test_check_validates_a_training_config(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: {type: cnn}\ntrain: {epochs: 3, bogus: 1}\n")
    assert main(["check", str(cfg)]) == 2
    assert f"{cfg}:2: train.bogus: unknown key" in capsys.readouterr().err
    elpv = Path(__file__).resolve().parents[1] / "training" / "configs" / "elpv.yaml"
    assert main(["check", str(elpv)]) == 0
    assert "valid training config" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["colour: red\n", "- a\n- b\n", "just words\n"])
def test_check_says_when_it_cannot_tell_the_kind_of_config(tmp_path, capsys, text):
    p = write(tmp_path, text)
    assert main(["check", str(p)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not a station, gate, training, review or SPC config" in line and str(p) in line


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("dataset: {path: ds}\npage_size: 5\n", "review", "page_size: must be between 10"),
        ("charts: {subgroup_parts: 2}\n", "spc", "charts.subgroup_parts: must be at least 10"),
    ],
)
def test_check_validates_review_and_spc_configs(tmp_path, capsys, text, kind, expected):
    p = write(tmp_path, text)
    assert main(["check", str(p)]) == 2
    assert expected in capsys.readouterr().err
    fixed = text.replace("page_size: 5", "page_size: 50").replace("parts: 2", "parts: 20")
    p.write_text(fixed)
    assert main(["check", str(p)]) == 0, capsys.readouterr().err
    assert f"valid {kind} config" in capsys.readouterr().out


def test_model_that_is_not_onnx_is_a_clear_error(tmp_path, good_yaml, model_path, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is a jpeg, honest")
    p = write(tmp_path, good_yaml.replace(str(model_path), str(fake)))
    assert main(["check", str(p)]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_schema_listing_documents_every_setting(capsys):
    assert main(["check", "--schema"]) == 0
    out = capsys.readouterr().out
    assert "mqtt.outbox_size = 1000  # verdicts kept while the broker is away" in out
    assert "part.deadline_ms" in out


def test_environment_variables_in_strings_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LINE_HOME", str(tmp_path / "home"))
    p = write(
        tmp_path,
        'source: {type: folder, path: "${LINE_HOME}/imgs"}\n'
        'model: {path: "${MODEL_DIR:-/opt/models}/m.onnx"}\n'
        'mqtt: {host: "${BROKER}", username: "a$$b"}\n',
    )
    problems = problems_of(p)
    assert problems == [
        f"{p}:3: mqtt.host: environment variable BROKER is not set (and no ${{BROKER:-default}})"
    ]
    monkeypatch.setenv("BROKER", "broker.plant")
    cfg = load_config(p)
    assert cfg.source.path == tmp_path / "home" / "imgs"
    assert str(cfg.model.path) == "/opt/models/m.onnx"
    assert (cfg.mqtt.host, cfg.mqtt.username) == ("broker.plant", "a$b")
