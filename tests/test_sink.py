"""The zarr output sink (tiler/store/sink.py)."""

from __future__ import annotations


def test_a_stale_task_stops_instead_of_writing_into_a_replaced_output(tmp_path) -> None:
    """A dask task that outlives its run (cancelled while executing) must not write into the output
    that a rerun with --overwrite made at the same path."""
    import numpy as np
    import pytest
    import zarr

    import tiler
    from tiler.errors import OutputError
    from tiler.runners.base import FunctionRunner
    from tiler.store.ownership import OutputLock
    from tiler.store.sink import ZarrSink

    image = np.zeros((64, 64, 1), np.float32)
    runner = FunctionRunner(lambda x: x + 1, normalise=False)
    out = tmp_path / "o.zarr"
    tiler.run(image, runner, out=out, tile=32, overlap=8, chunk=32, pyramid=False)
    old = zarr.open_group(out, mode="r").attrs["tiler"]["run_id"]
    driver = OutputLock(out, old)  # the run, still live, holding the output
    driver.acquire()
    stale = ZarrSink.open(out, run_id=old)
    stale.write(0, 32, 0, 32, np.full((1, 32, 32), 7, np.float32))  # still its run: allowed
    driver.release()  # the run ends (fails); a task of it is still executing
    with pytest.raises(OutputError, match="replaced by another run"):
        stale.write(0, 32, 0, 32, np.full((1, 32, 32), 8, np.float32))
    tiler.run(image, runner, out=out, tile=32, overlap=8, chunk=32, pyramid=False, overwrite=True)
    with pytest.raises(OutputError, match="replaced by another run"):
        stale.write(0, 32, 0, 32, np.full((1, 32, 32), 9, np.float32))
    with pytest.raises(OutputError, match="replaced by another run"):
        stale.mark_done(0, 0)
    assert (zarr.open_group(out, mode="r")["0"][:] == 1).all()


def test_outputs_are_written_with_the_fast_codec_of_their_dtype_and_read_back_exactly(tmp_path) -> None:
    """uint8 probabilities (and their pyramid levels) are zstd level 1, float32 logits Blosc LZ4:
    zarr's default zstd level 3 was the largest single CPU cost of a file-to-file run. The values
    read back are what ``predict`` computes in memory."""
    import json

    import numpy as np
    import zarr

    import tiler
    from tiler.runners.base import FunctionRunner

    rng = np.random.default_rng(0)
    image = rng.random((300, 260, 2), dtype=np.float32)
    runner = FunctionRunner(lambda x: x * 3 - 1, normalise=False)
    options = {"tile": 64, "overlap": 16, "chunk": 128}
    expected = tiler.predict(image, runner, **options)
    for kind, codec in (("probs", "zstd"), ("logits", "blosc")):
        out = tmp_path / f"{kind}.zarr"
        tiler.run(image, runner, out=out, output=kind, pyramid_levels=2, **options)
        for level in ("0", "1"):
            codecs = json.loads((out / level / "zarr.json").read_text())["codecs"]
            names = [c["name"] for c in codecs]
            assert codec in names, (kind, level, names)
            config = codecs[names.index(codec)]["configuration"]
            if codec == "zstd":
                assert config["level"] == 1, (kind, level, config)
            else:
                assert config["cname"] == "lz4", (kind, level, config)
        stored = zarr.open_group(out, mode="r")["0"][:]
        if kind == "logits":
            np.testing.assert_array_equal(stored, expected)
        else:
            e = np.exp(expected - expected.max(axis=0))
            probs = e / e.sum(axis=0)
            assert np.abs(stored.astype(np.float64) - probs * 255).max() <= 1.0
