"""How long `metaembed --help` and every command's `--help` take, as a user runs them (the installed console
script, a fresh process each time), against an empty Python start (`python -c pass`) and `import torch`.

    .venv/bin/python benchmarks/cli_startup/run.py               # 7 rounds
    .venv/bin/python benchmarks/cli_startup/run.py --rounds 15

The commands are run round-robin (one of each per round), so load from other work on the machine falls on every
row alike; wall and CPU seconds (user + system, the process and its children) are reported as medians, and as a
ratio to `python -c pass` of the same rounds. Once per command, a separate process runs the same `--help` in-process
and reports whether torch / sentence-transformers / transformers were imported and how many modules were.
Every run sees a 100-column terminal (``COLUMNS``). `train --help` is printed without transformers from the text
shipped with the package (metaembed.training.flags.train_help; 80 columns wide, for terminals at least that wide),
else from the user cache once rendered: two more rows run it with an empty cache every time, as the first call after
installing (shipped text), and in a 60-column terminal (rendered by HfArgumentParser, what a first call costs when
no shipped text fits). The target (issue 16): under 1.5 s for every command. Writes
benchmarks/results/cli_startup.json and .md.
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

REPO = Path(__file__).resolve().parents[2]
COMMANDS: list[list[str]] = [[], ["demo"], ["eval"], ["index"], ["quickstart"], ["search"], ["serve"], ["train"],
                             ["cache"], ["cache", "clear"]]
COLD_TRAIN_HELP = "metaembed train --help (empty cache: the shipped text)"
RENDERED_TRAIN_HELP = "metaembed train --help (empty cache, 60 columns: rendered)"
TARGET_SECONDS = 1.5
HEAVY = ("torch", "sentence_transformers", "transformers")
_IN_PROCESS = """
import sys
sys.argv = ["metaembed", *{args!r}, "--help"]
from metaembed.cli import main
try:
    main()
except SystemExit:
    pass
import json
print(json.dumps({{"modules": len(sys.modules), "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def metaembed_script() -> str:
    """The installed console script next to this interpreter (what a user types)."""
    return str(Path(sys.executable).parent / "metaembed")


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv`` to completion, its output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"{argv} exited {completed.returncode}: {completed.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_of(args: list[str], env: dict[str, str]) -> dict:
    """Module count and heavy libraries loaded by ``metaembed ARGS --help``, in a fresh process."""
    code = _IN_PROCESS.format(args=args, heavy=HEAVY)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(rounds: int) -> dict:
    """Every row's wall and CPU seconds over ``rounds`` round-robin passes, plus the import facts per command."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "100"}
    rows: dict[str, list[str]] = {"python -c pass": [sys.executable, "-c", "pass"],
                                  "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
    for args in COMMANDS:
        rows[" ".join(["metaembed", *args, "--help"])] = [metaembed_script(), *args, "--help"]
    rows[COLD_TRAIN_HELP] = rows[RENDERED_TRAIN_HELP] = [metaembed_script(), "train", "--help"]

    def run(name: str, argv: list[str]) -> tuple[float, float]:
        if name not in (COLD_TRAIN_HELP, RENDERED_TRAIN_HELP):
            return timed_run(argv, env)
        with tempfile.TemporaryDirectory() as empty_cache:
            columns = "60" if name == RENDERED_TRAIN_HELP else env["COLUMNS"]
            return timed_run(argv, {**env, "METAEMBED_CACHE": empty_cache, "COLUMNS": columns})

    for name, argv in rows.items():  # warm the page cache and the bytecode caches once (and render train's help)
        run(name, argv)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, argv in rows.items():
            samples[name].append(run(name, argv))
    base = statistics.median(wall for wall, _ in samples["python -c pass"])
    results = []
    for (name, argv), args in zip(rows.items(), [None, None, *COMMANDS, None, None]):
        walls, cpus = [w for w, _ in samples[name]], [c for _, c in samples[name]]
        row = {"command": name, "wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
               "wall_s_max": round(max(walls), 3), "cpu_s_median": round(statistics.median(cpus), 3),
               "vs_python": round(statistics.median(walls) / base, 1)}
        if args is not None:
            row.update(imports_of(args, env))
            row["under_target"] = row["wall_s_median"] < TARGET_SECONDS
        results.append(row)
    return {"rounds": rounds, "target_s": TARGET_SECONDS, "rows": results}


def table(results: dict) -> str:
    """The Markdown table of the results."""
    lines = ["| command | wall s (median) | min-max | CPU s | vs `python -c pass` | modules | torch & co. loaded |",
             "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        heavy = (", ".join(row["heavy"]) or "none") if "heavy" in row else ""
        lines.append(f"| `{row['command']}` | {row['wall_s_median']:.2f} | {row['wall_s_min']:.2f}-{row['wall_s_max']:.2f} "
                     f"| {row['cpu_s_median']:.2f} | {row['vs_python']:.1f}x | {row.get('modules', '')} | {heavy} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="round-robin passes over every command")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "cli_startup.json")
    args = parser.parse_args(argv)
    load_before = [round(value, 2) for value in os.getloadavg()]
    results = measure(args.rounds)
    results.update({"machine": f"{os.cpu_count()} CPU cores", "python": sys.version.split()[0],
                    "load_average_before": load_before,
                    "load_average_after": [round(value, 2) for value in os.getloadavg()]})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    slowest = max((row for row in results["rows"] if "heavy" in row), key=lambda row: row["wall_s_median"])
    cold, rendered = (next(row for row in results["rows"] if row["command"] == name)
                      for name in (COLD_TRAIN_HELP, RENDERED_TRAIN_HELP))
    markdown = (f"# CLI start-up: `--help` of every command\n\n{results['rounds']} rounds, round-robin, fresh process "
                f"per run (the installed console script), {results['machine']} shared with other work (load average "
                f"{load_before[0]} before, {results['load_average_after'][0]} after). Target: under "
                f"{TARGET_SECONDS} s each; slowest `{slowest['command']}` at {slowest['wall_s_median']:.2f} s; "
                f"`train --help` with an empty cache {cold['wall_s_median']:.2f} s (the shipped text: the first call "
                f"after installing), {rendered['wall_s_median']:.2f} s in a 60-column terminal (rendered by "
                f"HfArgumentParser, then cached).\n\n"
                f"{table(results)}\n")
    args.results.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
