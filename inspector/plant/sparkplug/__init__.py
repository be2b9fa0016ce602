"""Sparkplug B 3.0 edge node: NBIRTH/DBIRTH/NDATA/DDATA/NDEATH on the station's broker, DCMD for
the commands a plant may send. Imports ``inspector.contract`` only."""
