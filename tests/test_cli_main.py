"""The CLI entry point (tiler/cli/main.py): it leaves the warning format as it found it."""

from __future__ import annotations

import warnings

from tiler.cli.main import main


def test_main_leaves_the_warning_format_as_it_found_it(tmp_path, capsys) -> None:
    before = warnings.formatwarning
    assert main(["stats", str(tmp_path / "missing.tif")]) == 1
    assert warnings.formatwarning is before
    assert capsys.readouterr().err.count("\n") == 1


def _forward(self, x):
    return x


def test_third_party_deprecations_are_silenced_and_tilers_own_warnings_kept() -> None:
    import torch

    from tiler.cli.main import configure_warnings
    from tiler.errors import DeviceWarning

    before = warnings.formatwarning
    try:
        with warnings.catch_warnings(record=True) as seen:
            configure_warnings()
            torch.jit.script_method(_forward)  # what --compile made PyTorch print
            warnings.warn_explicit("old", FutureWarning, "dask/core.py", 1, module="dask.core")
            warnings.warn_explicit("--output is now --kind", FutureWarning, "main.py", 1, module="tiler.cli.main")
            warnings.warn_explicit("no GPU", DeviceWarning, "factory.py", 1, module="tiler.runners.factory")
            warnings.warn_explicit("odd tile", UserWarning, "tifffile.py", 1, module="tifffile.tifffile")
    finally:
        warnings.formatwarning = before
    assert [str(w.message) for w in seen] == ["--output is now --kind", "no GPU", "odd tile"]


def test_a_grey_image_with_a_three_channel_model_says_what_to_do_and_that_works(tmp_path, capsys, model_file):
    import numpy as np
    import tifffile
    import zarr

    grey = np.random.default_rng(0).integers(0, 256, (80, 96), dtype=np.uint8)
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, grey)
    common = ["--model", str(model_file), "--device", "cpu", "--tile", "64", "--overlap", "16", "--no-pyramid"]
    assert main(["run", str(path), *common]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: the image has 1 channel(s) but the model 'head.pt' expects 3; to feed its "
                   "grey channel 3 times pass --channels 0,0,0, or use a model with 1 input channel"]
    assert main(["run", str(path), *common, "--channels", "0,0,0"]) == 0
    assert zarr.open_group(tmp_path / "grey.zarr", mode="r")["0"].shape == (2, 80, 96)
