"""The mutation fuzzer behind tests/test_fuzz.py: seeds, mutations, and the promise every run must keep.

A case is a command line, the text given on stdin and the files it names.
Every run must end with exit 0, 1 or 2; exit 2 with exactly one stderr line
``qkv: error: …`` and nothing on stdout; 0 or 1 with only ``qkv: note: …``
lines on stderr; never a traceback, never a Python warning.

Run it by hand for longer (``python tests/fuzzing.py 100000 SEED``).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

PROBLEMS = sorted(p for p in SAMPLES.glob("*.json")) + sorted(SAMPLES.glob("homework/*.json"))
ANSWERS = {
    "samples/worked_example.json": sorted(SAMPLES.glob("homework/worked/*.json")),
    "samples/homework/two_heads.json": sorted(SAMPLES.glob("homework/two_heads/*.json")),
}
CSVS = sorted(SAMPLES.glob("csv/*.csv")) + sorted(SAMPLES.glob("variants/*.csv"))
STAGES = [
    "Q",
    "K",
    "V",
    "scores",
    "scaled",
    "masked",
    "weights",
    "head_outputs",
    "concat",
    "output",
]

#: Values that once broke a loader or a stage, and their relatives.
NASTY = [
    "1" + "0" * 400, "-" + "9" * 320, "9" * 5000, "1e400", "-1e400", "1e200", "-1e200", "1e-320",
    "1e308", "5e-324", "NaN", "Infinity", "-Infinity", "null", "true", "false", "-0", "0", "[]",
    "{}", '""', '"a"', '"-inf"', '"\\ud800"', '"\\udfff"', '"a\\nb"', '"\\u001b[31m"', '"\\u2028"',
    "[" * 600 + "1" + "]" * 600, "[" * 40 + "]" * 40, "[[1, 2], [3]]", "[[[1, 2]], [[1, 2, 3]]]",
    '[{"a": 1}]', "[[true, false]]", "[[1e200, -1e200]]", "[[" + "1" + "0" * 400 + "]]",
    "1.5", "-1", "2", "3", "4", "1000000000000", "0.1",
]  # fmt: skip
NASTY_TEXT = [*NASTY, *list('[]{},:"0123456789.-eE abNnIfty\\\n'), "\\u0000", "\ufeff"]
NASTY_CELLS = ["1" + "0" * 400, "9" * 5000, "1e400", "nan", "inf", "-inf", "x", "2x", "", " ",
               "1,5", "\x1b", "\u2028", "0x10", "1_000", "٣", "−1", "1e-320", "\ud800"]  # fmt: skip

COMPUTE_OPTIONS = [
    ["-f", "json"], ["-f", "csv"], ["-f", "tsv"], ["-f", "markdown"], ["-f", "latex"],
    ["-f", "table"], ["--trace"], ["--exact"], ["--stream"], ["--heatmap"], ["--tokens-view"],
    ["--top", "2"], ["--heads", "2"], ["--kv-heads", "1"], ["--mask", "causal"],
    ["--mask", "causal-lower-right"], ["--scale", "none"], ["--scale", "2"],
    ["--temperature", "1e-300"], ["--temperature", "1e300"], ["--precision", "0"],
    ["--precision", "17"], ["--empty-rows", "zero"], ["--empty-rows", "nan"],
    ["--empty-rows", "uniform"], ["--dtype", "float32"], ["--layout", "columns"],
    ["--weights-layout", "out-in"], ["--similarity", "cosine"], ["--normalize", "sigmoid"],
    ["--valid-lens", "1"], ["--tokens", "a,b,c"], ["--stage", "weights"], ["--stage", "masked"],
    ["--stage", "scores"], ["--full"], ["--x", "samples/csv/X.csv"],
    ["--wo", "samples/variants/W_O.csv"], ["--attn-bias", "samples/variants/alibi.csv"],
    ["--mask", "samples/variants/mask.csv"], ["-o", "{tmp}/out.txt"], ["--svg", "{tmp}/p.svg"],
]  # fmt: skip
BAD_COMPUTE_OPTIONS = [
    ["--heads", "3"], ["--scale", "-1"], ["--scale", "nan"], ["--scale", "1e400"],
    ["--temperature", "0"], ["--temperature", "inf"], ["--temperature", "nan"],
    ["--valid-lens", "1" + "0" * 400], ["--valid-lens", "nan"], ["--valid-lens", "-1"],
    ["--tokens", "a\nb,c,d"], ["--tokens", "\udcff,b,c"], ["--stage", "nope"], ["--precision", "99"],
    ["--heads", "0"], ["--heads", "1" + "0" * 30], ["--top", "0"], ["-o", "{tmp}"],
    ["-o", "/dev/full"], ["--x", "{tmp}/missing.csv"], ["-f", "xml"], ["--mask", "nope"],
]  # fmt: skip
CHECK_OPTIONS = [["-f", "json"], ["-f", "csv"], ["--tolerance", "0.01"], ["--precision", "0"],
                 ["--stage-file", "weights=samples/homework/worked/weights.csv"]]  # fmt: skip
BAD_CHECK_OPTIONS = [["--tolerance", "1e400"], ["--tolerance", "-1"], ["--stage-file", "weights="],
                     ["--stage-file", "nope=samples/csv/X.csv"], ["-f", "xml"]]  # fmt: skip
EXPLAIN_OPTIONS = [["--exact"], ["--head", "2"], ["--item", "2"], ["--precision", "0"],
                   ["--head", "1" + "0" * 30]]  # fmt: skip


@dataclass
class Case:
    """One command line, its stdin, and files to write first (name → bytes) in a scratch folder."""

    args: list[str]
    stdin: bytes | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    def show(self) -> str:
        args = [a if len(a) < 80 else a[:60] + f"…({len(a)} chars)" for a in self.args]
        stdin = None if self.stdin is None else self.stdin[:300]
        files = {k: v[:200] for k, v in self.files.items()}
        return f"args={args!r} stdin={stdin!r} files={files!r}"


# ---------------------------------------------------------------- mutations


NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
NASTY_NUMBERS = [t for t in NASTY if NUMBER.fullmatch(t) or t in ("NaN", "Infinity", "-Infinity")]


def swap_numbers(rng: random.Random, text: str) -> str:
    """One to three numbers of the text replaced by nasty ones: the JSON stays well formed."""
    spans = [m.span() for m in NUMBER.finditer(text)]
    for start, end in sorted(rng.sample(spans, min(len(spans), rng.randint(1, 3))), reverse=True):
        text = text[:start] + rng.choice(NASTY_NUMBERS) + text[end:]
    return text


def mild_numbers(rng: random.Random, text: str) -> str:
    """Every number of the text redrawn from ordinary values: a problem that still makes sense."""
    pick = [lambda: str(rng.randint(-3, 3)), lambda: repr(round(rng.gauss(0, 2), 3)),
            lambda: rng.choice(["0", "1", "-0.0", "1e-5", "1e5", "0.1", "1e-300", "1e150"])]  # fmt: skip
    return NUMBER.sub(lambda m: rng.choice(pick)() if rng.random() < 0.5 else m.group(), text)


def mutate_text(rng: random.Random, text: str) -> str:
    """A few character-level edits: delete, insert or replace with a nasty token."""
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        i = rng.randint(0, len(chars))
        op = rng.random()
        token = rng.choice(NASTY_TEXT)
        if op < 0.3 and i < len(chars):
            del chars[i]
        elif op < 0.65:
            chars.insert(i, token)
        elif i < len(chars):
            chars[i] = token
    return "".join(chars)


def _paths(doc, path=()):
    """Every place in a parsed document, as a path of keys and indexes."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:6]):
            yield from _paths(v, (*path, i))


def _set(doc, path, value):
    if not path:
        return value
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


def _nasty(rng: random.Random) -> str:
    """A placeholder for a nasty value, spliced in as raw text after json.dumps (it may not parse)."""
    return f"@@{NASTY.index(rng.choice(NASTY))}@@"


def _splice(text: str) -> str:
    for i, raw in enumerate(NASTY):
        text = text.replace(f'"@@{i}@@"', raw)
    return text


def mutate_doc(rng: random.Random, doc):
    """A structural edit: a value replaced by a nasty one, a key dropped or added, all numbers scaled."""
    op = rng.random()
    if op < 0.45:
        path = rng.choice(list(_paths(doc)))
        return _set(doc, path, _nasty(rng))
    if op < 0.6 and isinstance(doc, dict) and doc:
        doc.pop(rng.choice(list(doc)))
        return doc
    if op < 0.8 and isinstance(doc, dict):
        key = rng.choice(["heads", "kv_heads", "scale", "temperature", "mask", "valid_lens",
                          "tokens", "W_O", "b_Q", "attn_bias", "layout", "weights_layout",
                          "similarity", "normalize", "empty_rows", "mask_polarity", "x_kv",
                          "key_padding_mask", "in_proj_weight", "\ud800", "W\nQ"])  # fmt: skip
        doc[key] = _nasty(rng)
        return doc
    factor = rng.choice([1e100, 1e150, 1e200, 1e-200, -1.0, 1e300])

    def scale(v):
        if isinstance(v, list):
            return [scale(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v * factor
        return v

    if not isinstance(doc, dict):
        return scale(doc)
    return {k: scale(v) if k not in ("heads", "kv_heads") else v for k, v in doc.items()}


def mutated_json(rng: random.Random, text: str) -> bytes:
    """A problem or answer file, edited as text or as a document."""
    r = rng.random()
    if r < 0.15:
        out = mutate_text(rng, text)
    elif r < 0.5:
        out = swap_numbers(rng, text)
    else:
        doc = json.loads(text)
        for _ in range(rng.randint(1, 3)):
            doc = mutate_doc(rng, doc)
        out = _splice(json.dumps(doc, ensure_ascii=rng.random() < 0.5, allow_nan=True))
    return out.encode("utf-8", "surrogatepass" if rng.random() < 0.1 else "backslashreplace")


def mutated_csv(rng: random.Random, text: str) -> bytes:
    """A CSV with a cell replaced, a row added or removed, or a header of column numbers."""
    rows = [r.split(",") for r in text.splitlines()]
    op = rng.random()
    if op < 0.5 and rows:
        r = rng.randrange(len(rows))
        if rows[r]:
            rows[r][rng.randrange(len(rows[r]))] = rng.choice(NASTY_CELLS)
    elif op < 0.65 and rows:
        width = len(rows[-1])
        rows.insert(0, [str(i) for i in range(width)])  # pandas' header
    elif op < 0.75 and rows:
        del rows[rng.randrange(len(rows))]
    elif op < 0.85 and rows:
        rows.append(rows[0][:-1])
    else:
        return mutate_text(rng, text).encode("utf-8", "backslashreplace")
    return "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")


def mutated_cell(rng: random.Random) -> str:
    """An ``explain`` cell reference, well formed or not."""
    stage = rng.choice([*STAGES, "nope", "", "Scores", "weights "])
    i = rng.choice(["1", "2", "3", "0", "-1", "1" + "0" * 400, "9" * 5000, "1e400", "x", ""])
    j = rng.choice(["1", "2", "3", "4", "0", "99", "1" + "0" * 30, "", "1,1"])
    form = rng.random()
    if form < 0.4:
        return f"{stage}[{rng.randint(1, 3)},{rng.randint(1, 3)}]"
    if form < 0.7:
        return f"{stage}[{i},{j}]"
    if form < 0.85:
        return f"{stage}[{i}]"
    return mutate_text(rng, f"{stage}[{i},{j}]")


# ---------------------------------------------------------------- cases


def _options(
    rng: random.Random, pool: list[list[str]], most: int, bad: list[list[str]] | None = None
) -> list[str]:
    out: list[str] = []
    for _ in range(rng.randint(0, most)):
        out += rng.choice(bad if bad and rng.random() < 0.15 else pool)
    return out


def compute_case(rng: random.Random) -> Case:
    seed = rng.choice(PROBLEMS)
    text = seed.read_text(encoding="utf-8")
    kind = rng.random()
    if kind < 0.1:  # a problem that still makes sense: its answer is checked against the reference
        return Case(["compute", "-", "-f", "json"], mild_numbers(rng, text).encode())
    if kind < 0.3:  # a problem that still makes sense, under any options
        stdin = (text if rng.random() < 0.3 else mild_numbers(rng, text)).encode()
        return Case(
            ["compute", "-", *_options(rng, COMPUTE_OPTIONS, 3, BAD_COMPUTE_OPTIONS)], stdin
        )
    if kind < 0.7:
        stdin = mutated_json(rng, text)
        return Case(
            ["compute", "-", *_options(rng, COMPUTE_OPTIONS, 3, BAD_COMPUTE_OPTIONS)], stdin
        )
    if kind < 0.85:
        csv = rng.choice(CSVS)
        data = mutated_csv(rng, csv.read_text(encoding="utf-8"))
        flag = rng.choice(["--x", "--q", "--k", "--v", "--wq", "--wo", "--attn-bias", "--mask"])
        args = [
            "compute",
            str(seed.relative_to(ROOT)),
            flag,
            "-",
            *_options(rng, COMPUTE_OPTIONS, 2, BAD_COMPUTE_OPTIONS),
        ]
        return Case(args, data)
    stdin = mutated_json(rng, text)
    args = [
        "compute",
        "-",
        "-f",
        "npz",
        "-o",
        "{tmp}/out.npz",
        *_options(rng, COMPUTE_OPTIONS, 2, BAD_COMPUTE_OPTIONS),
    ]
    return Case(args, stdin)


def check_case(rng: random.Random) -> Case:
    problem = rng.choice(list(ANSWERS))
    answer = rng.choice(ANSWERS[problem])
    text = answer.read_text(encoding="utf-8")
    if rng.random() < 0.3:  # the problem is the mutated one, the answer as written
        stdin = mutated_json(rng, (ROOT / problem).read_text(encoding="utf-8"))
        return Case(
            [
                "check",
                "-",
                str(answer.relative_to(ROOT)),
                *_options(rng, CHECK_OPTIONS, 2, BAD_CHECK_OPTIONS),
            ],
            stdin,
        )
    stdin = mutated_json(rng, text)
    return Case(["check", problem, "-", *_options(rng, CHECK_OPTIONS, 2, BAD_CHECK_OPTIONS)], stdin)


def explain_case(rng: random.Random) -> Case:
    seed = rng.choice(PROBLEMS)
    text = seed.read_text(encoding="utf-8")
    options = _options(rng, EXPLAIN_OPTIONS, 2)
    if rng.random() < 0.4:
        return Case(["explain", "-", mutated_cell(rng), *options], mutated_json(rng, text))
    return Case(["explain", str(seed.relative_to(ROOT)), mutated_cell(rng), *options])


def cases(seed: int, count: int):
    """``count`` cases: about 60% compute, 20% check, 20% explain."""
    rng = random.Random(seed)
    for _ in range(count):
        r = rng.random()
        yield compute_case(rng) if r < 0.6 else check_case(rng) if r < 0.8 else explain_case(rng)


# ---------------------------------------------------------------- the promise


def broken_promise(code: int | None, stdout: str, stderr: str) -> str | None:
    """What a finished run did wrong, or None."""
    if code not in (0, 1, 2):
        return f"exit {code}"
    if "Traceback" in stderr or "Traceback" in stdout:
        return "a traceback"
    lines = stderr.splitlines()
    if code == 2:
        if len(lines) != 1 or not stderr.endswith("\n"):
            return f"{len(lines)} stderr lines for an error"
        if not lines[0].startswith("qkv: error: "):
            return "an error line without 'qkv: error: '"
        if "internal error" in lines[0]:
            return "an internal error"
        if stdout:
            return "output on stdout before an error"
    elif any(not line.startswith("qkv: note: ") for line in lines):
        return "stderr holds more than notes"
    elif "a bug in qkv" in stderr:
        return f"a warning: {stderr}"
    return None


class _Last:
    result = None


LAST = _Last()  # the last in-process result, for checks beyond the promise

#: File names a shell can make: line breaks, tabs, escapes, bytes that are not UTF-8, spaces.
AWKWARD = [b"plain.json", b"two\nlines.json", b"tab\there.json", b"esc\x1b[2J.json",
           b"\xff\xfe.json", b"sp ace.json", "ünï.json".encode(), b"\r.json", b"--x.json"]  # fmt: skip


def awkward_name(case: Case) -> bytes:
    return AWKWARD[sum(map(len, case.args)) % len(AWKWARD)]


def run_in_process(runner, app, case: Case, tmp: Path) -> str | None:
    """Run ``case`` with CliRunner; what went wrong, or None."""
    for name, data in case.files.items():
        (tmp / name).write_bytes(data)
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, args, input=case.stdin)
    LAST.result = result
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"{type(result.exception).__name__}: {result.exception}"
    if caught:
        return f"a warning: {caught[0].category.__name__}: {caught[0].message}"
    return broken_promise(result.exit_code, result.stdout, result.stderr)


def main() -> None:  # pragma: no cover - by hand
    import tempfile

    import typer.main
    import typer.testing

    from qkvcli.cli import app

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    command = typer.main.get_command(app)
    typer.testing._get_command = lambda _app: command  # build the click command once
    runner = typer.testing.CliRunner()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n, case in enumerate(cases(seed, count)):
            with contextlib.redirect_stderr(io.StringIO()):
                why = run_in_process(runner, app, case, Path(tmp))
            if why:
                bad += 1
                print(f"{n}: {why}\n   {case.show()}")
    print(f"{count} cases, {bad} broke the promise")


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(ROOT))
    main()
