"""``tiler``: the entry point. Dispatches to subcommands and turns user errors into one line."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
import warnings
from collections.abc import Sequence

from ..errors import TilerError
from ..malloc import keep_freed_memory
from ..version import __version__
from . import calibrate as calibrate_cmd
from . import eval as eval_cmd
from . import export as export_cmd
from . import export_result as export_result_cmd
from . import info as info_cmd
from . import run as run_cmd
from . import stats as stats_cmd
from .options import Parser

DESCRIPTION = """\
Sliding-window inference for images too large to run a network on in one piece.

examples:
  $ tiler run scan.tif                          # built-in UNet, logits to scan.zarr
  $ tiler run scan.tif --kind probs --tile 1024 --overlap 128 -o probs.zarr
  $ tiler info scan.tif
  $ tiler export-result probs.zarr --format tiff     # pyramidal OME-TIFF
  $ tiler eval labels.zarr truth.tif --json
  $ tiler stats scan.tif
  $ tiler export unet.pt --out unet.onnx        # verified ONNX export
  $ tiler calibrate scan.tif --json calib.json  # seam error vs cost; then tiler run --settings calib.json
"""


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    from ..errors import Note

    kind = "note" if isinstance(category, type) and issubclass(category, Note) else "warning"
    return f"{kind}: {message}\n"


def configure_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: tiler's own warnings once each, as one ``warning:``
    line; other libraries' deprecation notices (``torch.jit.script_method is deprecated`` under
    ``--compile``, ...), which a user of the command cannot act on, not at all."""
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=category, module=r"(tiler|exporters)(\.|$)")
    warnings.formatwarning = _one_line_warning  # catch_warnings does not restore this one


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tiler", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tiler {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (run_cmd, info_cmd, export_cmd, export_result_cmd, eval_cmd, stats_cmd, calibrate_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    keep_freed_memory()  # PyTorch on the CPU re-faults its freed activations otherwise (2x slower)
    formatwarning = warnings.formatwarning
    try:
        with warnings.catch_warnings():
            configure_warnings()
            for old, new in getattr(args, "renamed_flags", None) or ():
                warnings.warn(f"{old} is now {new}; {old} will be removed in the next release", FutureWarning,
                              stacklevel=1)
            return int(args.func(args) or 0)
    except TilerError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        print(f"error: {str(exc) or 'interrupted; rerun with --resume to continue'}", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


def leave(code: int) -> None:
    """End the process with ``code`` without the interpreter's teardown, once nothing is pending.

    Python's shutdown frees every module, and PyTorch's libraries run their static destructors:
    about 0.45 s after ``import torch`` on the development VM (``python -c "import torch"`` 1.7–2.1 s
    against 1.2–1.6 s with ``os._exit``), 0.1 s for an ONNX run, every time a ``tiler`` command ends.
    The command's work is done and its files are closed by then, so the exit handlers that
    libraries registered (``atexit``: logging, temporary directories, ...) are run and Python's
    streams flushed, and the process then exits at once. While a non-daemon thread is still alive
    (which normal shutdown would wait for), or under a profiler or tracer (``python -m cProfile``
    writes its file after the program returns), it does not skip anything and returns.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def entry() -> int:
    """The ``tiler`` console script: :func:`main` on ``sys.argv``, then :func:`leave`. An exception
    that escapes ``main`` (``--debug``, a bug) unwinds through Python's normal exit and traceback."""
    code = main()
    leave(code)
    return code


if __name__ == "__main__":
    sys.exit(entry())
