"""Say what runs where: the runtime and device in summaries and reports, one line when ``auto``
lands on the CPU, and an error (never a silent CPU run) when an explicit GPU cannot be had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

import tiler
from tiler.cli.main import main
from tiler.distributed import cluster as _cluster
from tiler.errors import DeviceWarning, SettingsError
from tiler.models.spec import ModelSpec
from tiler.runners import onnx as onnx_runner
from tiler.runners.torch import TorchRunner, resolve_device

from .conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests a machine without CUDA")


@pytest.fixture
def fake_gpus(monkeypatch):
    """PyTorch believes in two GPUs, the current one being cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_resolve_device_names_the_gpu_it_uses(fake_gpus, recwarn):
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert not [w for w in recwarn if issubclass(w.category, DeviceWarning)]
    with pytest.raises(SettingsError, match=r"cuda:2 does not exist \(2 GPUs\); use cuda:0 to cuda:1"):
        resolve_device("cuda:2")


@needs_no_cuda
def test_auto_without_cuda_says_once_it_runs_on_the_cpu_and_can_be_silenced():
    with pytest.warns(DeviceWarning, match="no CUDA GPU found: PyTorch runs the model on the CPU") as record:
        runner = TorchRunner(nn.Conv2d(3, 2, 1), ModelSpec(scale=1.0))
    assert len(record) == 1
    assert runner.describe() == f"PyTorch {torch.__version__} on cpu (fp32)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeviceWarning)  # what a library user does
        TorchRunner(nn.Conv2d(3, 2, 1), ModelSpec(scale=1.0))
        TorchRunner(nn.Conv2d(3, 2, 1), ModelSpec(scale=1.0), device="cpu")  # named: never noted


@needs_no_cuda
def test_fp16_on_a_machine_without_cuda_is_one_error_and_no_cpu_note(recwarn):
    with pytest.raises(SettingsError, match="fp16 needs a CUDA device"):
        TorchRunner(nn.Conv2d(3, 2, 1), ModelSpec(scale=1.0), precision="fp16")
    assert not [w for w in recwarn if issubclass(w.category, DeviceWarning)]


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_explicit_cuda_without_cuda_is_an_error(device):
    with pytest.raises(SettingsError, match=f"device {device} asked for, but PyTorch finds no CUDA GPU.*--device cpu"):
        TorchRunner(nn.Conv2d(3, 2, 1), ModelSpec(scale=1.0), device=device)


def test_run_summary_names_the_runtime_and_device(tmp_path):
    model = nn.Conv2d(3, 2, 1)
    result = tiler.run(np.zeros((40, 50, 3), np.float32), model, out=tmp_path / "o.zarr", tile=32, overlap=8,
                       device="cpu", pyramid=False)
    assert result.runtime == f"PyTorch {torch.__version__} on cpu (fp32)"
    assert result.summary().endswith(f"MP/s) on PyTorch {torch.__version__} on cpu (fp32)")


@pytest.fixture
def two_tiffs(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"in{i}.tif"
        tifffile.imwrite(path, smooth_image((80, 90, 3), seed=i))
        paths.append(path)
    return paths


@pytest.mark.slow
@needs_no_cuda
def test_cli_device_auto_prints_one_cpu_line_and_the_report_names_the_runtime(two_tiffs, tmp_path):
    """In a subprocess: pytest records warnings itself instead of letting the CLI print them."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tiler.cli.main", "run", *map(str, two_tiffs), "--out-dir", str(tmp_path / "out"),
         "--tile", "64", "--overlap", "16", "--no-pyramid", "--report", str(report)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "warning: no CUDA GPU found: PyTorch runs the model on the CPU (pass --device cpu to say so and "
        "silence this)"
    ]
    runtime = f"PyTorch {torch.__version__} on cpu (fp32)"
    assert proc.stdout.count(f"on {runtime}") == 2
    rows = json.loads(report.read_text())["inputs"]
    assert [r["runtime"] for r in rows] == [runtime, runtime]


@pytest.mark.skipif(onnx_runner.gpu_present(), reason="tests a machine without a GPU")
@pytest.mark.parametrize(("flags", "fix"), [(["--provider", "cuda"], "--provider cpu"),
                                            (["--provider", "tensorrt"], "--provider cpu"),
                                            (["--device", "cuda"], "--device cpu")])
def test_cli_explicit_gpu_provider_that_cannot_load_is_an_error(two_tiffs, tmp_path, capsys, flags, fix):
    """A real end-to-end check: onnxruntime-gpu lists CUDA here, but it cannot load."""
    from exporters.onnx import export_onnx

    model = tmp_path / "conv.onnx"
    export_onnx(nn.Conv2d(3, 2, 1), ModelSpec(name="conv", in_channels=3, out_channels=2), model, log=None)
    out = tmp_path / "o.zarr"
    code = main(["run", str(two_tiffs[0]), "-m", str(model), "-o", str(out), "--tile", "64", *flags])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: conv.onnx: ONNX Runtime could not use") and fix in line
    assert not out.exists()


def test_onnx_describe_names_the_execution_provider(tmp_path):
    from exporters.onnx import export_onnx

    model = tmp_path / "conv.onnx"
    export_onnx(nn.Conv2d(3, 2, 1), ModelSpec(name="conv", in_channels=3, out_channels=2), model, log=None)
    runner = onnx_runner.OnnxRunner(model, provider="cpu")
    assert runner.describe() == f"ONNX Runtime {onnx_runner.ort.__version__} CPUExecutionProvider on cpu (fp32)"


def test_workers_beyond_the_gpus_say_so(monkeypatch):
    monkeypatch.setattr(_cluster, "_gpu_ids", lambda: ["0", "3"])
    with pytest.warns(DeviceWarning, match=r"--workers 4: this machine has 2 GPU\(s\), so 2 worker\(s\) start"):
        spec = _cluster.local_cluster_spec(4)
    assert [w["options"]["env"]["CUDA_VISIBLE_DEVICES"] for w in spec.values()] == ["0", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeviceWarning)
        assert len(_cluster.local_cluster_spec(2)) == 2  # as many GPUs as workers: nothing to say
        cpu = _cluster.local_cluster_spec(4, gpus=False)  # --device cpu: CPU workers, not GPU ones
    assert len(cpu) == 4 and all("CUDA_VISIBLE_DEVICES" not in w["options"]["env"] for w in cpu.values())


# --- on a CUDA GPU (marked ``gpu``: skipped without one, see tests/conftest.py) -------------------

@pytest.mark.gpu
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 5e-2), ("bf16", 2e-1)])
def test_cuda_predict_agrees_with_the_cpu(tmp_path, small_unet_checkpoint, precision, atol):
    model = small_unet_checkpoint
    image = smooth_image((300, 260, 3), seed=5)
    cpu = tiler.predict(image, model, tile=128, overlap=32, device="cpu")
    gpu = tiler.predict(image, model, tile=128, overlap=32, device="cuda", precision=precision)
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=atol * max(1.0, float(np.abs(cpu).max())))


@pytest.mark.gpu
def test_cuda_run_records_the_gpu_and_equals_predict(tmp_path, small_unet_checkpoint):
    import zarr

    model = small_unet_checkpoint
    image = smooth_image((200, 300, 3), seed=6)
    result = tiler.run(image, model, out=tmp_path / "o.zarr", tile=128, overlap=32, chunk=64, device="cuda",
                       pyramid=False)
    assert "on cuda" in result.runtime
    expected = tiler.predict(image, model, tile=128, overlap=32, device="cuda")
    np.testing.assert_allclose(zarr.open_group(result.path, mode="r")["0"][...], expected, rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_cuda_onnx_provider_agrees_with_the_cpu_provider(tmp_path, small_unet_checkpoint):
    import onnxruntime as ort

    from exporters import export

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider")
    onnx_file = tmp_path / "unet.onnx"
    export(small_unet_checkpoint, onnx_file, format="onnx", log=None)
    image = smooth_image((200, 200, 3), seed=7)
    cpu = tiler.predict(image, onnx_file, tile=128, overlap=32, device="cpu", provider="cpu")
    gpu = tiler.predict(image, onnx_file, tile=128, overlap=32, device="cuda", provider="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-3)
