"""ONNX Runtime runner: an ``.onnx`` file on TensorRT, CUDA or the CPU.

Execution providers are chosen automatically (TensorRT, then CUDA, then CPU) or named. A GPU
provider that ONNX Runtime lists but cannot load (no NVIDIA device, missing CUDA/cuDNN/TensorRT
libraries) is, when it was asked for by name (``provider="cuda"``/``"tensorrt"``) or implied by
``device="cuda"``, a SettingsError saying why: never a silent run on the CPU. With ``auto`` for
both, the CPU is used with one line saying so (:class:`~tiler.errors.DeviceWarning`). ONNX
Runtime's own error printout is silenced either way.
Batches run through I/O binding: on CUDA the input is copied to the device once and the output is
allocated there, so a batch makes exactly one upload and one download.

The model's :class:`~tiler.models.spec.ModelSpec` is read from the ONNX ``metadata_props`` entry
``tiler`` (JSON, written by ``tiler export``); without it, channels come from the graph's shapes.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..errors import DeviceWarning, ModelError, SettingsError
from ..models.spec import ModelSpec
from .base import Runner

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_STATE = ort.capi.onnxruntime_pybind11_state
#: What ONNX Runtime raises (its exceptions do not derive from RuntimeError).
ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError) + tuple(
    getattr(_STATE, n) for n in ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph",
                                 "NoSuchFile", "EPFail", "NotImplemented", "InvalidProtobuf")
    if hasattr(_STATE, n)
)
_CUDA_HELP = ("see https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html"
              "#requirements")


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is plausibly present (device nodes on Linux/WSL; assumed on Windows)."""
    if sys.platform.startswith("linux"):
        return (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/dxg")
                or bool(glob.glob("/dev/nvidia[0-9]*")))
    return sys.platform == "win32"


def _device_id(device: str | None) -> int:
    text = str(device or "auto")
    if text.startswith("cuda:"):
        try:
            return int(text.split(":", 1)[1])
        except ValueError:
            raise SettingsError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if text not in ("auto", "cpu", "cuda"):
        raise SettingsError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return 0


def choose_providers(provider: str = "auto", device: str | None = "auto") -> list[str]:
    """Provider names to ask ONNX Runtime for, best first, always ending with the CPU (which runs
    the nodes a GPU provider does not take).

    ``auto`` asks for TensorRT and CUDA only when ONNX Runtime has them and a GPU is plausibly
    present (with ``device="cuda"``: whenever ONNX Runtime has them); a named provider is asked for
    as named (TensorRT with CUDA behind it). A GPU asked for explicitly (a named provider, or
    ``device="cuda"``) that this ONNX Runtime does not have at all is a SettingsError.
    """
    if provider not in ("auto", *PROVIDERS):
        raise SettingsError(f"unknown provider {provider!r}; use auto, tensorrt, cuda or cpu")
    if str(device) == "cpu" or provider == "cpu":
        if provider not in ("auto", "cpu"):
            raise SettingsError(f"provider {provider} contradicts device cpu")
        if str(device).startswith("cuda"):
            raise SettingsError(f"provider cpu contradicts device {device}; drop one of them")
        return [PROVIDERS["cpu"]]
    available = ort.get_available_providers()
    if provider == "auto":
        gpu = [PROVIDERS[p] for p in ("tensorrt", "cuda") if PROVIDERS[p] in available]
        if str(device).startswith("cuda"):
            if not gpu:
                raise SettingsError(
                    f"device {device} asked for, but this ONNX Runtime ({ort.__version__}) has no GPU "
                    "providers; install onnxruntime-gpu, or use --device cpu"
                )
            return [*gpu, PROVIDERS["cpu"]]
        return [*gpu, PROVIDERS["cpu"]] if gpu_present() else [PROVIDERS["cpu"]]
    names = [PROVIDERS["tensorrt"], PROVIDERS["cuda"]] if provider == "tensorrt" else [PROVIDERS["cuda"]]
    if names[0] not in available:
        raise SettingsError(
            f"provider {provider} asked for, but this ONNX Runtime ({ort.__version__}) has only "
            f"{', '.join(available)}; install onnxruntime-gpu, or use --provider cpu"
        )
    return [*names, PROVIDERS["cpu"]]


class OnnxRunner(Runner):
    """Run an ONNX model with ONNX Runtime.

    Parameters
    ----------
    path : the ``.onnx`` file: one input (N, C, h, w), first output (N, C_out, h, w).
    spec : metadata replacing what the file holds.
    provider : "auto" (TensorRT, then CUDA, then CPU), "tensorrt", "cuda" or "cpu".
    device : "auto", "cpu", "cuda" or "cuda:N" (the GPU index for CUDA and TensorRT).
    precision : "fp32", or "fp16": TensorRT builds fp16 engines; other providers need a model
        exported in half precision (``tiler export --fp16``), whose precision is used as it is.
    trt_cache_dir : where TensorRT keeps built engines (default ``~/.cache/tiler/tensorrt``).
    trt_profile : (max batch, height, width) of the TensorRT optimisation profile (min batch 1);
        None lets TensorRT build an engine per new input shape.
    threads : CPU threads for the CPU provider (None: ONNX Runtime's default).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        spec: ModelSpec | None = None,
        provider: str = "auto",
        device: str | None = "auto",
        precision: str = "fp32",
        trt_cache_dir: str | os.PathLike[str] | None = None,
        trt_profile: tuple[int, int, int] | None = None,
        threads: int | None = None,
    ) -> None:
        if precision not in ("fp32", "fp16"):
            raise SettingsError(f"precision {precision!r} is not available with ONNX Runtime; "
                                "use fp32 or fp16")
        self.path = Path(path)
        self.precision = precision
        self.device_id = _device_id(device)
        wanted = choose_providers(provider, device)
        options = _session_options(threads)
        provider_options = [self._provider_options(p, trt_cache_dir, trt_profile) for p in wanted]
        # named provider: that one; device cuda with auto: any GPU provider; auto/auto: anything
        fix = "--provider cpu" if provider != "auto" else "--device cpu"
        explicit = provider != "auto" or str(device).startswith("cuda")
        self.session, self.warning = _create_session(
            self.path, wanted, provider_options, options, any_gpu=provider == "auto",
            refuse=fix if explicit else None,
        )
        self.providers = self.session.get_providers()
        self.provider = self.providers[0]
        if self.warning is None and not explicit and str(device) != "cpu" and provider != "cpu":
            why = ("no NVIDIA GPU found" if PROVIDERS["cuda"] in ort.get_available_providers()
                   else "this ONNX Runtime has no GPU providers (install onnxruntime-gpu for them)")
            self.warning = (f"{why}: ONNX Runtime runs {self.path.name} on the CPU (pass --provider cpu "
                            "to say so and silence this)")
        if self.warning:
            warnings.warn(self.warning, DeviceWarning, stacklevel=2)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{self.path}: tiler needs a model with one (N, C, h, w) input")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        #: (h, w) of a model exported with a fixed spatial size (``tiler export --fixed-size``), else None.
        dims = inputs[0].shape[2:]
        self.fixed_size = tuple(dims) if all(isinstance(d, int) and d > 0 for d in dims) else None
        self.input_dtype = _NUMPY_TYPES.get(inputs[0].type)
        if self.input_dtype is None:
            raise ModelError(f"{self.path}: the model's input is {inputs[0].type}; tiler needs float")
        if precision == "fp16" and self.input_dtype != np.float16 and self.provider != PROVIDERS["tensorrt"]:
            raise SettingsError(
                f"fp16 with ONNX Runtime needs TensorRT or a half-precision model (this runs on "
                f"{self.provider}); export one with `tiler export --fp16`"
            )
        self.spec = spec or self._read_spec(inputs[0].shape, outputs[0].shape)
        self.device_type = "cpu" if self.provider == PROVIDERS["cpu"] else "cuda"
        self._fingerprint: str | None = None
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # failures are raised as ModelError instead

    def _provider_options(
        self, name: str, cache: Any, profile: tuple[int, int, int] | None
    ) -> dict[str, Any]:
        if name == PROVIDERS["cuda"]:
            return {"device_id": self.device_id}
        if name != PROVIDERS["tensorrt"]:
            return {}
        cache_dir = Path(cache) if cache else Path.home() / ".cache" / "tiler" / "tensorrt"
        cache_dir.mkdir(parents=True, exist_ok=True)
        opts: dict[str, Any] = {
            "device_id": self.device_id,
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
        }
        name_in, c = _input_name_and_channels(self.path) if profile is not None else ("", 0)
        if profile is not None and c > 0:  # a profile needs the channel count fixed in the graph
            batch, h, w = profile
            opts["trt_profile_min_shapes"] = f"{name_in}:1x{c}x{h}x{w}"
            opts["trt_profile_opt_shapes"] = opts["trt_profile_max_shapes"] = f"{name_in}:{batch}x{c}x{h}x{w}"
        return opts

    def _read_spec(self, in_shape: list[Any], out_shape: list[Any]) -> ModelSpec:
        meta = self.session.get_modelmeta().custom_metadata_map.get("tiler")
        if meta:
            try:
                return ModelSpec.from_dict({"name": self.path.name, **json.loads(meta)})
            except json.JSONDecodeError as exc:
                raise ModelError(f"{self.path}: the 'tiler' metadata is not JSON ({exc})") from None
        c_in, c_out = in_shape[1], out_shape[1] if len(out_shape) > 1 else 0
        return ModelSpec(
            name=self.path.name,
            in_channels=c_in if isinstance(c_in, int) else 0,
            out_channels=c_out if isinstance(c_out, int) else 0,
        )

    def describe(self) -> str:
        """``ONNX Runtime 1.x CUDAExecutionProvider on cuda:0 (fp32)``: the provider the session
        actually runs on (not the one asked for), its device and the precision."""
        where = "cpu" if self.provider == PROVIDERS["cpu"] else f"cuda:{self.device_id}"
        dtype = "fp16 model" if self.input_dtype == np.float16 else self.precision
        return f"ONNX Runtime {ort.__version__} {self.provider} on {where} ({dtype})"

    def fingerprint(self) -> str:
        """Hash of the model file and the spec (recorded for resume)."""
        if self._fingerprint is None:
            graph = self.path.read_bytes()
            h = hashlib.sha256(graph)
            for data in _external_data(self.path, graph):  # weights stored beside the graph
                h.update(data.name.encode())
                h.update(data.read_bytes())
            h.update(self.spec.to_json().encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def run(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, h, w) float32 normalised tiles -> (N, C_out, h, w) float32 logits."""
        x = np.ascontiguousarray(tiles, dtype=self.input_dtype)
        if self.fixed_size is not None and x.shape[2:] != self.fixed_size:
            h, w = self.fixed_size
            raise ModelError(f"{self.path}: the model takes {h} x {w} tiles only (exported with a fixed "
                             f"size), not {x.shape[2]} x {x.shape[3]}; use --tile {h}")
        try:
            if self.device_type == "cpu":
                # the output arrives as a NumPy array ONNX Runtime made; an io binding's
                # copy_outputs_to_cpu copied it once more (zero-cost ONNX file, 8192 x 16384,
                # `tiler run --no-pyramid`: 3.47-3.72 s -> 3.17-3.33 s)
                y = self.session.run([self.output_name], {self.input_name: x}, self._run_options)[0]
            else:
                binding = self.session.io_binding()
                # the batch is copied to the device once, the output back once
                value = ort.OrtValue.ortvalue_from_numpy(x, self.device_type, self.device_id)
                binding.bind_ortvalue_input(self.input_name, value)
                binding.bind_output(self.output_name, self.device_type, self.device_id)
                self.session.run_with_iobinding(binding, self._run_options)
                y = binding.copy_outputs_to_cpu()[0]
        except ORT_ERRORS as exc:
            raise ModelError(f"{self.path}: the model failed on a batch of shape {x.shape}: "
                             f"{_one_line(exc)}") from None
        if y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
            raise ModelError(
                f"{self.path}: the model returned shape {y.shape} for input {x.shape}; "
                "tiler needs (N, C_out, h, w) outputs of the input's size"
            )
        return np.ascontiguousarray(y, dtype=np.float32)


def _external_data(path: Path, graph: bytes) -> list[Path]:
    """The external-data files an ONNX model's initializers name (sorted, each once).

    ``graph`` is the model file's bytes. An initializer stored outside names its file under the key
    ``location``; a graph without those bytes has none, and is not parsed (importing ``onnx`` costs
    over a second, more than the whole run of a small image).
    """
    if b"location" not in graph:
        return []
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable here: the session creation reports it
        return []
    names = {entry.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
             for entry in t.external_data if entry.key == "location"}
    return sorted(path.parent / n for n in names if (path.parent / n).is_file())


def _one_line(exc: BaseException) -> str:
    """ONNX Runtime's message on one line (its last line alone is often only "Please fix ...")."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _session_options(threads: int | None) -> ort.SessionOptions:
    """Session options: errors only in ONNX Runtime's log, no spinning threads, optional CPU thread
    count."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle intra-op threads sleep instead of spinning: between batches the spinning threads took
    # the cores the loader and stitchers need (zero-cost ONNX file, 8192 x 16384: 4.8 -> 4.4 s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return options


def _input_name_and_channels(path: Path) -> tuple[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return graph.input[0].name, int(dims[1].dim_value)


def _create_session(
    path: Path, providers: list[str], options: list[dict[str, Any]], so: ort.SessionOptions,
    *, any_gpu: bool = False, refuse: str | None = None,
) -> tuple[ort.InferenceSession, str | None]:
    """Create the session quietly; return it and a warning if the GPU provider asked for (with
    ``any_gpu``: any GPU provider, so that ``auto`` without TensorRT on CUDA is no news) did not
    come up. With ``refuse`` (the flag that runs on the CPU instead, e.g. ``--provider cpu``) that
    is a SettingsError instead: ONNX Runtime itself falls back to the CPU silently."""
    gpu = [p for p in providers if p != PROVIDERS["cpu"]]
    printed = io.StringIO()
    if gpu:
        # ONNX Runtime logs provider load failures to stderr and prints its fallback to stdout.
        ort.set_default_logger_severity(4)
    try:
        with contextlib.redirect_stdout(printed):
            if gpu and hasattr(ort, "preload_dlls"):
                with contextlib.suppress(OSError):
                    ort.preload_dlls()  # CUDA/cuDNN from pip's nvidia-* packages, when installed
            session = ort.InferenceSession(str(path), so, providers=providers, provider_options=options)
    except ORT_ERRORS as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path}: ONNX Runtime cannot load the model ({first})") from None
    finally:
        if gpu:
            ort.set_default_logger_severity(2)
    got = session.get_providers()[0]
    if not gpu or got == gpu[0] or (any_gpu and got in gpu):
        return session, None
    short = {v: k for k, v in PROVIDERS.items()}
    if not gpu_present():
        reason = "no NVIDIA GPU was found"
    elif got == PROVIDERS["cpu"] and PROVIDERS["cuda"] in gpu:
        reason = f"the CUDA/cuDNN libraries it needs could not be loaded ({_CUDA_HELP})"
    else:  # TensorRT: ONNX Runtime printed why
        lines = [ln for ln in printed.getvalue().splitlines() if ln.startswith("EP Error")]
        reason = lines[0].split(" when using ")[0][len("EP Error "):].strip() if lines else "load failure"
        reason = reason[reason.index("Please install"):] if "Please install" in reason else reason
    asked = "/".join(short.get(p, p) for p in gpu) if any_gpu else short.get(gpu[0], gpu[0])
    if refuse:
        raise SettingsError(f"{path.name}: ONNX Runtime could not use {asked} ({reason}) and tiler does "
                            f"not fall back silently; fix that, or pass {refuse} to run on the CPU")
    return session, (
        f"ONNX Runtime could not use {asked}: {reason}; running {path.name} on {short.get(got, got)} instead"
    )
