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
