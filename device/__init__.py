"""affectbox: on-device facial and vocal mood estimation for clinic sessions.

Supports clinical judgment in depression care; it never diagnoses.
"""

from importlib.metadata import PackageNotFoundError, version

# The version lives in one place, pyproject.toml; the installed distribution's metadata carries it
# to the device, the hub, `--version`, the status page and every report.
try:
    __version__ = version("affectbox")
except PackageNotFoundError:  # a source tree that was never installed (setup.sh always installs it)
    __version__ = "0+unknown"
