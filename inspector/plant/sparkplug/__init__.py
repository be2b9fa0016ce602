"""Sparkplug B 3.0 edge node: NBIRTH/DBIRTH/NDATA/DDATA/NDEATH on the station's broker, DCMD for
the commands a plant may send. Imports ``inspector.contract`` only.

``sparkplug_b.proto`` is Eclipse Tahu's schema (EPL-2.0, licence header kept);
``sparkplug_b_pb2.py`` is compiled from it once and kept here, so the line PC needs only the
``protobuf`` runtime. To compile it again (grpcio-tools in a throw-away environment):

    python -m grpc_tools.protoc --proto_path=. --python_out=. sparkplug_b.proto
    ruff check --fix sparkplug_b_pb2.py && ruff format sparkplug_b_pb2.py
"""
