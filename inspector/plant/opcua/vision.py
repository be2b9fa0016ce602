"""The OPC UA server itself, in a process of its own (``server.OpcUaView`` starts it): the
station as an OPC 40100 ``VisionSystemType`` (asyncua).

It runs one asyncio loop; the station's verdicts and status changes arrive on the pipe from
the station's process, model requests (PrepareRecipe), triggers (StartSingleJob) and holds
(Halt, Stop ... stop inspection; a Start resumes it) go back on it. A verdict becomes a ``ResultReady`` event and the result variables while an MES job
runs (``states.py``). Recipes are the model files (``recipes.py``); logins and roles:
``access.py``; the address space: ``space.py``; the methods: ``methods.py``; results:
``results.py``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from ...errors import ConfigError, InspectorError

try:
    from . import results  # asyncua, from the opcua extra
except ModuleNotFoundError as exc:  # pragma: no cover - a station installed without the extra
    raise ConfigError(
        f"plant.opcua needs {exc.name}: pip install 'defect-inspector[opcua]'"
    ) from None
from ..recipes import RecipeFolder
from .config import OpcUaSection
from .methods import ENGINEER, OPERATOR, Methods
from .states import CONTINUOUS, VisionStates
from .users import load_users
from .wire import Part

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000  # verdicts waiting for the server's loop; more are counted as dropped
HOLD_TIMEOUT_S = 5.0  # how long a Halt (or Stop, Start ...) waits for the station to hold


class Remote:
    """The station's ``Handlers`` as seen from this process: requests go up the pipe; the
    station's answers come back as ``reply`` messages (``VisionServer._read``)."""

    def __init__(self, conn, triggers: bool) -> None:
        self.conn = conn
        self.pending: dict[int, object] = {}
        self._ids = itertools.count(1)
        self.trigger = self._trigger if triggers else None

    def command(self, payload: bytes, reply) -> None:
        rid = next(self._ids)
        self.pending[rid] = reply
        self.conn.send(("command", rid, payload))

    def _trigger(self, payload: bytes) -> None:
        self.conn.send(("trigger", payload))

    def hold(self, why: str | None, reply) -> None:
        """Stop (``why``) or resume (None) the station's inspection; ``reply`` once it holds."""
        rid = next(self._ids)
        self.pending[rid] = reply
        self.conn.send(("hold", rid, why))


class VisionServer(Methods):
    """The server for one station; ``serve(conn)`` until the station says stop or goes."""

    def __init__(self, section: OpcUaSection, station_id: str, status: dict, handlers) -> None:
        self.cfg = section
        self.station_id = station_id
        self.app_uri = section.application_uri or f"urn:defect-inspector:{station_id}"
        self.states = VisionStates(auto_start=True)
        self.recipes = RecipeFolder(section.recipes)
        self.handlers = handlers
        self.dropped = 0  # verdicts the server could not keep up with
        self.results: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._status: dict = status
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stop = asyncio.Event()
        self._server = None
        self._space = None
        self._events = None
        self._recipe_nodes: dict[str, dict] = {}
        self._ids: dict[str, type] = {}
        self._status_lock = asyncio.Lock()
        self._held: str | None = None  # the hold the station has (Handlers.hold); None: inspects

    @property
    def endpoint(self) -> str:
        """The URL clients connect to (the configured one, with the port actually bound)."""
        url = urlparse(self.cfg.endpoint)
        port = url.port
        srv = self._server
        if srv is not None and srv.bserver is not None and srv.bserver.port:
            port = srv.bserver.port
        host = url.hostname if url.hostname not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"opc.tcp://{host}:{port}{url.path}"

    async def serve(self, conn) -> None:
        """Set up, say ``ready`` (or ``error``), then work until ``stop`` or the pipe closes."""
        try:
            await self._setup()
        except InspectorError as exc:
            conn.send(("error", str(exc)))
            return
        except OSError as exc:
            conn.send(
                (
                    "error",
                    f"plant.opcua.endpoint: cannot listen on {self.cfg.endpoint}: {exc.strerror}",
                )
            )
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), self._read, conn)
        worker = asyncio.create_task(self._results_worker())
        conn.send(("ready", self.endpoint))
        log.info("OPC UA server for %s at %s", self.station_id, self.endpoint)
        try:
            await self._stop.wait()
        finally:
            loop.remove_reader(conn.fileno())
            worker.cancel()
            await self._server.stop()
            log.info("OPC UA server for %s stopped", self.station_id)

    def _read(self, conn) -> None:
        """What the station sent: verdicts, status, answers to model requests, stop."""
        try:
            while conn.poll():
                msg = conn.recv()
                kind = msg[0]
                if kind == "verdicts":
                    for t in msg[1]:
                        self._enqueue(Part._make(t))
                elif kind == "status":
                    self._on_status(msg[1])
                elif kind == "reply":
                    reply = self.handlers.pending.pop(msg[1], None)
                    if reply is not None:
                        reply(msg[2])
                elif kind == "stop":
                    self._stop.set()
                    return
        except (EOFError, OSError):  # the station is gone
            self._stop.set()

    async def _setup(self) -> None:
        from asyncua import Server, ua

        from . import access, space
        from .pki import certificate_files

        accounts = load_users(self.cfg.users_file) if self.cfg.users_file else {}
        users = access.Users(accounts, self.cfg.allow_anonymous)
        rules = access.RoleRules(users)
        srv = Server(user_manager=users)
        await srv.init()
        srv.set_endpoint(self.cfg.endpoint)
        srv.set_server_name(f"Defect Inspector {self.station_id}")
        await srv.set_application_uri(self.app_uri)
        srv.set_security_policy(
            [
                getattr(ua.SecurityPolicyType, p if p != "None" else "NoSecurity")
                for p in self.cfg.security_policies
            ],
            permission_ruleset=rules,
        )
        tokens = [ua.UserNameIdentityToken]
        if self.cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        srv.set_identity_tokens(tokens)
        if any(p != "None" for p in self.cfg.security_policies):
            cert, key = await certificate_files(self.cfg, self.app_uri)
            await srv.load_certificate(str(cert))
            await srv.load_private_key(str(key))
        if self.cfg.trusted_clients is not None:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([Path(self.cfg.trusted_clients)], [])
            await store.load()
            srv.set_certificate_validator(
                CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION
                    | CertificateValidatorOptions.PEER_CLIENT,
                    store,
                )
            )
        self._server = srv
        sp = self._space = await space.build(srv, self.station_id)
        self._ids = {name: space.id_type(sp.mv, name) for name in space.ID_TYPES}
        for name, node in sp.methods.items():
            srv.link_method(node, getattr(self, f"_m_{name}"))
            if name in OPERATOR or name in ENGINEER:
                rules.method_roles[node.nodeid] = "engineer" if name in ENGINEER else "operator"
        self._rules = rules
        generator = await srv.get_event_generator(sp.event_type, sp.system)
        self._events = results.ResultEvents(generator, srv.iserver.subscription_service)
        await self._refresh_recipes()
        await self._write_status()
        await self._write_states()
        await srv.start()

    # -- status and state ----------------------------------------------------------------
    def _on_status(self, payload: dict) -> None:
        self._status = payload
        asyncio.ensure_future(self._status_changed())

    async def _status_changed(self) -> None:
        async with self._status_lock:  # one at a time: recipes are added and removed here
            await self._write_status()
            await self._write_states()
            await self._refresh_recipes()

    async def _write_status(self) -> None:
        from asyncua import ua

        s = self._status or {}
        self.states.set_station(str(s.get("state", "starting")))
        values = {
            "StationState": str(s.get("state", "")),
            "ModelId": str(s.get("model_id") or ""),
            "Camera": str(s.get("camera") or ""),
            "Detail": str(s.get("detail") or ""),
            "Status": json.dumps(s, default=str),
        }
        for name, value in values.items():
            await self._space.station_vars[name].write_value(
                ua.Variant(value, ua.VariantType.String)
            )

    async def _write_states(self) -> None:
        from asyncua import ua

        sp, st = self._space, self.states
        for machine, name in ((sp.state_machine, st.top), (sp.automatic, st.automatic)):
            cur = await machine.get_child("0:CurrentState")
            await cur.write_value(ua.LocalizedText(name or ""))
            sid = sp.states.get(name) if name else None
            await (await cur.get_child("0:Id")).write_value(
                ua.Variant(sid or ua.NodeId(), ua.VariantType.NodeId)
            )
        desc = ua.SystemStateDescriptionDataType(
            State=ua.SystemStateDataType(st.system_state()),
            StateDescription=str((self._status or {}).get("detail") or st.top),
        )
        await sp.system_state.write_value(desc)

    async def _sync_hold(self) -> None:
        """Tell the station to stop or resume inspection when the state machine changed that
        (``VisionStates.hold_reason``), and wait until it has: a Halt answered Good means
        that every part the station takes from then on fails with reason ``halted``."""
        why = self.states.hold_reason()
        if why == self._held or self.handlers is None:
            return
        self._held = why
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        def reply(outcome: dict) -> None:  # on this loop (``_read``)
            if not done.done():
                done.set_result(outcome)

        self.handlers.hold(why, reply)
        try:
            outcome = await asyncio.wait_for(done, HOLD_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("OPC UA: the station did not confirm %s in time", why or "resuming")
            return
        if outcome.get("outcome") == "unsupported":
            log.warning("OPC UA: this station cannot stop inspection (%s)", why or "resume")
        else:
            log.info("OPC UA: inspection %s", f"on hold: {why}" if why else "resumed")

    # -- results ---------------------------------------------------------------------------
    def _enqueue(self, verdict: Part) -> None:
        if self._queue.qsize() >= QUEUE_MAX:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("OPC UA: %d results dropped (the server falls behind)", self.dropped)
            return
        self._queue.put_nowait(verdict)

    async def _results_worker(self) -> None:
        """Events one by one, in order; the result variables once per batch of verdicts
        waiting (the last one's): at line rate an MES reads the events, not every write."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 256:
                batch.append(self._queue.get_nowait())
            last = None
            for verdict in batch:
                try:
                    last = await self._publish(verdict) or last
                except Exception:  # one bad result must not end the results
                    log.exception("OPC UA: result of part %r not published", verdict.part_id)
            if last is not None:
                await self._write_last(*last)

    async def _publish(self, v: Part):
        job = self.states.reporting()
        if job is None:
            return None
        if job.part_id and v.part_id != job.part_id:
            return None  # a single job for a named part: other parts are not its result
        result = results.build_result(v, job, self.station_id, self._ids)
        self.results[result.ResultId.Id] = result
        while len(self.results) > self.cfg.results_kept:
            self.results.popitem(last=False)
        await self._events.emit(v, result)
        if job.part_id or self.states.auto != CONTINUOUS:
            self.states.single_done()
            await self._write_states()
            await self._sync_hold()  # back in Ready: no job, no inspection
        return v, result

    async def _write_last(self, v: Part, result) -> None:
        from asyncua import ua

        from .space import RESULT_VARS

        write, sp = self._server.write_attribute_value, self._space
        for name, value in results.variables(v, result).items():
            node = sp.result_vars[name].nodeid
            await write(node, ua.DataValue(ua.Variant(value, RESULT_VARS[name])))
        value = ua.Variant(result, ua.VariantType.ExtensionObject)
        await write(sp.last_result.nodeid, ua.DataValue(value))


def child_main(
    conn,
    section: OpcUaSection,
    station_id: str,
    status: dict,
    triggers: bool,
    log_level: str,
    log_format: str,
) -> None:
    """The server process: its own logging, its own loop, until the station says stop."""
    from ...logs import setup

    setup(log_level, log_format)
    # the station stops this process ("stop" on the pipe), or its end closes the pipe;
    # SIGTERM and Ctrl-C meant for the station's process group are the station's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if section.nice:
        os.nice(section.nice)
    for noisy in ("asyncua",):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    server = VisionServer(section, station_id, status, Remote(conn, triggers))
    asyncio.run(server.serve(conn))
