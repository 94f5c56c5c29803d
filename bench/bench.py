"""Benchmark what a qkv user waits for: time and peak memory as ratios against baselines run side by side.

Usage (from the repository root, in the environment where qkv is installed):

    python bench/bench.py                       # every section
    python bench/bench.py --only kernel memory  # some sections
    python bench/bench.py --quick               # smaller sizes, fewer runs (a smoke test)

Sections, each measured in child processes so that a peak is its own:

* startup  — whole processes (bytecode cached, median, in turns): ``qkv compute``
             with JSON output, with a table, ``qkv check``, against
             ``python -c "import numpy"``.
* pictures — ``qkv compute --heatmap`` at n = 256 and ``--heatmap --svg`` at
             n = 128 (time, and the SVG's size), against ``import numpy``.
* check    — ``qkv check`` of a 64-token problem with every stage answered: all
             right, and with a mistake (no scaling) and a slip (a sign) to diagnose.
* default  — the default path at n = 2048 (no ``--stream``) against
             ``--stream``: time and peak memory of the whole process.
* kernel   — the streamed kernel (``qkvcli.stream.run``, Q K V given, one head,
             d = 64) against torch's ``scaled_dot_product_attention`` with the
             same thread count, and against the machine's limit for the same
             work: the two GEMMs and ``np.exp`` of the same blocks, nothing else.
* memory   — peak resident set of ``qkv compute in.npz -f npz -o out.npz``
             (streamed, float64) at n = 16384 and 32768.
* npz      — ``qkv compute --stage weights -f npz`` at n = 10000: peak memory
             against the size of the result, time against numpy writing the
             same array with ``np.savez``.

The BLAS in use is reported (threadpoolctl), since a machine's environment
may pin an older kernel; every ratio is against a baseline measured in the
same session.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "worked_example.json"
ANSWERS = ROOT / "samples" / "homework" / "worked" / "right.json"
D = 64
MiB = 2**20


# ---------------------------------------------------------------- helpers run in children


def inputs(n: int, dtype: str, d: int = D):
    import numpy as np

    rng = np.random.default_rng(n)
    return [rng.standard_normal((n, d)).astype(dtype, copy=False) for _ in range(3)]


def peak_memory() -> int:
    """This process's peak resident set in bytes (VmHWM: since exec, unlike ru_maxrss after fork)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def limit_kernel(q, k, v):
    """The least work attention needs: per block, q·kᵀ, exp, p·[v | 1]; on the same threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from qkvcli.blas import single_threaded
    from qkvcli.stream import BLOCK_BYTES, blocks

    n, m = q.shape[0], k.shape[0]
    BLOCK_ROWS, BLOCK_KEYS = blocks(n, m, BLOCK_BYTES // q.dtype.itemsize)  # the kernel's blocks
    va = np.empty((m, v.shape[1] + 1), dtype=v.dtype)
    va[:, :-1], va[:, -1] = v, 1.0
    out = np.empty((n, v.shape[1] + 1), dtype=v.dtype)

    def rows(i0):
        buf = np.empty((min(BLOCK_ROWS, n - i0), BLOCK_KEYS), dtype=q.dtype)
        acc = np.zeros((buf.shape[0], va.shape[1]), dtype=q.dtype)
        for j0 in range(0, m, BLOCK_KEYS):
            s = buf[:, : min(BLOCK_KEYS, m - j0)]
            np.matmul(q[i0 : i0 + BLOCK_ROWS], k[j0 : j0 + BLOCK_KEYS].T, out=s)
            np.exp(s, out=s)
            acc += s @ va[j0 : j0 + BLOCK_KEYS]
        out[i0 : i0 + BLOCK_ROWS] = acc

    with single_threaded(), ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(rows, range(0, n, BLOCK_ROWS)))
    return out


def child(method: str, n: int, dtype: str, repeat: int) -> dict:
    """Run one method in this process; report the best time and the peak memory."""
    import numpy as np

    q, k, v = inputs(n, dtype)
    if method == "limit":
        q = q * q.dtype.type(1 / np.sqrt(D))  # the limit does no scaling pass (and keeps the dtype)
    if method == "qkv":
        from qkvcli.options import Options
        from qkvcli.problem import Problem, resolve
        from qkvcli.stream import run

        r = resolve(Problem({"Q": q, "K": k, "V": v}), Options(dtype=dtype))

        def once():
            return run(r)["output"]
    elif method == "torch":
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        tq, tk, tv = (torch.from_numpy(a)[None, None] for a in (q, k, v))

        def once():
            with torch.no_grad():
                return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)[0, 0].numpy()
    elif method == "limit":

        def once():
            return limit_kernel(q, k, v)
    else:
        raise SystemExit(f"unknown method {method}")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - t)
        del out
    return {"seconds": min(times), "peak": peak_memory()}


def parts_child(lib: str, dtype: str) -> dict:
    """One thread's speed at the kernel's own pieces: q·kᵀ and p·v of one block, and exp."""
    import numpy as np

    from qkvcli.stream import BLOCK_BYTES, blocks

    bq, bk = blocks(1 << 20, 1 << 20, BLOCK_BYTES // np.dtype(dtype).itemsize)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((rows, D)).astype(dtype) for rows in (bq, bk, bk))
    logits = (rng.standard_normal((bq, bk)) - 10).astype(dtype)  # shifted logits: exp's fast path
    s, out = np.empty((bq, bk), dtype=dtype), np.empty((bq, D), dtype=dtype)
    if lib == "torch":
        import torch

        torch.set_num_threads(1)
        q, k, v, logits, s, out = map(torch.from_numpy, (q, k, v, logits, s, out))
        steps = {
            "qk": lambda: torch.mm(q, k.t(), out=s),
            "pv": lambda: torch.mm(s, v, out=out),
            "exp": lambda: torch.exp(logits, out=s),
        }
    else:
        from qkvcli.blas import single_threaded

        stack = single_threaded()
        stack.__enter__()
        steps = {
            "qk": lambda: np.matmul(q, k.T, out=s),
            "pv": lambda: np.matmul(s, v, out=out),
            "exp": lambda: np.exp(logits, out=s),
        }
    flops, seen = 2 * bq * bk * D, {}
    for name, step in steps.items():
        best = math.inf
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(20):
                step()
            best = min(best, (time.perf_counter() - t) / 20)
        seen[name] = bq * bk / best if name == "exp" else flops / best
    return seen


def savez_child(n: int, path: str) -> dict:
    """numpy writing an n×n float64 array to an .npz: the baseline for ``--stage weights -f npz``."""
    import numpy as np

    a = np.random.default_rng(0).random((n, n))
    t = time.perf_counter()
    np.savez(path, weights=a)
    return {"seconds": time.perf_counter() - t, "peak": peak_memory()}


# ---------------------------------------------------------------- the parent


def in_child(*args: str) -> dict | None:
    cmd = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-2000:])
        return None
    return json.loads(done.stdout)


def best(a: dict | None, b: dict | None) -> dict | None:
    """The faster time and the larger peak of two measurements of the same thing."""
    if a is None or b is None:
        return a or b
    return {"seconds": min(a["seconds"], b["seconds"]), "peak": max(a["peak"], b["peak"])}


def has_torch() -> bool:
    return (
        subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0
    )


def environment(torch: bool) -> str:
    """numpy's version, the BLAS kernel in use (threadpoolctl), torch's version and threads."""
    code = (
        "import numpy, os; print(f'numpy {numpy.__version__}', end='')\n"
        "try:\n"
        "    from threadpoolctl import threadpool_info\n"
        "    for i in threadpool_info():\n"
        "        if i.get('user_api') == 'blas':\n"
        "            print(f\"; BLAS {i.get('internal_api')} {i.get('version')} \"\n"
        "                  f\"({i.get('architecture')}, {i.get('num_threads')} threads)\", end='')\n"
        "except ImportError:\n"
        "    print('; BLAS unknown (pip install threadpoolctl)', end='')\n"
    )
    if torch:
        code += "import torch; print(f'; torch {torch.__version__} ({torch.get_num_threads()} threads)', end='')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout


WRAPPER = """
import resource, subprocess, sys, time
t = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(done.returncode, seconds, peak)
"""
MAKE_NPZ = """
import sys, numpy as np
n, d = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(n)
np.savez(sys.argv[1], **{name: rng.standard_normal((n, d)) for name in "QKV"})
"""
MAKE_JSON = """
import json, sys, numpy as np
n, d = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(n)
doc = {name: rng.integers(-2, 3, (n, d)).tolist() for name in ("X", "W_Q", "W_K", "W_V")}
doc["W_Q"], doc["W_K"], doc["W_V"] = (rng.integers(-1, 2, (d, d)).tolist() for _ in range(3))
doc["tokens"] = [f"t{i}" for i in range(1, n + 1)]
json.dump(doc, open(sys.argv[1], "w"))
"""


def qkv_cmd() -> list[str]:
    script = Path(sys.executable).with_name("qkv")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qkvcli"]


def whole(cmd: list[str], env: dict | None = None) -> dict:
    """A whole process: wall time and peak memory, from a small wrapper's RUSAGE_CHILDREN."""
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True, env=env
    )
    code, seconds, peak = out.stdout.split()
    if code != "0" and code != "1":  # check exits 1 when something is wrong
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}")
    return {"seconds": float(seconds), "peak": int(peak)}


def medians(cmds: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Median wall time of whole processes, run in turns so that load affects all alike."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"NO_COLOR": "1", "COLUMNS": "100"}
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for i in range(runs + 1):  # the first round writes the bytecode caches
        for name, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            if i:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make(kind: str, path: Path, n: int, d: int) -> Path:
    code = MAKE_NPZ if kind == "npz" else MAKE_JSON
    subprocess.run([sys.executable, "-c", code, str(path), str(n), str(d)], check=True)
    return path


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}×"


def editable() -> bool:
    """True when qkv is an editable install (its import hook runs in every process of the venv)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        url = distribution("qkv").read_text("direct_url.json") or "{}"
    except PackageNotFoundError:
        return False
    return bool(json.loads(url).get("dir_info", {}).get("editable"))


def startup_cmds() -> tuple[list[str], list[str], str]:
    """The baseline (import numpy) and qkv commands to time, and a note: as a regular install starts.

    An editable install's import hook (a .pth file) loads pathlib and more at
    every start-up — the baseline's too — so ratios would read low. Then both
    run with -S and put the source tree and site-packages after the standard
    library on sys.path themselves, where site would put an installed qkv.
    """
    if not editable():
        return [sys.executable, "-c", "import numpy"], qkv_cmd(), ""
    import site

    path = f"import sys; sys.path += {[str(ROOT), *site.getsitepackages()]!r}; "
    main = "from qkvcli.cli import main; sys.argv[0] = 'qkv'; main()"
    return (
        [sys.executable, "-S", "-c", path + "import numpy"],
        [sys.executable, "-S", "-c", path + main],
        "; editable install: both run with -S, as a regular install starts",
    )


def section_startup(args, tmp: Path) -> None:
    numpy, qkv, note = startup_cmds()
    cmds = {
        'python -c "import numpy"': numpy,
        "qkv compute sample --format json": [*qkv, "compute", str(SAMPLE), "--format", "json"],
        "qkv compute sample (table)": [*qkv, "compute", str(SAMPLE)],
        "qkv check sample answers": [*qkv, "check", str(SAMPLE), str(ANSWERS)],
        "qkv --version": [*qkv, "--version"],
    }
    t = medians(cmds, args.runs)
    base = t['python -c "import numpy"']
    print(
        f"start-up (median of {args.runs} runs, in turns; goal json ≤ 1.3×, table ≤ 1.5×, check ≤ 1.5×{note})"
    )
    for name, sec in t.items():
        print(f"  {name:34s} {sec * 1000:7.1f} ms  {ratio(sec, base)} import numpy")


def section_pictures(args, tmp: Path) -> None:
    qkv = qkv_cmd()
    n1, n2 = (64, 32) if args.quick else (256, 128)
    big, mid = make("json", tmp / "h1.json", n1, 8), make("json", tmp / "h2.json", n2, 8)
    svg = tmp / "h.svg"
    cmds = {
        'python -c "import numpy"': [sys.executable, "-c", "import numpy"],
        f"qkv compute n={n1} --heatmap": [*qkv, "compute", str(big), "--heatmap"],
        f"qkv compute n={n2} --heatmap --svg": [
            *qkv,
            "compute",
            str(mid),
            "--heatmap",
            "--svg",
            str(svg),
        ],
    }
    t = medians(cmds, max(3, args.runs // 4))
    base = t['python -c "import numpy"']
    print("pictures (median; goal heatmap n=256 < 0.3 s, --svg n=128 < 0.5 s)")
    for name, sec in t.items():
        print(f"  {name:34s} {sec:7.3f} s   {ratio(sec, base)} import numpy")
    print(f"  SVG size at n={n2}: {svg.stat().st_size / MiB:.2f} MiB")


def section_check(args, tmp: Path) -> None:
    qkv = qkv_cmd()
    n = 16 if args.quick else 64
    problem = make("json", tmp / "c.json", n, 8)
    key = tmp / "key.json"
    with open(key, "w") as fh:
        done = subprocess.run(
            [*qkv, "compute", str(problem), "--trace", "-f", "json"],
            stdout=subprocess.PIPE,
            check=True,
        )
        doc = json.loads(done.stdout)
        doc.pop("meta")
        json.dump(doc, fh)
    cells = sum(len(json.dumps(v).split(",")) for v in doc.values())
    done = subprocess.run(
        [*qkv, "compute", str(problem), "--trace", "-f", "json", "--scale", "none"],
        stdout=subprocess.PIPE,
        check=True,
    )
    unscaled = json.loads(done.stdout)
    wrong = dict(doc, **{s: unscaled[s] for s in ("scaled", "weights", "output")})
    wrong["scores"][3][5] = -wrong["scores"][3][5] or 7  # a slip in one cell
    mistake = tmp / "mistake.json"
    mistake.write_text(json.dumps(wrong))
    cmds = {
        'python -c "import numpy"': [sys.executable, "-c", "import numpy"],
        f"qkv check n={n} ({cells} cells)": [*qkv, "check", str(problem), str(key)],
        "  … with a mistake and a slip": [*qkv, "check", str(problem), str(mistake)],
    }
    t = medians(cmds, max(3, args.runs // 4))
    base = t['python -c "import numpy"']
    print("check (median; goal 64 tokens < 0.5 s)")
    for name, sec in t.items():
        print(f"  {name:34s} {sec:7.3f} s   {ratio(sec, base)} import numpy")


def section_default(args, tmp: Path) -> None:
    qkv = qkv_cmd()
    n = 512 if args.quick else 2048
    src = make("npz", tmp / "d.npz", n, D)
    env = os.environ | {"NO_COLOR": "1"}
    runs = {"default": [], "stream": []}
    for _ in range(args.rounds):
        runs["default"].append(whole([*qkv, "compute", str(src)], env))
        runs["stream"].append(whole([*qkv, "compute", str(src), "--stream"], env))
    a = {
        "seconds": min(r["seconds"] for r in runs["default"]),
        "peak": max(r["peak"] for r in runs["default"]),
    }
    b = {
        "seconds": min(r["seconds"] for r in runs["stream"]),
        "peak": max(r["peak"] for r in runs["stream"]),
    }
    print(
        f"default path at n={n} against --stream (whole process; goal ≤ 1.2× time, ≤ 1.5× memory)"
    )
    print(
        f"  default {a['seconds']:6.3f} s {a['peak'] / MiB:6.0f} MiB   --stream {b['seconds']:6.3f} s {b['peak'] / MiB:6.0f} MiB"
        f"   {ratio(a['seconds'], b['seconds'])} time, {ratio(a['peak'], b['peak'])} memory"
    )


def section_kernel(args, tmp: Path) -> None:
    torch = has_torch()
    sizes = [1024, 2048] if args.quick else [4096, 8192, 16384]
    print(
        f"streamed kernel (best of {args.repeat} × {args.rounds} rounds; goal f64 ≤ 0.8× torch, f32 ≤ 0.9×, ≥ 0.92 of the limit)"
    )
    print(
        f"  {'dtype':7s} {'n':>6s}  {'qkv s':>7s} {'torch s':>7s} {'limit s':>7s}  {'qkv/torch':>9s} {'limit/qkv':>9s}  {'qkv peak':>8s} {'torch peak':>10s}"
    )
    for dtype in ("float64", "float32"):
        for n in sizes:
            ours = theirs = floor = None
            for _ in range(args.rounds):
                ours = best(ours, in_child("qkv", str(n), dtype, str(args.repeat)))
                theirs = (
                    best(theirs, in_child("torch", str(n), dtype, str(args.repeat)))
                    if torch
                    else None
                )
                floor = best(floor, in_child("limit", str(n), dtype, str(args.repeat)))
            t = lambda x: f"{x['seconds']:.3f}" if x else "—"  # noqa: E731
            r = lambda a, b: f"{a['seconds'] / b['seconds']:.2f}" if a and b else "—"  # noqa: E731
            mem = lambda x: f"{x['peak'] / MiB:.0f} MiB" if x else "—"  # noqa: E731
            print(
                f"  {dtype:7s} {n:6d}  {t(ours):>7s} {t(theirs):>7s} {t(floor):>7s}  {r(ours, theirs):>9s} {r(floor, ours):>9s}  {mem(ours):>8s} {mem(theirs):>10s}",
                flush=True,
            )
    if not torch:
        return
    print("  the kernel's pieces on one thread, one block (numpy's BLAS and exp : torch's):")
    for dtype in ("float64", "float32"):
        ours, theirs = in_child("parts", "numpy", dtype), in_child("parts", "torch", dtype)
        if ours and theirs:
            g = lambda x: f"{x / 1e9:.0f}"  # noqa: E731
            print(
                f"  {dtype:7s}  q·kᵀ {g(ours['qk'])} : {g(theirs['qk'])} GFLOP/s"
                f"   p·v {g(ours['pv'])} : {g(theirs['pv'])} GFLOP/s"
                f"   exp {1e9 / ours['exp']:.2f} : {1e9 / theirs['exp']:.2f} ns a value"
                "   torch's "
                + " / ".join(f"{theirs[x] / ours[x]:.2f}×" for x in ours)
                + " as fast",
                flush=True,
            )


def section_memory(args, tmp: Path) -> None:
    qkv = qkv_cmd()
    sizes = [4096] if args.quick else [16384, 32768]
    print(
        "peak memory of qkv compute in.npz -f npz -o out.npz (float64, streamed; goal < 80 / < 128 MiB)"
    )
    for n in sizes:
        src = make("npz", tmp / f"m{n}.npz", n, D)
        r = whole([*qkv, "compute", str(src), "-f", "npz", "-o", str(tmp / "out.npz")])
        io = 6 * n * D * 8  # Q, K, V in, and the output with Q, K, V written back
        print(
            f"  n = {n:6d}  {r['seconds']:6.2f} s  peak {r['peak'] / MiB:5.0f} MiB  (inputs + outputs {io / MiB:.0f} MiB)",
            flush=True,
        )
        (tmp / f"m{n}.npz").unlink()


def section_npz(args, tmp: Path) -> None:
    qkv = qkv_cmd()
    n = 2000 if args.quick else 10000
    src = make("npz", tmp / "w.npz", n, D)
    r = whole(
        [*qkv, "compute", str(src), "--stage", "weights", "-f", "npz", "-o", str(tmp / "w_out.npz")]
    )
    base = in_child("savez", str(n), str(tmp / "base.npz"))
    result = n * n * 8
    print(
        f"--stage weights -f npz at n={n} (a {result / MiB:.0f} MiB result; goal peak ≤ 1.3× the result, time ≤ 2× np.savez)"
    )
    print(
        f"  qkv {r['seconds']:6.2f} s  peak {r['peak'] / MiB:6.0f} MiB = {r['peak'] / result:.2f}× the result"
        f";  np.savez {base['seconds']:.2f} s  →  {ratio(r['seconds'], base['seconds'])}"
    )


SECTIONS = {
    "startup": section_startup,
    "pictures": section_pictures,
    "check": section_check,
    "default": section_default,
    "kernel": section_kernel,
    "memory": section_memory,
    "npz": section_npz,
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        if sys.argv[2] == "savez":
            print(json.dumps(savez_child(int(sys.argv[3]), sys.argv[4])))
            return
        if sys.argv[2] == "parts":
            print(json.dumps(parts_child(sys.argv[3], sys.argv[4])))
            return
        method, n, dtype, repeat = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(json.dumps(child(method, n, dtype, repeat)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="small sizes and few runs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=21, help="start-up runs")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.rounds, args.runs = 1, 1, 5
    print(f"qkv benchmark; {environment(has_torch())}; {len(os.sched_getaffinity(0))} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            print()
            SECTIONS[name](args, Path(tmp))


if __name__ == "__main__":
    main()
