"""The device's MQTT topics, all under one prefix (docs/MQTT.md).

The prefix comes from `hub.topic_prefix` with `{device_id}` replaced, `affectbox/<device_id>` by
default; every topic below is `<prefix>/<name>`. Device ids use the opaque-id alphabet
(`[A-Za-z0-9._-]{1,64}`), so they can never add a topic level or a wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from device.contract.ids import OPAQUE_ID_PATTERN, is_opaque_id
from device.errors import HubError

__all__ = ["COMMAND_NAME_RE", "OPAQUE_ID_PATTERN", "Topics", "validate_device_id"]
COMMAND_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def validate_device_id(device_id: object) -> str:
    """Return the device id unchanged if it is 1-64 characters of [A-Za-z0-9._-]; raise HubError otherwise."""
    if not is_opaque_id(device_id):
        raise HubError(f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
                       "(it is part of every MQTT topic and of the client id)")
    return device_id


@dataclass(frozen=True)
class Topics:
    """Topic names for one device."""

    prefix: str

    @classmethod
    def for_device(cls, template: str, device_id: str) -> Topics:
        """Topics under `template` (which contains `{device_id}`) for `device_id`."""
        validate_device_id(device_id)
        return cls(template.replace("{device_id}", device_id).rstrip("/"))

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def info(self) -> str:
        return f"{self.prefix}/info"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def session(self) -> str:
        return f"{self.prefix}/session"

    @property
    def mood(self) -> str:
        return f"{self.prefix}/mood"

    @property
    def summary(self) -> str:
        return f"{self.prefix}/summary"

    @property
    def commands(self) -> str:
        """The subscription filter for every command."""
        return f"{self.prefix}/cmd/+"

    def command(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}"

    def result(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}/result"

    def command_name(self, topic: str) -> str | None:
        """The command name of a topic `<prefix>/cmd/<name>`, or None for any other topic."""
        head = f"{self.prefix}/cmd/"
        if not topic.startswith(head):
            return None
        name = topic[len(head):]
        return name if name and "/" not in name else None

    def is_own(self, topic: str) -> bool:
        """True for the prefix itself and every topic under it."""
        return topic == self.prefix or topic.startswith(self.prefix + "/")
