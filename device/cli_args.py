"""What every subcommand module shares: bounded argparse types and the daemon's config lookup.

Its own module so that `cli` (which registers every subcommand) and the modules that define
subcommands (`cli_setup`, `cli_voice`) both import it, instead of importing each other.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.config import DEFAULT_CONFIG_PATH, Config, load_config

DEFAULT_CONFIG = str(DEFAULT_CONFIG_PATH)


def daemon_config(path: str | None) -> Config:
    """The config of the daemon and its clients: the given file, else /etc/affectbox's if present."""
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_config(path)


def bounded(convert: Callable[[str], Any], low: float, high: float, what: str, unit: str = ""
            ) -> Callable[[str], Any]:
    """An argparse type: `convert` the text, then require low <= value <= high (one-line errors)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}{unit} (got {text})")
        return value

    return parse
