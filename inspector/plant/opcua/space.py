"""The address space: the OPC Foundation's Machine Vision nodeset (OPC 40100-1, MIT licence,
kept beside this file), one ``VisionSystemType`` object for the station, and the station's
own variables beside the standard ones.

    Objects/
      STATION (VisionSystemType)                      ns=MV: the companion spec's parts
        VisionStateMachine/ (CurrentState, Halt, Reset, SelectModeAutomatic, ConfirmAll,
          AutomaticModeStateMachine/ (StartSingleJob, StartContinuous, Stop, Abort))
        RecipeManagement/ (Recipes/<one RecipeType per model file>, PrepareRecipe, ...)
        ResultManagement/ (Results/LastResult, GetResultById, ...)
        SafetyStateManagement/, ConfigurationManagement/, SystemState, DiagnosticLevel
        Inspector/                                    ns=ours: the station as it is
          StationState, ModelId, Camera, Detail, Status (the retained status, JSON)
          LastResult/ (PartId, Verdict, Reason, Label, Score, Seq, ModelId, Json)

``ResultReady`` events are of ``InspectorResultReadyEventType``, a subtype of the spec's
``ResultReadyEventType`` that adds the verdict's fields (Verdict, Reason, Label, Score, Seq,
ModelId): a client that filters on ``ResultReadyEventType`` receives them too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Node, Server, ua
from asyncua.common.instantiate_util import instantiate

NODESET = Path(__file__).with_name("Opc.Ua.MachineVision.NodeSet2.xml")
MV_URI = "http://opcfoundation.org/UA/MachineVision"
OUR_URI = "urn:defect-inspector:opcua"

# numeric ids in the nodeset's namespace (fixed by the OPC Foundation's file)
RECIPE_TYPE, VISION_SYSTEM_TYPE, RESULT_READY_EVENT_TYPE, RESULT_DATA_TYPE = 1002, 1003, 1024, 3006
BINARY_ID_BASE_TYPE = 3019
ID_TYPES = {"RecipeIdExternal": 3002, "ConfigurationId": 3008, "RecipeIdInternal": 3013}


def id_type(mv: int, name: str) -> type:
    """The class for one of the id types (``ID_TYPES``), as completed by ``build``."""
    return ua.extension_objects_by_datatype[ua.NodeId(ID_TYPES[name], mv)]


STATION_VARS = ("StationState", "ModelId", "Camera", "Detail", "Status")
RESULT_VARS = {
    "PartId": ua.VariantType.String,
    "Verdict": ua.VariantType.String,
    "Reason": ua.VariantType.String,
    "Label": ua.VariantType.String,
    "Score": ua.VariantType.Double,
    "Seq": ua.VariantType.Int64,
    "ModelId": ua.VariantType.String,
    "Json": ua.VariantType.String,
}
EVENT_FIELDS = [
    ("Verdict", ua.VariantType.String),
    ("Reason", ua.VariantType.String),
    ("Label", ua.VariantType.String),
    ("Score", ua.VariantType.Double),
    ("Seq", ua.VariantType.Int64),
    ("ModelId", ua.VariantType.String),
]


@dataclass
class Space:
    """The nodes the server writes and whose methods it implements."""

    mv: int  # the Machine Vision namespace index
    ours: int
    system: Node
    state_machine: Node
    automatic: Node
    recipes_folder: Node
    results_folder: Node
    last_result: Node  # ResultDataType
    system_state: Node
    event_type: Node
    states: dict[str, ua.NodeId] = field(default_factory=dict)  # state name -> type's state
    station_vars: dict[str, Node] = field(default_factory=dict)
    result_vars: dict[str, Node] = field(default_factory=dict)
    methods: dict[str, Node] = field(default_factory=dict)  # "Halt", "PrepareRecipe", ...

    def mv_name(self, name: str) -> str:
        return f"{self.mv}:{name}"


async def build(server: Server, station_id: str) -> Space:
    """Import the nodeset and instantiate the station's VisionSystem (with the optional
    management objects the spec defines; the placeholders removed)."""
    await server.import_xml(str(NODESET))
    mv = await server.get_namespace_index(MV_URI)
    ours = await server.register_namespace(OUR_URI)
    await _complete_id_types(server, mv)
    await server.load_data_type_definitions()
    vst = server.get_node(ua.NodeId(VISION_SYSTEM_TYPE, mv))
    (system, *_) = await instantiate(
        server.nodes.objects,
        vst,
        nodeid=ua.NodeId(station_id, ours),
        bname=ua.QualifiedName(station_id, ours),
        dname=ua.LocalizedText(station_id),
        idx=ours,
    )
    for placeholder in ("RecipeManagement/Products/<Product>",):
        path = [f"{mv}:{p}" for p in placeholder.split("/")]
        with contextlib.suppress(ua.UaError):
            await server.delete_nodes([await system.get_child(path)], recursive=True)
    await system.write_attribute(
        ua.AttributeIds.EventNotifier, ua.DataValue(ua.Variant(1, ua.VariantType.Byte))
    )

    def child(*names: str):
        return system.get_child([f"{mv}:{n}" for n in names])

    sm = await child("VisionStateMachine")
    auto = await child("VisionStateMachine", "AutomaticModeStateMachine")
    vsm_type = server.get_node(await sm.read_type_definition())
    auto_type = server.get_node(await auto.read_type_definition())
    states = {}
    for t, names in (
        (vsm_type, ("Preoperational", "Halted", "Error", "Operational")),
        (auto_type, ("Initialized", "Ready", "SingleExecution", "ContinuousExecution")),
    ):
        for name in names:
            states[name] = (await t.get_child([f"{mv}:{name}"])).nodeid
    results = await child("ResultManagement", "Results")
    last = await results.add_variable(
        ua.NodeId(f"{station_id}.LastResult", ours),
        ua.QualifiedName("LastResult", ours),
        ua.ResultDataType(),
        datatype=ua.NodeId(RESULT_DATA_TYPE, mv),
    )
    rr_type = server.get_node(ua.NodeId(RESULT_READY_EVENT_TYPE, mv))
    event_type = await server.create_custom_event_type(
        ours, "InspectorResultReadyEventType", rr_type, EVENT_FIELDS
    )
    space = Space(
        mv=mv,
        ours=ours,
        system=system,
        state_machine=sm,
        automatic=auto,
        recipes_folder=await child("RecipeManagement", "Recipes"),
        results_folder=results,
        last_result=last,
        system_state=await child("SystemState"),
        event_type=event_type,
        states=states,
    )
    await _station_nodes(space, station_id)
    for path in (
        ("VisionStateMachine", "Halt"),
        ("VisionStateMachine", "Reset"),
        ("VisionStateMachine", "SelectModeAutomatic"),
        ("VisionStateMachine", "ConfirmAll"),
        ("VisionStateMachine", "AutomaticModeStateMachine", "StartSingleJob"),
        ("VisionStateMachine", "AutomaticModeStateMachine", "StartContinuous"),
        ("VisionStateMachine", "AutomaticModeStateMachine", "Stop"),
        ("VisionStateMachine", "AutomaticModeStateMachine", "Abort"),
        ("RecipeManagement", "PrepareRecipe"),
        ("RecipeManagement", "UnprepareRecipe"),
        ("RecipeManagement", "GetRecipeListFiltered"),
        ("ResultManagement", "GetResultById"),
        ("ResultManagement", "GetResultListFiltered"),
        ("SafetyStateManagement", "ReportSafetyState"),
    ):
        space.methods[path[-1]] = await child(*path)
    return space


async def _complete_id_types(server: Server, mv: int) -> None:
    """The nodeset's recipe and configuration id types (subtypes of BinaryIdBaseDataType)
    carry an empty Definition: give each its base's fields and its own encoding, so that
    clients (asyncua's among them) can make ResultDataType, whose fields use them, and this
    server sends each with its own type id rather than the abstract base's."""
    base = server.get_node(ua.NodeId(BINARY_ID_BASE_TYPE, mv))
    base_def = await base.read_data_type_definition()
    for sub in await base.get_children(refs=ua.ObjectIds.HasSubtype):
        try:
            own = await sub.read_data_type_definition()
        except ua.UaError:
            own = None
        if own is not None and own.Fields:
            continue
        encodings = await sub.get_references(refs=ua.ObjectIds.HasEncoding)
        binary = [r.NodeId for r in encodings if r.BrowseName.Name == "Default Binary"]
        if not binary:
            continue
        definition = ua.StructureDefinition(
            DefaultEncodingId=binary[0],
            BaseDataType=base.nodeid,
            StructureType=base_def.StructureType,
            Fields=base_def.Fields,
        )
        await sub.write_attribute(
            ua.AttributeIds.DataTypeDefinition,
            ua.DataValue(ua.Variant(definition, ua.VariantType.ExtensionObject)),
        )


async def _station_nodes(space: Space, station_id: str) -> None:
    ours = space.ours
    folder = await space.system.add_folder(
        ua.NodeId(f"{station_id}.Inspector", ours), ua.QualifiedName("Inspector", ours)
    )
    for name in STATION_VARS:
        space.station_vars[name] = await folder.add_variable(
            ua.NodeId(f"{station_id}.Inspector.{name}", ours),
            ua.QualifiedName(name, ours),
            "",
            varianttype=ua.VariantType.String,
        )
    last = await folder.add_object(
        ua.NodeId(f"{station_id}.Inspector.LastResult", ours), ua.QualifiedName("LastResult", ours)
    )
    for name, vt in RESULT_VARS.items():
        space.result_vars[name] = await last.add_variable(
            ua.NodeId(f"{station_id}.Inspector.LastResult.{name}", ours),
            ua.QualifiedName(name, ours),
            ua.get_default_value(vt),
            varianttype=vt,
        )


async def add_recipe(space: Space, server: Server, name: str) -> tuple[Node, dict[str, Node]]:
    """One ``RecipeType`` object under Recipes for the model file ``name``: the object and
    its variables (InternalId, IsPrepared, LastModified, ExternalId) and methods."""
    mv = space.mv
    rt = server.get_node(ua.NodeId(RECIPE_TYPE, mv))
    nid = ua.NodeId(f"{space.system.nodeid.Identifier}.Recipes.{name}", space.ours)
    (obj, *_) = await instantiate(
        space.recipes_folder,
        rt,
        nodeid=nid,
        bname=ua.QualifiedName(name, space.ours),
        dname=ua.LocalizedText(name),
        idx=space.ours,
        instantiate_optional=False,
    )
    parts = {}
    for n in ("InternalId", "IsPrepared", "LastModified", "Prepare", "Unprepare"):
        parts[n] = await obj.get_child([f"{mv}:{n}"])
    return obj, parts
