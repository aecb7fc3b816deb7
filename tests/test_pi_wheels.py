"""provisioning/check_wheels.py: every pinned runtime dependency installs on the Pi (aarch64, CPython 3.11 and
3.13) from a wheel or an allowed pure-Python sdist, and a requirement that would need a compiler fails the check.

The full check needs the package index that pip is configured with (CI has it); the other tests run offline
(``--no-index`` with a local find-links folder) or call the script's functions directly."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from provisioning import check_wheels

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "provisioning" / "check_wheels.py"
RUNTIME = REPO / "requirements" / "runtime.txt"


def run_check(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def make_sdist(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A .tar.gz sdist NAME-VERSION with FILES (paths relative to its top folder)."""
    archive = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{path}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


C_EXTENSION = {
    "PKG-INFO": "Metadata-Version: 1.0\nName: cext\nVersion: 1.0\n",
    "setup.py": "from setuptools import Extension, setup\n"
                "setup(name='cext', version='1.0', ext_modules=[Extension('cext', ['cext.c'])])\n",
    "cext.c": "int main(void) { return 0; }\n",
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pinned_runtime_requirements_install_on_the_pi():
    result = run_check("--python", "3.11", "--python", "3.13")
    assert result.returncode == 0, result.stdout + result.stderr
    pins = [line for line in check_wheels.read_requirements(RUNTIME)]
    assert len(pins) >= 9
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.startswith("cp")]
    for target in ("cp311-aarch64", "cp313-aarch64"):
        listed = {check_wheels.canonicalize_name(row[1]): row for row in rows if row[0] == target}
        for pin in pins:
            row = listed.get(check_wheels.canonicalize_name(pin.name))
            assert row, f"{pin.name} missing for {target}:\n{result.stdout}"
            assert pin.specifier.contains(row[2]), f"{pin} resolved to {row[2]} for {target}"
            assert row[3].endswith(("_aarch64", "-any")) or " ".join(row[3:]) == check_wheels.SDIST_LABEL, row
    assert "python-speech-features" in result.stdout and check_wheels.SDIST_LABEL in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sdist_only_package_with_c_sources_fails(tmp_path: Path):
    # The original webrtcvad is published only as an sdist with C sources: no aarch64 wheel.
    requirements = tmp_path / "bad.txt"
    requirements.write_text("webrtcvad==2.0.10\n")
    result = run_check("--requirements", str(requirements), "--python", "3.11")
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
    assert problems and all("webrtcvad" in line and "cp311-aarch64" in line for line in problems), result.stderr


@pytest.mark.timeout(120)
def test_sdist_only_requirement_fails_offline(tmp_path: Path):
    links = tmp_path / "links"
    links.mkdir()
    make_sdist(links, "cext", "1.0", C_EXTENSION)
    requirements = tmp_path / "bad.txt"
    requirements.write_text("cext==1.0\n")
    result = run_check("--requirements", str(requirements), "--python", "3.11", "--python", "3.13",
                       "--pip-arg=--no-index", f"--pip-arg=--find-links={links}", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2, result.stderr
    assert "cp311-aarch64: cext:" in problems[0] and "cp313-aarch64: cext:" in problems[1]


@pytest.mark.timeout(120)
def test_unreachable_index_is_exit_2(tmp_path: Path):
    requirements = tmp_path / "req.txt"
    requirements.write_text("cext==1.0\n")
    # Nothing listens on the discard port of the loopback address: the connection is refused at once.
    result = run_check("--requirements", str(requirements), "--python", "3.11", "--pip-arg=--retries=0",
                       "--pip-arg=--index-url=http://127.0.0.1:9/simple", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:"), result.stderr


def test_sdist_purity(tmp_path: Path):
    reasons, requires = check_wheels.inspect_sdist(make_sdist(tmp_path, "cext", "1.0", C_EXTENSION))
    assert any("cext.c" in reason for reason in reasons) and any("ext_modules" in r for r in reasons), reasons
    pure = make_sdist(tmp_path, "purepkg", "2.0", {
        "PKG-INFO": "Metadata-Version: 1.0\nName: purepkg\nVersion: 2.0\n",
        "setup.py": "from setuptools import setup\n"
                    "setup(name='purepkg', version='2.0', packages=['purepkg'], install_requires=['numpy>=1.20'])\n",
        "purepkg/__init__.py": "",
    })
    assert check_wheels.inspect_sdist(pure) == ([], ["numpy>=1.20"])
    assert requires == []


def test_report_checks_tags_and_target_markers():
    target = check_wheels.Target("3.13", check_wheels.DEFAULT_PLATFORMS)

    def item(name: str, version: str, filename: str, requires: list[str] | None = None) -> dict:
        return {"metadata": {"name": name, "version": version, "requires_dist": requires},
                "download_info": {"url": f"file:///x/{filename}"}}

    report = {"install": [
        item("good", "1.0", "good-1.0-cp313-cp313-manylinux_2_28_aarch64.whl",
             ["needed; python_version >= '3.13'", "hostonly; platform_machine == 'x86_64'"]),
        item("x86", "1.0", "x86-1.0-cp313-cp313-manylinux_2_28_x86_64.whl"),
        item("newglibc", "1.0", "newglibc-1.0-cp313-cp313-manylinux_2_39_aarch64.whl"),
        item("pure", "1.0", "pure-1.0-py3-none-any.whl"),
        item("src", "1.0", "src-1.0.tar.gz"),
    ]}
    result = check_wheels.check_report(target, report, target.tags(), {})
    problems = "\n".join(result.problems)
    assert "x86 1.0" in problems and "newglibc 1.0" in problems and "src 1.0: not a wheel" in problems
    assert "needed:" in problems and "hostonly" not in problems
    assert "good 1.0" not in problems and "pure 1.0" not in problems
    assert len(result.problems) == 4, problems
