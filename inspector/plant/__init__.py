"""The plant's views of a station beside the line link: Sparkplug B (SCADA) and OPC UA Machine
Vision (MES). Each is a ``station.link.LineView``: it sees verdicts and status, and sends model
requests through the station's one command path.

May import ``inspector.contract``, ``inspector.errors`` and ``inspector.logs``; never the
station, the gate or the lab (the CLI wires the views into a station: ``build_views``).
"""
