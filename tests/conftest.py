"""Shared test helpers: paths to samples, colour off, and English whatever the developer's locale."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture(autouse=True)
def _no_color(monkeypatch):
    """Tables at a fixed width, no colour, whatever the developer's terminal."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    os.chdir(ROOT)


@pytest.fixture(autouse=True)
def _english(monkeypatch):
    """Every test speaks English (QKV_LANG=en) unless it asks otherwise (``--lang zh``, its own env).

    The language chosen by an earlier test in this process is forgotten too, and after the
    test English is spoken again (the doctests outside tests/ run without this fixture).
    """
    from qkvcli import i18n
    from qkvcli.cli.app import speak_click

    monkeypatch.setenv("QKV_LANG", "en")
    i18n.choose()
    yield
    speak_click(i18n.choose("en"))
