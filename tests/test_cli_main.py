"""The CLI entry point (tiler/cli/main.py): it leaves the warning format as it found it."""

from __future__ import annotations

import warnings

from tiler.cli.main import main


def test_main_leaves_the_warning_format_as_it_found_it(tmp_path, capsys) -> None:
    before = warnings.formatwarning
    assert main(["stats", str(tmp_path / "missing.tif")]) == 1
    assert warnings.formatwarning is before
    assert capsys.readouterr().err.count("\n") == 1
