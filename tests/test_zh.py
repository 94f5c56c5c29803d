"""qkv in Chinese (--lang zh): the help, the messages, the tables, Chinese input."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from qkvcli.cli import app
from qkvcli.render.text import width


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize("command", ["compute", "check", "explain", "new", "model"])
def test_the_help_of_every_command_is_chinese_and_fits_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run("--lang", "zh", command, "-h")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"用法：qkv {command} "), lines[0]
    assert "选项:" in lines and "显示此帮助信息并退出。" in result.output
    assert sum(width(c) == 2 for c in result.output) > 100  # Chinese throughout, not one line
    wrapped = [
        line for line in lines if not line.startswith("    ")
    ]  # the examples stay as written
    assert max(width(line) for line in wrapped) <= 80, max(wrapped, key=width)


def test_the_root_help_and_a_bare_qkv_are_chinese():
    result = run("--lang", "zh", "-h")
    assert "qkv：查看注意力计算的每一个阶段。" in result.output
    assert "退出码：0 成功" in result.output
    assert (
        "命令:" in result.output and "计算注意力，用表格、图或数据显示每一个阶段。" in result.output
    )
    bare = run("--lang", "zh")
    assert bare.output.startswith("用法：qkv 命令 [参数]...") and "  check    批改" in bare.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["compute", "--nope"], "没有选项 --nope"),
        (["compute", "--heads"], "选项 '--heads' 需要一个值"),
        (["compute", "a", "b"], "多出了意料之外的参数：b"),
        (["nope"], "没有命令 'nope'"),
    ],
)
def test_click_usage_errors_are_chinese_in_one_line(args, said):
    result = run("--lang", "zh", *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qkv: error: ") and said in lines[0], lines


def test_english_comes_back_after_chinese_in_the_same_process():
    """A Chinese run points click's words at qkv's catalogue; the next English run gets click's own."""
    assert "用法" in run("--lang", "zh", "compute", "-h").output
    result = run("compute", "-h")
    assert result.output.startswith("Usage: qkv compute") and "Show this message" in result.output
    assert "No such option: --nope" in run("compute", "--nope").stderr
