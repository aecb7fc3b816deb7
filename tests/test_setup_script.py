"""setup.sh: valid bash, a help text, one-line errors, a rerun of --dev that changes nothing, and
requirements files that pin exactly what pyproject.toml declares."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "setup.sh"


def _name(requirement: str) -> str:
    """The normalised project name at the start of a requirement line."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins(path: Path) -> dict[str, str]:
    """name -> line for the requirement lines of a requirements file (comments and -r skipped)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return {_name(line): line for line in lines if line and not line.startswith("-")}


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    # No stdin, as in CI: sudo must never wait for a password.
    return subprocess.run(
        list(args),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_scripts_are_valid_bash_and_executable():
    for script in (SETUP, REPO / ".ci" / "run"):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        result = run("bash", "-n", str(script), timeout=30)
        assert result.returncode == 0, result.stderr


def test_help():
    result = run("./setup.sh", "--help", timeout=30)
    assert result.returncode == 0, result
    assert "--dev" in result.stdout
    assert result.stderr == ""


def test_unknown_option_is_a_one_line_error():
    result = run("./setup.sh", "--bogus", timeout=30)
    assert result.returncode != 0
    assert result.stdout == ""
    err = result.stderr.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("error:") and "--bogus" in err, err


def test_dev_rerun_is_a_no_op():
    # The venv exists when the tests run; the first run only matters if the requirements changed
    # since the last set-up. The second must find everything done.
    first = run("./setup.sh", "--dev")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run("./setup.sh", "--dev")
    assert second.returncode == 0, second.stdout + second.stderr
    lines = second.stdout.splitlines()
    assert "ok: venv up to date" in lines, second.stdout
    assert all(line.startswith(("ok: ", "skip: ")) for line in lines), second.stdout
    assert any(line.startswith("ok: model ") and "sha256 ok" in line for line in lines), second.stdout
    assert second.stderr == ""


def test_requirements_are_exact_pins_covering_pyproject():
    # setup.sh installs the project with --no-deps, so each runtime dependency needs its pin.
    runtime = _pins(REPO / "requirements" / "runtime.txt")
    dev = _pins(REPO / "requirements" / "dev.txt")
    for line in [*runtime.values(), *dev.values()]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), f"not an exact pin: {line}"
    assert "-r runtime.txt" in (REPO / "requirements" / "dev.txt").read_text().splitlines()
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    unpinned = sorted({_name(dep) for dep in declared} - set(runtime))
    assert not unpinned, f"in pyproject.toml but not pinned in requirements/runtime.txt: {unpinned}"
