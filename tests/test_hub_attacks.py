# ruff: noqa: F811 (the broker and running_clients fixtures come from tests.test_hub)
"""Issue 12: the device's MQTT command link attacked from the broker (a real Mosquitto on loopback).

Response topics that point at another device (or anywhere the configuration did not allow), a
command published retained while the device is connected, and commands far over the size limit
(refused from the packet's fixed header, before it is read into memory).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.config import config_from_dict
from device.errors import ConfigError
from tests.mqtt_support import Observer, events, needs_broker
from tests.support import wait_until
from tests.test_hub import RecordingHandler, broker, hub_config, running_clients, start_client  # noqa: F401

pytestmark = [pytest.mark.timeout(90), needs_broker]
BASE = "affectbox/dev-1/cmd/"


def _send(observer: Observer, name: str, body: bytes, *, retain: bool = False,
          response_topic: str | None = None) -> None:
    props = None
    if response_topic is not None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
    observer.client.publish(BASE + name, body, qos=1, retain=retain, properties=props).wait_for_publish(10)


def test_response_topics_only_under_the_configured_prefix(broker, tmp_path: Path, running_clients):
    watched = ["affectbox/+/cmd/+/result", "affectbox/dev-2/#", "elsewhere/#", "replies/#"]
    observer = Observer(broker.port, watched)
    client = start_client(running_clients, hub_config(broker.port, response_topic_prefix="replies"),
                          tmp_path / "o.db")
    assert client.wait_connected(10)
    try:
        for i, topic in enumerate(["affectbox/dev-2/cmd/ping/result", "affectbox/dev-2/mood", "elsewhere/x",
                                   "replies", "replies/ok"]):
            _send(observer, "ping", json.dumps({"request_id": f"r-{i}"}).encode(), response_topic=topic)
        assert observer.wait_for(lambda ms: len(events(ms, "/result")) >= 5 and
                                 any(m.topic == "replies/ok" for m in ms), 10)
        time.sleep(0.5)
        topics = sorted({m.topic for m in observer.messages})
        assert topics == ["affectbox/dev-1/cmd/ping/result", "replies/ok"], topics
    finally:
        observer.close()


@pytest.mark.parametrize("prefix", ["affectbox", "affectbox/dev-2", "a/+", "/x"])
def test_a_response_prefix_overlapping_device_topics_is_refused(prefix: str):
    with pytest.raises(ConfigError, match=r"hub\.response_topic_prefix"):
        config_from_dict({"hub": {"response_topic_prefix": prefix}})


def test_a_command_published_retained_while_connected_is_ignored(broker, tmp_path: Path,
                                                                   running_clients):
    handler = RecordingHandler()
    observer = Observer(broker.port, ["affectbox/dev-1/cmd/+/result"])
    client = start_client(running_clients, hub_config(broker.port), tmp_path / "o.db", handler=handler)
    assert client.wait_connected(10)
    try:
        _send(observer, "start_session", b'{"request_id":"r-ret","patient_id":"P-RET"}', retain=True)
        _send(observer, "ping", b'{"request_id":"r-live"}')
        assert observer.wait_for(lambda ms: any(e["request_id"] == "r-live" for e in events(ms, "/result")), 10)
        assert handler.calls == [("ping",)]  # the retained start_session was never obeyed
        assert [e["request_id"] for e in events(observer.messages, "/result")] == ["r-live"]
    finally:
        observer.client.publish(BASE + "start_session", b"", qos=1, retain=True).wait_for_publish(5)
        observer.close()


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_an_oversized_command_is_refused_before_it_is_read(broker, tmp_path: Path, running_clients,
                                                           protocol: str):
    """8 MB on a command topic: MQTT 5 has the broker drop it (Maximum Packet Size sent at CONNECT);
    MQTT 3.1.1 has the client refuse it from the fixed header and reconnect. Either way nothing is
    read into memory, nothing is called, and the link works on."""
    handler = RecordingHandler()
    observer = Observer(broker.port, ["affectbox/dev-1/cmd/+/result"])
    client = start_client(running_clients, hub_config(broker.port, protocol=protocol), tmp_path / "o.db",
                          handler=handler)
    assert client.wait_connected(10)
    try:
        big = json.dumps({"request_id": "r-big", "pad": "x" * (8 << 20)}).encode()
        _send(observer, "ping", big)
        if protocol == "mqtt311":
            paho = client._client
            assert wait_until(lambda: paho is not None and paho.oversized_refused == 1, 10)
        time.sleep(1.0)
        assert client.wait_connected(10)
        _send(observer, "ping", b'{"request_id":"r-after"}')
        assert observer.wait_for(lambda ms: any(e["request_id"] == "r-after" for e in events(ms, "/result")), 10)
        assert handler.calls == [("ping",)]
        assert [(e.get("error") or {}).get("code") for e in events(observer.messages, "/result")] == [None]
    finally:
        observer.close()
