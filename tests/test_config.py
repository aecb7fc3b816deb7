"""Typed TOML configuration: defaults, validation messages naming the key, CLI exit codes."""

from pathlib import Path

import pytest

from device.cli import main
from device.config import Config, config_from_dict, describe_defaults, load_config
from device.errors import ConfigError


def test_defaults_without_file():
    config = load_config(None)
    assert config == Config()
    assert config.face.detect_every >= 1 and config.aggregation.window_seconds == 10.0


def test_valid_file(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[face]\ndetect_every = 3\nroi = [0.1, 0.0, 0.9, 1]\n[aggregation]\nwindow_seconds = 5\n')
    config = load_config(path)
    assert config.face.detect_every == 3
    assert config.face.roi == (0.1, 0.0, 0.9, 1.0)
    assert config.aggregation.window_seconds == 5.0  # integers are accepted for floats


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"face": {"detect_evry": 2}}, "face.detect_evry: unknown key"),
        ({"fase": {}}, "fase: unknown section"),
        ({"face": {"detect_every": 0}}, "face.detect_every: must be between 1 and 30 (got 0)"),
        ({"face": {"detect_every": 2.5}}, "face.detect_every: must be an integer"),
        ({"face": {"detect_every": True}}, "face.detect_every: must be an integer"),
        ({"face": {"align": "yes"}}, "face.align: must be true or false"),
        ({"face": {"min_score": 1.5}}, "face.min_score: must be between"),
        ({"face": {"roi": [0.5, 0.5]}}, "face.roi: must be a list of 4 numbers"),
        ({"face": {"roi": [0.5, 0.0, 0.4, 1.0]}}, "face.roi: must satisfy"),
        ({"face": {"roi": [0, 0, "a", 1]}}, "face.roi[2]: must be a number"),
        ({"face": 3}, "face: must be a table"),
        ({"aggregation": {"window_seconds": float("nan")}}, "aggregation.window_seconds: must be between"),
        ({"runtime": {"num_threads": 64}}, "runtime.num_threads: must be between 1 and 8"),
    ],
)
def test_rejections_name_the_key(document, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(document, "test.toml")
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"face": {"detect_every": 0, "bogus": 1}, "aggregation": {"window_seconds": 0}})
    message = str(err.value)
    assert "face.detect_every" in message and "face.bogus" in message and "aggregation.window_seconds" in message


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[face\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(binary)


def test_described_defaults_parse_back_to_defaults(tmp_path: Path):
    path = tmp_path / "defaults.toml"
    path.write_text(describe_defaults())
    assert load_config(path) == Config()


def test_validate_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    good = tmp_path / "good.toml"
    good.write_text("[face]\nanalysis_fps = 5\n")
    assert main(["validate-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[face]\nanalysis_fps = 500\n")
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "face.analysis_fps" in err
