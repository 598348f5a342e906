"""Review fixes: archive bookkeeping (duplicate outputs, manifest line numbers)."""

from __future__ import annotations

import pytest

from tiler.cli import batch
from tiler.errors import InputError


def test_a_third_input_on_the_same_output_names_the_one_that_owns_it(tmp_path) -> None:
    dirs = [tmp_path / d for d in "abc"]
    for d in dirs:
        d.mkdir()
    items = [batch.Item(str(d / "x.tif")) for d in dirs]
    batch.assign_outputs(items, tmp_path / "out")
    assert [i.status for i in items] == ["pending", "failed", "failed"]
    assert items[2].error.endswith(f"also the output of {items[0].input}; use a manifest with an output "
                                   "column, or separate runs")


def test_a_manifest_error_names_the_line_of_the_file(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("# slides of March\n\ninput,output\na.tif,a.zarr\n# b is pending\n,b.zarr\n")
    with pytest.raises(InputError, match="line 6 has no input"):
        batch.read_manifest(manifest)
