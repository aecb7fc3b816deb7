"""The printable patient report as PDF: the report page's HTML printed by headless Chromium.

The HTML is the one the dashboard shows at /patients/<id>/report (same template, same data: one
page per month or year with the chart, the numbers and the notice). It is written with copies
of the two local stylesheets into a private temporary folder and printed with
`chromium --headless --print-to-pdf`; nothing is fetched from the network (the page has no
remote reference and Chromium runs with networking to hosts other than the file disabled).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from device.errors import AffectboxError

PRINT_TIMEOUT_S = 120


class ReportError(AffectboxError):
    """The PDF could not be printed (no Chromium, it failed or timed out); the message says which."""


def print_pdf(html: str, css_files: list[Path], out: Path, chromium: str = "/usr/bin/chromium") -> Path:
    if not Path(chromium).exists():
        raise ReportError(f"no Chromium at {chromium} (dashboard.chromium; `apt-get install chromium`)")
    with tempfile.TemporaryDirectory(prefix="affectbox-report-") as folder:
        root = Path(folder)
        os.chmod(root, 0o700)
        for css in css_files:
            shutil.copy(css, root / css.name)
        page = root / "report.html"
        page.write_text(html, encoding="utf-8")
        target = root / "report.pdf"
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-extensions", "--disable-background-networking", f"--user-data-dir={root / 'profile'}",
                   "--no-pdf-header-footer", f"--print-to-pdf={target}", page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, timeout=PRINT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ReportError(f"Chromium did not print the report within {PRINT_TIMEOUT_S} s") from None
        if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
            tail = " ".join(done.stderr.decode(errors="replace").split())[-200:]
            raise ReportError(f"Chromium failed to print the report (exit {done.returncode}): {tail}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(target, out)
    return out
