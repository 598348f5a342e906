"""Options shared by several subcommands, defined once."""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from typing import Any, NoReturn

from ..config import CHUNK, FLOAT_CHUNK, Settings
from ..engine.outputs import OUTPUT_KINDS
from ..errors import SettingsError
from ..plan.windows import list_windows
from ..runners.tta import TTA_MODES
from ..sources import BAND_RESAMPLING

_DEFAULTS = Settings()


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are two lines, not the whole usage first::

        error: --mean: expected numbers separated by commas, got '[0.82, 0.5]'
        see 'tiler run --help'

    Subcommand parsers made by ``add_subparsers`` are of the same class. Exit status 2, as argparse's.
    """

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^:]*?)(/[^:]*)?: ", r"\1: ", message)
        self.exit(2, f"error: {message}\nsee '{self.prog} --help'\n")


class RenamedFlag(argparse.Action):
    """An old spelling of a renamed flag: stores like the new one and notes itself in
    ``namespace.renamed_flags``, which :func:`tiler.cli.main.main` turns into one warning each."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        renamed = getattr(namespace, "renamed_flags", None) or []
        namespace.renamed_flags = [*renamed, (option_string, self.new)]


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _int_at_least(text: str, low: int, what: str) -> int:
    value = _whole(text)
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive number")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "a number >= 0")


def overlap_value(text: str) -> int | float:
    """``--overlap``: whole pixels (``128``), or a fraction of the tile (``0.25``, MONAI's
    convention), which :class:`~tiler.config.Settings` turns into ``round(0.25 * tile)`` pixels."""
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixels (e.g. 128) or a fraction of the tile "
                                         f"(e.g. 0.25), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected whole pixels (e.g. 128) or a fraction of the tile "
                                         f"between 0 and 1 (e.g. 0.25), got {value:g}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A number from 0 to 1 (``--opacity``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value:g}")
    return value


def _series(text: str) -> int:
    return _int_at_least(text, 0, "a series number >= 0")


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                examples: str) -> argparse.ArgumentParser:
    """A subcommand's parser: one-line ``help``, a ``description`` and an ``examples`` epilog."""
    return sub.add_parser(name, help=help, description=textwrap.fill(description, 95), epilog=examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_result_argument(p: argparse.ArgumentParser) -> None:
    """The positional output group of a command that reads what ``tiler run`` wrote."""
    p.add_argument("result", metavar="OUT.zarr", help="output group written by tiler run")


#: ``--reader`` choices (kept here, not imported from tiler.sources, so that --help needs no reader).
READER_CHOICES = ("auto", "tifffile", "openslide", "wsidicom", "rasterio")


def add_read_options(g: argparse._ActionsContainer) -> None:
    """Which image, plane and channels of the input to read, and by which library (--series,
    --plane, --channels, --reader)."""
    g.add_argument("--reader", choices=READER_CHOICES, default="auto",
                   help="library that opens the file (default auto: OpenSlide for .ndpi/.mrxs/.scn/.bif/.vms/"
                        ".vmu/.svslide and for vendor TIFFs tifffile cannot read, wsidicom for DICOM files and "
                        "folders, rasterio/GDAL for .jp2/.vrt/.ntf/.hdf, STAC items and GeoTIFFs with nodata "
                        "or that tifffile cannot read, tifffile for other TIFFs), e.g. --reader openslide for an "
                        "SVS, --reader rasterio for a TIFF through GDAL")
    g.add_argument("--series", type=_series, metavar="N",
                   help="image series of a multi-image file (OME-TIFF images, SVS; default: the largest; "
                        "see tiler info). Label and macro images are never read")
    g.add_argument("--plane", metavar="z=K[,t=J]",
                   help="one plane of a Z stack, time series or multi-page file (axes as tiler info shows)")
    g.add_argument("--channels", metavar="0,1,2",
                   help="input channels to use, in this order (select or reorder bands, drop alpha); "
                        "band names work too: GDAL band descriptions, a STAC item's assets (B04,B03,B02)")
    g.add_argument("--resampling", choices=BAND_RESAMPLING, default=None,
                   help="how a STAC item's coarser bands (20 m, 60 m) are brought onto its finest grid: "
                        "nearest (default: each pixel repeated, as stacking by hand) or bilinear")


def add_slide_options(p: argparse.ArgumentParser) -> None:
    """Resolution (--level, --mpp) and masks that skip work (--tissue, --roi, --fill)."""
    g = p.add_argument_group("resolution and masks")
    res = g.add_mutually_exclusive_group()
    res.add_argument("--level", type=non_negative_int, metavar="N",
                     help="pyramid level to read (0 = full resolution; see tiler info)")
    res.add_argument("--mpp", type=positive_float, metavar="X",
                     help="pixel size in µm to run at: the nearest finer level, resampled to X")
    add_read_options(g)
    g.add_argument("--tissue", choices=("auto", "none"), default="none",
                   help="auto: detect tissue on a low-resolution level and skip tiles without any")
    g.add_argument("--roi", metavar="MASK", help="mask image (any resolution, nonzero = inside); "
                   "tiles outside it are skipped")
    g.add_argument("--fill", type=float, default=_DEFAULTS.fill, metavar="V",
                   help="value stored where tiles were skipped and at the input's nodata pixels (default "
                        "0: background class, p = 0; --fill 255 marks nodata in a labels GeoTIFF export)")


def float_list(text: str) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def name_list(text: str) -> tuple[str, ...]:
    """``"background,tissue"`` -> ("background", "tissue")."""
    return tuple(v.strip() for v in text.split(","))


def add_spec_options(p: argparse.ArgumentParser) -> None:
    """Flags that override the model's recorded metadata (:class:`~tiler.models.spec.ModelSpec`)."""
    g = p.add_argument_group("model metadata (overrides what the model records)")
    g.add_argument("--in-channels", type=positive_int, metavar="N", help="image channels the model takes")
    g.add_argument("--multiple", type=positive_int, metavar="N",
                   help="spatial size multiple the model needs (16 for a UNet with 4 poolings)")
    g.add_argument("--scale", type=float, metavar="X", help="multiply pixels by X before mean/std "
                   "(default: 1/255 for uint8, 1/65535 for uint16, 1 for floats)")
    g.add_argument("--mean", type=float_list, metavar="M,M,...", help="per-channel mean after scaling")
    g.add_argument("--std", type=float_list, metavar="S,S,...", help="per-channel std after scaling")
    g.add_argument("--stats", metavar="FILE", help="scale, mean and std from the JSON that 'tiler stats "
                   "INPUT --json' prints (--scale/--mean/--std given as well win)")
    g.add_argument("--activation", choices=("softmax", "sigmoid", "none"),
                   help="how logits become probabilities (none: the model outputs probabilities)")
    g.add_argument("--class-names", type=name_list, metavar="A,B,...", help="names of the output channels")
    g.add_argument("--model-mpp", type=positive_float, metavar="X",
                   help="pixel size in µm the model was trained at; tiler run then reads the input at X µm/px "
                        "(the matching level, resampled) unless --level or --mpp is given, "
                        "e.g. --model-mpp 0.5")

    g.add_argument("--class-colours", type=name_list, metavar="#RRGGBB,...",
                   help="a colour per output class for previews and OME-Zarr labels (default: Okabe-Ito)")



def spec_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The :func:`add_spec_options` flags given, as ``ModelSpec`` fields (``--model-mpp``: ``mpp``;
    ``--stats FILE``: its scale, mean and std, explicit flags winning)."""
    fields = ("in_channels", "multiple", "scale", "mean", "std", "activation", "class_names", "class_colours")
    given = {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}
    if getattr(args, "model_mpp", None) is not None:
        given["mpp"] = args.model_mpp
    if getattr(args, "stats", None):
        return {**read_stats(args.stats), **given}
    return given


def read_stats(path: str) -> dict[str, object]:
    """``scale``, ``mean`` and ``std`` from the JSON of ``tiler stats INPUT --json`` (a file).

    Raises :class:`~tiler.errors.SettingsError` naming the file for anything else.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SettingsError(f"--stats {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"--stats {path}: not the JSON of 'tiler stats INPUT --json' ({exc})") from None
    try:
        mean = tuple(float(v) for v in data["mean"])
        std = tuple(float(v) for v in data["std"])
        scale = float(data["scale"])
    except (KeyError, TypeError, ValueError):
        raise SettingsError(f"--stats {path}: expected the JSON of 'tiler stats INPUT --json' "
                            f"(keys mean, std and scale)") from None
    if len(mean) != len(std) or not mean:
        raise SettingsError(f"--stats {path}: {len(mean)} means but {len(std)} stds")
    return {"scale": scale, "mean": mean, "std": std}


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", metavar="M", help="checkpoint (.pt), TorchScript or ONNX file; "
                   "default: the built-in tissue UNet")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    g.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="compute precision (default fp32; fp16 needs CUDA; blending is always float32)")
    g.add_argument("--provider", default="auto", choices=("auto", "tensorrt", "cuda", "cpu"),
                   help="ONNX Runtime execution provider for .onnx models (auto: TensorRT, CUDA, then CPU)")
    g.add_argument("--trust-model", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: trusted files only)")
    g.add_argument("--compile", action="store_true",
                   help="run a PyTorch model through torch.compile, every batch padded to --batch-size "
                        "(compiled once; pays off on GPUs and long runs)")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=f"tiles per model call (default: {_DEFAULTS.batch_size} at the default tile, 8 at --tile 512: "
                        "the same pixels per call)")


def add_tiling_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tiling and blending")
    g.add_argument("--tile", type=positive_int, default=_DEFAULTS.tile, metavar="N",
                   help=f"tile edge in pixels (default {_DEFAULTS.tile})")
    g.add_argument("--overlap", type=overlap_value, metavar="N",
                   help=f"overlap of neighbouring tiles in pixels, or a fraction of the tile such as "
                        f"0.25 (default: a quarter of the tile, {_DEFAULTS.overlap})")
    g.add_argument("--margin", type=non_negative_int, metavar="N",
                   help=f"pixels at each tile edge given no weight (default: half the overlap with the "
                        f"constant window, {_DEFAULTS.margin}; 0 with the others)")
    g.add_argument("--window", default=_DEFAULTS.window, choices=list_windows(),
                   help=f"blending window (default {_DEFAULTS.window}; gaussian: sigma = 0.125 x tile), "
                        "e.g. --window gaussian --tile 512 --overlap 128 (the earlier defaults)")
    g.add_argument("--context", type=non_negative_int, metavar="N",
                   help="mirrored context at the image borders: the lattice starts N px before the image "
                        "(default: overlap/2, what a seam gets; between --margin and overlap/2), e.g. --context 0 "
                        "for the lattice at pixel 0 of earlier versions")
    g.add_argument("--exact", action="store_true",
                   help="tile exactly: crop the model's context radius off every tile (constant window, "
                        "lattice on its size multiple), so the output equals one pass over the whole "
                        "mirrored image; --tile is kept, overlap/margin/window follow. A model that is "
                        "not shift-equivariant gets a warning with the difference measured "
                        "(e.g. tiler run scan.tif --exact --tile 1024)")
    g.add_argument("--tta", choices=TTA_MODES, default=_DEFAULTS.tta,
                   help="test-time augmentation, logits averaged before the activation: flip (2 passes), "
                        "flips (4), d4 (8: flips and quarter turns); e.g. tiler run scan.tif --tta flips")


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", "-o", metavar="PATH",
                   help="output zarr group, a local path, s3://bucket/out.zarr or gs://bucket/out.zarr (default: "
                        "scan.tif -> scan.zarr, scan.zarr -> scan.pred.zarr, beside the input, on S3 and GCS too)")
    g.add_argument("--kind", dest="output", default="logits", choices=OUTPUT_KINDS,
                   help="what is stored: logits (float32), probs (uint8 p*255 unless --dtype float32) or "
                        "labels (uint8); --output, its old name, still works for one release")
    g.add_argument("--output", dest="output", choices=OUTPUT_KINDS, action=RenamedFlag, new="--kind",
                   help=argparse.SUPPRESS)
    g.add_argument("--dtype", choices=("uint8", "float32"), help="stored dtype for --kind probs")
    g.add_argument("--chunk", type=positive_int, default=None, metavar="N",
                   help=f"output chunk edge in pixels (default {CHUNK} for uint8 values, {FLOAT_CHUNK} "
                        "for float32 ones: about 1 MiB per channel either way)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only one tiler wrote; never the input)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted output")
    g.add_argument("--break-lock", action="store_true",
                   help="take over an output whose recorded writer is gone but cannot be recognised as "
                        "such (a run on another host that died within its 2-minute lease)")
    g.add_argument("--durable", action="store_true",
                   help="flush each stripe to disk (fsync) before recording it, for resumes after a "
                        "power loss ('complete' is always recorded after the data is flushed)")
