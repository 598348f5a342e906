"""Calibration: which tiling settings are seamless enough for *this* model on *this* image, and cheapest.

:func:`calibrate` cuts a few crops out of the user's image (the most varied regions: tissue, not
glass or nodata), runs the model over each once as a whole (mirrored by the model's context
radius, as :mod:`tiler.engine.exact` defines whole-image inference) and tiled under every setting
of a grid, and measures the seam error (max and p99 |Δ logit|, label agreement) and the cost (tile
pixels computed per image pixel, tiles per second). The cheapest setting within ``tolerance``
(max |Δ|) is chosen; :meth:`Calibration.to_json` writes it in the form ``tiler run --settings``
and ``tiler.run(settings=...)`` read.

May import: errors, config, sources, plan, runners, engine, store (the sink of an in-memory run).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings
from .engine.exact import probe_radius
from .engine.job import Job
from .engine.pipeline import run_block
from .errors import OutputError, SettingsError
from .plan.lattice import reflect_index
from .runners.base import Runner
from .runners.factory import load_runner
from .sources import ArraySource, Source, open_at
from .store.sink import MemorySink

#: The tiling fields a calibration chooses (and a settings file may hold).
CHOSEN_FIELDS = ("tile", "overlap", "margin", "window", "context", "exact", "tta")


@dataclass(frozen=True)
class Measurement:
    """One setting's seam error and cost, over all crops."""

    label: str
    settings: dict[str, Any]
    max_abs: float
    p99_abs: float
    label_agreement: float
    cost: float  #: tile pixels computed per image pixel (the lattice over a large image)
    tiles_per_s: float


@dataclass
class Calibration:
    """The grid's measurements, the tolerance and the chosen (cheapest within it) setting."""

    input: str
    tolerance: float
    crops: list[tuple[int, int, int, int]]
    measurements: list[Measurement] = field(default_factory=list)
    chosen: int | None = None
    #: Settings of the grid that cannot run on this model (e.g. exact with too small a tile): why.
    skipped: list[str] = field(default_factory=list)

    @property
    def best(self) -> Measurement | None:
        return None if self.chosen is None else self.measurements[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"tiler_calibration": 1, "input": self.input, "tolerance": self.tolerance,
                "settings": best.settings if best else None,
                "crops": [list(c) for c in self.crops],
                "measurements": [asdict(m) for m in self.measurements], "chosen": self.chosen,
                "skipped": self.skipped}

    def to_json(self, path: str | os.PathLike[str]) -> None:
        try:
            Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the calibration ({exc.strerror or exc})") from None

    def table(self) -> str:
        """The measurements as aligned text, the chosen one marked with ``*``."""
        head = f"  {'setting':<44} {'max |Δ|':>9} {'p99 |Δ|':>9} {'labels':>9} {'cost':>6} {'tiles/s':>8}"
        rows = [head]
        for i, m in enumerate(self.measurements):
            mark = "*" if i == self.chosen else " "
            rows.append(f"{mark} {m.label:<44} {m.max_abs:>9.2g} {m.p99_abs:>9.2g} "
                        f"{100 * m.label_agreement:>8.3f}% {m.cost:>5.2f}x {m.tiles_per_s:>8.1f}")
        return "\n".join(rows)


def default_grid(tiles: Sequence[int] = (512,), windows: Sequence[str] = ("gaussian", "cosine", "constant"),
                 *, exact: bool = True) -> list[Settings]:
    """Overlaps of 1/8, 1/4 and 1/2 of each tile for each window (``constant`` with the margin at
    half the overlap: the overlap-tile strategy), and ``exact`` at each tile size."""
    grid = []
    for t in tiles:
        for overlap in (t // 8, t // 4, t // 2):
            for w in windows:
                grid.append(Settings(tile=t, overlap=overlap, window=w,
                                     margin=overlap // 2 if w == "constant" else 0))
        if exact:
            grid.append(Settings(tile=t, exact=True))
    return grid


def _label(s: Settings) -> str:
    if s.exact:
        return f"tile {s.tile}, exact (crop {s.margin})"
    margin = f", margin {s.margin}" if s.margin else ""
    tta = f", tta {s.tta}" if s.tta != "none" else ""
    return f"tile {s.tile}, overlap {s.overlap}, {s.window}{margin}{tta}"


def choose_crops(source: Source, size: int, count: int) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` non-overlapping ``size``-px crops ``(y0, y1, x0, x1)`` where the image varies
    most (grey-level std on a 4x4-px subsample of each candidate of a grid): tissue, not glass."""
    h, w, _ = source.shape
    sy, sx = min(size, h), min(size, w)
    ny, nx = max(1, math.ceil(h / sy)), max(1, math.ceil(w / sx))
    candidates = []
    for i in range(ny):
        for j in range(nx):
            y0 = min(i * sy, h - sy)
            x0 = min(j * sx, w - sx)
            sample = np.asarray(source.read(y0, y0 + sy, x0, x0 + sx))[::4, ::4].astype(np.float32)
            candidates.append((float(sample.mean(axis=-1).std()), (y0, y0 + sy, x0, x0 + sx)))
    candidates.sort(key=lambda c: -c[0])
    return [box for _, box in candidates[:count]]


def whole_pass(runner: Runner, image: np.ndarray, pad: int, multiple: int, tta: str = "none") -> np.ndarray:
    """(C_out, H, W) float32: one pass of ``runner`` over ``image`` (H, W, C) mirrored by ``pad``
    on every side (bottom and right further, to a multiple of ``multiple``), cropped back."""
    h, w = image.shape[:2]
    ph = math.ceil((h + 2 * pad) / multiple) * multiple
    pw = math.ceil((w + 2 * pad) / multiple) * multiple
    ys = reflect_index(np.arange(-pad, ph - pad), h)
    xs = reflect_index(np.arange(-pad, pw - pad), w)
    padded = np.ascontiguousarray(image[np.ix_(ys, xs)].transpose(2, 0, 1)[None])
    return runner(padded, tta=tta)[0][:, pad : pad + h, pad : pad + w]


def tiled(runner: Runner, image: np.ndarray, settings: Settings) -> tuple[np.ndarray, Job, float]:
    """(C_out, H, W) float32 tiled output of ``image`` under ``settings``, the job, and its seconds."""
    job = Job.create(ArraySource(image, name="crop"), runner, replace(settings, block_width=None))
    h, w = image.shape[:2]
    out = np.zeros((job.output.channels, h, w), np.float32)
    sink = MemorySink(out, job.partition.stripes, zeroed=True)
    t0 = time.perf_counter()
    for block in job.partition.blocks():
        run_block(job, block, sink)
    return out, job, time.perf_counter() - t0


def calibrate(
    image: Any, model: Any = None, *, tolerance: float = 0.05, grid: Sequence[Settings] | None = None,
    crops: int = 3, crop_size: int | None = None, device: str | None = "auto", precision: str = "fp32",
    level: int | None = None, mpp: float | None = None, batch_size: int | None = None, log: Any = None,
) -> Calibration:
    """Measure every setting of ``grid`` (default :func:`default_grid`) on ``crops`` crops of
    ``image``; choose the cheapest whose max |Δ logit| against whole-image inference is at most
    ``tolerance`` (ties: the smaller error). ``crop_size`` (default: three strides plus the
    overlap of the largest tile, so every setting has at least 3 tiles across) is capped by the image."""
    if not tolerance > 0:
        raise SettingsError(f"tolerance must be positive, got {tolerance}")
    grid = list(grid) if grid is not None else default_grid()
    grid = [replace(s, output="logits") for s in grid]
    if batch_size:  # else each setting keeps the batch its tile gives
        grid = [replace(s, batch_size=batch_size) for s in grid]
    runner = load_runner(model, device=device, precision=precision)
    with closing(open_at(image, level=level, mpp=mpp)) as source:
        name = getattr(source, "name", str(image))
        size = crop_size or max(s.tile + 2 * (s.tile - s.overlap) for s in grid)
        boxes = choose_crops(source, size, crops)
        arrays = [np.asarray(source.read(*box)) for box in boxes]
    c = arrays[0].shape[2]
    spec = runner.spec
    multiple = max(1, spec.multiple)
    radius = spec.context or probe_radius(runner, c, arrays[0].dtype, tile=max(s.tile for s in grid),
                                          multiple=multiple)
    pad = math.ceil(radius / multiple) * multiple
    references = {}
    result = Calibration(input=name, tolerance=tolerance, crops=boxes)
    for s in grid:
        diffs, agree, seconds, tiles = [], [], 0.0, 0
        try:
            runs = [tiled(runner, arr, s) for arr in arrays]
        except SettingsError as exc:
            result.skipped.append(f"{_label(s)}: {exc}")
            if log:
                log(f"  skipped {_label(s)}: {exc}")
            continue
        for k, (arr, (out, job, dt)) in enumerate(zip(arrays, runs)):
            if (k, s.tta) not in references:
                references[k, s.tta] = whole_pass(runner, arr, pad, multiple, s.tta)
            ref = references[k, s.tta]
            diffs.append(np.abs(out - ref).ravel())
            agree.append((out.argmax(0) == ref.argmax(0)).ravel())
            seconds += dt
            tiles += job.plan.n_tiles
        resolved = job.settings
        d = np.concatenate(diffs)
        stride = resolved.tile - resolved.overlap
        chosen = {k: getattr(resolved, k) for k in CHOSEN_FIELDS}
        chosen["context"] = resolved.border_context
        m = Measurement(
            label=_label(resolved), settings=chosen | {"exact": s.exact},
            max_abs=float(d.max()), p99_abs=float(np.percentile(d, 99)),
            label_agreement=float(np.concatenate(agree).mean()),
            cost=(resolved.tile / stride) ** 2 * (1 if s.tta == "none" else _tta_count(s.tta)),
            tiles_per_s=tiles / seconds if seconds > 0 else float("inf"),
        )
        result.measurements.append(m)
        if log:
            log(f"  {m.label}: max |Δ| {m.max_abs:.2g}, labels {100 * m.label_agreement:.3f} %, cost {m.cost:.2f}x")
    within = [i for i, m in enumerate(result.measurements) if m.max_abs <= tolerance]
    if within:
        result.chosen = min(within, key=lambda i: (result.measurements[i].cost, result.measurements[i].max_abs))
    return result


def _tta_count(mode: str) -> int:
    from .runners.tta import count

    return count(mode)


def write_plot(calibration: Calibration, path: str | os.PathLike[str]) -> None:
    """A PNG: max |Δ| (log scale) against cost, one line per window (exact settings as their own
    line), the chosen point ringed, the tolerance as a dashed line."""
    from PIL import Image, ImageDraw

    width, height, left, bottom, top, right = 720, 480, 70, 50, 20, 160
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    ms = calibration.measurements
    if not ms:
        raise SettingsError("nothing was measured, so there is nothing to plot")
    costs = [m.cost for m in ms]
    errs = [max(m.max_abs, 1e-7) for m in ms] + [calibration.tolerance]
    c0, c1 = min(costs) * 0.95, max(costs) * 1.05
    e0, e1 = math.log10(min(errs)) - 0.2, math.log10(max(errs)) + 0.2

    def xy(cost: float, err: float) -> tuple[float, float]:
        x = left + (cost - c0) / (c1 - c0 or 1) * (width - left - right)
        y = height - bottom - (math.log10(max(err, 1e-7)) - e0) / (e1 - e0 or 1) * (height - bottom - top)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for e in range(math.ceil(e0), math.floor(e1) + 1):
        _, y = xy(c0, 10.0**e)
        draw.text((8, y - 6), f"1e{e}", fill="black")
    for k in range(5):
        cost = c0 + k * (c1 - c0) / 4
        x, _ = xy(cost, 10.0**e0)
        draw.text((x - 12, height - bottom + 6), f"{cost:.2f}x", fill="black")
    draw.text((left, height - 22), "cost: tile pixels per image pixel", fill="black")
    draw.text((left, 4), "max |tiled - whole| (logits, log scale)", fill="black")
    _, ty = xy(c0, calibration.tolerance)
    for x in range(left, width - right, 12):
        draw.line([x, ty, x + 6, ty], fill="gray")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    groups: dict[str, list[Measurement]] = {}
    for m in ms:
        groups.setdefault("exact" if m.settings.get("exact") else str(m.settings["window"]), []).append(m)
    for k, (name, members) in enumerate(sorted(groups.items())):
        colour = colours[k % len(colours)]
        points = [xy(m.cost, m.max_abs) for m in sorted(members, key=lambda m: m.cost)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((width - right + 12, top + 16 * k), name, fill=colour)
    best = calibration.best
    if best is not None:
        x, y = xy(best.cost, best.max_abs)
        draw.ellipse([x - 8, y - 8, x + 8, y + 8], outline="black", width=2)
        draw.text((width - right + 12, top + 16 * (len(groups) + 1)), "o chosen", fill="black")
    try:
        img.save(path, format="PNG")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
