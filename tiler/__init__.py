"""tiler: sliding-window inference for images too large to run a network on in one piece.

>>> import tiler
>>> sorted(tiler.__all__)[:3]
['InputError', 'ModelError', 'OutputError']
"""

from __future__ import annotations

from .api import RunResult, predict, run
from .distributed.tasks import predict_dask
from .errors import InputError, ModelError, OutputError, SettingsError, TilerError
from .version import __version__

__all__ = [
    "InputError",
    "ModelError",
    "OutputError",
    "RunResult",
    "SettingsError",
    "TilerError",
    "__version__",
    "predict",
    "predict_dask",
    "run",
]
