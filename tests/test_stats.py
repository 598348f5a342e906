"""tiler stats: per-channel mean and std against NumPy, block by block."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from tiler.cli.main import main as cli
from tiler.results.stats import _Running, channel_stats


def test_uint8_tiff_matches_numpy(tmp_path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (203, 157, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", img, tile=(32, 32), photometric="rgb")
    s = channel_stats(tmp_path / "img.tif", block=64)  # many blocks, ragged edges
    ref = img.astype(np.float64) / 255.0
    np.testing.assert_allclose(s.mean, ref.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(s.std, ref.std(axis=(0, 1)), rtol=1e-12)
    assert s.count == 203 * 157 and s.scale == 1 / 255


def test_uint16_and_float_and_roi() -> None:
    rng = np.random.default_rng(1)
    img16 = rng.integers(0, 65536, (50, 70)).astype(np.uint16)
    s = channel_stats(img16, block=16)
    np.testing.assert_allclose(s.mean, [img16.mean() / 65535], rtol=1e-12)
    imgf = rng.standard_normal((40, 30, 2)).astype(np.float32) * 3 + 100
    roi = rng.random((40, 30)) > 0.5
    s = channel_stats(imgf, roi=roi.astype(np.uint8), block=16)
    ref = imgf[roi].astype(np.float64)
    np.testing.assert_allclose(s.mean, ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.std, ref.std(axis=0), rtol=1e-10)
    assert s.count == roi.sum() and s.scale == 1.0


def test_chan_merge_is_numerically_sound() -> None:
    """A large offset with a tiny spread: naive sum-of-squares loses it all, the merge does not."""
    rng = np.random.default_rng(2)
    x = 1e9 + rng.standard_normal(100_000)
    run = _Running(1)
    for part in np.array_split(x, 37):
        run.add(part[:, None])
    np.testing.assert_allclose(np.sqrt(run.m2 / run.n), [x.std()], rtol=1e-6)
    naive = np.sqrt(np.mean(x**2) - np.mean(x) ** 2)
    assert abs(naive - x.std()) > 0.1  # the failure the merge avoids


def test_cli_json(tmp_path, capsys) -> None:
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tifffile.imwrite(tmp_path / "g.tif", img)
    assert cli(["stats", str(tmp_path / "g.tif"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mean"] == [img.mean() / 255] and report["pixels"] == 12
    assert cli(["stats", str(tmp_path / "g.tif")]) == 0
    assert f"tiler run flags: --scale {1 / 255!r} --mean {img.mean() / 255:.6f} --std " in capsys.readouterr().out


def test_tissue_auto_counts_only_tissue(tmp_path) -> None:
    """On a slide that is 60 % glass, --tissue auto counts about the tissue and leaves glass out."""
    from tools.demo import make_slide

    path = make_slide(tmp_path / "slide.tif", shape=(1024, 1536), levels=2, background=0.6, seed=3)
    everything = channel_stats(path)
    tissue = channel_stats(path, tissue=True)
    fraction = tissue.count / everything.count
    assert 0.2 < fraction < 0.6  # 40 % tissue (pale parts may fall below Otsu), not the glass
    assert (tissue.mean < everything.mean - 0.05).all()  # glass is bright in every channel
