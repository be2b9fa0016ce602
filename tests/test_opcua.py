"""The OPC UA view (plant.opcua): a real station (ONNX model, Mosquitto) and an asyncua client
over Basic256Sha256 SignAndEncrypt, as an MES would connect."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

asyncua = pytest.importorskip("asyncua", reason="the opcua extra (pip install -e '.[opcua]')")

from asyncua import Client, ua  # noqa: E402
from asyncua.crypto.cert_gen import setup_self_signed_certificate  # noqa: E402
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

from inspector.errors import ConfigError  # noqa: E402
from inspector.lab.modelkit import build_contrast_model  # noqa: E402
from inspector.plant.opcua.config import OpcUaSection  # noqa: E402
from inspector.plant.opcua.server import OpcUaView  # noqa: E402
from inspector.plant.opcua.users import add_user  # noqa: E402
from inspector.plant.views import build_views  # noqa: E402
from inspector.station.config import load_config  # noqa: E402
from inspector.station.link import Handlers  # noqa: E402

from .contract import validate  # noqa: E402

MV = "http://opcfoundation.org/UA/MachineVision"
OURS = "urn:defect-inspector:opcua"
CLIENT_URI = "urn:defect-inspector:tests:mes"
RESULT_READY = 1024  # ResultReadyEventType in the Machine Vision namespace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """The client's certificate, a users file (op: operator, eng: engineer) and the server's
    pki folder, made once for the module (RSA keys take a while)."""
    d = tmp_path_factory.mktemp("opcua")
    cert, key = d / "client-cert.der", d / "client-key.pem"
    asyncio.run(
        setup_self_signed_certificate(
            key,
            cert,
            CLIENT_URI,
            "localhost",
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "mes"},
        )
    )
    users = d / "users.yaml"
    add_user(users, "op", "operator", "op-secret")
    add_user(users, "eng", "engineer", "eng-secret")
    add_user(users, "view", "viewer", "view-secret")
    return {"cert": cert, "key": key, "users": users, "server_pki": d / "server-pki"}


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("recipes")
    return {
        "a": build_contrast_model(d / "a.onnx", size=32, name="model-a"),
        "b": build_contrast_model(d / "b.onnx", size=32, name="model-b", threshold=0.45),
        "big": build_contrast_model(d / "big.onnx", size=48, name="model-48"),
    }


def opcua_yaml(pki: dict, port: int, recipes: Path | None = None, more: str = "") -> str:
    lines = [
        "plant:",
        "  opcua:",
        f"    endpoint: opc.tcp://127.0.0.1:{port}/inspector/",
        f'    pki_dir: "{pki["server_pki"]}"',
        f'    users_file: "{pki["users"]}"',
    ]
    if recipes is not None:
        lines.append(f'    recipes: "{recipes}"')
    lines += [f"    {m}" for m in more.splitlines() if m]
    return "\n".join(lines) + "\n"


class Mes:
    """An MES session: an asyncua client, logged in (or not), with the station's nodes."""

    def __init__(self, endpoint: str, pki: dict, user: str | None = None, pw: str | None = None):
        self.client = Client(endpoint, timeout=10)
        self.client.application_uri = CLIENT_URI
        self.pki, self.user, self.pw = pki, user, pw
        self.events: list = []

    async def __aenter__(self) -> Mes:
        c = self.client
        await c.set_security(
            SecurityPolicyBasic256Sha256,
            str(self.pki["cert"]),
            str(self.pki["key"]),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        if self.user:
            c.set_user(self.user)
            c.set_password(self.pw)
        await c.connect()
        await c.load_data_type_definitions()
        self.mv = await c.get_namespace_index(MV)
        self.ours = await c.get_namespace_index(OURS)
        self.system = await c.nodes.objects.get_child([f"{self.ours}:test"])
        self.sm = await self.mv_child("VisionStateMachine")
        self.auto = await self.mv_child("VisionStateMachine", "AutomaticModeStateMachine")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.disconnect()

    async def mv_child(self, *names: str):
        return await self.system.get_child([f"{self.mv}:{n}" for n in names])

    async def ours_value(self, *names: str):
        node = await self.system.get_child([f"{self.ours}:{n}" for n in names])
        return await node.read_value()

    async def state(self) -> tuple[str, str]:
        top = await (await self.sm.get_child("0:CurrentState")).read_value()
        auto = await (await self.auto.get_child("0:CurrentState")).read_value()
        return top.Text, auto.Text

    async def wait_state(self, top: str, auto: str, timeout: float = 5.0) -> bool:
        """The states, once the server wrote them (a single job ends just after its event)."""
        end = time.monotonic() + timeout
        while await self.state() != (top, auto):
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def call(self, method: str, *args):
        parent = self.auto if method in ("StartSingleJob", "StartContinuous", "Stop") else self.sm
        if method in ("PrepareRecipe", "GetRecipeListFiltered"):
            parent = await self.mv_child("RecipeManagement")
        return await parent.call_method(f"{self.mv}:{method}", *args)

    async def subscribe_results(self) -> None:
        """ResultReady events, with the station's fields (its subtype of the event type)."""
        base = self.client.get_node(ua.NodeId(RESULT_READY, self.mv))
        (ours,) = [
            n
            for n in await base.get_children(refs=ua.ObjectIds.HasSubtype)
            if (await n.read_browse_name()).Name == "InspectorResultReadyEventType"
        ]
        events = self.events

        class Handler:
            def event_notification(self, event):
                events.append((time.time(), event))

        sub = await self.client.create_subscription(0, Handler())
        await sub.subscribe_events(self.system, ours)

    async def wait_events(self, n: int, timeout: float = 10.0) -> list:
        end = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return [e for _, e in self.events]


def cause():
    return (ua.Variant(0, ua.VariantType.UInt32), ua.Variant("test", ua.VariantType.String))


def job_args(part_id: str = ""):
    return (
        ua.MeasIdDataType(Id="m-1"),
        ua.PartIdDataType(Id=part_id),
        ua.RecipeIdExternalDataType(Id=""),
        ua.ProductIdDataType(Id=""),
        ua.Variant([], ua.VariantType.Variant),
    )


@pytest.fixture
def opcua_station(make_config, station_factory, pki, recipes):
    """A station on model a with its OPC UA view; recipes: the folder of a, b and big."""

    def make(**kwargs):
        port = free_port()
        extra = kwargs.pop("extra", "") + opcua_yaml(pki, port, recipes["a"].parent)
        cfg = make_config(model=recipes["a"], extra=extra, **kwargs)
        views = tuple(build_views(cfg.plant, cfg.station.id, cfg.mqtt))
        station = station_factory(cfg, views=views)
        station.start()
        return station, views[0].endpoint

    return make


def test_browse_and_a_result_for_every_part_with_the_mqtt_verdict(opcua_station, line, pki):
    station, endpoint = opcua_station(trigger="mqtt")

    async def run():
        async with Mes(endpoint, pki, "op", "op-secret") as mes:
            names = {(await n.read_browse_name()).Name for n in await mes.system.get_children()}
            assert {
                "VisionStateMachine",
                "RecipeManagement",
                "ResultManagement",
                "ConfigurationManagement",
                "SafetyStateManagement",
                "SystemState",
                "Inspector",
            } <= names
            type_def = await mes.system.read_type_definition()
            assert (await mes.client.get_node(type_def).read_browse_name()).Name == (
                "VisionSystemType"
            )
            assert await mes.state() == ("Operational", "ContinuousExecution")
            assert await mes.ours_value("Inspector", "ModelId") == station.unit.model_id
            assert await mes.ours_value("Inspector", "StationState") == "online"
            await mes.subscribe_results()
            await asyncio.sleep(0.2)
            ids = [f"P-{i:03d}" for i in range(12)]
            for pid in ids:
                line.trigger(pid)
                await asyncio.sleep(0.03)
            events = await mes.wait_events(len(ids))
            mqtt = {v["part_id"]: v for v in line.wait_for(len(ids))}
            assert len(events) == len(ids)
            got = {e.PartId.Id: e for e in events}
            assert set(got) == set(ids) == set(mqtt)
            for pid in ids:
                e, v = got[pid], mqtt[pid]
                assert (e.Verdict, e.Reason, e.Seq, e.ModelId) == (
                    v["result"],
                    v["reason"],
                    v["seq"],
                    v["model_id"],
                )
                assert e.Score == pytest.approx(v["scores"]["defect"], abs=1e-6)
                assert e.ResultState == 1  # Completed: a model decided
            assert {v["result"] for v in mqtt.values()} == {"pass", "fail"}
            last = max(mqtt.values(), key=lambda v: v["seq"])
            assert await mes.ours_value("Inspector", "LastResult", "PartId") == last["part_id"]
            assert await mes.ours_value("Inspector", "LastResult", "Verdict") == last["result"]
            rm = await mes.mv_child("ResultManagement")
            _handle, result, error = await rm.call_method(
                f"{mes.mv}:GetResultById",
                ua.ResultIdDataType(Id=f"test-{last['seq']}"),
                ua.Variant(1000, ua.VariantType.Int32),
            )
            assert (error, result.PartId.Id) == (0, last["part_id"])

    asyncio.run(run())


def test_operator_walks_the_state_machine_and_no_one_else_gets_in(opcua_station, line, pki):
    station, endpoint = opcua_station(trigger="mqtt")
    model = station.unit.model_id

    async def refused():
        with pytest.raises(ua.UaStatusCodeError, match="BadIdentityTokenRejected"):
            async with Mes(endpoint, pki):  # anonymous
                pass
        with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
            async with Mes(endpoint, pki, "op", "wrong"):
                pass
        plain = Client(endpoint, timeout=5)  # no security: that endpoint is not offered
        plain.set_user("op")
        plain.set_password("op-secret")
        with pytest.raises(Exception):  # noqa: B017 - asyncua raises per policy
            await plain.connect()
        await plain.disconnect()

    async def run():
        await refused()
        async with Mes(endpoint, pki, "op", "op-secret") as mes:
            await mes.subscribe_results()
            await mes.call("Halt", *cause())
            assert (await mes.state())[0] == "Halted"
            line.trigger("while-halted")
            (v,) = line.wait_for(1)  # the gate still gets its verdict: a fail, not inspected
            assert (v["part_id"], v["result"], v["reason"]) == ("while-halted", "fail", "halted")
            await asyncio.sleep(0.3)
            assert mes.events == []  # the MES does not: no job runs
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):
                await mes.call("Halt", *cause())
            await mes.call("Reset", *cause())
            assert (await mes.state())[0] == "Preoperational"
            await mes.call("SelectModeAutomatic")
            assert await mes.state() == ("Operational", "Ready")
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):
                await mes.call("Stop", *cause())
            # a single job for a named part: the station is triggered for it
            job_id, error = await mes.call("StartSingleJob", *job_args("from-mes-1"))
            assert error == 0
            (event,) = await mes.wait_events(1)
            assert (event.PartId.Id, event.JobId.Id, event.MeasId.Id) == (
                "from-mes-1",
                job_id.Id,
                "m-1",
            )
            line.wait_for(2)
            assert "from-mes-1" in line.by_id()  # the same part went to the gate
            assert await mes.wait_state("Operational", "Ready")  # the job ended with its result
            assert line.by_id()["from-mes-1"]["reason"] != "halted"  # the job inspected it
            await mes.call("StartContinuous", *job_args())
            assert await mes.state() == ("Operational", "ContinuousExecution")
            line.trigger("continuous-1")
            assert len(await mes.wait_events(2)) == 2
            await mes.call("Stop", *cause())
            assert await mes.state() == ("Operational", "Ready")
            # an operator starts and stops; recipes are an engineer's
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                await mes.call(
                    "PrepareRecipe",
                    ua.RecipeIdExternalDataType(Id="b.onnx"),
                    ua.RecipeIdInternalDataType(Id=""),
                )

    asyncio.run(run())
    assert station.unit.model_id == model


def test_halt_stops_inspection_until_reset_and_start(opcua_station, line, pki):
    """Halt: every part that comes meanwhile fails with reason halted, the retained status
    says halted; a viewer cannot halt; Reset + SelectModeAutomatic still hold (no job), and
    StartContinuous inspects again; Stop holds again."""
    station, endpoint = opcua_station(trigger="mqtt")

    def parts(prefix: str, n: int = 8) -> list[dict]:
        before = len(line.verdicts)
        for i in range(n):
            line.trigger(f"{prefix}-{i}")
            time.sleep(0.04)
        got = line.wait_for(before + n)[before:]
        assert [v["part_id"] for v in got] == [f"{prefix}-{i}" for i in range(n)]
        for v in got:
            validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
        return got

    def held(got: list[dict]) -> None:
        assert {(v["result"], v["reason"]) for v in got} == {("fail", "halted")}
        assert all(v["class"] is None and v["scores"] == {} for v in got)  # never classified

    def inspected(got: list[dict]) -> None:
        assert "halted" not in {v["reason"] for v in got}
        assert {v["result"] for v in got} == {"pass", "fail"}  # the model decided them

    async def run():
        async with Mes(endpoint, pki, "view", "view-secret") as viewer:
            assert await viewer.state() == ("Operational", "ContinuousExecution")
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                await viewer.call("Halt", *cause())
        inspected(parts("before"))
        async with Mes(endpoint, pki, "op", "op-secret") as mes:
            await mes.call("Halt", *cause())  # returns once the station holds
            held(parts("halted"))
            status = line.wait_status("halted")
            assert status is not None and "halted over OPC UA" in status["detail"]
            validate("status", status)
            healthy, report = station.health()
            assert not healthy and "halted over OPC UA" in report["reason"]
            assert await mes.ours_value("Inspector", "StationState") == "halted"
            assert (await mes.state())[0] == "Halted"
            await mes.call("Reset", *cause())
            await mes.call("SelectModeAutomatic")
            assert await mes.state() == ("Operational", "Ready")
            held(parts("ready"))  # no job runs: no inspection
            await mes.call("StartContinuous", *job_args())
            inspected(parts("resumed"))
            assert line.wait_status("online") is not None
            assert station.health()[0]
            await mes.call("Stop", *cause())
            held(parts("stopped", 3))

    asyncio.run(run())


def test_engineer_selects_a_recipe_and_the_station_changes_model(opcua_station, line, pki):
    station, endpoint = opcua_station(trigger="mqtt")

    async def run():
        async with Mes(endpoint, pki, "eng", "eng-secret") as mes:
            before = await mes.ours_value("Inspector", "ModelId")
            recipes = await mes.mv_child("RecipeManagement", "Recipes")
            names = {(await n.read_browse_name()).Name for n in await recipes.get_children()}
            assert names == {"a.onnx", "b.onnx", "big.onnx"}
            prepared = await recipes.get_child([f"{mes.ours}:a.onnx", f"{mes.mv}:IsPrepared"])
            assert await prepared.read_value() is True
            rid, completed, error = await mes.call(
                "PrepareRecipe",
                ua.RecipeIdExternalDataType(Id="b.onnx"),
                ua.RecipeIdInternalDataType(Id=""),
            )
            assert (completed, error) == (True, 0)
            assert rid.Version == station.unit.model_id != before
            end = time.monotonic() + 5
            while time.monotonic() < end:
                if await mes.ours_value("Inspector", "ModelId") == station.unit.model_id:
                    break
                await asyncio.sleep(0.05)
            assert await mes.ours_value("Inspector", "ModelId") == station.unit.model_id
            assert "model-b" in station.unit.model_id
            end = time.monotonic() + 5
            while line.statuses[-1]["model_id"] != station.unit.model_id:
                assert time.monotonic() < end, "the MQTT status never named the new model"
                await asyncio.sleep(0.05)
            b = await recipes.get_child([f"{mes.ours}:b.onnx", f"{mes.mv}:IsPrepared"])
            assert await b.read_value() is True
            # a model the station refuses (another input size) changes nothing
            rid, completed, error = await mes.call(
                "PrepareRecipe",
                ua.RecipeIdExternalDataType(Id="big.onnx"),
                ua.RecipeIdInternalDataType(Id=""),
            )
            assert (completed, error) == (False, 1)
            assert rid.Description.Text.startswith("refused")
            assert "model-b" in station.unit.model_id
            # nothing outside the recipes folder
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
                await mes.call(
                    "PrepareRecipe",
                    ua.RecipeIdExternalDataType(Id="../a.onnx"),
                    ua.RecipeIdInternalDataType(Id=""),
                )

    asyncio.run(run())


def test_anonymous_may_read_but_not_call_where_allowed(pki):
    """The view alone, fed the status a degraded station sends (camera lost): Error, and
    Operational again once the station is."""
    port = free_port()
    view = OpcUaView(
        OpcUaSection(
            endpoint=f"opc.tcp://127.0.0.1:{port}/inspector/",
            pki_dir=pki["server_pki"],
            allow_anonymous=True,
        ),
        "test",
    )
    status = {"state": "degraded", "model_id": "m", "camera": "lost", "detail": "camera lost"}
    view.start(Handlers(status=lambda: status))
    try:

        async def run():
            async with Mes(view.endpoint, pki) as mes:
                assert await mes.state() == ("Error", "ContinuousExecution")
                assert await mes.ours_value("Inspector", "Detail") == "camera lost"
                with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                    await mes.call("Halt", *cause())
                view.status({**status, "state": "online", "camera": "ok", "detail": ""})
                await asyncio.sleep(0.3)
                assert await mes.state() == ("Operational", "ContinuousExecution")

        asyncio.run(run())
    finally:
        view.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_server_process_ends_when_the_station_is_killed(pki):
    """SIGKILL of the station's process: its OPC UA server sees the pipe close and ends (no
    orphan keeps the port and tells the MES the station is Operational)."""
    port = free_port()
    code = f"""
import time
from pathlib import Path
from inspector.plant.opcua.config import OpcUaSection
from inspector.plant.opcua.server import OpcUaView
from inspector.station.link import Handlers
section = OpcUaSection(endpoint="opc.tcp://127.0.0.1:{port}/inspector/",
                       pki_dir=Path({str(pki["server_pki"])!r}), allow_anonymous=True)
view = OpcUaView(section, "test")
view.start(Handlers(status=lambda: {{"state": "online"}}))
print(view._proc.pid, flush=True)
time.sleep(60)
"""
    station = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server = int(station.stdout.readline())
        assert _alive(server)
    finally:
        station.kill()
        station.wait()
    end = time.monotonic() + 10
    while _alive(server) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(server)


def test_a_missing_users_file_stops_the_station_before_it_starts(tmp_path):
    section = OpcUaSection(users_file=tmp_path / "nope.yaml", pki_dir=tmp_path / "pki")
    with pytest.raises(ConfigError, match=r"plant.opcua.users_file: cannot read .*nope.yaml"):
        OpcUaView(section, "test")


def test_config_is_checked_before_anything_starts(tmp_path):
    bad = tmp_path / "station.yaml"
    bad.write_text(
        "station: {id: s}\nsource: {type: folder, path: parts}\nmodel: {path: m.onnx}\n"
        "plant:\n  opcua:\n    endpoint: http://x\n    certificate: c.der\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert "plant.opcua.endpoint" in text
    assert "plant.opcua.certificate" in text
    assert "plant.opcua.users_file" in text
