"""The exceptions tiler raises for problems a user can fix.

Every error meant for a user is a :class:`TilerError` carrying a one-line message that names the
file or setting at fault and, where there is one, the fix. The CLI prints ``error: <message>`` and
exits non-zero; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations


class TilerError(ValueError):
    """Base class: a problem with the user's input, settings or environment."""


class SettingsError(TilerError):
    """Tile, overlap, margin, window or another setting that cannot work."""


class InputError(TilerError):
    """An input that is missing, unreadable, corrupt or not an image."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input path that does not exist."""


class ModelError(TilerError):
    """A model that cannot be loaded, or that does not fit the input."""


class OutputError(TilerError):
    """An output that exists, cannot be written, or cannot be resumed."""


class ModelOutputError(TilerError, ArithmeticError):
    """A model that produced NaN or infinite values."""


class DeviceWarning(RuntimeWarning):
    """Where the model runs is not what was asked for or might be expected: ``device="auto"``
    found no GPU and runs on the CPU, ``--workers N`` found fewer than N GPUs. One line; the CLI
    prints it as ``warning: ...``. A library user silences it with
    ``warnings.filterwarnings("ignore", category=tiler.errors.DeviceWarning)`` (or by naming the
    device: ``device="cpu"`` is never noted). Requests that cannot be honoured (``device="cuda"``
    without a GPU, ``provider="cuda"`` that ONNX Runtime cannot load) are errors, not warnings.
    """


def one_line(exc: BaseException) -> str:
    """A library's message on one line (C libraries' messages may span several)."""
    return " ".join(str(exc).split())


class Note(UserWarning):
    """Something a run chose for the user that they should know about, said once (the CLI prints
    it as ``note: ...``): e.g. reading the input at the model's pixel size."""


class PixelSizeWarning(UserWarning):
    """The input's pixel size cannot be matched to the model's: the file states none, so the
    model (trained at a stated pixel size) sees the pixels as they are."""


class ExactnessWarning(UserWarning):
    """``exact=True`` (``--exact``) on a model that is not shift-equivariant: the tiled output is
    close to, not equal to, one whole-image pass; the message gives the difference measured."""
