"""From a blank Debian to a working appliance, without a Pi: debootstrap a clean Debian 12 root
(minbase plus systemd, which Raspberry Pi OS has), copy the project in as an installer would,
run `./setup.sh` there (chroot: apt packages, system user, venv, models, config, unit enabled,
service start skipped because systemd is not PID 1), run it again (nothing to do), provision,
then `affectbox selftest` on a replayed session and one `affectbox analyze` of the same
generated media, and finally `./setup.sh --uninstall`, which keeps the local record.

Measured on the 2-core development machine: about 2 minutes from scratch (debootstrap about 80 s,
the first setup.sh about 40 s), about 1 minute with the caches below. It runs in the default test
run and so in CI (as root, with network for Debian's and PyPI's packages; it skips without root
or debootstrap). Leave it out of a quick local run with `-m "not debootstrap"`; run it alone with
    .venv/bin/python -m pytest -m debootstrap tests/test_debootstrap.py
Caches outside the repository make repeat runs faster; the test works without them:
$AFFECTBOX_TEST_CACHE (default /var/cache/affectbox-tests) keeps the debootstrapped base as a
tarball, pip's cache and apt's downloaded packages. Mounts happen in a private mount namespace
(unshare), so nothing stays mounted when the test ends, even if it fails.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.media import write_av_session

pytestmark = [pytest.mark.slow, pytest.mark.debootstrap, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
BASE_ARGS = ("--variant=minbase", "--include=systemd")
CACHE = Path(os.environ.get("AFFECTBOX_TEST_CACHE", "/var/cache/affectbox-tests"))
# what an installer would not copy: version control, local venvs, build and tool caches, fetched models
EXCLUDES = (".git", ".venv", ".venv-train", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
            ".hypothesis", "models/training", "models/third_party/*.tflite", "models/third_party/*.pt", "*.affectbox")
# The host's CA bundle is handed to pip inside the root: a network that inspects TLS with its own CA
# (as some CI networks do) is then trusted there too; elsewhere it is the usual bundle.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROOT_CA_BUNDLE = "/root/host-ca-bundle.crt"
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
       "DEBIAN_FRONTEND=noninteractive", "PIP_DISABLE_PIP_VERSION_CHECK=1")
# proxies and package index settings of the host, passed on where set
PASSED_ON = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_INDEX_URL",
             "PIP_DEFAULT_TIMEOUT")
TIMINGS: dict[str, float] = {}


def need(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)


def timed(name: str, func, *args, **kwargs):
    start = time.monotonic()
    try:
        return func(*args, **kwargs)
    finally:
        TIMINGS[name] = round(time.monotonic() - start, 1)


def make_base(root: Path, suite: str = SUITE, arch: str | None = None) -> None:
    """The clean Debian root: from the cached tarball, else debootstrap (and cache it)."""
    name = "-".join([suite, *([arch] if arch else []), *(a.lstrip("-").replace("=", "_") for a in BASE_ARGS)])
    tarball = CACHE / f"base-{name}.tar"
    if tarball.is_file():
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(root)], check=True, timeout=600)
        return
    arch_args = [f"--arch={arch}"] if arch else []
    result = subprocess.run(["debootstrap", *arch_args, *BASE_ARGS, suite, str(root)], capture_output=True,
                            text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-cf", str(partial), "-C", str(root), "."], check=True, timeout=600)
        partial.rename(tarball)
    except (OSError, subprocess.SubprocessError):
        pass  # a cache is a convenience


def in_root(root: Path, command: str, timeout: float = 900, *, env: tuple[str, ...] = (),
            binds: tuple[tuple[Path, str], ...] = (), caches: str = "") -> subprocess.CompletedProcess:
    """Run `command` (sh) inside the root, with /proc and the caches mounted in a private namespace.

    `env` adds variables (also set for chroot itself, so an emulator started by binfmt sees them),
    `binds` mounts host files over paths in the root after /proc, `caches` names a cache subfolder
    (another architecture's downloads must not mix with these)."""
    mounts = [f"mount -t proc proc {shlex.quote(str(root / 'proc'))}"]
    mounts += [f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(root / inside.lstrip('/')))}"
               for source, inside in binds]
    cache_root = CACHE / caches if caches else CACHE
    for cache, inside in ((cache_root / "pip", "root/.cache/pip"),
                          (cache_root / "apt-archives", "var/cache/apt/archives")):
        with_partial = cache / "partial" if inside.endswith("archives") else cache
        try:
            with_partial.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        (root / inside).mkdir(parents=True, exist_ok=True)
        mounts.append(f"mount --bind {shlex.quote(str(cache))} {shlex.quote(str(root / inside))}")
    passed = [f"{name}={os.environ[name]}" for name in PASSED_ON if os.environ.get(name)]
    if (root / ROOT_CA_BUNDLE.lstrip("/")).is_file():
        passed.append(f"PIP_CERT={ROOT_CA_BUNDLE}")
    chroot = ["env", *env, "chroot", str(root), "env", "-i", *ENV, *env, *passed, "sh", "-c", command]
    script = " && ".join(mounts) + " && exec " + shlex.join(chroot)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def copy_project(root: Path) -> None:
    target = root / "root" / "affectbox"
    target.mkdir(parents=True)
    excludes = [f"--exclude={pattern}" for pattern in EXCLUDES]
    with subprocess.Popen(["tar", "-c", *excludes, "."], cwd=REPO, stdout=subprocess.PIPE) as pack:
        subprocess.run(["tar", "-x", "-C", str(target)], stdin=pack.stdout, check=True, timeout=300)
    assert pack.returncode == 0


def show(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-4000:]}"


@pytest.fixture
def root(tmp_path: Path):
    need(os.geteuid() == 0, "debootstrap and chroot need root")
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed (./setup.sh --dev installs it)")
    need(shutil.which("unshare") is not None, "unshare (util-linux) is missing")
    folder = tmp_path / "debian"
    folder.mkdir()
    yield folder
    # nothing is mounted any more (the namespaces are gone); never cross into another file system
    subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=False, timeout=600)


def test_blank_debian_to_selftest_and_analysis(root: Path, tmp_path: Path):
    total = time.monotonic()
    timed("base system", make_base, root)
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no daemons start during apt
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    if HOST_CA_BUNDLE.is_file():
        shutil.copy(HOST_CA_BUNDLE, root / ROOT_CA_BUNDLE.lstrip("/"))
    copy_project(root)
    media = root / "root" / "media"
    media.mkdir()
    timed("media", write_av_session, media / "session.mkv", 8.0, [0.5, 4.5], [(0.0, 8.0)])
    secret = media / "web-password"
    secret.write_text("debootstrap-page-pw\n")
    secret.chmod(0o600)

    first = timed("setup.sh (first run)", in_root, root, "cd /root/affectbox && ./setup.sh")
    assert first.returncode == 0, show(first)
    lines = first.stdout.splitlines()
    assert "ok: appliance set-up done" in first.stdout and first.stderr == "", show(first)
    assert any(line.startswith("ok: apt packages installed:") and "python3-venv" in line for line in lines), show(first)
    assert any(line.startswith("skip: python3-picamera2: not offered") for line in lines), show(first)
    assert any(line.startswith("ok: model blazeface_short_range: fetched") for line in lines), show(first)
    assert "ok: service affectbox.service enabled (starts at boot)" in lines, show(first)
    assert any(line.startswith("skip: service start: systemd is not running as PID 1") for line in lines)

    again = timed("setup.sh (second run)", in_root, root, "cd /root/affectbox && ./setup.sh")
    assert again.returncode == 0, show(again)
    assert "ok: venv up to date" in again.stdout and "ok: app /opt/affectbox/app up to date" in again.stdout
    assert all(line.startswith(("ok: ", "skip: ")) for line in again.stdout.splitlines()), show(again)

    system = in_root(root, "id -nG affectbox; getent passwd affectbox; systemctl is-enabled affectbox.service; "
                           "stat -c '%a %U' /etc/affectbox/credentials /var/lib/affectbox; "
                           "systemd-analyze verify /etc/systemd/system/affectbox.service 2>&1; echo verify=$?")
    assert system.returncode == 0, show(system)
    groups, passwd, enabled, credentials_mode, state_mode, *verify = system.stdout.splitlines()
    assert {"affectbox", "video", "audio"} <= set(groups.split()), system.stdout
    assert passwd.endswith(":/var/lib/affectbox:/usr/sbin/nologin"), passwd
    assert enabled == "enabled"
    assert credentials_mode == "700 root" and state_mode == "700 affectbox"
    assert verify[-1] == "verify=0", system.stdout

    provisioned = in_root(root, "/opt/affectbox/venv/bin/affectbox provision --no-prompt --site 'Debootstrap test' "
                                "--web-password-file /root/media/web-password")
    assert provisioned.returncode == 0, show(provisioned)
    assert "device id: ab-" in provisioned.stdout  # no Pi serial in a chroot on x86: generated once

    selftest = timed("selftest", in_root, root, "/opt/affectbox/venv/bin/affectbox selftest --camera-file "
                                               "/root/media/session.mkv --microphone-file /root/media/session.mkv "
                                               "--seconds 8 --json")
    assert selftest.returncode == 0, show(selftest)
    checks = {row["check"]: row for row in json.loads(selftest.stdout)["checks"]}
    for name in ("models", "camera", "face", "microphone", "speech", "disk"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["hub"]["status"] == "skip"

    analysis = timed("analyze", in_root, root, "/opt/affectbox/venv/bin/affectbox analyze /root/media/session.mkv "
                                             "--out /root/analysis --json --quiet")
    assert analysis.returncode == 0, show(analysis)
    summary = json.loads(analysis.stdout.splitlines()[-1])
    assert summary["windows"] >= 1 and summary["windows_with_mood"] >= 1, summary
    assert (root / "root" / "analysis" / "report.html").is_file()

    record = root / "var/lib/affectbox/affectbox.db"
    record.write_bytes(b"stored sessions")
    removed = in_root(root, "cd /root/affectbox && ./setup.sh --uninstall && (id affectbox || echo no-user)")
    assert removed.returncode == 0, show(removed)
    assert "no-user" in removed.stdout and not (root / "opt/affectbox").exists()
    assert record.read_bytes() == b"stored sessions"
    TIMINGS["total"] = round(time.monotonic() - total, 1)
    (tmp_path / "timings.json").write_text(json.dumps(TIMINGS))
    print("debootstrap test timings (s):", json.dumps(TIMINGS))
