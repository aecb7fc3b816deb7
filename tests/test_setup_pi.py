"""setup.sh's appliance mode, installed into a temporary root (AFFECTBOX_ROOT) so the real system is
never touched: the layout and modes, the rendered and enabled unit, a rerun that changes nothing,
an upgrade in place that keeps the config, provisioning into the installed copy, refusals (a
prefix setup.sh did not make, data the config keeps inside a folder that uninstall deletes), and
--uninstall (keeps the local record) then --uninstall --purge. Also: the pinned runtime
requirements and requirements/pi-constraints.txt together pin every transitive dependency.
(Apt packages, the system user and starting the service need a whole system: test_debootstrap.py.)"""

from __future__ import annotations

import importlib.metadata
import os
import re
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "setup.sh"
PREFIX = "/opt/affectbox"


def setup(root: Path, *args: str, prefix: str | None = None, timeout: float = 540) -> subprocess.CompletedProcess:
    """Run setup.sh into `root` (AFFECTBOX_ROOT is always set: never the real system)."""
    env = {**os.environ, "AFFECTBOX_ROOT": str(root)}
    env.pop("AFFECTBOX_PREFIX", None)
    if prefix is not None:
        env["AFFECTBOX_PREFIX"] = prefix
    return subprocess.run([str(SETUP), *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the appliance set-up runs as root")
    folder = tmp_path_factory.mktemp("pi-root")
    result = setup(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return folder


def test_layout(root: Path):
    prefix = root / PREFIX.lstrip("/")
    app, venv = prefix / "app", prefix / "venv"
    assert (prefix / ".affectbox-install").is_file()
    # (pip's editable install leaves affectbox.egg-info there)
    assert sorted(p.name for p in app.iterdir() if not p.name.endswith(".egg-info")) == [
        "README.md", "device", "hardware", "models", "pyproject.toml", "requirements", "setup.sh"]
    assert not (app / "models" / "training").exists()
    assert (app / "models" / "third_party" / "face_detection_short_range.tflite").is_file()
    assert list((app / "device").glob("__pycache__/cli.*.pyc")), "byte-code is compiled at set-up"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    version = subprocess.run([str(venv / "bin" / "affectbox"), "--version"], capture_output=True, text=True,
                             timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.startswith("affectbox "), version
    etc = root / "etc" / "affectbox"
    assert mode(etc) == 0o755 and mode(etc / "credentials") == 0o700 and mode(etc / "config.toml") == 0o644
    assert all(value == {} for value in tomllib.loads((etc / "config.toml").read_text()).values())
    assert mode(root / "var" / "lib" / "affectbox") == 0o700
    unit = root / "etc" / "systemd" / "system" / "affectbox.service"
    text = unit.read_text()
    assert "@PREFIX@" not in text and f"ExecStart={PREFIX}/venv/bin/affectbox run --config" in text
    assert text == (REPO / "hardware" / "affectbox.service").read_text().replace("@PREFIX@", PREFIX)
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "affectbox.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/affectbox.service"


def test_rerun_changes_nothing(root: Path):
    before = {p: p.lstat().st_mtime_ns for p in (root / "etc").rglob("*")}
    start = time.monotonic()
    result = setup(root)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(("ok: ", "skip: ")) for line in lines), result.stdout
    for expected in (f"ok: app {PREFIX}/app up to date", "ok: venv up to date",
                     "ok: config /etc/affectbox/config.toml kept", "ok: unit /etc/systemd/system/affectbox.service "
                     "up to date", "ok: service affectbox.service enabled"):
        assert expected in lines, result.stdout
    assert {p: p.lstat().st_mtime_ns for p in (root / "etc").rglob("*")} == before
    assert elapsed < 30, elapsed


def test_upgrade_in_place_keeps_config_and_data(root: Path):
    prefix = root / PREFIX.lstrip("/")
    stale = prefix / "app" / "device" / "__init__.py"
    original = stale.read_text()
    stale.write_text(original + "# an older version\n")
    (prefix / "app" / "device" / "removed_module.py").write_text("")
    config = root / "etc" / "affectbox" / "config.toml"
    custom = config.read_text().replace("[face]\n", "[face]\nmin_score = 0.7\n", 1)
    config.write_text(custom)
    record = root / "var" / "lib" / "affectbox" / "affectbox.db"
    record.write_bytes(b"stored sessions")
    result = setup(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok: app copied to {PREFIX}/app" in result.stdout and "ok: venv up to date" in result.stdout
    assert stale.read_text() == original and not (prefix / "app" / "device" / "removed_module.py").exists()
    assert config.read_text() == custom and record.read_bytes() == b"stored sessions"
    assert not (prefix / "app.old").exists() and not (prefix / "app.new").exists()


def test_invalid_config_is_kept_with_a_warning(root: Path):
    config = root / "etc" / "affectbox" / "config.toml"
    good = config.read_text()
    config.write_text(good.replace("[hub]\n", "[hub]\nbogus = 1\n", 1))
    try:
        result = setup(root)
        assert result.returncode == 0, result.stderr
        assert "warning: config /etc/affectbox/config.toml kept, but it is not valid:" in result.stdout
        assert "hub.bogus: unknown key" in result.stdout
    finally:
        config.write_text(good)


def test_provision_into_the_installed_copy(root: Path, tmp_path: Path):
    secret = tmp_path / "web"
    secret.write_text("a-long-page-password\n")
    secret.chmod(0o600)
    config = root / "etc" / "affectbox" / "config.toml"
    original = config.read_text()
    state = root / "var" / "lib" / "affectbox"
    result = subprocess.run([str(root / PREFIX.lstrip("/") / "venv" / "bin" / "affectbox"), "provision", "--config",
                             str(config), "--no-prompt", "--site", "Test site", "--device-id", "pi-test",
                             "--web-password-file", str(secret)],
                            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    try:
        assert result.returncode == 0, result.stderr
        assert mode(root / "etc" / "affectbox" / "credentials" / "web-password") == 0o600
        assert tomllib.loads(config.read_text())["device"]["site"] == "Test site"
    finally:
        config.write_text(original)
        (root / "etc" / "affectbox" / "credentials" / "web-password").unlink(missing_ok=True)
        (state / "device-id").unlink(missing_ok=True)


@pytest.mark.parametrize(("args", "env_prefix", "fragment"), [
    (["--purge"], None, "--purge only goes with --uninstall"),
    (["--dev", "--uninstall"], None, "--dev and --uninstall exclude each other"),
    ([], "opt/relative", "AFFECTBOX_PREFIX must be an absolute path"),
    ([], "/opt/$(reboot)", "AFFECTBOX_PREFIX must be an absolute path"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], env_prefix: str | None, fragment: str):
    result = setup(tmp_path, *args, prefix=env_prefix, timeout=60)
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "\n" not in err and err.startswith("error:") and fragment in err, err


def test_refuses_a_prefix_it_did_not_make(tmp_path: Path):
    foreign = tmp_path / "srv" / "something"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("not ours")
    for args in ((), ("--uninstall",)):
        result = setup(tmp_path, *args, prefix="/srv/something", timeout=60)
        assert result.returncode != 0 and "was not installed by setup.sh" in result.stderr, result
    assert (foreign / "precious.txt").read_text() == "not ours"


def test_uninstall_keeps_the_record_then_purge(root: Path):
    config = root / "etc" / "affectbox" / "config.toml"
    good = config.read_text()
    record = root / "var" / "lib" / "affectbox" / "affectbox.db"
    record.write_bytes(b"stored sessions")

    config.write_text(good.replace("[store]\n", '[store]\npath = "/etc/affectbox/record.db"\n', 1))
    refused = setup(root, "--uninstall")
    assert refused.returncode != 0
    assert "refusing to uninstall: store.path = /etc/affectbox/record.db" in refused.stderr
    assert (root / PREFIX.lstrip("/") / "venv").is_dir()
    config.write_text(good)

    removed = setup(root, "--uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (root / PREFIX.lstrip("/")).exists() and not (root / "etc" / "affectbox").exists()
    assert not (root / "etc" / "systemd" / "system" / "affectbox.service").exists()
    assert not (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "affectbox.service").is_symlink()
    assert record.read_bytes() == b"stored sessions"
    assert "kept the local record /var/lib/affectbox" in removed.stdout

    purged = setup(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (root / "var" / "lib" / "affectbox").exists()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            pins[re.sub(r"[-_.]+", "-", requirement.name).lower()] = str(requirement.specifier)
    return pins


def test_constraints_pin_every_transitive_dependency():
    runtime = _pins(REPO / "requirements" / "runtime.txt")
    constraints = _pins(REPO / "requirements" / "pi-constraints.txt")
    assert all(spec.startswith("==") for spec in (*runtime.values(), *constraints.values()))
    pinned = {**runtime, **constraints}
    missing = []
    todo, seen = list(runtime), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (a Pi-only package): the wheel check covers it
        for line in requires:
            requirement = Requirement(line)
            for env in ({"python_version": "3.11", "platform_machine": "aarch64", "sys_platform": "linux",
                         "platform_system": "Linux", "extra": ""},
                        {"python_version": "3.13", "platform_machine": "aarch64", "sys_platform": "linux",
                         "platform_system": "Linux", "extra": ""}):
                if requirement.marker is None or requirement.marker.evaluate(env):
                    dep = re.sub(r"[-_.]+", "-", requirement.name).lower()
                    if dep not in pinned:
                        missing.append(f"{dep} (needed by {name})")
                    todo.append(dep)
    assert not missing, "pin these in requirements/pi-constraints.txt: " + ", ".join(sorted(set(missing)))
