"""Issue 12: what a config, a user-named path or a media header can do (as an outsider would try it).

Each test reproduces an attack from the outside (the CLI in a subprocess, real files, real device
nodes where the machine has them) and checks the class of defect is closed: a one-line error,
a non-zero exit, and nothing stored or named by the user destroyed.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_export_cli import db  # noqa: F401 (the fixture: a store with two sessions)

pytestmark = pytest.mark.timeout(180)


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert err.startswith("affectbox: error:") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- configuration ------------------------------------------------------------------------------

def test_socket_naming_the_store_is_refused_and_run_deletes_nothing(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    store = state / "affectbox.db"
    store.write_bytes(b"SQLite format 3\0precious")
    config = config_file(tmp_path, f'[store]\npath = "{store}"\n[control]\nsocket = "{store}"\n'
                                   f'[device]\nstate_dir = "{state}"\n[hub]\noutbox_path = "{state}/o.db"\n'
                                   '[web]\nenabled = false\n')
    one_line_error(run("validate-config", str(config)), "control.socket", "same file as store.path")
    one_line_error(run("run", "--config", str(config)), "control.socket")
    assert store.read_bytes() == b"SQLite format 3\0precious"


@pytest.mark.parametrize("text, fragments", [
    ('[store]\npath = "/tmp/x/a.db"\n[hub]\noutbox_path = "/tmp/x/./a.db"\n', ("hub.outbox_path", "same file")),
    ('[store]\npath = "/tmp/x/a.db"\n[hub]\noutbox_path = "/tmp/x/a.db-wal"\n', ("same file",)),
    ('[control]\nsocket = "/tmp/y/../y/device-id"\n[device]\nstate_dir = "/tmp/y"\n', ("same file",)),
    ('[control]\nsocket = "/etc/affectbox.sock"\n', ("control.socket", "/etc", "system folder")),
    ('[control]\nsocket = "/dev/null"\n', ("control.socket",)),
    ('[control]\nsocket = "/var/lib/affectbox/debug-recordings/c.sock"\n', ("session.debug_recording_dir",)),
    ('[store]\npath = "/tmp/a\\u0000b.db"\n', ("store.path", "NUL")),
    ('[control]\nsocket = "/run/a\\u0000b"\n', ("control.socket", "NUL")),
    ('[device]\nsite = "a\\u0000"\n', ("device.site", "NUL")),
    ('[fusion]\nface_weight = 0\nspeech_weight = 0\n', ("fusion.face_weight", "both 0")),
])
def test_config_attacks_are_one_line_refusals(tmp_path: Path, text: str, fragments: tuple[str, ...]):
    config = config_file(tmp_path, text)
    one_line_error(run("validate-config", str(config)), *fragments)


def test_an_existing_non_socket_at_the_socket_path_is_refused(tmp_path: Path):
    victim = tmp_path / "notes.txt"
    victim.write_text("keep")
    config = config_file(tmp_path, f'[control]\nsocket = "{victim}"\n')
    one_line_error(run("validate-config", str(config)), "exists and is not a socket")
    live = tmp_path / "ok.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(live))
        assert run("validate-config", str(config_file(tmp_path, f'[control]\nsocket = "{live}"\n'))).returncode == 0


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n",
])
def test_deeply_nested_toml_is_one_line(tmp_path: Path, text: str):
    config = config_file(tmp_path, text)
    one_line_error(run("validate-config", str(config)), "nested too deeply")
    one_line_error(run("run", "--config", str(config)), "nested too deeply")


def test_nul_in_store_path_does_not_crash_run(tmp_path: Path):
    config = config_file(tmp_path, '[store]\npath = "/tmp/a\\u0000b.db"\n[web]\nenabled = false\n')
    one_line_error(run("run", "--config", str(config)), "NUL")


# ---- user-named output files ---------------------------------------------------------------------

def _special(tmp_path: Path, kind: str) -> tuple[Path, object]:
    """A path of the given kind and a fingerprint of what is there now."""
    path = tmp_path / f"target-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tmp_path / "elsewhere.txt").write_text("not yours")
        path.symlink_to(tmp_path / "elsewhere.txt")
    elif kind == "regular":
        path.write_text("earlier export")
    elif kind == "folder":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    info = os.lstat(path)
    return path, (info.st_ino, info.st_mode)


@pytest.mark.parametrize("kind, fragment", [
    ("symlink", "symbolic link"), ("regular", "--force"), ("folder", "folder"), ("socket", "socket"),
])
def test_export_never_replaces_what_the_out_path_is(db, tmp_path: Path, kind: str, fragment: str):  # noqa: F811
    store, _ = db
    path, before = _special(tmp_path, kind)
    one_line_error(run("export", "--patient", "patient-7", "--db", str(store), "--out", str(path)), fragment)
    info = os.lstat(path)
    assert (info.st_ino, info.st_mode) == before
    if kind == "regular":
        assert path.read_text() == "earlier export"
        assert run("export", "--patient", "patient-7", "--db", str(store), "--out", str(path),
                   "--force").returncode == 0
        assert path.read_text().startswith("session_id") and stat.S_IMODE(path.stat().st_mode) == 0o600
    if kind == "symlink":
        assert (tmp_path / "elsewhere.txt").read_text() == "not yours"


def test_export_writes_into_a_fifo_and_devices_but_never_replaces_them(db, tmp_path: Path):  # noqa: F811
    store, _ = db
    fifo, before = _special(tmp_path, "fifo")
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    result = run("export", "--patient", "patient-7", "--db", str(store), "--out", str(fifo))
    out, _ = reader.communicate(timeout=30)
    assert result.returncode == 0, result.stderr
    assert out.decode().startswith("session_id") and out.decode().count("\n") == 7
    assert (os.lstat(fifo).st_ino, os.lstat(fifo).st_mode) == before
    null = Path("/dev/null")
    assert run("export", "--patient", "patient-7", "--db", str(store), "--out", str(null)).returncode == 0
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    full = Path("/dev/full")
    if full.exists():
        one_line_error(run("export", "--patient", "patient-7", "--db", str(store), "--out", str(full)),
                       "/dev/full", "No space left")
        assert stat.S_ISCHR(os.lstat(full).st_mode)  # still the device node


def test_export_over_the_store_itself_is_refused(db):  # noqa: F811
    store, _ = db
    size = store.stat().st_size
    one_line_error(run("export", "--patient", "patient-7", "--db", str(store), "--out", str(store), "--force"),
                   "local record itself")
    assert store.stat().st_size == size


def test_analyze_output_folder_is_guarded(tmp_path: Path, face_video):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere.html").write_text("not yours")
    (out / "report.html").symlink_to(tmp_path / "elsewhere.html")
    one_line_error(run("analyze", str(face_video.path), "--out", str(out), "--quiet"), "symbolic link")
    assert (tmp_path / "elsewhere.html").read_text() == "not yours"
    (out / "report.html").unlink()
    (out / "summary.json").write_text("{}")
    one_line_error(run("analyze", str(face_video.path), "--out", str(out), "--quiet"), "--force")
    assert (out / "summary.json").read_text() == "{}"


# ---- media headers that lie ---------------------------------------------------------------------

def _y4m(path: Path, width: int, height: int, rate: str = "10:1") -> Path:
    """A YUV4MPEG2 file whose header declares `width`x`height` but holds one tiny (short) frame."""
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F{rate} Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + b"\x80" * 4096)
    return path


def _wav(path: Path, rate: int, channels: int = 1, seconds_of_bytes: int = 4000) -> Path:
    import struct

    data = b"\x00\x01" * channels * seconds_of_bytes
    block = 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16) + b"data" + struct.pack("<I", len(data))
    path.write_bytes(header + data)
    return path


@pytest.mark.parametrize("width, height", [(16000, 16000), (7680, 4320), (5000, 100)])
def test_huge_declared_frames_are_refused_before_decoding(tmp_path: Path, width: int, height: int):
    video = _y4m(tmp_path / "big.y4m", width, height)
    err = one_line_error(run("analyze", str(video), "--out", str(tmp_path / "o"), "--quiet"),
                         f"{width}x{height}", "4096")
    assert "big.y4m" in err
    assert not (tmp_path / "o" / "report.html").exists()


@pytest.mark.parametrize("rate, channels, fragment", [
    (1, 1, "1 Hz"), (100, 1, "100 Hz"), (1_000_000, 1, "1000000 Hz"), (16000, 64, "64 audio channels"),
])
def test_impossible_sample_rates_and_channels_are_refused(tmp_path: Path, rate: int, channels: int, fragment: str):
    audio = _wav(tmp_path / "lying.wav", rate, channels)
    one_line_error(run("analyze", str(audio), "--out", str(tmp_path / "o"), "--quiet"), "lying.wav", fragment)


def test_an_absurd_declared_duration_is_refused(tmp_path: Path):
    """A real Matroska file whose Duration element claims 300 hours."""
    import struct

    import av
    import numpy as np

    path = tmp_path / "long.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    for marker, fmt in ((b"\x44\x89\x88", ">d"), (b"\x44\x89\x84", ">f")):
        at = data.find(marker)
        if at >= 0:
            data[at + 3:at + 3 + struct.calcsize(fmt)] = struct.pack(fmt, 300 * 3600 * 1000.0)  # ms
            break
    else:
        pytest.skip("this FFmpeg wrote no Matroska Duration element")
    path.write_bytes(bytes(data))
    one_line_error(run("analyze", str(path), "--out", str(tmp_path / "o"), "--quiet"), "long.mkv", "300.0 h", "12 h")


def test_frames_larger_than_the_analysis_needs_are_scaled_down_early(tmp_path: Path):
    import av
    import numpy as np

    from device.capture.probe import ANALYSIS_MAX_SIDE
    from device.capture.video_file import VideoFileSource

    path = tmp_path / "qhd.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 2560, 1440, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((1440, 2560, 3), i * 60, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    shapes = {frame.image.shape for frame in VideoFileSource(path, 10.0)}
    assert shapes == {(1080, ANALYSIS_MAX_SIDE, 3)}


# ---- ids made only of dots -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [".", "..", "...", "." * 64])
def test_ids_made_only_of_dots_are_refused_everywhere(value: str, tmp_path: Path):
    from device.config import config_from_dict
    from device.contract.ids import is_opaque_id
    from device.contract.topics import validate_device_id
    from device.errors import ConfigError, HubError
    from device.store import PatientIdError, validate_patient_id
    from device.uplink import parse_command

    assert not is_opaque_id(value)
    with pytest.raises(PatientIdError):
        validate_patient_id(value)
    with pytest.raises(HubError):
        validate_device_id(value)
    with pytest.raises(ConfigError, match=r"device\.id"):
        config_from_dict({"device": {"id": value}})
    parsed = parse_command("start_session", f'{{"request_id": "r", "patient_id": "{value}"}}'.encode(),
                           ("start_session",))
    assert parsed.error_code == "invalid"
    assert is_opaque_id("a..") and is_opaque_id(".a") and is_opaque_id("p.1")


def test_the_schemas_and_the_api_carry_the_one_id_rule():
    import json
    import re
    from importlib import resources

    from device.contract.ids import OPAQUE_ID_PATTERN

    texts = [(resources.files("device.contract") / "schemas" / name).read_text()
             for name in sorted(p.name for p in (resources.files("device.contract") / "schemas").iterdir())]
    texts.append((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())
    patterns = set()
    for text in texts:
        for found in re.findall(r'"pattern":\s*("(?:[^"\\]|\\.)*")', text):
            pattern = json.loads(found)
            if "A-Za-z0-9._-]{1,64}" in pattern:
                patterns.add(pattern)
    assert patterns == {f"^{OPAQUE_ID_PATTERN}$"}


def test_provision_never_replaces_a_symlink_or_fifo(tmp_path: Path):
    """`provision` writes the config, secrets, key and CSR it is pointed at: the same guard."""
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text("# not yours\n")
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    config.symlink_to(elsewhere)
    state = tmp_path / "state"
    one_line_error(run("provision", "--config", str(config), "--no-prompt", "--device-id", "dev-9",
                       "--credentials-dir", str(tmp_path / "creds")), "symbolic link")
    assert elsewhere.read_text() == "# not yours\n" and config.is_symlink()
    config.unlink()
    config.write_text(f'[device]\nstate_dir = "{state}"\n')
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    os.mkfifo(creds / "web-password")
    password = tmp_path / "pw"
    password.write_text("a long enough password\n")
    password.chmod(0o600)
    one_line_error(run("provision", "--config", str(config), "--no-prompt", "--credentials-dir", str(creds),
                       "--web-password-file", str(password)), "FIFO")
    assert stat.S_ISFIFO(os.lstat(creds / "web-password").st_mode)
