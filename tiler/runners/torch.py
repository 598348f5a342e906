"""PyTorch runner: an ``nn.Module`` or TorchScript module on CPU or CUDA, fp32/fp16/bf16."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

from ..errors import DeviceWarning, ModelError, SettingsError
from ..models.spec import ModelSpec
from . import tta as augmentation
from .base import Runner

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Test-time augmentation on the device: torch's flips, quarter turns and concatenation.
TORCH_OPS = augmentation.ArrayOps(
    flip=lambda a: a.flip(-1), rot90=lambda a, k: torch.rot90(a, k, (-2, -1)), cat=torch.cat,
)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    CUDA devices come back with their index (``cuda`` -> ``cuda:0``, the current device), so that
    summaries name the GPU used. ``auto`` without CUDA says so once (:class:`DeviceWarning`); an
    explicit ``cuda`` / ``cuda:N`` that does not exist is a SettingsError, never the CPU instead.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        warnings.warn("no CUDA GPU found: PyTorch runs the model on the CPU (pass --device cpu to say so "
                      "and silence this)", DeviceWarning, stacklevel=3)
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SettingsError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {device} asked for, but PyTorch finds no CUDA GPU "
                                f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingsError(f"device {device} does not exist ({torch.cuda.device_count()} GPUs); "
                                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise SettingsError(f"device {device} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def _module_code(module: torch.nn.Module) -> str | None:
    """What computes ``module``'s outputs besides its weights: TorchScript code, else the source of
    every module class in it (None if a class's source is not available)."""
    import inspect

    parts = []
    for name, sub in module.named_modules():
        if isinstance(sub, torch.jit.ScriptModule):
            try:
                parts.append(f"{name}:{sub.code}")
            except (RuntimeError, AttributeError):  # a module without methods of its own (a ModuleList)
                parts.append(f"{name}:{sub.original_name}")
            continue
        cls = type(sub)
        if cls.__module__.startswith("torch.nn."):
            parts.append(f"{name}:{cls.__qualname__}:{sub.extra_repr()}")  # PyTorch's own layers
            continue
        try:
            parts.append(f"{name}:{inspect.getsource(cls)}")
        except (OSError, TypeError):
            return None
    return "\n".join(parts)


class TorchRunner(Runner):
    """Run ``module`` under ``torch.inference_mode``; normalisation happens on the device.

    Parameters
    ----------
    module : an ``nn.Module`` or TorchScript module mapping (N, C, h, w) -> (N, C_out, h, w).
    spec : model metadata.
    device : "auto", "cpu", "cuda" or "cuda:N".
    precision : "fp32", "fp16" or "bf16" (autocast on the device).
    compile : wrap the module in ``torch.compile`` (fixed shapes: implies ``pad_batches``).
    pad_batches : pad short batches with zero tiles so that every call has the same shape (what
        ``torch.compile`` and CUDA graphs want); the padding is cut off the outputs. An int pads
        to that many tiles (give the engine's batch size), True to the largest batch seen so far.
        Off by default on the CPU, where padding costs model time.
    blend_on_device : return the outputs as torch tensors on the device, and let the engine blend
        them there (:class:`~tiler.engine.device_stitch.TorchStitcher`): only finished chunk rows
        travel back to the host. Off by default (not yet measured faster on a GPU).
    """

    out_of_memory_errors = (torch.cuda.OutOfMemoryError,)

    def __init__(
        self,
        module: torch.nn.Module,
        spec: ModelSpec,
        *,
        device: str | torch.device | None = "auto",
        precision: str = "fp32",
        compile: bool = False,
        pad_batches: bool | int | None = None,
        blend_on_device: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise SettingsError(f"unknown precision {precision!r}; use fp32, fp16 or bf16")
        if precision == "fp16" and str(device) in ("auto", "None") and not torch.cuda.is_available():
            device = "cpu"  # refused just below, without first noting that auto found no GPU
        self.device = resolve_device(device)
        # On a GPU, raw (uint8) tiles travel and are normalised there (4x fewer bytes over PCIe);
        # on the CPU the tile loader normalises while it copies each tile into the batch (one
        # pass, no second float32 batch), and the model gets that batch as it is.
        self.normalises_on_device = self.device.type == "cuda"
        if precision == "fp16" and self.device.type == "cpu":
            raise SettingsError("fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        self.precision = precision
        self.blend_on_device = bool(blend_on_device)
        self.spec = spec
        self.module = module.to(self.device).eval()
        if self.device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        #: Hand the module channels-last (N, h, w, C-strided) batches on the CPU when it has
        #: convolution weights: oneDNN's plain-layout path pads a 3-channel input to a blocked layout
        #: each call (a 1x1 conv on 8 x 3 x 512 x 512: 96 ms plain, 23 ms channels-last, conversion
        #: included). Values change by rounding only. Turned off for good if the module fails on
        #: such a batch (code that calls ``.view`` on its input, say) and works on a plain one.
        self.channels_last = self.device.type == "cpu" and any(p.ndim == 4 for p in self.module.parameters())
        self._scale_cache: dict[np.dtype, float] = {}
        self._fingerprint: str | None = None
        self._mean = self._std = None
        if spec.mean:
            self._mean = torch.tensor(spec.mean, device=self.device).view(1, -1, 1, 1)
            self._std = torch.tensor(spec.std, device=self.device).view(1, -1, 1, 1)
        pad = bool(compile) if pad_batches is None else pad_batches
        self.pad_batches = bool(pad)
        self._batch = 0 if isinstance(pad, bool) else int(pad)  # the padded size (grows if needed)
        self._weights = self.module  # fingerprinted: the same with or without compile
        if compile:
            self.module = torch.compile(self.module, dynamic=False)

    def describe(self) -> str:
        """``PyTorch 2.x on cuda:0 (fp16)``: the runtime, the device actually used, the precision."""
        return f"PyTorch {torch.__version__} on {self.device} ({self.precision})"

    def release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def fingerprint(self) -> str | None:
        """SHA-256 over the model's code and every parameter and buffer (names, shapes, dtypes,
        bytes), the precision and the spec: equal for the same model on any device, different after
        any change of weights or code. The code is TorchScript's compiled code, or the source of each
        module class of an ``nn.Module``; None (resume needs ``force``) when that source cannot be
        found (classes defined in an interactive session)."""
        if self._fingerprint is None:
            code = _module_code(self._weights)
            if code is None:
                return None
            h = hashlib.sha256()
            h.update(repr((type(self._weights).__qualname__, self.precision, self.spec.to_dict())).encode())
            h.update(code.encode())
            for name, tensor in self._weights.state_dict().items():
                t = tensor.detach().to("cpu").contiguous()
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def run_augmented(self, tiles: np.ndarray, mode: str) -> np.ndarray:
        """Test-time augmentation on the device: the K transforms are made, run as one batch and
        averaged there; only the (N, C_out, t, t) mean comes back."""
        return self.run(tiles, mode)

    def run(self, tiles: np.ndarray, tta: str = "none") -> np.ndarray:
        n = len(tiles)
        self._batch = max(self._batch, n)
        if self.pad_batches and n < self._batch:
            padded = np.zeros((self._batch, *tiles.shape[1:]), tiles.dtype)
            padded[:n] = tiles
            try:
                return (self._run(padded) if tta == "none" else self._run(padded, tta))[:n]
            except self.out_of_memory_errors:
                # the padded shape does not fit (the engine is halving the batch): pad to this
                # size from now on, and try it unpadded now; a second failure goes to the engine
                self.release_memory()
                self._batch = n
        return self._run(tiles) if tta == "none" else self._run(tiles, tta)

    def _run(self, tiles: np.ndarray, tta: str = "none") -> np.ndarray:
        with torch.inference_mode():
            x = _tensor(tiles)
            if self.normalises_on_device:
                # raw (e.g. uint8) tiles through a pinned staging buffer (PyTorch's caching host
                # allocator reuses it once the copy is done): 4x fewer bytes than float32
                scale = self.spec.input_scale(tiles.dtype)
                x = x.pin_memory().to(self.device, non_blocking=True)
                x = x.contiguous(memory_format=torch.channels_last)
                x = x.float() * scale
                if self._mean is not None:
                    x = (x - self._mean) / self._std
            elif x.dtype != torch.float32:  # normalised tiles are float32 already (Runner.__call__)
                x = x.float()
            n = x.shape[0]
            if tta != "none":
                x = augmentation.augment(x, tta, TORCH_OPS)  # (K*N, C, t, t) on the device
            try:
                y = self._forward(x)
            except RuntimeError as exc:
                if "out of memory" in str(exc):
                    raise
                # TorchScript errors carry the script's traceback; its last line says what went wrong
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                reason = lines[-1] if lines else type(exc).__name__
                raise ModelError(f"the model failed on a batch of shape {tuple(x.shape)}: {reason}") from None
            if y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
                raise ModelError(
                    f"the model returned shape {tuple(y.shape)} for input {tuple(x.shape)}; "
                    "tiler needs (N, C_out, h, w) outputs of the input's size"
                )
            if tta != "none":
                y = augmentation.merge(y.float(), tta, n, TORCH_OPS)
            if self.blend_on_device:
                return y.float()  # blended where it is
            if self.device.type == "cuda":
                # device -> pinned host buffer asynchronously, then wait for that copy only
                host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(y.float(), non_blocking=True)
                torch.cuda.current_stream(self.device).synchronize()
                return host.numpy()
            return y.float().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module on ``x`` (N, C, t, t) at the runner's precision, channels-last where that is on."""
        if self.channels_last:
            try:
                return self._call(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError as exc:
                if "out of memory" in str(exc):
                    raise
                y = self._call(x.contiguous())  # a second failure is the model's own: reported as such
                self.channels_last = False  # the module needs plain batches: from now on only those
                return y
        # on the CPU a channels-last batch (the tile loader's) is made plain: the module failed on
        # one; on a GPU the batch stays in the layout the device path chose
        return self._call(x.contiguous() if x.device.type == "cpu" else x)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp32":
            return self.module(x)
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision]):
            return self.module(x)


def _tensor(tiles: np.ndarray) -> torch.Tensor:
    """(N, C, h, w) tiles as a CPU tensor sharing their memory: C-contiguous ones as they are, the
    tile loader's channels-last views (an (N, h, w, C) buffer transposed) as a channels-last tensor;
    any other layout copied to a C-contiguous one."""
    if tiles.ndim == 4 and not tiles.flags.c_contiguous:
        nhwc = tiles.transpose(0, 2, 3, 1)
        if nhwc.flags.c_contiguous:
            return torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(tiles))
