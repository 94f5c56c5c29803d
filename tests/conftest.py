"""Shared test helpers: paths to samples, colour off, and English whatever the developer's locale."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QKV_LANG", "en")  # tests speak English, whatever the developer's locale

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _build_once() -> None:
    """typer's CliRunner builds the app's click command once per process, as ``qkv`` does per run.

    Building it (typer reading every command's signature) is three quarters of
    a small run's time; tests run hundreds. Help and messages are translated
    when written, not when built, so one command serves every language.
    """
    import functools

    import typer.testing

    assert callable(typer.testing._get_command), "typer's CliRunner changed: see conftest"
    typer.testing._get_command = functools.lru_cache(maxsize=None)(typer.testing._get_command)


_build_once()


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


def pytest_configure(config: pytest.Config) -> None:
    """Property tests try 200 examples each in CI; the fast subset (``-m "not slow"``) tries 20."""
    from hypothesis import settings

    settings.register_profile("full", max_examples=200, deadline=None)
    settings.register_profile("fast", max_examples=20, deadline=None)
    settings.load_profile("fast" if "not slow" in (config.getoption("markexpr") or "") else "full")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m "not slow"`` doesn't even import a module whose every test is slow (transformers: seconds)."""
    if "not slow" not in (config.getoption("markexpr") or ""):
        return None
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        text = collection_path.read_text(encoding="utf-8")
        if "\npytestmark = pytest.mark.slow" in text:
            return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A sweep's first case is in the fast subset; its other cases are slow (CI runs them all).

    Runs before ``-m`` selects, so ``pytest -m "not slow"`` keeps one case of
    each parametrized test: every test function is still exercised once.
    """
    seen: set[tuple[str, str]] = set()
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is None:
            continue
        function = (str(item.path), item.originalname)
        if function in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(function)
