"""OPC UA server exposing the station as an OPC 40100 ``VisionSystemType`` (asyncua).
Imports ``inspector.contract`` only."""
