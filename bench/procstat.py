"""What the benchmarks read about a process and the machine: CPU time, memory, the CPU's name."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_status(pid: int) -> dict[str, str]:
    """The fields of /proc/<pid>/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in lines if ":" in line}


def rss_mb(pid: int, peak: bool = False) -> float:
    """Resident memory now (VmRSS) or at its peak (VmHWM), in MiB."""
    return int(process_status(pid)["VmHWM" if peak else "VmRSS"].split()[0]) / 1024


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
