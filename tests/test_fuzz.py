"""Property-based fuzzing of the config loader and the control socket's request parser.

Each property counts the cases it tried (printed with -s for docs/RELIABILITY.md): every input gets
either a valid result or the one-line error of its kind, never another exception.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.config import Config, ConfigError, config_from_dict, load_config
from device.daemon.control import ControlServer

SECTIONS = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=40), st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=5)), max_size=5))


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, object]:
    document: dict[str, object] = {}
    for name in draw(st.lists(st.sampled_from([*SECTIONS, "bogus"]), max_size=5, unique=True)):
        keys = [*KEYS.get(name, ["x"]), "unknown_key"]
        section = {key: draw(scalars) for key in draw(st.lists(st.sampled_from(keys), max_size=6, unique=True))}
        document[name] = section if draw(st.integers(0, 9)) else draw(scalars)
    return document


COUNTS = {"config": 0, "config_text": 0, "control": 0}


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_documents())
def test_config_loader_accepts_or_names_the_key(document):
    COUNTS["config"] += 1
    try:
        config = config_from_dict(document)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("config: ")
        return
    assert isinstance(config, Config)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_config_file_text_never_crashes_the_loader(tmp_path_factory, text):
    COUNTS["config_text"] += 1
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        tomllib.loads(text)  # it loaded, so it was TOML


def containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # a named function, not a lambda: hypothesis inspects the source of `extend` to check that it
    # recurses, and two lambdas in one expression can confuse that check (a deprecation warning)
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4))


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=600),
                 st.builds(lambda v: json.dumps(v).encode(),
                           st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
                                        containers, max_leaves=12)),
                 st.builds(lambda c, p: json.dumps({"command": c, "patient_id": p}).encode(),
                           st.sampled_from(["start", "stop", "status", "reboot", ""]), st.text(max_size=70))))
def test_control_requests_never_escape_the_parser(data):
    COUNTS["control"] += 1
    seen = []

    def handler(request):
        seen.append(request)
        return {"ok": True}

    reply = ControlServer("/nonexistent/never-bound.sock", handler)._reply(data)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
    if not reply["ok"]:
        assert isinstance(reply["error"], str) and "\n" not in reply["error"]
        assert seen == []
    else:
        assert seen and seen[0]["command"] in ("start", "stop", "status")


def test_report_counts():
    """Runs last in this file: the number of cases each property tried."""
    print(f"\nRELIABILITY fuzz: {json.dumps(COUNTS)}")
    assert all(v > 0 for v in COUNTS.values())
