"""The runner interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from ..errors import ModelError
from ..models.spec import ModelSpec, Normalisation
from . import tta as augmentation


class Runner(ABC):
    """Runs a model on batches of raw tiles.

    Subclasses implement :meth:`run`; :meth:`__call__` checks shapes, normalises with the spec
    (scale, mean, std) and returns float32 logits.

    Attributes
    ----------
    spec : what the model expects and gives.
    """

    spec: ModelSpec
    #: True when the runner does its own normalisation on the device (see ``run_raw``).
    normalises_on_device: bool = False
    #: Exceptions meaning "this batch did not fit in device memory": the engine halves the batch.
    out_of_memory_errors: tuple[type[BaseException], ...] = ()

    def release_memory(self) -> None:
        """Free cached device memory after an out-of-memory error (a no-op by default)."""
        return None

    def describe(self) -> str:
        """One line for summaries: runtime, device, precision."""
        return type(self).__name__

    def fingerprint(self) -> str | None:
        """A short string that changes when the model's outputs may change (recorded for resume),
        or None when that cannot be known.

        Runners with weights hash them (``TorchRunner``, ``OnnxRunner``). The base version cannot
        see what a subclass computes, so it returns None, and ``tiler.run(..., resume=True)``
        refuses to continue such a run unless ``resume="force"``.
        """
        return None

    def normalisation(self, dtype: np.dtype) -> Normalisation | None:
        """How raw tiles of ``dtype`` become :meth:`run`'s input; None: :meth:`run` takes them as
        they are (runners that normalise on their device, float32 tiles with nothing to do)."""
        if self.normalises_on_device:
            return None
        scale = np.float32(self.spec.input_scale(dtype))
        if scale == 1 and np.dtype(dtype) == np.float32 and not self.spec.mean:
            return None
        if not self.spec.mean:
            return Normalisation(scale)
        mean = np.asarray(self.spec.mean, np.float32)[None, :, None, None]
        std = np.asarray(self.spec.std, np.float32)[None, :, None, None]
        return Normalisation(scale, mean, std)

    def normalise(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, h, w) raw tiles -> float32 normalised tiles (``tiles`` itself if nothing to do)."""
        norm = self.normalisation(tiles.dtype)
        if norm is None:
            return tiles
        x = np.empty(tiles.shape, np.float32)
        norm.copy_into(x, tiles)
        norm.finish(x)
        return x

    def check_input(self, tiles: np.ndarray) -> None:
        c = tiles.shape[1]
        want = self.spec.in_channels
        if want and c != want:
            if c == 1:
                fix = (f"; to feed its grey channel {want} times pass --channels {','.join(['0'] * want)}, "
                       f"or use a model with 1 input channel")
            elif c > want:
                fix = f"; choose {want} of them with --channels (e.g. --channels {','.join(map(str, range(want)))})"
            else:
                fix = f"; use a model with {c} input channel(s), or repeat channels with --channels"
            raise ModelError(f"the image has {c} channel(s) but the model {self.spec.name!r} expects {want}{fix}")
        if self.spec.mean and len(self.spec.mean) != c:
            raise ModelError(
                f"the model's mean/std have {len(self.spec.mean)} values for a {c}-channel image"
            )

    def __call__(self, tiles: np.ndarray, *, normalised: bool = False, tta: str = "none") -> np.ndarray:
        """(N, C, h, w) raw tiles (any dtype) -> (N, C_out, h, w) float32 logits.

        ``normalised=True``: the tiles already went through :meth:`normalisation` (the tile loader
        does that while copying them). ``tta``: test-time augmentation (:mod:`tiler.runners.tta`),
        the logits of every transform averaged, in one model call (:meth:`run_augmented`).
        """
        self.check_input(tiles)
        x = tiles if normalised or self.normalises_on_device else self.normalise(tiles)
        y = self.run(x) if tta == "none" else self.run_augmented(x, tta)
        if y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
            raise ModelError(
                f"the model {self.spec.name!r} returned shape {tuple(y.shape)} for input "
                f"{tuple(x.shape)}; tiler needs (N, C_out, h, w) outputs of the input's size"
            )
        return y

    def run_augmented(self, tiles: np.ndarray, mode: str) -> np.ndarray:
        """:meth:`run` under test-time augmentation ``mode``: (N, C, t, t) -> (N, C_out, t, t), the
        mean of the K transformed outputs, each transformed back; one call of K*N tiles. Runners
        that can augment on their device override this (:class:`~tiler.runners.torch.TorchRunner`)."""
        n = len(tiles)
        return np.asarray(augmentation.merge(self.run(augmentation.augment(tiles, mode)), mode, n), np.float32)

    @abstractmethod
    def run(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, h, w) float32 normalised tiles (raw if ``normalises_on_device``) -> float32 logits.

        Must not modify ``tiles``: after an out-of-memory error the engine retries on slices of
        the same buffer.
        """


class FunctionRunner(Runner):
    """Wrap a NumPy function ``f((N, C, h, w) float32) -> (N, C_out, h, w)``; for tests and tools.

    ``normalise=False`` hands the raw tiles (as float32) to ``f``.
    """

    def __init__(
        self, fn: Callable[[np.ndarray], np.ndarray], spec: ModelSpec | None = None, *, normalise: bool = True
    ) -> None:
        self.fn = fn
        name = getattr(fn, "__name__", "function")
        self.spec = spec or ModelSpec(name=name, scale=None if normalise else 1.0)

    def fingerprint(self) -> str | None:
        """None: a function's behaviour cannot be digested (its code, closures and globals may
        change under the same name), so resuming needs ``resume="force"``."""
        return None

    def run(self, tiles: np.ndarray) -> np.ndarray:
        # no forced copy: the stitchers only read the outputs (they may be a view of the tiles)
        return np.asarray(self.fn(tiles), dtype=np.float32)
