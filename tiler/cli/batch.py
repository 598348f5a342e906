"""Archives: many inputs in one command, each failure reported without stopping the others.

Inputs are files, directories (their image files, sorted), glob patterns, or a manifest: a text
file with one path per line, or a CSV with an ``input`` column and an optional ``output`` column
(relative paths are relative to the manifest). Outputs go to ``out_dir`` (default: beside each
input, ``scan.tif`` -> ``scan.zarr``, ``scan.zarr`` -> ``scan.pred.zarr``; never the input itself).
The model is loaded once for the whole archive.

>>> item = Item("a.tif", "a.zarr")
>>> item.status, item.to_dict()["error"]
('pending', None)
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import InputError, InputNotFoundError, OutputError, SettingsError, TilerError

#: File names a directory contributes (other files in it are ignored); a directory that is a zarr
#: store or a DICOM series is one image.
IMAGE_SUFFIXES = (".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg", ".btf", ".tf8", ".ndpi", ".mrxs", ".scn",
                  ".bif", ".vms", ".vmu", ".svslide")
_GLOB_CHARS = set("*?[")


@dataclass
class Item:
    """One input of an archive run and what became of it (a row of the ``--report`` JSON).

    status : "pending", "ok", "failed" or "interrupted".
    runtime : what the model ran on, e.g. ``PyTorch 2.x on cuda:0 (fp16)`` (see
        :attr:`tiler.RunResult.runtime`); None until the item has run.
    """

    input: str
    output: str | None = None
    status: str = "pending"
    tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_zarr_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def _expand(entry: str) -> list[Item]:
    from ..sources import is_dicom_folder

    path = Path(entry)
    if path.is_dir() and not _is_zarr_dir(path) and not is_dicom_folder(path):
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not files:
            return [_failed(entry, InputError(f"{entry}: directory holds no image files "
                                              f"({', '.join(IMAGE_SUFFIXES)})"))]
        return [Item(str(p)) for p in files]
    if not path.exists() and _GLOB_CHARS & set(entry):
        matches = sorted(glob.glob(entry, recursive=True))
        if not matches:
            return [_failed(entry, InputNotFoundError(f"{entry}: no files match the pattern"))]
        return [i for m in matches for i in _expand(m)]
    return [Item(entry)]


def _failed(entry: str, exc: TilerError) -> Item:
    return Item(entry, status="failed", error=str(exc))


def read_manifest(path: str | os.PathLike[str]) -> list[Item]:
    """Items of a manifest: one path per line (``#`` comments), or CSV with ``input[,output]``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from None
    base = path.parent
    numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1)
                if ln.strip() and not ln.lstrip().startswith("#")]
    lines = [ln for _, ln in numbered]
    if not lines:
        raise InputError(f"{path}: manifest lists no inputs")

    def resolve(p: str) -> str:
        return str(base / p) if not Path(p).is_absolute() else p

    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    if "input" not in header:
        return [i for ln in lines for i in _expand(resolve(ln.strip()))]
    rows = list(csv.DictReader(lines, fieldnames=header))[1:]
    items = []
    for (n, _), row in zip(numbered[1:], rows):  # line numbers of the file, comments counted
        entry = (row.get("input") or "").strip()
        if not entry:
            raise InputError(f"{path}: line {n} has no input")
        out = (row.get("output") or "").strip()
        for item in _expand(resolve(entry)):
            item.output = resolve(out) if out else None
            items.append(item)
    return items


def collect(inputs: Iterable[str], manifest: str | None = None) -> list[Item]:
    """Every input named on the command line and in the manifest, in order, duplicates dropped."""
    items = [i for entry in inputs for i in _expand(entry)]
    if manifest:
        items += read_manifest(manifest)
    seen: set[str] = set()
    unique = []
    for item in items:
        key = str(Path(item.input).resolve())
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def assign_outputs(items: list[Item], out_dir: str | os.PathLike[str] | None) -> None:
    """Fill each pending item's output path; two inputs writing one output is a failure."""
    from ..store.paths import default_output_path

    owners: dict[str, str] = {}
    for item in items:
        if item.status != "pending":
            continue
        if item.output is None:
            default = default_output_path(item.input)
            item.output = str(Path(out_dir) / default.name if out_dir else default)
        key = str(Path(item.output).resolve())
        if key == str(Path(item.input).resolve()):
            item.status = "failed"
            item.error = str(OutputError(f"{item.output}: is the input itself; choose another output "
                                         "(a manifest's output column, --out or --out-dir)"))
        elif key in owners:
            item.status = "failed"
            item.error = str(OutputError(f"{item.output}: also the output of {owners[key]}; use a manifest "
                                         "with an output column, or separate runs"))
        else:
            owners[key] = item.input


def run_batch(
    items: list[Item],
    *,
    model: Any = None,
    device: str | None = "auto", precision: str = "fp32", provider: str = "auto", trust_model: bool = False,
    compile: bool = False, overrides: dict[str, Any] | None = None,  # config.ModelOptions
    client: Any = None,
    report: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
    error: Callable[[str], None] | None = None,
    debug: bool = False,
    **options: Any,
) -> list[Item]:
    """Run every pending item with :func:`tiler.run`; failures are recorded, not raised.

    ``options`` go to :func:`tiler.run` (overwrite, resume, progress, tile, ...: every keyword of
    :data:`tiler.config.VALUE_KEYWORDS` and run's output options; anything else is a
    SettingsError before any work, naming the valid ones). A ``TilerError``
    fails its item with its one-line message; an unexpected exception fails it as an internal
    error. With ``debug`` both are raised (tracebacks for ``tiler --debug``). Ctrl-C marks the
    item interrupted, writes the report and re-raises ``KeyboardInterrupt`` naming the output to
    resume. The report (JSON) is rewritten after every item.
    """
    from ..api import run
    from ..config import SETTING_KEYWORDS, ModelOptions, Settings, check_keywords, keyword_names
    from ..runners.factory import load_runner

    per_input = {"image", "model", "out", "client"}  # given by the items and by run_batch itself
    if "out" in options:
        raise SettingsError("tiler.cli.batch.run_batch() takes each output from its Item (item.output, or "
                            "assign_outputs(items, out_dir)), not out=")
    check_keywords("tiler.cli.batch.run_batch", options,
                   keyword_names(run_batch) | (keyword_names(run) - per_input) | set(SETTING_KEYWORDS))
    error = error or (lambda line: print(line, file=sys.stderr))
    write_report(report, items)  # an unwritable report path fails now, before any work
    model_options = ModelOptions(device, precision, provider, trust_model, compile, overrides)
    if client is None and any(i.status == "pending" for i in items):
        # once for the archive (compiled once, for the batch size every image runs with)
        model = load_runner(model, **model_options.runner_keywords(options.get("batch_size", Settings.batch_size)))
        model_options = replace(model_options, compile=False)  # the runner is loaded (and compiled)
    for item in items:
        if item.status == "failed" and item.error:
            error(f"error: {item.error}")
    for item in items:
        if item.status != "pending":
            continue
        t0 = time.perf_counter()
        try:
            result = run(item.input, model, out=item.output, client=client, **model_options.keywords(), **options)
        except TilerError as exc:
            if debug:
                raise
            item.status, item.error = "failed", str(exc)
            error(f"error: {exc}")
        except KeyboardInterrupt:
            item.status, item.error = "interrupted", "interrupted by the user"
            item.seconds = round(time.perf_counter() - t0, 3)
            write_report(report, items)
            raise KeyboardInterrupt(f"interrupted; {item.output} can be continued with --resume") from None
        except Exception as exc:
            if debug:
                raise
            item.status = "failed"
            item.error = f"{item.input}: internal error ({type(exc).__name__}: {exc}); rerun with --debug"
            error(f"error: {item.error}")
        else:
            item.status, item.tiles, item.runtime = "ok", result.tiles, result.runtime
            log(result.summary())
        item.seconds = round(time.perf_counter() - t0, 3)
        write_report(report, items)
    return items


def write_report(path: str | os.PathLike[str] | None, items: list[Item]) -> None:
    """Write ``{"inputs": [...], "ok": n, "failed": n}`` as JSON (atomically) if ``path`` is set."""
    if path is None:
        return
    path = Path(path)
    counts = {s: sum(i.status == s for i in items) for s in ("ok", "failed", "interrupted", "pending")}
    data = {"inputs": [i.to_dict() for i in items], **counts}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def summary(items: list[Item]) -> str:
    """One line: how many inputs succeeded and failed."""
    ok = sum(i.status == "ok" for i in items)
    failed = [i for i in items if i.status == "failed"]
    line = f"{ok} of {len(items)} inputs done"
    if failed:
        line += f", {len(failed)} failed: " + ", ".join(Path(i.input).name for i in failed[:5])
        line += " ..." if len(failed) > 5 else ""
    return line
