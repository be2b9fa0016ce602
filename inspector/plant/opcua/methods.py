"""The methods the VisionSystem implements (OPC 40100-1): the state machine's (Halt, Reset,
SelectModeAutomatic, StartSingleJob, StartContinuous, Stop, Abort), the recipes' (the
``RecipeType`` objects, PrepareRecipe, GetRecipeListFiltered) and the results' lookups
(GetResultById, GetResultListFiltered). Mixed into ``server.OpcUaView``, on whose loop they run;
who may call which is ``access.RoleRules``'s business, checked before they run.

Each answers with the spec's outputs, the last of which is ``Error`` (Int32): 0 done,
1 refused by the station, 2 busy, 3 failed, 4 no answer in time. A transition the state
machine does not allow now is BadInvalidState; an unknown recipe BadInvalidArgument.
A transition returns once the station holds or inspects as the new state says
(``VisionServer._sync_hold``).
"""

from __future__ import annotations

import asyncio
import json
import logging

from ..recipes import is_live
from .states import Refused

log = logging.getLogger(__name__)

ERR_OK, ERR_REFUSED, ERR_BUSY, ERR_FAILED, ERR_TIMEOUT, ERR_UNKNOWN = 0, 1, 2, 3, 4, 5
OPERATOR = (
    "Halt",
    "Reset",
    "SelectModeAutomatic",
    "ConfirmAll",
    "StartSingleJob",
    "StartContinuous",
    "Stop",
    "Abort",
    "ReportSafetyState",
)
ENGINEER = ("PrepareRecipe", "UnprepareRecipe")


def _id(arg) -> str:
    """The ``Id`` of a method's structure argument (a Variant or its value), or ""."""
    value = getattr(arg, "Value", arg)
    return str(getattr(value, "Id", "") or "")


class Methods:
    """The method handlers of ``vision.VisionServer`` (coroutines on the server's loop)."""

    def _id_type(self, name: str) -> type:
        return self._ids[name]

    # -- recipes ---------------------------------------------------------------------------
    def _live_path(self) -> str | None:
        return ((self._status or {}).get("model") or {}).get("path")

    async def _refresh_recipes(self) -> None:
        """One RecipeType object per model file; IsPrepared marks the live one."""
        from asyncua import ua

        from .space import add_recipe

        live = self._live_path()
        found = self.recipes.scan(live)
        names = {r.name for r in found}
        for gone in set(self._recipe_nodes) - names:
            parts = self._recipe_nodes.pop(gone)
            await self._server.delete_nodes([parts["_object"]], recursive=True)
        for r in found:
            parts = self._recipe_nodes.get(r.name)
            if parts is None:
                obj, parts = await add_recipe(self._space, self._server, r.name)
                parts["_object"] = obj
                self._server.link_method(parts["Prepare"], self._recipe_prepare(r.name))
                self._server.link_method(parts["Unprepare"], self._m_UnprepareRecipe)
                self._rules.method_roles[parts["Prepare"].nodeid] = "engineer"
                self._rules.method_roles[parts["Unprepare"].nodeid] = "engineer"
                self._recipe_nodes[r.name] = parts
            rid = self._id_type("RecipeIdInternal")(
                Id=r.name, Hash=r.sha256, HashAlgorithm="SHA-256"
            )
            await parts["InternalId"].write_value(ua.Variant(rid, ua.VariantType.ExtensionObject))
            await parts["IsPrepared"].write_value(is_live(r, live))
            await parts["LastModified"].write_value(ua.Variant(r.modified, ua.VariantType.DateTime))

    def _recipe_prepare(self, name: str):
        async def prepare(parent):

            return await self._prepare(self._id_type("RecipeIdExternal")(Id=name), None, short=True)

        return prepare

    async def _prepare(self, external, internal, short: bool = False):
        """Promote the recipe's model file through the station's command path and wait for
        the outcome; outputs (InternalIdOut, IsCompleted, Error), or (IsCompleted, Error)."""
        from asyncua import ua

        name = _id(external) or _id(internal)
        recipe = self.recipes.find(name, self._live_path())
        if recipe is None:
            log.warning("OPC UA: PrepareRecipe %r: no such model file in the recipes folder", name)
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        if self.handlers is None or self.handlers.command is None:
            return ua.StatusCode(ua.StatusCodes.BadNotSupported)
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def reply(outcome: dict) -> None:
            def put() -> None:
                if not done.done():
                    done.set_result(outcome)

            loop.call_soon_threadsafe(put)

        body = json.dumps({"action": "promote", "path": str(recipe.path)}).encode()
        self.handlers.command(body, reply)
        try:
            outcome = await asyncio.wait_for(done, self.cfg.recipe_timeout_s)
        except asyncio.TimeoutError:
            outcome = {"outcome": "timeout", "reason": "no answer from the station in time"}
        kind = outcome.get("outcome")
        error = {
            "swapped": ERR_OK,
            "unchanged": ERR_OK,
            "refused": ERR_REFUSED,
            "busy": ERR_BUSY,
            "error": ERR_FAILED,
            "timeout": ERR_TIMEOUT,
        }.get(kind, ERR_UNKNOWN)
        log.info("OPC UA: PrepareRecipe %s: %s %s", name, kind, outcome.get("reason", ""))
        rid = self._id_type("RecipeIdInternal")(
            Id=recipe.name,
            Version=str(outcome.get("model_id") or ""),
            Hash=recipe.sha256,
            HashAlgorithm="SHA-256",
            Description=ua.LocalizedText(f"{kind}: {outcome.get('reason') or ''}".rstrip(": ")),
        )
        completed = error == ERR_OK
        outs = [
            ua.Variant(completed, ua.VariantType.Boolean),
            ua.Variant(error, ua.VariantType.Int32),
        ]
        if short:
            return outs
        return [ua.Variant(rid, ua.VariantType.ExtensionObject), *outs]

    # -- methods ---------------------------------------------------------------------------
    async def _transition(self, change) -> object:
        from asyncua import ua

        try:
            change()
        except Refused as exc:
            log.info("OPC UA: %s", exc)
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        await self._write_states()
        await self._sync_hold()
        return [ua.Variant(ERR_OK, ua.VariantType.Int32)]

    async def _m_Halt(self, parent, *args):
        return await self._transition(self.states.halt)

    async def _m_Reset(self, parent, *args):
        return await self._transition(self.states.reset)

    async def _m_SelectModeAutomatic(self, parent, *args):
        return await self._transition(self.states.select_mode_automatic)

    async def _m_ConfirmAll(self, parent, *args):
        return []  # nothing to confirm: errors clear when the station recovers

    async def _m_Stop(self, parent, *args):
        return await self._transition(self.states.stop)

    async def _m_Abort(self, parent, *args):
        return await self._transition(self.states.stop)

    async def _m_StartContinuous(self, parent, meas=None, part=None, *args):
        return await self._start_job(False, meas, part)

    async def _m_StartSingleJob(self, parent, meas=None, part=None, *args):
        return await self._start_job(True, meas, part)

    async def _start_job(self, single: bool, meas, part):
        from asyncua import ua

        meas_id, part_id = _id(meas), _id(part)
        trigger = self.handlers.trigger if self.handlers is not None else None
        if single and part_id and trigger is None:
            log.info("OPC UA: StartSingleJob for part %r: the station takes no triggers", part_id)
            return ua.StatusCode(ua.StatusCodes.BadNotSupported)
        try:
            job = self.states.start(single, meas_id, part_id if trigger else "")
        except Refused as exc:
            log.info("OPC UA: %s", exc)
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        await self._write_states()
        await self._sync_hold()  # inspecting again before the job's part is triggered
        if single and part_id and trigger is not None:
            trigger(json.dumps({"part_id": part_id}).encode())
        return [
            ua.Variant(ua.JobIdDataType(Id=job.job_id), ua.VariantType.ExtensionObject),
            ua.Variant(ERR_OK, ua.VariantType.Int32),
        ]

    async def _m_PrepareRecipe(self, parent, external=None, internal=None, *args):
        return await self._prepare(external, internal)

    async def _m_UnprepareRecipe(self, parent, *args):
        from asyncua import ua

        # a station always runs one model: prepare another instead
        return ua.StatusCode(ua.StatusCodes.BadNotSupported)

    async def _m_GetRecipeListFiltered(self, parent, *args):
        from asyncua import ua

        live = self._live_path()
        found = self.recipes.scan(live)
        ids = [
            self._id_type("RecipeIdInternal")(Id=r.name, Hash=r.sha256, HashAlgorithm="SHA-256")
            for r in found
        ]
        return [
            ua.Variant(True, ua.VariantType.Boolean),
            ua.Variant(len(ids), ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(ids, ua.VariantType.ExtensionObject),
            ua.Variant(ERR_OK, ua.VariantType.Int32),
        ]

    async def _m_GetResultById(self, parent, result_id=None, *args):
        from asyncua import ua

        key = _id(result_id)
        result = self.results.get(key)
        if result is None:
            return ua.StatusCode(ua.StatusCodes.BadNotFound)
        return [
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(result, ua.VariantType.ExtensionObject),
            ua.Variant(ERR_OK, ua.VariantType.Int32),
        ]

    async def _m_GetResultListFiltered(self, parent, *args):
        from asyncua import ua

        part_id = _id(args[2]) if len(args) > 2 else ""
        found = [
            r for r in self.results.values() if not part_id or (r.PartId and r.PartId.Id == part_id)
        ]
        return [
            ua.Variant(True, ua.VariantType.Boolean),
            ua.Variant(len(found), ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(found, ua.VariantType.ExtensionObject),
            ua.Variant(ERR_OK, ua.VariantType.Int32),
        ]

    async def _m_ReportSafetyState(self, parent, *args):
        from asyncua import ua

        return ua.StatusCode(ua.StatusCodes.BadNotSupported)
