"""The LaTeX write-ups compile: English with pdflatex, Chinese with xelatex and xeCJK.

Skipped, with the reason, where TeX Live is not installed (``.ci/run``
installs texlive-xetex and texlive-lang-chinese).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qkvcli.cli import app

pytestmark = pytest.mark.slow

ENGINES = {"en": "pdflatex", "zh": "xelatex"}
SAMPLES = sorted(Path(__file__).resolve().parent.parent.glob("samples/*.json"))
#: Every sample traced (each variant's header and formulas), and an exact run's fractions and surds.
RUNS = {p.stem: [f"samples/{p.name}", "--trace"] for p in SAMPLES} | {
    "exact": ["samples/worked_example.json", "--trace", "--exact"],
}


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("run", list(RUNS))
def test_the_latex_write_up_compiles(lang, run, tmp_path: Path):
    engine = ENGINES[lang]
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} is not installed (TeX Live)")
    tex = tmp_path / "writeup.tex"
    result = CliRunner().invoke(
        app, ["--lang", lang, "compute", *RUNS[run], "-f", "latex", "-o", str(tex)]
    )
    assert result.exit_code == 0, result.output
    done = subprocess.run(
        [engine, "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (tmp_path / "writeup.log").read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert (tmp_path / "writeup.pdf").stat().st_size > 1000
    assert "Missing character" not in log, [x for x in log.splitlines() if "Missing" in x][:5]
    if lang == "zh":
        assert "注意力" in tex.read_text(encoding="utf-8")
