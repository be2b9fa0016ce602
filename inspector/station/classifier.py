"""ONNX Runtime classifier: load model.onnx with its manifest, pick providers, run batches.

Providers come from the config in order (tensorrt, cuda, cpu). ONNX Runtime silently
falls back to the CPU when a GPU provider cannot start; we log the providers actually
active, and ``require_gpu: true`` turns such a fallback into a start-up error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..contract.manifest import METADATA_KEY, Manifest, file_digest, parse
from ..contract.preprocess import PreprocessSpec
from ..errors import ModelError
from .config import ModelSection
from .kinds import kind_of

log = logging.getLogger(__name__)

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SPLIT_BELOW_MS = 1.0  # model.workers auto: split the CPU between two workers below this
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelRunError(RuntimeError):
    """Inference failed or returned unusable scores; the parts fail with reason 'error'."""


class Classifier:
    """A loaded model. ``run(batch)`` returns class probabilities in manifest order."""

    def __init__(
        self,
        cfg: ModelSection,
        roi: list[int] | None = None,
        remap=None,
        own_geometry: bool = True,
    ) -> None:
        """``roi``/``remap``: the station's geometry; with ``own_geometry`` false, frames go
        through that geometry alone (None: whole frames), never the model's."""
        path = Path(cfg.path)
        if not path.is_file():
            raise ModelError(f"model.path: model file not found: {path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = OPT_LEVELS[cfg.graph_optimization]
        opts.log_severity_level = 3
        if not cfg.spin:  # idle ORT threads sleep instead of spinning: the capture and MQTT
            opts.add_session_config_entry(
                "session.intra_op.allow_spinning", "0"
            )  # threads need the CPU
        available = ort.get_available_providers()
        wanted = []
        for p in cfg.providers:
            name = PROVIDERS[p.type]
            if name in available:
                wanted.append((name, provider_options(p)))
            else:
                log.warning(
                    "execution provider %s is not available in this onnxruntime build", name
                )
        if not wanted:
            raise ModelError(
                f"model.providers: none of {[p.type for p in cfg.providers]} is available "
                f"(available: {available})"
            )
        cores, self.workers, threads = _parallelism(cfg, gpu=wanted[0][0] in GPU_PROVIDERS)
        if threads:
            opts.intra_op_num_threads = threads
        self.session = _open(path, opts, wanted)
        self.providers = self.session.get_providers()
        if cfg.require_gpu and not GPU_PROVIDERS & set(self.providers):
            raise ModelError(
                f"model.require_gpu: no GPU provider is active (active: {self.providers})"
            )

        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise ModelError(
                f"model.path: {path} has no '{METADATA_KEY}' metadata; export it with "
                "'inspector export' or embed a manifest"
            )
        self.manifest: Manifest = parse(text, path, file_digest(path))
        self.spec: PreprocessSpec = self.manifest.preprocess_spec(
            roi=roi, remap=remap, own_geometry=own_geometry
        )
        self.model_id = self.manifest.model_id
        self.classes = self.manifest.classes
        self._check_io(path)
        self.map_output = self._map_output(path)
        self.max_batch = min(cfg.max_batch, self._fixed_batch or cfg.max_batch)
        self._local = threading.local()  # each worker: its own buffers and IO binding
        gpu = bool(GPU_PROVIDERS & set(self.providers))
        self.io_binding = cfg.io_binding == "on" or (cfg.io_binding == "auto" and gpu)
        how = f"{self.workers} worker(s), {threads or 'default'} intra-op threads each"
        if not cfg.workers and not cfg.intra_op_threads and not gpu and cores >= 2:
            how = self._choose_workers(path, opts, wanted, cores)
        log.info("model %s runs on %s (%s)", path.name, ", ".join(self.providers), how)

    def _choose_workers(self, path: Path, opts, wanted, cores: int) -> str:
        """``model.workers: 0`` on a CPU: split the cores between two workers when the model
        is fast, keep one worker with every core when it is slow.

        Two runs side by side with half the cores each outrun one run with all of them on a
        small model (no barrier between the cores on every operator; measured on 2 cores:
        12,200 vs 10,300 images/s for the demo model, 3,400 vs 2,700 for a 160-px CNN), and
        a lone image then takes at most ~SPLIT_BELOW_MS longer. A slow model scales well
        across cores, and one thread per image would make a lone part wait twice as long
        (300-px CNN: 5.0 vs 3.4 ms end to end at p50), so it keeps one worker.
        """
        feeds = {self.manifest.input_name: self.buffer(self._fixed_batch or 1)}
        lat = []
        try:
            for i in range(18):
                t = time.perf_counter()
                self.session.run([self.output_name], feeds)
                if i >= 3:  # the first runs warm up
                    lat.append((time.perf_counter() - t) * 1000.0)
        except Exception as exc:  # the station's warm-up reports a model that cannot run
            return f"1 worker: could not time the model ({str(exc).splitlines()[0][:120]})"
        lone = float(np.median(lat))
        if lone >= SPLIT_BELOW_MS:
            return f"1 worker with every core: a lone image takes {lone:.2f} ms (auto)"
        opts.intra_op_num_threads = max(1, cores // 2)
        self.session = _open(path, opts, wanted)
        self.workers = 2
        return (
            f"2 workers x {opts.intra_op_num_threads} intra-op thread(s): a lone image takes "
            f"{lone:.2f} ms with every core (auto)"
        )

    def _check_io(self, path: Path) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        name = self.manifest.input_name
        if name not in inputs:
            raise ModelError(
                f"model.path: manifest input {name!r} is not an input of {path.name} "
                f"(inputs: {list(inputs)})"
            )
        inp = inputs[name]
        if inp.type != "tensor(uint8)":
            raise ModelError(
                f"model.path: input {name!r} is {inp.type}; the line feeds raw uint8 pixels"
            )
        shape = list(inp.shape)
        want = list(self.spec.shape)
        if len(shape) != 4 or [s if isinstance(s, int) else None for s in shape[1:]] != want:
            raise ModelError(
                f"model.path: input shape {shape} does not match the manifest's "
                f"preprocessing (expected [batch, {want[0]}, {want[1]}, {want[2]}])"
            )
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None
        outputs = self.session.get_outputs()
        self.output_name = self.manifest.data["output"].get("name") or outputs[0].name
        out = {o.name: o for o in outputs}.get(self.output_name)
        if out is None:
            raise ModelError(f"model.path: output {self.output_name!r} not found in {path.name}")
        width = 1 if self.manifest.output_kind == "sigmoid" else len(self.classes)
        if len(out.shape) != 2 or (isinstance(out.shape[1], int) and out.shape[1] != width):
            raise ModelError(
                f"model.path: output shape {out.shape} does not fit {self.manifest.output_kind} "
                f"over {len(self.classes)} classes (expected [batch, {width}])"
            )

    def _map_output(self, path: Path) -> str | None:
        """The heat-map output: an anomaly model's (manifest ``kind: anomaly``), a classifier's
        class-activation map (manifest ``outputs.class_map``), else None. ``map_kind``
        says which ("anomaly", "cam" or None)."""
        self.map_kind = None
        if kind_of(self.manifest).map_kind == "anomaly":
            name = (self.manifest.data.get("anomaly") or {}).get("map_output")
            what = "anomaly map"
        else:
            name = ((self.manifest.data.get("outputs") or {}).get("class_map") or {}).get("name")
            what = "class map"
            if name is None:
                return None
        if name not in {o.name for o in self.session.get_outputs()}:
            raise ModelError(f"model.path: {what} output {name!r} not found in {path.name}")
        self.map_kind = "anomaly" if what == "anomaly map" else "cam"
        return name

    def buffer(self, n: int) -> np.ndarray:
        """A preallocated input batch of n images for the calling thread (reused)."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        buf = buffers.get(n)
        if buf is None:
            buf = buffers[n] = np.zeros((n, *self.spec.shape), np.uint8)
        return buf

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities, shape (len(batch), len(classes)), in the manifest's class order."""
        try:
            if self.io_binding:
                out = self._run_bound(batch)
            else:
                out = self.session.run([self.output_name], {self.manifest.input_name: batch})[0]
        except Exception as exc:
            raise ModelRunError(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ) from exc
        return self._probs(out, batch)

    def run_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``run`` plus the model's heat maps (N, h, w) from the same run: an anomaly model's
        map or a classifier's class-activation map (``map_kind``); None without one."""
        if self.map_output is None:
            return self.run(batch), None
        try:
            out, maps = self.session.run(
                [self.output_name, self.map_output], {self.manifest.input_name: batch}
            )
        except Exception as exc:
            raise ModelRunError(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ) from exc
        return self._probs(out, batch), np.asarray(maps, np.float32)

    def _probs(self, out, batch: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ModelRunError(f"model returned shape {out.shape} for a batch of {len(batch)}")
        if self.manifest.output_kind == "sigmoid":
            p = out[:, 0]
            defect = self.classes.index(self.manifest.defect_classes[0])
            probs = np.empty((len(batch), 2))
            probs[:, defect] = p
            probs[:, 1 - defect] = 1.0 - p
            out = probs
        if not np.all(np.isfinite(out)) or out.min() < -1e-6 or out.max() > 1 + 1e-6:
            raise ModelRunError("model returned scores outside [0, 1] or NaN")
        return out

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        """One run through this thread's IO binding: the input is bound where it lies (no
        feed dictionary), the output lands in host memory for the decision."""
        io = getattr(self._local, "io", None)
        if io is None:
            io = self._local.io = self.session.io_binding()
        io.bind_cpu_input(self.manifest.input_name, batch)
        io.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()[0]

    def run_all(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for any number of inputs, in batches of at most ``max_batch``."""
        out = [
            self.run(np.ascontiguousarray(x[i : i + self.max_batch]))
            for i in range(0, len(x), self.max_batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def warmup(self, runs: int) -> None:
        if self.io_binding:
            try:
                self.run(self.buffer(1))
            except ModelRunError as exc:  # keep running the plain way rather than not at all
                log.warning("IO binding failed (%s); running without it", exc)
                self.io_binding = False
        for n in {1, self.max_batch}:
            for _ in range(max(runs, 0)):
                self.run(self.buffer(n))


def trt_cache_dir() -> Path:
    """Where TensorRT engines are kept between starts: the systemd unit's state directory
    (``$STATE_DIRECTORY``), else ``~/.cache/inspector``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    base = Path(state) if state else Path.home() / ".cache" / "inspector"
    return base / "trt-cache"


def provider_options(p) -> dict[str, str]:
    """The provider's options as ONNX Runtime takes them (strings), with our defaults.

    TensorRT builds an engine for the model on the first run, which takes seconds to minutes;
    without a cache every restart of the station pays it again before the first verdict. So
    the engine and timing caches are on unless the config says otherwise.
    """
    opts = {k: str(v) for k, v in p.options.items()}
    if p.type == "tensorrt":
        cache = opts.get("trt_engine_cache_path") or str(trt_cache_dir())
        opts.setdefault("trt_engine_cache_enable", "True")
        opts.setdefault("trt_engine_cache_path", cache)
        opts.setdefault("trt_timing_cache_enable", "True")
        opts.setdefault("trt_timing_cache_path", cache)
        if opts["trt_engine_cache_enable"].lower() in ("true", "1"):
            try:
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ModelError(
                    f"model.providers: TensorRT engine cache {opts['trt_engine_cache_path']}: "
                    f"{exc.strerror or exc} (set trt_engine_cache_path, or "
                    "trt_engine_cache_enable: false)"
                ) from None
    return opts


def _open(path: Path, opts, wanted) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), opts, providers=wanted)
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise ModelError(f"model.path: cannot load {path}: {str(exc).splitlines()[0]}") from None


def _parallelism(cfg: ModelSection, gpu: bool) -> tuple[int, int, int]:
    """(cores, workers, ONNX Runtime intra-op threads; 0 = its default) as configured.
    ``workers: 0`` starts with one worker; on a CPU, ``_choose_workers`` may split."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    workers = cfg.workers or 1
    threads = cfg.intra_op_threads
    if not threads and workers > 1 and not gpu:
        threads = max(1, cores // workers)
    return cores, workers, threads
