"""Benchmark qkv on long inputs: time and peak memory, as ratios, measured side by side.

Usage (from the repository root, in the environment where qkv is installed):

    python bench/bench.py                 # n = 1024 4096 8192 16384, float64 and float32
    python bench/bench.py --n 1024 4096   # fewer sizes
    python bench/bench.py --startup-runs 31

Every measurement runs in its own child process, so that its peak memory
(``ru_maxrss`` of the child) is its own. Compared:

* qkv       — ``qkvcli.stream.run`` (the path ``qkv compute`` takes for the
              output of long inputs), Q, K, V given, one head, d = 64;
* torch     — ``torch.nn.functional.scaled_dot_product_attention`` (if installed);
* textbook  — numpy: scores = Q·Kᵀ/√d, softmax of every row, weights·V;
* qkv CLI   — ``qkv compute in.npz -f npz -o out.npz``, end to end;
* start-up  — ``qkv compute <3-token sample> --format json`` (and the table)
              against ``python -c "import numpy"``, whole processes, median,
              with bytecode caching on (as for an installed program).

Times are the best of ``--repeat`` runs inside each child, over ``--rounds``
children of qkv and torch started in turns; memory is the child's peak
resident set (Python, numpy and the inputs included).
"""

from __future__ import annotations

import argparse
import json
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
D = 64
MiB = 2**20


def inputs(n: int, dtype: str):
    import numpy as np

    rng = np.random.default_rng(n)
    return [rng.standard_normal((n, D)).astype(dtype, copy=False) for _ in range(3)]


def child(method: str, n: int, dtype: str, repeat: int) -> dict:
    """Run one method in this process; report the best time and the peak memory."""
    import numpy as np

    q, k, v = inputs(n, dtype)
    if method == "qkv":
        from qkvcli.options import Options
        from qkvcli.problem import Problem, resolve
        from qkvcli.stream import run

        r = resolve(Problem({"Q": q, "K": k, "V": v}), Options(dtype=dtype))

        def once():
            return run(r)["output"]
    elif method == "torch":
        import torch

        tq, tk, tv = (torch.from_numpy(a)[None, None] for a in (q, k, v))

        def once():
            with torch.no_grad():
                return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)[0, 0].numpy()
    elif method == "textbook":

        def once():
            s = (q @ k.T) / np.sqrt(D)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            w = e / e.sum(axis=1, keepdims=True)
            return w @ v
    else:
        raise SystemExit(f"unknown method {method}")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - t)
        del out
    return {"seconds": min(times), "peak": peak_memory()}


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


def in_child(method: str, n: int, dtype: str, repeat: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", method, str(n), dtype, str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return None
    return json.loads(done.stdout)


def best(a: dict | None, b: dict | None) -> dict | None:
    """The faster time and the larger peak of two measurements of the same thing."""
    if a is None or b is None:
        return a or b
    return {"seconds": min(a["seconds"], b["seconds"]), "peak": max(a["peak"], b["peak"])}


def versions(torch: bool) -> str:
    """numpy's (and torch's) version, asked of a child so that this process stays small."""
    code = "import numpy; print('numpy', numpy.__version__, end='')"
    if torch:
        code += "; import torch; print(f', torch {torch.__version__} ({torch.get_num_threads()} threads)', end='')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout


def has_torch() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return done.returncode == 0


WRAPPER = """
import resource, subprocess, sys, time
t = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(done.returncode, seconds, peak)
"""
MAKE_INPUT = """
import sys, numpy as np
rng = np.random.default_rng(int(sys.argv[2]))
n = int(sys.argv[2])
np.savez(sys.argv[1], **{name: rng.standard_normal((n, %d)) for name in "QKV"})
"""


def qkv_cli(n: int, dtype: str) -> dict:
    """``qkv compute in.npz -f npz -o out.npz`` end to end: wall time and peak memory.

    Run from a small wrapper process whose RUSAGE_CHILDREN is qkv's own peak.
    """
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        subprocess.run([sys.executable, "-c", MAKE_INPUT % D, str(src), str(n)], check=True)
        cmd = [sys.executable, "-m", "qkvcli", "compute", str(src), "--dtype", dtype]
        cmd += ["--format", "npz", "--output", str(dst)]
        out = subprocess.run(
            [sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True
        )
        code, seconds, peak = out.stdout.split()
        if code != "0":
            raise SystemExit(f"qkv compute failed at n={n}")
    return {"seconds": float(seconds), "peak": int(peak)}


def startup(runs: int) -> list[tuple[str, float]]:
    """Median wall time of whole processes, run in turns so that load affects all alike."""
    qkv = [sys.executable, "-m", "qkvcli"]
    script = Path(sys.executable).with_name("qkv")
    if script.exists():
        qkv = [str(script)]
    cmds = {
        'python -c "import numpy"': [sys.executable, "-c", "import numpy"],
        "qkv compute sample --format json": [*qkv, "compute", str(SAMPLE), "--format", "json"],
        "qkv compute sample (table)": [*qkv, "compute", str(SAMPLE)],
        "qkv --version": [*qkv, "--version"],
        "qkv --help": [*qkv, "--help"],
    }
    # As installed programs run: with their bytecode cached (a warm-up run writes it).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for i in range(runs + 1):
        for name, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env
            )
            if i:
                times[name].append(time.perf_counter() - t)
    return [(name, statistics.median(ts)) for name, ts in times.items()]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        method, n, dtype, repeat = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(json.dumps(child(method, n, dtype, repeat)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    ap.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--startup-runs", type=int, default=21)
    ap.add_argument("--no-textbook-above", type=int, default=16384)
    args = ap.parse_args()
    torch = has_torch()
    print(
        f"qkv benchmark: d = {D}, one head, Q K V given; {versions(torch)}; {os.cpu_count()} CPUs"
    )
    print()
    print("start-up (median of", args.startup_runs, "runs, side by side)")
    rows = startup(args.startup_runs)
    base = rows[0][1]
    for name, sec in rows:
        print(f"  {name:34s} {sec * 1000:7.1f} ms  {sec / base:5.2f}× import numpy")
    print()
    print(
        f"attention output (best of {args.repeat} runs × {args.rounds} rounds; peak = the child's peak RSS)"
    )
    head = f"  {'dtype':7s} {'n':>6s}  {'qkv s':>7s} {'torch s':>7s} {'textbook s':>10s}"
    head += f"  {'qkv/torch':>9s} {'qkv/textbook':>12s}  {'qkv peak':>9s} {'torch peak':>10s}"
    head += f" {'textbook peak':>13s}"
    print(head)
    for dtype in args.dtype:
        for n in args.n:
            ours = theirs = None
            for _ in range(args.rounds):  # in turns, so that load from elsewhere hits both
                ours = best(ours, in_child("qkv", n, dtype, args.repeat))
                theirs = best(theirs, in_child("torch", n, dtype, args.repeat)) if torch else None
            book = (
                in_child("textbook", n, dtype, args.repeat) if n <= args.no_textbook_above else None
            )

            def sec(x):
                return f"{x['seconds']:.3f}" if x else "—"

            def mem(x):
                return f"{x['peak'] / MiB:.0f} MiB" if x else "—"

            def ratio(a, b):
                return f"{a['seconds'] / b['seconds']:.2f}×" if a and b else "—"

            line = f"  {dtype:7s} {n:6d}  {sec(ours):>7s} {sec(theirs):>7s} {sec(book):>10s}"
            line += f"  {ratio(ours, theirs):>9s} {ratio(ours, book):>12s}"
            line += f"  {mem(ours):>9s} {mem(theirs):>10s} {mem(book):>13s}"
            print(line, flush=True)
    print()
    print("qkv compute in.npz -f npz -o out.npz, whole process (float64)")
    for n in args.n:
        r = qkv_cli(n, "float64")
        print(f"  n = {n:6d}  {r['seconds']:6.2f} s  peak {r['peak'] / MiB:5.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
