"""The version is written once (pyproject.toml) and every place that shows it agrees."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import device
import hub

REPO = Path(__file__).resolve().parent.parent


def test_the_version_comes_from_pyproject_everywhere() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert device.__version__ == declared
    assert hub.__version__ == declared
    openapi = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert openapi["info"]["version"] == declared, "docs/openapi.json's info.version is out of date"


def test_both_commands_print_it() -> None:
    for package, name in (("device", "affectbox"), ("hub", "affectbox-hub")):
        result = subprocess.run([sys.executable, "-m", package, "--version"], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[-1] == device.__version__, (name, result.stdout)
