#!/usr/bin/env python3
"""Check that every pinned runtime dependency installs on the Pi without a compiler.

For each target (CPython 3.11 and 3.13 on aarch64 by default: Raspberry Pi OS Bookworm ships 3.11
with glibc 2.36, Trixie ships 3.13 with glibc 2.41) the pinned requirements are resolved WITH their
dependencies by pip's own resolver, without installing anything:

    python -m pip install --dry-run --ignore-installed --report REPORT.json --only-binary=:all:
        --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 ... --platform manylinux_2_36_aarch64
        --python-version 3.11 --implementation cp --abi cp311 --target TMPDIR -r REQUIREMENTS

pip uses the index it is configured with (pip.conf, PIP_* variables); no index is named here.
Every distribution in pip's report must then be a wheel with a tag compatible with the target.

Pure-Python sdists: a few pinned projects publish only an sdist (``PURE_SDISTS`` below, extended
with ``--allow-sdist NAME``). pip cannot resolve an sdist for a foreign platform (it would have to
run its build on this machine), so such a requirement is taken out of the binary resolution and
checked on its own: ``pip download --no-deps --no-binary :all:`` fetches it, and it passes only if
the archive has no C/C++/Cython/Fortran/Rust sources and its setup.py/setup.cfg/pyproject.toml
declare no extension modules; its declared dependencies (egg-info requires.txt, PKG-INFO
Requires-Dist) are added to the binary resolution.

pip evaluates environment markers of dependencies against the interpreter that runs it, not the
target; the dependencies' markers are therefore re-evaluated here for the target and a dependency
that the target needs but pip left out is reported.

Usage: check_wheels.py [--requirements requirements/runtime.txt] [--python 3.11 --python 3.13]
                       [--platform manylinux_2_28_aarch64 ...] [--allow-sdist NAME] [--pip-arg ARG]

Prints a table (target, package, version, wheel tag or "pure-Python sdist"). Exit 0: everything
installs from wheels or allowed pure-Python sdists; exit 1: one line per problem on stderr, naming
package and target; exit 2: one line when pip or the package index is unavailable.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import functools
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.tags import Tag, compatible_tags, cpython_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.tags import Tag, compatible_tags, cpython_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = REPO / "requirements" / "runtime.txt"
DEFAULT_PYTHONS = ("3.11", "3.13")
# Bookworm has glibc 2.36, Trixie 2.41: a wheel for glibc <= 2.36 runs on both.
# manylinux2014 is the legacy name of manylinux_2_17; pip does not expand manylinux_2_X downwards
# by itself, so every accepted tag is passed.
DEFAULT_GLIBC_MAX = 36
DEFAULT_PLATFORMS = ("manylinux2014_aarch64",
                     *(f"manylinux_2_{minor}_aarch64" for minor in range(17, DEFAULT_GLIBC_MAX + 1)))

# Projects allowed as an sdist (each one is still checked to be pure Python before it passes).
PURE_SDISTS: dict[str, str] = {
    # 0.6 is published only as an sdist: two pure-Python modules, no declared dependencies
    # (it imports numpy and scipy, pinned separately in requirements/runtime.txt).
    "python-speech-features": "sdist only; pure Python (numpy/scipy code, no extension)",
}

# Files whose presence in an sdist means a compiler (or Cython/Rust toolchain) is needed.
NATIVE_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".pyx", ".pxd", ".pxi", ".f", ".f90",
                   ".rs", ".go", ".cu", ".m", ".mm", ".s", ".asm")
NATIVE_BUILD_WORDS = ("ext_modules", "Extension(", "cffi_modules", "rust_extensions", "cythonize",
                      "build_ext", "setuptools-rust", "setuptools_rust", "maturin", "scikit-build",
                      "meson-python", "pybind11")
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "Name or service not known", "Network is unreachable", "Connection refused",
                  "ConnectTimeoutError", "ReadTimeoutError", "ProxyError", "SSLError", ": connection error:")
SDIST_LABEL = "pure-Python sdist"


class Unavailable(Exception):
    """pip or the package index cannot be used: exit 2."""


@dataclass(frozen=True)
class Target:
    """One interpreter on the Pi: CPython X.Y on the accepted aarch64 platform tags."""

    python: str
    platforms: tuple[str, ...]

    @property
    def nodot(self) -> str:
        return self.python.replace(".", "")

    @property
    def name(self) -> str:
        return f"cp{self.nodot}-aarch64"

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)

    def tags(self) -> frozenset[Tag]:
        """Every wheel tag that pip accepts for this target."""
        version = self.version_tuple
        return frozenset([
            *cpython_tags(python_version=version, abis=[f"cp{self.nodot}"], platforms=list(self.platforms)),
            *compatible_tags(python_version=version, interpreter=f"cp{self.nodot}", platforms=list(self.platforms)),
        ])

    def environment(self) -> dict[str, str]:
        """Marker environment of the target interpreter."""
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{self.python}.0",
            "os_name": "posix",
            "platform_machine": "aarch64",
            "platform_python_implementation": "CPython",
            "platform_system": "Linux",
            "python_full_version": f"{self.python}.0",
            "python_version": self.python,
            "sys_platform": "linux",
        }


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    target: str
    package: str
    version: str
    kind: str


@dataclass
class Result:
    """Table rows and problem lines of a whole check."""

    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_requirements(path: Path, seen: set[Path] | None = None) -> list[Requirement]:
    """The requirement lines of a requirements file, following ``-r`` includes."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    requirements: list[Requirement] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if not line:
            continue
        include = re.match(r"(-r|--requirement)(=|\s+)(\S+)$", line)
        if include:
            requirements += read_requirements(path.parent / include.group(3), seen)
            continue
        if line.startswith("-"):
            raise ValueError(f"{path}:{number}: unsupported option line: {line}")
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return requirements


def run_pip(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m pip ARGS``; Unavailable when pip is missing or the index cannot be reached."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"pip did not finish within {timeout:.0f} s: {' '.join(args[:2])}") from exc
    output = result.stdout + result.stderr
    if result.returncode != 0 and "No module named pip" in output:
        raise Unavailable(f"pip is not installed for {sys.executable}")
    if result.returncode != 0:
        for word in NETWORK_ERRORS:
            if word in output:
                line = next((ln.strip() for ln in output.splitlines() if word in ln), word)
                raise Unavailable(f"package index unreachable: {line[:300]}")
    return result


def check_pip() -> None:
    """pip must be new enough for ``install --dry-run --report`` (pip >= 23)."""
    result = run_pip(["--version"], timeout=60)
    match = re.match(r"pip (\d+)", result.stdout)
    if result.returncode != 0 or not match:
        raise Unavailable(f"pip does not run: {(result.stderr or result.stdout).strip()[:300]}")
    if int(match.group(1)) < 23:
        raise Unavailable(f"pip {match.group(1)} is too old for --dry-run --report (need pip >= 23)")


def _sdist_members(archive: Path) -> dict[str, bytes | None]:
    """Member path (without the top folder) -> content for small text files, None for the rest."""
    members: dict[str, bytes | None] = {}
    wanted = ("setup.py", "setup.cfg", "pyproject.toml", "PKG-INFO", "requires.txt")
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename.split("/", 1)[-1]
                members[name] = zf.read(info) if name.endswith(wanted) else None
        return members
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if not member.isfile():
                continue
            name = member.name.split("/", 1)[-1]
            handle = tf.extractfile(member) if name.endswith(wanted) else None
            members[name] = handle.read() if handle else None
    return members


def _setup_py_requires(source: str) -> list[str] | None:
    """install_requires of a setup() call when it is a literal list; [] when absent; None when not literal."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "install_requires":
                    try:
                        return [str(item) for item in ast.literal_eval(keyword.value)]
                    except ValueError:
                        return None
    return []


def inspect_sdist(archive: Path) -> tuple[list[str], list[str]]:
    """(reasons it is not pure Python, its declared dependencies) for one sdist archive."""
    members = _sdist_members(archive)
    reasons: list[str] = []
    native = sorted(name for name in members if name.lower().endswith(NATIVE_SUFFIXES))
    if native:
        reasons.append(f"native sources {', '.join(native[:5])}{' ...' if len(native) > 5 else ''}")
    requires: list[str] = []
    for name in ("setup.py", "setup.cfg", "pyproject.toml"):
        content = members.get(name)
        if content is None:
            continue
        text = content.decode("utf-8", "replace")
        words = [word for word in NATIVE_BUILD_WORDS if word in text]
        if words:
            reasons.append(f"{name} mentions {', '.join(words)}")
        if name == "setup.py":
            declared = _setup_py_requires(text)
            if declared is None:
                reasons.append("setup.py install_requires is not a literal list (cannot check its dependencies)")
            else:
                requires += declared
        elif name == "setup.cfg":
            parser = configparser.ConfigParser()
            try:
                parser.read_string(text)
                requires += parser.get("options", "install_requires", fallback="").split("\n")
            except configparser.Error:
                reasons.append("setup.cfg does not parse")
        else:
            try:
                project = tomllib.loads(text).get("project", {})
            except tomllib.TOMLDecodeError:
                reasons.append("pyproject.toml does not parse")
                project = {}
            requires += project.get("dependencies", [])
            if "dependencies" in project.get("dynamic", []):
                reasons.append("pyproject.toml declares dynamic dependencies (cannot check them)")
    for name, content in members.items():
        if content is None:
            continue
        if name.endswith("requires.txt"):
            section = ""
            for line in content.decode("utf-8", "replace").splitlines():
                if line.startswith("["):
                    section = line
                elif line.strip() and not section:
                    requires.append(line.strip())
        elif name == "PKG-INFO":
            requires += re.findall(r"^Requires-Dist:\s*(.+)$", content.decode("utf-8", "replace"), re.MULTILINE)
    unique = list(dict.fromkeys(item.strip() for item in requires if item.strip()))
    return reasons, unique


@functools.cache
def check_pure_sdist(requirement: Requirement, pip_args: Sequence[str], workdir: Path,
                     timeout: float) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Download one allowed sdist; (version, problems, its dependencies). Cached: once for all targets."""
    dest = workdir / f"sdist-{canonicalize_name(requirement.name)}"
    # pip prepares the sdist's metadata (runs its build backend here, in build isolation) even with --no-deps.
    result = run_pip(["download", "-vv", "--no-deps", "--no-binary", ":all:", "--dest", str(dest), *pip_args,
                      str(requirement)], timeout)
    archives = sorted(dest.glob("*")) if dest.exists() else []
    if result.returncode != 0 or not archives:
        return "?", (f"no sdist could be downloaded: {last_error(result)}",), ()
    archive = archives[0]
    version_match = re.search(r"-([0-9][^-]*?)\.(tar\.gz|tgz|tar\.bz2|zip)$", archive.name)
    version = version_match.group(1) if version_match else "?"
    reasons, requires = inspect_sdist(archive)
    return version, tuple(f"sdist {archive.name} is not pure Python: {reason}" for reason in reasons), tuple(requires)


def last_error(result: subprocess.CompletedProcess[str]) -> str:
    """The most telling line of a failed pip run."""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:") and "No matching distribution" in line]
    errors = errors or [line for line in lines if line.startswith("ERROR:")] or lines[-1:] or ["(no output)"]
    return errors[0][:300]


def resolve(target: Target, lines: Sequence[str], pip_args: Sequence[str], workdir: Path, timeout: float,
            verbose: bool = False) -> tuple[dict | None, subprocess.CompletedProcess[str]]:
    """pip's dry-run resolution of LINES for TARGET: (report or None, the pip run).

    pip logs an index that it could not reach only at debug level (-vv), and then reports the project
    as missing: VERBOSE tells the two apart (Unavailable for the former) at the cost of a large log."""
    tag = f"{target.nodot}-{abs(hash(tuple(lines))) % 10**8}"
    requirements = workdir / f"requirements-{tag}.txt"
    requirements.write_text("".join(f"{line}\n" for line in lines))
    report = workdir / f"report-{tag}.json"
    platforms = [arg for platform in target.platforms for arg in ("--platform", platform)]
    result = run_pip(["install", "--dry-run", "--ignore-installed", "-vv" if verbose else "--quiet",
                      "--report", str(report),
                      "--only-binary=:all:", *platforms, "--python-version", target.python, "--implementation", "cp",
                      "--abi", f"cp{target.nodot}", "--target", str(workdir / f"target-{tag}"), *pip_args,
                      "-r", str(requirements)], timeout)
    if result.returncode != 0 or not report.exists():
        return None, result
    return json.loads(report.read_text()), result


def _wheel_filename(item: dict) -> str:
    return str(item.get("download_info", {}).get("url", "")).rsplit("/", 1)[-1].split("#", 1)[0]


def check_report(target: Target, report: dict, allowed_tags: frozenset[Tag], pure: dict[str, str]) -> Result:
    """Table rows and problems of one pip report."""
    out = Result()
    resolved: dict[str, Version] = {}
    for item in report.get("install", []):
        metadata = item.get("metadata", {})
        name, version = str(metadata.get("name", "?")), str(metadata.get("version", "?"))
        resolved[canonicalize_name(name)] = Version(version)
        filename = _wheel_filename(item)
        if not filename.endswith(".whl"):
            out.problems.append(f"{target.name}: {name} {version}: not a wheel ({filename or 'unknown source'})")
            out.rows.append(Row(target.name, name, version, f"NOT A WHEEL: {filename}"))
            continue
        _, _, _, tags = parse_wheel_filename(filename)
        if not tags & allowed_tags:
            out.problems.append(f"{target.name}: {name} {version}: wheel {filename} does not fit the target")
        out.rows.append(Row(target.name, name, version, "-".join(filename[:-4].split("-")[-3:])))
    # pip evaluated the dependencies' markers for this machine: re-check them for the target.
    environment = target.environment()
    for item in report.get("install", []):
        metadata = item.get("metadata", {})
        extras = [""] + [str(extra) for extra in item.get("requested_extras") or []]
        for line in metadata.get("requires_dist") or []:
            dependency = Requirement(line)
            if dependency.marker and not any(
                    dependency.marker.evaluate({**environment, "extra": extra}) for extra in extras):
                continue
            key = canonicalize_name(dependency.name)
            if key in pure:
                continue
            if key not in resolved:
                out.problems.append(f"{target.name}: {dependency.name}: needed by {metadata.get('name')} on the target "
                                    f"({line}) but not resolved (pip evaluates markers for this machine)")
            elif dependency.specifier and not dependency.specifier.contains(resolved[key], prereleases=True):
                out.problems.append(f"{target.name}: {dependency.name} {resolved[key]}: {metadata.get('name')} "
                                    f"needs {line} on the target")
    return out


def check_target(target: Target, requirements: Sequence[Requirement], pure_names: dict[str, str],
                 pip_args: Sequence[str], workdir: Path, timeout: float) -> Result:
    """Resolve and check one target."""
    out = Result()
    environment = target.environment()
    wanted = [req for req in requirements if not req.marker or req.marker.evaluate({**environment, "extra": ""})]
    binary_lines: list[str] = []
    pure: dict[str, str] = {}
    for requirement in wanted:
        key = canonicalize_name(requirement.name)
        line = str(requirement).split(";", 1)[0].strip()
        if key not in pure_names:
            binary_lines.append(line)
            continue
        version, problems, requires = check_pure_sdist(requirement, tuple(pip_args), workdir, timeout)
        pure[key] = version
        out.problems += [f"{target.name}: {requirement.name}: {problem}" for problem in problems]
        out.rows.append(Row(target.name, requirement.name, version, SDIST_LABEL if not problems else "NOT PURE sdist"))
        for dependency in map(Requirement, requires):
            if not dependency.marker or dependency.marker.evaluate({**environment, "extra": ""}):
                binary_lines.append(str(dependency).split(";", 1)[0].strip())
    if not binary_lines:
        return out
    report, result = resolve(target, binary_lines, pip_args, workdir, timeout)
    if report is not None:
        checked = check_report(target, report, target.tags(), pure)
        out.rows += checked.rows
        out.problems += checked.problems
        return out
    # The whole set does not resolve: resolve each requirement alone to name every failing one.
    failures = []
    for line in binary_lines:
        single, single_result = resolve(target, [line], pip_args, workdir, timeout, verbose=True)
        if single is None:
            failures.append(f"{target.name}: {Requirement(line).name}: no wheel for this target "
                            f"(sdist only, needs a compiler, or missing): {last_error(single_result)}")
    out.problems += failures or [f"{target.name}: the requirements do not resolve together: {last_error(result)}"]
    return out


def format_table(rows: Iterable[Row]) -> str:
    """Fixed-width table of the rows with a header."""
    table = [("target", "package", "version", "wheel tag / kind"),
             *((row.target, row.package, row.version, row.kind) for row in rows)]
    widths = [max(len(line[col]) for line in table) for col in range(3)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True)), line[3]])
                     for line in table)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS,
                        help="pinned requirements file (default: requirements/runtime.txt)")
    parser.add_argument("--python", action="append", help="target CPython X.Y (repeatable; default 3.11 and 3.13)")
    parser.add_argument("--platform", action="append",
                        help="accepted platform tag (repeatable; default: manylinux2014 and manylinux_2_17 "
                             "to manylinux_2_36 aarch64)")
    parser.add_argument("--allow-sdist", action="append", default=[], metavar="NAME",
                        help="also accept a pure-Python sdist of NAME (checked to be pure)")
    parser.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for pip (repeatable), "
                             "e.g. --pip-arg=--no-index --pip-arg=--find-links=DIR")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for one pip run (default 600)")
    args = parser.parse_args(argv)

    platforms = tuple(args.platform or DEFAULT_PLATFORMS)
    targets = [Target(python, platforms) for python in dict.fromkeys(args.python or DEFAULT_PYTHONS)]
    for target in targets:
        if not re.fullmatch(r"3\.\d+", target.python):
            parser.error(f"--python {target.python}: expected 3.X")
    pure_names = {**PURE_SDISTS, **{canonicalize_name(name): "--allow-sdist" for name in args.allow_sdist}}
    try:
        requirements = read_requirements(args.requirements)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = Result()
    try:
        check_pip()
        with tempfile.TemporaryDirectory(prefix="check-wheels-") as tmp:
            for target in targets:
                checked = check_target(target, requirements, pure_names, args.pip_arg, Path(tmp), args.timeout)
                result.rows += checked.rows
                result.problems += checked.problems
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.rows:
        print(format_table(result.rows))
    if result.problems:
        for problem in dict.fromkeys(result.problems):
            print(f"problem: {problem}", file=sys.stderr)
        return 1
    print(f"ok: {len(requirements)} pinned requirements install from wheels or pure-Python sdists on "
          f"{', '.join(target.name for target in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
