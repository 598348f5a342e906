"""The command line's door: usage errors in two lines, --help with descriptions and examples for every
subcommand, ``tiler stats`` output that ``tiler run`` takes back, the training script's options."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiler.cli.main import build_parser, main
from tiler.cli.options import read_stats, spec_overrides
from tiler.errors import SettingsError

#: (argv, the one error line). Each subcommand, a bad value, a missing argument, an unknown command.
USAGE_ERRORS = [
    (["run", "--mean", "[0.82, 0.5]", "x.tif"],
     "error: --mean: expected numbers separated by commas, got '[0.82, 0.5]'"),
    (["run", "x.tif", "--kind", "prob"],
     "error: --kind: invalid choice: 'prob' (choose from 'logits', 'probs', 'labels')"),
    (["run", "x.tif", "--out"], "error: --out: expected one argument"),
    (["info", "x.tif", "--tile", "0"], "error: --tile: expected a positive number, got 0"),
    (["export", "--opset", "x", "--out", "a.onnx"], "error: --opset: expected a whole number, got 'x'"),
    (["export-result", "a.zarr", "--format", "jpg"],
     "error: --format/-f: invalid choice: 'jpg' (choose from 'tiff', 'geotiff', 'png', 'geojson', 'qupath', "
     "'gpkg', 'geoparquet')"),
    (["eval", "a.zarr"], "error: the following arguments are required: TRUTH"),
    (["stats", "x.tif", "--tissue", "yes"], "error: --tissue: invalid choice: 'yes' (choose from 'auto', 'none')"),
    (["rnu", "x.tif"], None),
]


@pytest.mark.parametrize(("argv", "line"), USAGE_ERRORS, ids=[a[0] + "-" + a[1] for a, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_and_where_to_look(argv, line, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    command = "tiler" if argv[0] == "rnu" else f"tiler {argv[0]}"
    assert err[-1] == f"see '{command} --help'"
    assert len(err) == 2, err
    if line is None:
        assert err[0].startswith("error: COMMAND: invalid choice: 'rnu'")
    else:
        assert err[0] == line.replace("--format/-f", "--format")  # the first spelling (argparse: --format/-f)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_help_has_a_description_examples_and_a_help_per_option(name):
    parser = _subcommands()[name]
    assert parser.description and len(parser.description) > 40, name
    assert parser.epilog and parser.epilog.startswith("examples:"), name
    examples = [line.strip() for line in parser.epilog.splitlines()[1:] if line.strip()]
    assert len(examples) >= 2 and all(e.startswith("$ tiler ") for e in examples), examples
    for action in parser._actions:
        if action.help is not argparse.SUPPRESS:
            assert action.help, f"tiler {name} {'/'.join(action.option_strings) or action.dest}: no help text"
    parser.format_help()  # formats (no stray % in a help text)


def test_every_example_parses():
    parser = build_parser()
    for sub in _subcommands().values():
        for line in sub.epilog.splitlines()[1:]:
            if "$ tiler " not in line:
                continue
            for command in line.split("$ ", 1)[1].split("&&"):
                words = shlex.split(command, comments=True)
                if ">" in words:
                    words = words[: words.index(">")]
                assert words[0] == "tiler", line
                parser.parse_args(words[1:])  # a usage error exits the test


def test_run_examples_show_what_users_look_for():
    epilog = _subcommands()["run"].epilog
    for flag in ("--preview", "--roi", "--level", "--mpp", "--resume", "--stats", "--tissue auto", "--out-dir"):
        assert flag in epilog, flag
    assert any(".onnx" in line and "--provider" in line for line in epilog.splitlines())


# --- tiler stats -> tiler run --------------------------------------------------------------------


@pytest.fixture
def image_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(96, 80, 3), dtype=np.uint8)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    return path, image


def test_stats_prints_flags_that_tiler_run_accepts(image_file, capsys):
    path, image = image_file
    assert main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("tiler run flags: "))
    flags = shlex.split(line.removeprefix("tiler run flags: "), comments=True)
    flags = flags[: flags.index("(or")] if "(or" in flags else flags
    args = build_parser().parse_args(["run", str(path), *flags])
    given = spec_overrides(args)
    pixels = image.reshape(-1, 3) / 255.0
    assert given["scale"] == 1 / 255
    np.testing.assert_allclose(given["mean"], pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(given["std"], pixels.std(axis=0), atol=1e-6)


def test_run_stats_takes_the_json_of_stats_and_flags_win(image_file, capsys, tmp_path):
    path, _ = image_file
    assert main(["stats", str(path), "--json"]) == 0
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(capsys.readouterr().out)
    data = json.loads(stats_file.read_text())
    args = build_parser().parse_args(["run", str(path), "--stats", str(stats_file)])
    assert spec_overrides(args) == {"scale": data["scale"], "mean": tuple(data["mean"]),
                                    "std": tuple(data["std"])}
    args = build_parser().parse_args(["run", str(path), "--stats", str(stats_file), "--mean", "0.5,0.5,0.5"])
    assert spec_overrides(args)["mean"] == (0.5, 0.5, 0.5)
    assert spec_overrides(args)["std"] == tuple(data["std"])


def test_run_with_stats_records_them_as_the_models_normalisation_and_the_library_versions(
        image_file, capsys, tmp_path, model_file):
    import platform
    from importlib import metadata

    import torch
    import zarr

    import tiler

    path, _ = image_file
    main(["stats", str(path), "--json"])
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(capsys.readouterr().out)
    out = tmp_path / "out.zarr"
    assert main(["run", str(path), "--model", str(model_file), "--device", "cpu", "--stats", str(stats_file),
                 "-o", str(out), "--tile", "64", "--overlap", "16", "--no-pyramid"]) == 0
    record = zarr.open_group(out, mode="r").attrs["tiler"]
    spec = record["model"]["spec"]
    data = json.loads(stats_file.read_text())
    assert (spec["scale"], spec["mean"], spec["std"]) == (data["scale"], data["mean"], data["std"])
    versions = record["versions"]
    assert versions["tiler"] == tiler.__version__ and versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__
    for name in ("numpy", "zarr", "tifffile", "dask"):
        assert versions[name] == metadata.version(name)
    import onnxruntime

    assert versions["onnxruntime"] == onnxruntime.__version__


@pytest.mark.parametrize(("content", "says"), [
    (None, "no such file"),
    ("mean = [0.5]", "not the JSON of 'tiler stats INPUT --json'"),
    ('{"mean": [0.5, 0.5]}', "keys mean, std and scale"),
    ('{"mean": [0.5, 0.5], "std": [0.1], "scale": 1}', "2 means but 1 stds"),
])
def test_bad_stats_files_are_named(tmp_path, content, says):
    path = tmp_path / "stats.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match=f"--stats {path}: .*{says}"):
        read_stats(str(path))


# --- tools/train -------------------------------------------------------------------------------


def test_train_has_help_for_every_option_and_never_overwrites_the_shipped_weights(capsys):
    from tools import train

    with pytest.raises(SystemExit):
        train.main(["--help"])
    help_text = capsys.readouterr().out
    for flag in ("--out", "--overwrite", "--patches", "--epochs", "--base-channels", "--seed", "--eval-only"):
        assert flag in help_text
    assert "examples:" in help_text
    assert "default trained.pt" in help_text
    before = train.SHIPPED.stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        train.main(["--out", str(train.SHIPPED), "--epochs", "1"])
    assert exc.value.code == 2
    assert "the shipped weights" in capsys.readouterr().err
    assert train.SHIPPED.stat().st_mtime_ns == before
