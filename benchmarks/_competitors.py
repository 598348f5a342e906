"""The competitors' cases, each run in a subprocess of its own environment (see bench_competitors.py).

Run with ``benchmarks/_work/venv-competitors/bin/python`` (MONAI, pytorch-toolbelt, ONNX Runtime,
the user's script) or ``benchmarks/_work/venv-tilerpkg/bin/python`` (the PyPI ``tiler`` package, which shares
our import name). Each case prints one ``RESULT {json}`` line. Written the way each library's own
documentation shows; every case gets the same channel-last (H, W, 3) image that ours gets, and the
same model: the same ``nn.Module`` class in memory, the same TorchScript / ONNX file from disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

STEP = C.TILE - C.OVERLAP


def zero_cost_module():
    """The same ``nn.Module`` tiler.predict gets (benchmarks/_common.py ``ZeroCost``)."""
    return C.ZeroCost().eval()


def _load_unet():
    """Our built-in UNet class, from its file (it imports only torch), with the benchmark weights."""
    import torch

    spec = importlib.util.spec_from_file_location("bench_unet", C.ROOT / "tiler" / "models" / "unet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ckpt = torch.load(C.WORK / "unet.pt", map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    first, last = state["in_conv.double_conv.0.weight"], state["out_conv.conv.weight"]
    inferred = {"in_channels": int(first.shape[1]), "num_classes": int(last.shape[0]),
                "base_channels": int(first.shape[0]), "bilinear": "up1.up.weight" not in state}
    net = mod.UNet(**{**inferred, **ckpt.get("config", {})})
    net.load_state_dict(state)
    return net.eval()


def monai_memory(size: int, second_call: bool = False) -> None:
    """``second_call``: time the second call in this process, not the first (as tiler's case)."""
    import torch
    from monai.inferers import sliding_window_inference

    image = C.load_array(size)
    module = zero_cost_module()

    def call():
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W) view of the same array
            out = sliding_window_inference(
                x, (C.TILE, C.TILE), C.BATCH, module, overlap=C.OVERLAP / C.TILE, mode="gaussian",
                sigma_scale=0.125,
            )
            return out[0].numpy()

    if second_call:
        first = call()
        del first
    with C.Timer() as t:
        out = call()
    C.report(f"MONAI memory {size}x{size}", t, megapixels=size * size / 1e6, tiles=_n_tiles(size, size),
             out_shape=list(out.shape), second_call=second_call)


def toolbelt_memory(size: int) -> None:
    import torch

    spec = importlib.util.spec_from_file_location(
        "tb_tiles", Path(importlib.util.find_spec("pytorch_toolbelt").origin).parent / "inference" / "tiles.py"
    )
    tiles_mod = importlib.util.module_from_spec(spec)  # the module alone: the package imports torchvision
    spec.loader.exec_module(tiles_mod)
    image = C.load_array(size)
    with C.Timer() as t, torch.inference_mode():
        slicer = tiles_mod.ImageSlicer(image.shape, tile_size=C.TILE, tile_step=STEP, weight="pyramid")
        merger = tiles_mod.TileMerger(slicer.target_shape, channels=2, weight=slicer.weight)
        tiles = [torch.from_numpy(np.moveaxis(tile, -1, 0).copy()) for tile in slicer.split(image)]
        loader = torch.utils.data.DataLoader(list(zip(tiles, slicer.crops)), batch_size=C.BATCH)
        model = zero_cost_module()
        for batch, coords in loader:
            merger.integrate_batch(model(batch), coords)
        merged = np.moveaxis(merger.merge().numpy(), 0, -1)
        out = slicer.crop_to_orignal_size(merged)
    C.report(f"pytorch-toolbelt memory {size}x{size}", t, megapixels=size * size / 1e6, tiles=len(slicer.crops),
             out_shape=list(out.shape))


def tilerpkg_memory(size: int) -> None:
    import torch

    from tiler import Merger, Tiler

    image = C.load_array(size)
    with C.Timer() as t:
        tiler_in = Tiler(data_shape=image.shape, tile_shape=(C.TILE, C.TILE, 3), overlap=C.OVERLAP,
                         channel_dimension=2, mode="reflect")
        tiler_out = Tiler(data_shape=(size, size, 2), tile_shape=(C.TILE, C.TILE, 2), overlap=C.OVERLAP,
                          channel_dimension=2, mode="reflect")
        merger = Merger(tiler_out, window="hann")
        n = 0
        model = zero_cost_module()
        for batch_id, batch in tiler_in(image, batch_size=C.BATCH):
            with torch.inference_mode():  # the model sees NCHW
                pred = model(torch.from_numpy(batch.transpose(0, 3, 1, 2))).numpy()
            merger.add_batch(batch_id, C.BATCH, pred.transpose(0, 2, 3, 1))
            n += len(batch)
        out = merger.merge(unpad=True)
    C.report(f"tiler (PyPI) memory {size}x{size}", t, megapixels=size * size / 1e6, tiles=n,
             out_shape=list(out.shape))


def _predictor(model_file: Path):
    """The model file as MONAI's predictor: TorchScript, an ONNX file (ONNX Runtime, CPU), or the
    built-in UNet's checkpoint."""
    import torch

    if model_file.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

        return run
    if model_file.suffix == ".ts":
        return torch.jit.load(str(model_file), map_location="cpu").eval()
    return _load_unet()


def user_script(height: int, width: int, model_file: Path) -> None:
    """What a user without tiler writes: read the whole TIFF, MONAI over it, softmax, uint8, zarr."""
    import shutil

    import tifffile
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    path = C.WORK / f"jpeg_{height}x{width}.tif"
    out_path = C.WORK / f"user_{height}x{width}.zarr"
    shutil.rmtree(out_path, ignore_errors=True)
    net = _predictor(model_file)
    with C.Timer() as t, torch.inference_mode():
        image = tifffile.imread(path)  # (H, W, 3) uint8, whole
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        logits = sliding_window_inference(x, (C.TILE, C.TILE), C.BATCH, net, overlap=C.OVERLAP / C.TILE,
                                          mode="gaussian")
        probs = torch.softmax(logits[0], dim=0)
        u8 = (probs * 255).round().to(torch.uint8).numpy()
        z = zarr.create_array(out_path, shape=u8.shape, chunks=(u8.shape[0], 1024, 1024), dtype="uint8")
        z[:] = u8
    C.report(f"tifffile+MONAI+zarr script {model_file.name} {height}x{width}", t,
             megapixels=height * width / 1e6, tiles=_n_tiles(height, width))
    shutil.rmtree(out_path, ignore_errors=True)


def _n_tiles(h: int, w: int) -> int:
    """Tiles of MONAI's scan (the same count as ours for these sizes)."""
    return (-(-(h - C.TILE) // STEP) + 1) * (-(-(w - C.TILE) // STEP) + 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=["monai", "toolbelt", "tilerpkg", "user"])
    p.add_argument("--size", type=int, nargs="+", required=True)
    p.add_argument("--second-call", action="store_true", help="monai: time the second call in the process")
    p.add_argument("--model-file", type=Path, help="user: TorchScript (.ts), ONNX (.onnx) or the UNet checkpoint")
    args = p.parse_args()
    if args.case == "monai":
        monai_memory(args.size[0], second_call=args.second_call)
    elif args.case == "toolbelt":
        toolbelt_memory(args.size[0])
    elif args.case == "tilerpkg":
        tilerpkg_memory(args.size[0])
    else:
        user_script(args.size[0], args.size[1], args.model_file)


if __name__ == "__main__":
    main()
