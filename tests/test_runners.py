"""One conformance suite for the Runner interface, run for PyTorch and for ONNX Runtime.

Each implementation subclasses :class:`RunnerSuite` and says how to turn an ``nn.Module`` and a
spec into its runner; every test then holds for both. ONNX-only behaviour (providers, fallback,
fp16 graphs, metadata) follows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tiler.errors import DeviceWarning, InputNotFoundError, ModelError, SettingsError
from tiler.models.spec import ModelSpec
from tiler.runners.base import Runner


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class ChannelSum(nn.Module):
    """(N, C, h, w) -> (N, 2, h, w): the channel sum and the first channel minus one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.sum(1, keepdim=True), x[:, :1] - 1.0], dim=1)


class Halve(nn.Module):
    """A model that breaks the contract: its output is half the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 2)


def plain_export(module: nn.Module, path, size: int = 32) -> None:
    """torch.onnx.export with dynamic axes and no tiler metadata or verification."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})


def rgb(n: int = 3, h: int = 32, w: int = 48, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, (n, 3, h, w), endpoint=True).astype(dtype)
    return rng.random((n, 3, h, w)).astype(dtype)


class RunnerSuite:
    """The contract every Runner keeps. Subclasses implement :meth:`make`."""

    def make(self, module: nn.Module, spec: ModelSpec, tmp_path) -> Runner:  # pragma: no cover
        raise NotImplementedError

    @pytest.fixture
    def identity(self, tmp_path) -> Runner:
        return self.make(Identity(), ModelSpec(name="identity", in_channels=3, out_channels=3), tmp_path)

    def test_is_a_runner(self, identity):
        assert isinstance(identity, Runner)
        assert identity.describe()

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
    def test_identity_gives_the_normalised_input(self, identity, dtype):
        x = rgb(dtype=dtype)
        y = identity(x)
        scale = np.float32(1.0 / np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
        expected = x.astype(np.float32) * np.float32(scale)
        assert y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=0)
        if dtype == np.float32:
            np.testing.assert_array_equal(y, x)

    def test_mean_std(self, tmp_path):
        spec = ModelSpec(name="id", in_channels=3, out_channels=3, mean=(0.5, 0.25, 0.0), std=(0.5, 2.0, 1.0))
        runner = self.make(Identity(), spec, tmp_path)
        x = rgb(dtype=np.uint8)
        expected = (x / 255.0 - np.array([0.5, 0.25, 0.0])[None, :, None, None]) / np.array(
            [0.5, 2.0, 1.0])[None, :, None, None]
        np.testing.assert_allclose(runner(x), expected, atol=1e-6)

    @pytest.mark.parametrize(("n", "h", "w"), [(1, 16, 16), (5, 32, 48), (2, 64, 32)])
    def test_shapes(self, tmp_path, n, h, w):
        runner = self.make(ChannelSum(), ModelSpec(name="sum", in_channels=3, out_channels=2, scale=1.0),
                           tmp_path)
        x = rgb(n, h, w, dtype=np.float32)
        y = runner(x)
        assert y.shape == (n, 2, h, w) and y.dtype == np.float32
        np.testing.assert_allclose(y[:, 0], x.sum(1), rtol=1e-6)
        np.testing.assert_allclose(y[:, 1], x[:, 0] - 1.0, rtol=1e-6)

    def test_channel_mismatch_is_a_model_error(self, identity):
        with pytest.raises(ModelError, match="1 channel.*expects 3"):
            identity(np.zeros((1, 1, 16, 16), np.uint8))

    def test_output_of_another_size_is_a_model_error(self, tmp_path):
        runner = self.make(Halve(), ModelSpec(name="halve", in_channels=3, out_channels=3), tmp_path)
        with pytest.raises(ModelError, match="input's size"):
            runner(rgb(1, 32, 32))

    def test_spec_travels(self, tmp_path):
        spec = ModelSpec(name="sum", in_channels=3, out_channels=2, multiple=16, scale=0.5,
                         activation="sigmoid", class_names=("tissue", "other"))
        runner = self.make(ChannelSum(), spec, tmp_path)
        got = runner.spec
        assert (got.in_channels, got.out_channels, got.multiple, got.scale, got.activation,
                got.class_names) == (3, 2, 16, 0.5, "sigmoid", ("tissue", "other"))


class TestTorchRunner(RunnerSuite):
    def make(self, module, spec, tmp_path):
        from tiler.runners.torch import TorchRunner

        return TorchRunner(module, spec, device="cpu")


class TestOnnxRunner(RunnerSuite):
    def make(self, module, spec, tmp_path):
        from exporters.onnx import export_onnx
        from tiler.runners.onnx import OnnxRunner

        path = tmp_path / f"{spec.name}.onnx"
        if isinstance(module, Halve):  # verification would compare equal-size outputs only
            plain_export(module, path)
            return OnnxRunner(path, provider="cpu", spec=spec)
        export_onnx(module, spec, path, log=None)
        return OnnxRunner(path, provider="cpu")


# --- ONNX Runtime specifics -------------------------------------------------------------------

onnx_runner = pytest.importorskip("tiler.runners.onnx")


@pytest.fixture
def sum_onnx(tmp_path):
    from exporters.onnx import export_onnx

    path = tmp_path / "sum.onnx"
    export_onnx(ChannelSum(), ModelSpec(name="sum", in_channels=3, out_channels=2), path, log=None)
    return path


def test_choose_providers(monkeypatch):
    cpu, cuda, trt = (onnx_runner.PROVIDERS[k] for k in ("cpu", "cuda", "tensorrt"))
    assert onnx_runner.choose_providers("cpu") == [cpu]
    assert onnx_runner.choose_providers("auto", "cpu") == [cpu]
    assert onnx_runner.choose_providers("cuda") == [cuda, cpu]
    assert onnx_runner.choose_providers("tensorrt") == [trt, cuda, cpu]
    monkeypatch.setattr(onnx_runner.ort, "get_available_providers", lambda: [trt, cuda, cpu])
    monkeypatch.setattr(onnx_runner, "gpu_present", lambda: False)
    assert onnx_runner.choose_providers("auto") == [cpu]
    monkeypatch.setattr(onnx_runner, "gpu_present", lambda: True)
    assert onnx_runner.choose_providers("auto") == [trt, cuda, cpu]
    assert onnx_runner.choose_providers("auto", "cuda:0") == [trt, cuda, cpu]
    monkeypatch.setattr(onnx_runner.ort, "get_available_providers", lambda: [cpu])
    assert onnx_runner.choose_providers("auto") == [cpu]
    with pytest.raises(SettingsError, match="no GPU providers; install onnxruntime-gpu, or use --device cpu"):
        onnx_runner.choose_providers("auto", "cuda:0")  # an explicit GPU: never the CPU instead
    for name in ("cuda", "tensorrt"):
        with pytest.raises(SettingsError, match=f"provider {name} asked for, .* has only CPUExecutionProvider"):
            onnx_runner.choose_providers(name)
    with pytest.raises(SettingsError, match="unknown provider"):
        onnx_runner.choose_providers("openvino")
    with pytest.raises(SettingsError, match="contradicts"):
        onnx_runner.choose_providers("cuda", "cpu")


@pytest.mark.skipif(onnx_runner.gpu_present(), reason="tests the refusal on a machine without a GPU")
@pytest.mark.parametrize(("provider", "device", "fix"), [("cuda", "auto", "--provider cpu"),
                                                         ("tensorrt", "auto", "--provider cpu"),
                                                         ("auto", "cuda", "--device cpu"),
                                                         ("cuda", "cuda:0", "--provider cpu")])
def test_unusable_gpu_provider_asked_for_is_an_error_not_a_silent_fallback(sum_onnx, provider, device, fix,
                                                                           capfd):
    """onnxruntime-gpu lists CUDA and TensorRT here, but they cannot load: ONNX Runtime itself
    would run on the CPU without a word."""
    with pytest.raises(SettingsError) as info:
        onnx_runner.OnnxRunner(sum_onnx, provider=provider, device=device)
    message = str(info.value)
    assert "\n" not in message and "could not use" in message and "no NVIDIA GPU" in message
    assert "not fall back silently" in message and fix in message
    out, err = capfd.readouterr()
    assert out == "" and "onnxruntime" not in err.lower() and "EP Error" not in err


@pytest.mark.skipif(onnx_runner.gpu_present(), reason="tests the fallback on a machine without a GPU")
def test_auto_with_listed_but_unloadable_gpu_providers(sum_onnx, monkeypatch, capfd):
    """onnxruntime-gpu lists CUDA and TensorRT here although their libraries are missing."""
    monkeypatch.setattr(onnx_runner, "gpu_present", lambda: True)
    with pytest.warns(DeviceWarning, match="could not use") as record:
        runner = onnx_runner.OnnxRunner(sum_onnx)
    assert len(record) == 1 and runner.provider == "CPUExecutionProvider"
    assert "CPUExecutionProvider on cpu" in runner.describe()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_auto_without_gpu_says_once_that_it_runs_on_the_cpu(sum_onnx, monkeypatch, recwarn, capfd):
    monkeypatch.setattr(onnx_runner, "gpu_present", lambda: False)
    runner = onnx_runner.OnnxRunner(sum_onnx)
    assert runner.provider == "CPUExecutionProvider"
    notes = [w for w in recwarn if issubclass(w.category, DeviceWarning)]
    assert len(notes) == 1 and "runs sum.onnx on the CPU" in str(notes[0].message)
    assert capfd.readouterr() == ("", "")
    recwarn.clear()
    onnx_runner.OnnxRunner(sum_onnx, provider="cpu")  # the CPU named: nothing to say
    assert not [w for w in recwarn if issubclass(w.category, DeviceWarning)]


def test_precision_checks(sum_onnx):
    with pytest.raises(SettingsError, match="bf16"):
        onnx_runner.OnnxRunner(sum_onnx, provider="cpu", precision="bf16")
    with pytest.raises(SettingsError, match="export --fp16"):
        onnx_runner.OnnxRunner(sum_onnx, provider="cpu", precision="fp16")


def test_fp16_model_takes_and_gives_float32(tmp_path):
    from exporters.onnx import export_onnx

    path = tmp_path / "sum16.onnx"
    export_onnx(ChannelSum(), ModelSpec(name="sum", in_channels=3, out_channels=2), path, fp16=True, log=None)
    runner = onnx_runner.OnnxRunner(path, provider="cpu", precision="fp16")
    assert runner.input_dtype == np.float16 and "fp16" in runner.describe()
    x = rgb(2, 16, 16, dtype=np.float32)
    y = runner(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0], x.sum(1), atol=5e-3)


def test_spec_from_graph_without_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    plain_export(ChannelSum(), path)
    runner = onnx_runner.OnnxRunner(path, provider="cpu")
    assert (runner.spec.name, runner.spec.in_channels, runner.spec.out_channels) == ("plain.onnx", 3, 2)
    override = ModelSpec(name="mine", in_channels=3, scale=1.0)
    assert onnx_runner.OnnxRunner(path, provider="cpu", spec=override).spec == override


def test_tensorrt_options(sum_onnx, tmp_path):
    runner = onnx_runner.OnnxRunner(sum_onnx, provider="cpu", precision="fp32")
    runner.device_id = 1  # as for device="cuda:1" (the options only; no GPU here)
    opts = runner._provider_options(onnx_runner.PROVIDERS["tensorrt"], tmp_path / "engines", (8, 512, 256))
    assert opts["device_id"] == 1 and opts["trt_fp16_enable"] is False
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert opts["trt_profile_min_shapes"] == "input:1x3x512x256"
    assert opts["trt_profile_max_shapes"] == opts["trt_profile_opt_shapes"] == "input:8x3x512x256"
    assert runner._provider_options(onnx_runner.PROVIDERS["cuda"], None, None) == {"device_id": 1}


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="bad.onnx: ONNX Runtime cannot load"):
        onnx_runner.OnnxRunner(bad, provider="cpu")


def test_fingerprint_follows_the_file(sum_onnx, tmp_path):
    a = onnx_runner.OnnxRunner(sum_onnx, provider="cpu").fingerprint()
    assert a == onnx_runner.OnnxRunner(sum_onnx, provider="cpu").fingerprint()
    from exporters.onnx import export_onnx

    other = tmp_path / "id.onnx"
    export_onnx(Identity(), ModelSpec(name="id", in_channels=3, out_channels=3), other, log=None)
    assert onnx_runner.OnnxRunner(other, provider="cpu").fingerprint() != a


def test_an_onnx_run_does_not_import_the_onnx_package(sum_onnx, tmp_path):
    """The fingerprint parses the graph only when it names external data: importing ``onnx`` costs
    more than a second of every ``tiler run`` (a fresh process, as a user starts it)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, tiler; "
            f"tiler.predict(np.zeros((64, 64, 3), np.uint8), {str(sum_onnx)!r}, tile=32, overlap=8, device='cpu'); "
            "from tiler.runners.onnx import OnnxRunner; "
            f"print(OnnxRunner({str(sum_onnx)!r}, provider='cpu').fingerprint()); "
            "print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"
    assert out[-2] == onnx_runner.OnnxRunner(sum_onnx, provider="cpu").fingerprint()


def test_load_runner_dispatches_onnx(sum_onnx):
    from tiler.runners.factory import load_runner

    runner = load_runner(str(sum_onnx), device="cpu", provider="cpu")
    assert isinstance(runner, onnx_runner.OnnxRunner)
    with pytest.raises(InputNotFoundError, match="not found"):
        load_runner(sum_onnx.with_name("missing.onnx"))


def test_compile_pads_every_call_to_the_batch_size(monkeypatch, tmp_path) -> None:
    """--compile: the module goes through torch.compile, and every call (the probe and the short
    last batch included) has the batch size's shape, so it compiles once; values are unchanged."""
    from tiler.cli.main import main
    from tiler.results.result import open_result

    from .conftest import save_model, write_tiff

    shapes: list[tuple[int, ...]] = []

    def fake_compile(module, **kwargs):
        assert kwargs.get("dynamic") is False

        def run(x):
            shapes.append(tuple(x.shape))
            return module(x)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = save_model(tmp_path / "m.pt")
    image = write_tiff(tmp_path / "i.tif", (np.random.default_rng(0).random((150, 130, 3)) * 255).astype(np.uint8))
    args = ["--model", str(model), "--tile", "64", "--overlap", "16", "--batch-size", "5", "--device", "cpu",
            "--kind", "logits", "--no-pyramid"]
    assert main(["run", str(image), "-o", str(tmp_path / "c.zarr"), "--compile", *args]) == 0
    assert shapes and set(shapes) == {(5, 3, 64, 64)}
    assert main(["run", str(image), "-o", str(tmp_path / "e.zarr"), *args]) == 0
    compiled = open_result(tmp_path / "c.zarr").levels[0][:]
    eager = open_result(tmp_path / "e.zarr").levels[0][:]
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)


def test_compile_is_refused_for_onnx(tmp_path) -> None:
    from tiler.errors import SettingsError
    from tiler.runners.factory import load_runner

    path = tmp_path / "m.onnx"
    path.write_bytes(b"not really")
    with pytest.raises(SettingsError, match="--compile is for PyTorch"):
        load_runner(path, compile=8)


def test_keep_freed_memory_is_set_by_the_cli_and_respects_the_environment(monkeypatch) -> None:
    import sys

    import tiler.cli.main as cli
    from tiler.malloc import keep_freed_memory

    if sys.platform.startswith("linux"):
        assert keep_freed_memory(1 << 20) is True  # glibc here
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert keep_freed_memory() is False  # the user's own choice is left alone
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1))
    assert cli.main(["info", "/nonexistent/scan.tif"]) == 1  # a one-line error, after the setting
    assert calls == [1]


def test_compile_padding_gives_way_to_out_of_memory_halving() -> None:
    """A padded (compiled) runner whose device fits 4 tiles: the engine halves 8 -> 4 and the runner
    stops padding back to 8, so the run completes with the unpadded values."""
    import tiler
    from tiler.runners.torch import TorchRunner

    class Fits4(TorchRunner):
        def __init__(self) -> None:
            super().__init__(nn.Conv2d(3, 2, 1), ModelSpec(scale=1.0), device="cpu", pad_batches=8)
            self.calls: list[int] = []

        def _run(self, tiles: np.ndarray) -> np.ndarray:
            self.calls.append(len(tiles))
            if len(tiles) > 4:
                raise torch.cuda.OutOfMemoryError("fake: 4 tiles fit")
            return super()._run(tiles)

    torch.manual_seed(0)
    runner = Fits4()
    image = np.random.default_rng(0).random((150, 130, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="out of device memory"):
        got = tiler.predict(image, runner, tile=64, overlap=16, batch_size=8)
    assert max(runner.calls[-3:]) <= 4
    plain = TorchRunner(runner.module, ModelSpec(scale=1.0), device="cpu")
    np.testing.assert_allclose(got, tiler.predict(image, plain, tile=64, overlap=16, batch_size=8), atol=1e-6)


def test_a_runner_with_its_own_normalise_is_not_bypassed() -> None:
    import tiler
    from tiler.runners.base import FunctionRunner

    class Doubling(FunctionRunner):
        def normalise(self, tiles: np.ndarray) -> np.ndarray:
            return tiles.astype(np.float32) * 2

    image = np.full((40, 50, 1), 3, np.uint8)
    out = tiler.predict(image, Doubling(lambda x: x, ModelSpec(scale=1.0)), tile=32, overlap=8)
    np.testing.assert_allclose(out, 6.0, rtol=1e-6)  # bypassed, it would be 3


def test_compile_with_a_ready_runner_is_refused() -> None:
    from tiler.runners.base import FunctionRunner
    from tiler.runners.factory import load_runner

    with pytest.raises(SettingsError, match="not to a ready Runner"):
        load_runner(FunctionRunner(lambda x: x), compile=8)


def test_fingerprints_follow_the_code_and_external_weights(tmp_path):
    """Same weights, other code (a TorchScript re-export); an ONNX model's external data edited."""
    import onnx

    from tiler.runners.torch import TorchRunner

    class A(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x)

    class B(A):
        def forward(self, x):
            return -10 * self.conv(x)

    spec = ModelSpec(in_channels=3, out_channels=2)
    fp = [TorchRunner(torch.jit.script(m().eval()), spec, device="cpu").fingerprint() for m in (A, B)]
    assert fp[0] != fp[1]
    assert TorchRunner(A().eval(), spec, device="cpu").fingerprint() != TorchRunner(B().eval(), spec,
                                                                                    device="cpu").fingerprint()
    from exporters.onnx import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(A().eval(), spec, path, log=None)
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
              size_threshold=0)
    before = onnx_runner.OnnxRunner(path, provider="cpu").fingerprint()
    data = bytearray((tmp_path / "m.data").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "m.data").write_bytes(bytes(data))
    assert onnx_runner.OnnxRunner(path, provider="cpu").fingerprint() != before


def test_device_cuda_with_provider_cpu_is_a_contradiction():
    with pytest.raises(SettingsError, match="provider cpu contradicts device cuda"):
        onnx_runner.choose_providers("cpu", "cuda")


class _SeesLayout(nn.Module):
    """A 1x1 convolution that records whether each input it got was channels-last."""

    def __init__(self, flatten_input: bool = False) -> None:
        super().__init__()
        self.conv, self.flatten_input, self.layouts, self.pointers = nn.Conv2d(3, 2, 1), flatten_input, [], []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        self.pointers.append(x.data_ptr())
        if self.flatten_input:  # .view needs plain strides: fails on a channels-last batch
            x = x.view(x.shape[0], -1).view(x.shape)
        return self.conv(x)


@pytest.mark.parametrize("flatten_input", [False, True])
def test_convolutional_modules_get_channels_last_batches_on_the_cpu(flatten_input) -> None:
    from tiler.runners.torch import TorchRunner

    torch.manual_seed(0)
    module = _SeesLayout(flatten_input)
    runner = TorchRunner(module, ModelSpec(scale=1.0), device="cpu")
    assert runner.channels_last
    tiles = rgb(4, 32, 48, np.float32)
    with torch.inference_mode():
        expected = module.conv(torch.from_numpy(tiles)).numpy()
    for _ in range(2):
        np.testing.assert_allclose(runner(tiles, normalised=True), expected, rtol=0, atol=1e-6)
    if flatten_input:  # tried channels-last once, then plain batches only
        assert module.layouts == [True, False, False] and not runner.channels_last
    else:
        assert module.layouts == [True, True] and runner.channels_last
    # a module without convolution weights gets the batch as it is (no layout change to pay for)
    assert not TorchRunner(ChannelSum(), ModelSpec(scale=1.0), device="cpu").channels_last


@pytest.mark.parametrize("flatten_input", [False, True])
def test_a_channels_last_view_reaches_the_module_without_a_copy(flatten_input) -> None:
    """The tile loader's channels-last batches ((N, t, t, C) buffers seen as (N, C, t, t)) are
    handed to the module as they are; a module that fails on them gets them made plain."""
    from tiler.runners.torch import TorchRunner

    torch.manual_seed(0)
    module = _SeesLayout(flatten_input)
    runner = TorchRunner(module, ModelSpec(scale=1.0), device="cpu")
    tiles = rgb(4, 32, 48, np.float32)
    view = np.ascontiguousarray(tiles.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    with torch.inference_mode():
        expected = module.conv(torch.from_numpy(tiles)).numpy()
    for _ in range(2):
        np.testing.assert_allclose(runner(view, normalised=True), expected, rtol=0, atol=1e-6)
    assert module.pointers[0] == view.ctypes.data  # the loader's buffer itself
    if flatten_input:
        assert module.layouts == [True, False, False] and not runner.channels_last
    else:
        assert module.layouts == [True, True] and module.pointers[1] == view.ctypes.data


def test_a_module_failing_on_both_layouts_is_a_model_error() -> None:
    from tiler.runners.torch import TorchRunner

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x[:, :2])  # 2 channels into a 3-channel conv

    runner = TorchRunner(Broken(), ModelSpec(scale=1.0), device="cpu")
    with pytest.raises(ModelError, match="the model failed on a batch of shape"):
        runner(rgb(2, 16, 16, np.float32), normalised=True)
