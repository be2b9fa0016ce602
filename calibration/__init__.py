"""Station calibration: what an integrator runs once at setup, and the line each shift.

- ``camera``: intrinsics, distortion and pixel size from checkerboard photos
- ``baseline``: the image-quality baseline of a reference set
- ``golden``: golden-sample verification through the station's real path

Outputs are files the station config points to; the runtime (``inspector.contract.geometry``,
``inspector.station.quality``, ``inspector.contract.preprocess``) applies them.
"""
