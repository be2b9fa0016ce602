"""The station as an OPC 40100 ``VisionSystemType`` on an OPC UA server (asyncua): the MES's
view beside the line link (a ``station.link.LineView``).

The server runs on its own thread with its own asyncio loop. The station's threads hand it
verdicts and status changes with ``loop.call_soon_threadsafe`` and never wait for it; a
verdict becomes a ``ResultReady`` event and the result variables while an MES job runs
(``states.py``). Recipes are the model files (``recipes.py``); PrepareRecipe sends
``{"action": "promote", "path": ...}`` through the station's one command path and answers
with the station's outcome. Logins and roles: ``access.py``; the address space: ``space.py``;
the methods: ``methods.py``.

    view = OpcUaView(cfg.plant.opcua, "line-3")
    station = Station(cfg, views=(view,))   # the station calls start/verdict/status/stop
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
from pathlib import Path
from urllib.parse import urlparse

from ...contract.records import Verdict
from ...errors import ConfigError, InspectorError

try:
    from . import results  # asyncua, from the opcua extra
except ModuleNotFoundError as exc:  # pragma: no cover - a station installed without the extra
    raise ConfigError(
        f"plant.opcua needs {exc.name}: pip install 'defect-inspector[opcua]'"
    ) from None
from .config import OpcUaSection
from .methods import ENGINEER, OPERATOR, Methods
from .recipes import RecipeFolder
from .states import CONTINUOUS, VisionStates
from .users import load_users

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
QUEUE_MAX = 10_000  # verdicts waiting for the server's loop; more are counted as dropped


class OpcUaView(Methods):
    """An OPC UA server for one station. ``start(handlers)`` returns once it listens."""

    def __init__(self, section: OpcUaSection, station_id: str) -> None:
        self.cfg = section
        self.station_id = station_id
        self.app_uri = section.application_uri or f"urn:defect-inspector:{station_id}"
        self.states = VisionStates(auto_start=True)
        self.recipes = RecipeFolder(section.recipes)
        self.handlers = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0  # verdicts the server could not keep up with
        self.results: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._status: dict = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._queue: asyncio.Queue | None = None
        self._server = None
        self._space = None
        self._events = None
        self._recipe_nodes: dict[str, dict] = {}
        self._single_part: str = ""

    # -- LineView ------------------------------------------------------------------------
    def start(self, handlers) -> None:
        self.handlers = handlers
        if not self._status and handlers is not None:
            self._status = handlers.status()
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise InspectorError(f"plant.opcua: the server did not start in {START_TIMEOUT_S} s")
        if self._error is not None:
            err = self._error
            if isinstance(err, InspectorError):
                raise err
            if isinstance(err, OSError):
                raise ConfigError(
                    f"plant.opcua.endpoint: cannot listen on {self.cfg.endpoint}: {err.strerror}"
                ) from None
            raise err
        log.info("OPC UA server for %s at %s", self.station_id, self.endpoint)

    def stop(self) -> None:
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10.0)

    def verdict(self, verdict: Verdict) -> None:
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                loop.call_soon_threadsafe(self._enqueue, verdict)

    def status(self, payload: dict) -> None:
        loop = self.loop
        if loop is None:
            self._status = payload
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_status, payload)

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

    # -- the server's thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("OPC UA server stopped on an error")
        finally:
            self.loop = None

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._queue = asyncio.Queue()
        await self._setup()
        self._ready.set()
        worker = asyncio.create_task(self._results_worker())
        try:
            await self._stop.wait()
        finally:
            worker.cancel()
            await self._server.stop()
            log.info("OPC UA server for %s stopped", self.station_id)

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

    # -- results ---------------------------------------------------------------------------
    def _enqueue(self, verdict: Verdict) -> None:
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

    async def _publish(self, v: Verdict):
        job = self.states.reporting()
        if job is None:
            return None
        if job.part_id and v.part_id != job.part_id:
            return None  # a single job for a named part: other parts are not its result
        result = results.build_result(v, job, self.station_id)
        self.results[result.ResultId.Id] = result
        while len(self.results) > self.cfg.results_kept:
            self.results.popitem(last=False)
        await self._events.emit(v, result)
        if job.part_id or self.states.auto != CONTINUOUS:
            self.states.single_done()
            await self._write_states()
        return v, result

    async def _write_last(self, v: Verdict, result) -> None:
        from asyncua import ua

        from .space import RESULT_VARS

        write, sp = self._server.write_attribute_value, self._space
        for name, value in results.variables(v, result).items():
            node = sp.result_vars[name].nodeid
            await write(node, ua.DataValue(ua.Variant(value, RESULT_VARS[name])))
        value = ua.Variant(result, ua.VariantType.ExtensionObject)
        await write(sp.last_result.nodeid, ua.DataValue(value))
