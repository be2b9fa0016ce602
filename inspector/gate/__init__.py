"""The reference reject gate: its config, its decisions (``core.GateCore``, no MQTT), the
service on MQTT (``service.GateService``) and the actuators that fire a reject.

May import ``inspector.contract``, ``inspector.errors`` and ``inspector.logs``; never
``inspector.station`` (it knows the station only through the line contract) nor ``inspector.lab``.
"""
