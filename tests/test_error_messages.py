"""Error messages: one-line TorchScript errors, no --overwrite offer for paths that are not outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiler
from tiler.errors import ModelError


def test_a_failing_torchscript_model_gives_a_one_line_error(tmp_path) -> None:
    path = tmp_path / "rgb.ts"
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1))).save(str(path))
    with pytest.raises(ModelError) as info:
        tiler.predict(np.zeros((64, 64, 1), np.uint8), str(path), tile=32, overlap=8, device="cpu")
    assert "\n" not in str(info.value)
    assert "expected input[1, 1, 32, 32] to have 3 channels" in str(info.value)


def test_an_existing_folder_that_is_not_an_output_is_not_offered_to_overwrite(tmp_path) -> None:
    from tiler.errors import OutputError
    from tiler.runners.base import FunctionRunner

    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(OutputError) as info:
        tiler.run(np.zeros((32, 32, 1), np.float32), FunctionRunner(lambda x: x, normalise=False),
                  out=folder, tile=32, overlap=8)
    assert "--overwrite" not in str(info.value)
