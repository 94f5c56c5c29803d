"""Re-run every ``$ qkv …`` example in README.md and README.zh.md and write its real output back.

Usage: python docs/update_readme.py   (from the repository root; NO_COLOR,
COLUMNS=100 and QKV_LANG=en are set for you: the Chinese README says --lang zh).
tests/test_readme.py checks the same examples.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(```console\n)(.*?)(```)", re.S)
LINKED = ("samples", "tests", "docs")
#: The READMEs whose examples are run: English, and Chinese (examples with --lang zh).
READMES = ("README.md", "README.zh.md")


def scratch() -> Path:
    """A directory where examples may write files, with the repo's inputs linked in."""
    where = Path(tempfile.mkdtemp(prefix="qkv-readme-"))
    for name in LINKED:
        (where / name).symlink_to(ROOT / name)
    return where


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run one README command: ``qkv`` is this checkout's ``python -m qkvcli``, ``python`` this Python
    (at the start or after a pipe)."""
    qkv = f"{sys.executable} -m qkvcli"
    command = re.sub(r"(^|\| )qkv ", lambda m: m.group(1) + qkv + " ", command)
    command = re.sub(r"(^|\| )python ", lambda m: m.group(1) + sys.executable + " ", command)
    env = os.environ | {
        "NO_COLOR": "1",
        "COLUMNS": "100",
        "PYTHONPATH": str(ROOT),
        "QKV_LANG": "en",
    }
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True)


def render_block(body: str, cwd: Path) -> str:
    """A console block with every command's output replaced by what it prints now."""
    out: list[str] = []
    last = None
    for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
        command = chunk.partition("\n")[0]
        out.append(f"$ {command}")
        if command == "echo $?":
            out.append(str(last.returncode if last else 0))
            continue
        last = shell(command, cwd)
        text = (last.stdout + last.stderr).rstrip("\n")
        out.extend(line.rstrip() for line in text.splitlines())
    return "\n".join(out) + "\n"


def refresh(readme: Path) -> None:
    """Run one README's examples and write their output back into it."""
    cwd = scratch()
    try:
        text = readme.read_text(encoding="utf-8")
        text = BLOCK.sub(lambda m: m.group(1) + render_block(m.group(2), cwd) + m.group(3), text)
    finally:
        shutil.rmtree(cwd)
    readme.write_text(text, encoding="utf-8")


def main() -> None:
    for name in READMES:
        refresh(ROOT / name)


if __name__ == "__main__":
    main()
