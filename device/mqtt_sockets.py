"""Closing a stopped paho MQTT client's sockets at once (device uplink, hub collector, tests).

paho keeps two sockets besides the connection: a loopback pair it writes to in order to wake its
network loop. `disconnect()` and `loop_stop()` leave that pair (and, after a refused connection
attempt, the attempt's socket) open; only `Client.__del__` closes them. A client usually sits in
a reference cycle (its callbacks are bound methods of its owner), and when the garbage collector
frees a cycle it may finalise the sockets before the client's `__del__` runs: the descriptors stay
open until then and Python reports them as unclosed (ResourceWarning, an error in our tests).
"""

from __future__ import annotations

import contextlib
from typing import Any


def close_client_sockets(client: Any) -> None:
    """Close the connection socket and the wake-up pair of a paho client whose loop has stopped."""
    # paho 2 has no public call for this; _reset_sockets is what its own __del__ runs
    with contextlib.suppress(OSError):
        client._reset_sockets()
