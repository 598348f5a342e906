"""Every documented benchmark command exists with the flags the docs give, and prepares its own inputs.

The benchmarks take minutes, so the docs check is static (the script exists and defines each flag a
documented command passes); the README's ``bench_engine.py --case unet --size H W``, which crashed on
a fresh checkout, runs here at a tiny size in an empty work folder.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "benchmarks").glob("*.md"))]
COMMAND = re.compile(r"python (benchmarks/\w+\.py)([^`\n#|]*)")


def documented_commands() -> list[tuple[str, str, str]]:
    """(doc file, script, arguments) of every ``python benchmarks/X.py ...`` in the docs; in
    benchmarks/README.md only before its "## History" (dated records that name the command of
    their day, e.g. ``--repeat`` before it became ``--rounds``)."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        if doc == ROOT / "benchmarks" / "README.md":
            text = text.split("\n## History", 1)[0]
        for match in COMMAND.finditer(text):
            found.append((doc.name, match.group(1), match.group(2).strip()))
    return found


def test_the_docs_name_benchmark_commands():
    scripts = {script for _, script, _ in documented_commands()}
    assert {"benchmarks/bench_engine.py", "benchmarks/bench_competitors.py"} <= scripts


@pytest.mark.parametrize(("doc", "script", "arguments"), documented_commands())
def test_documented_benchmark_command_exists_with_its_flags(doc, script, arguments):
    path = ROOT / script
    assert path.exists(), f"{doc}: {script} does not exist"
    source = path.read_text(encoding="utf-8")
    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", arguments):
        assert re.search(rf"""add_argument\([^)]*["']{flag}["']""", source), \
            f"{doc}: `python {script} {arguments}`: {script} has no {flag} option"


@pytest.fixture
def bench_engine(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for name in ("_common", "bench_engine"):
        sys.modules.pop(name, None)
    monkeypatch.setenv("TILER_BENCH_WORK", str(tmp_path / "work"))
    module = importlib.import_module("bench_engine")
    yield module
    for name in ("_common", "bench_engine"):
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_bench_engine_unet_case_prepares_its_input_in_an_empty_folder(bench_engine, tmp_path, capsys,
                                                                      one_torch_thread):
    work = tmp_path / "work"
    assert not work.exists()
    bench_engine.case_unet(96, 128)
    result = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT "))
    assert '"tiles": 1' in result and '"name": "tiler unet 96x128"' in result
    assert (work / "jpeg_96x128.tif").exists() and (work / "unet.pt").exists()


def test_bench_engine_memory_case_prepares_its_array(bench_engine, tmp_path, capsys):
    bench_engine.case_memory(64)
    assert (tmp_path / "work" / "float_64.npy").exists()
    assert "RESULT " in capsys.readouterr().out


@pytest.mark.parametrize("model", ["module", "function"])
def test_bench_engine_memory_case_times_a_second_call(bench_engine, capsys, model):
    import json

    bench_engine.case_memory(64, model=model, second_call=True)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["second_call"] is True and result["out_shape"] == [2, 64, 64]
