"""The demo: write a synthetic pyramidal whole-slide TIFF and run the built-in model on it.

``python -m tools.demo [--out-dir demo] [--size 8192]`` makes ``demo/slide.tif`` (if missing) and
runs the equivalent of ``tiler run demo/slide.tif --kind probs --out demo/slide.zarr``.

:func:`make_slide` is also what tests and benchmarks use to get realistic input files. Slides are
written tile by tile from a generator (every level rendered on its own by
:class:`~tools.synthetic.SyntheticSlide`), so memory stays bounded whatever the size.

>>> import tempfile, tifffile
>>> with tempfile.TemporaryDirectory() as d:
...     path = make_slide(f"{d}/s.tif", (600, 1000), tile=256, levels=2)
...     with tifffile.TiffFile(path) as tif:
...         print([lvl.shape for lvl in tif.series[0].levels])
[(600, 1000, 3), (300, 500, 3)]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tools.synthetic import SyntheticSlide

__all__ = ["SyntheticSlide", "main", "make_slide"]

#: JPEG quality of the written tiles.
JPEG_QUALITY = 90


def _tiles(slide: SyntheticSlide, level: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles of ``level`` in TIFF order (row-major), each (<=tile, <=tile, 3) uint8."""
    h, w = slide.level_shape(level)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            yield slide.rgb(y, min(y + tile, h), x, min(x + tile, w), level=level)


def _svs_header(shape: tuple[int, int], tile: int, compression: str | None) -> str:
    h, w = shape
    codec = "JPEG/RGB" if compression == "jpeg" else str(compression or "raw").upper()
    return f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) {codec} Q={JPEG_QUALITY}"


def make_slide(
    path: str | os.PathLike[str],
    shape: tuple[int, int] = (8192, 8192),
    *,
    tile: int = 512,
    compression: str | None = "jpeg",
    levels: int = 3,
    background: float = 0.6,
    mpp: float = 0.5,
    svs: bool = False,
    seed: int = 0,
) -> Path:
    """Write a synthetic, tiled, pyramidal RGB slide (see :mod:`tools.synthetic`).

    Parameters
    ----------
    path : the file to write (replaced if it exists).
    shape : (height, width) of level 0.
    tile : stored tile size (a multiple of 16).
    compression : "jpeg" (quality 90), "zlib", "lzw", "zstd", ... (tifffile names) or None.
    levels : pyramid levels, each half the size of the one above (level 0 included).
    background : fraction of the area that is glass.
    mpp : microns per pixel at level 0.
    svs : write an Aperio-style file (``MPP = ...`` in the description, levels as pages after a
        thumbnail; ``tifffile.TiffFile.is_svs`` is true); else an OME-TIFF with the levels as
        SubIFDs, the pixel size in OME metadata and in the resolution tags.
    seed : which slide; the same seed gives the same pixels. The ground truth of what is tissue is
        ``SyntheticSlide(shape, background=background, seed=seed).tissue(...)``.

    Returns
    -------
    The path written. Level ``l`` has shape (ceil(H / 2**l), ceil(W / 2**l), 3), uint8.
    """
    import tifffile

    if tile % 16 or tile <= 0:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    path = Path(path)
    slide = SyntheticSlide(shape, background=background, seed=seed)
    h, w = slide.shape
    options: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
    }
    if compression == "jpeg":
        options["compressionargs"] = {"level": JPEG_QUALITY}
    bigtiff = h * w * 3 > 2**31  # BigTIFF when level 0 alone would pass 2 GiB uncompressed

    def level_options(level: int) -> dict[str, Any]:
        lh, lw = slide.level_shape(level)
        res = 1e4 / (mpp * 2**level)  # pixels per centimetre
        return {"shape": (lh, lw, 3), "resolution": (res, res), "resolutionunit": "CENTIMETER"}

    with tifffile.TiffWriter(path, bigtiff=bigtiff, ome=not svs) as tif:
        if svs:
            header = _svs_header((h, w), tile, compression)
            tif.write(_tiles(slide, 0, tile), description=f"{header}|AppMag = {10 / mpp:g}|MPP = {mpp}",
                      metadata=None, **level_options(0), **options)
            thumb_level = max(0, int(np.ceil(np.log2(max(h, w) / 1024))))
            th, tw = slide.level_shape(thumb_level)
            tif.write(slide.rgb(0, th, 0, tw, level=thumb_level), photometric="rgb", metadata=None,
                      compression="jpeg", description=f"{header} -> {tw}x{th}")
            for level in range(1, levels):
                lh, lw = slide.level_shape(level)
                tif.write(_tiles(slide, level, tile), description=f"{header} -> {lw}x{lh}",
                          metadata=None, **level_options(level), **options)
        else:
            meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp,
                    "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
            tif.write(_tiles(slide, 0, tile), subifds=levels - 1, metadata=meta,
                      **level_options(0), **options)
            for level in range(1, levels):
                tif.write(_tiles(slide, level, tile), subfiletype=1, **level_options(level), **options)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.demo``: make the sample slide if missing, run the built-in model on it."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Write a synthetic pyramidal JPEG-tiled slide and run the built-in model on it.",
    )
    parser.add_argument("--out-dir", default="demo", help="folder for slide.tif and slide.zarr")
    parser.add_argument("--size", type=int, default=8192, help="slide height and width (default: 8192)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    args = parser.parse_args(argv)

    import tiler
    from tiler.malloc import keep_freed_memory

    keep_freed_memory()  # as the `tiler` command does

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slide = out_dir / "slide.tif"
    if not slide.exists():
        t0 = time.perf_counter()
        tmp = slide.with_name(slide.name + ".part")
        make_slide(tmp, (args.size, args.size))
        tmp.replace(slide)
        print(f"made {slide} ({args.size} x {args.size} RGB, JPEG tiles, 3 levels) "
              f"in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"using the existing {slide}")
    out = out_dir / "slide.zarr"
    print(f"$ tiler run {slide} --kind probs --out {out}")
    result = tiler.run(slide, out=out, overwrite=True, output="probs", progress=True,
                       device=args.device)
    print(result.summary())
    print(f"output: {result.path.resolve()}  (key '0': (background, tissue, nuclei) x H x W, uint8 p*255)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
