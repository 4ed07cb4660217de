"""Wall time of `ymir-runner plugins` with whatever plugins are installed, and proof that torch stays out.

    python bench/bench_plugins_cli.py [--repeat 5]

Prints the best and median wall time of the command (target <= 0.5 s), the installed plugins, whether
torch was imported (it must not be: listing plugins only calls their registration hooks), and the slowest
imports reported by `python -X importtime`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMMAND = [sys.executable, "-m", "ymir_runner", "plugins", "--json"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    subprocess.run(COMMAND, check=True, capture_output=True)  # warm the file cache and .pyc files
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        output = subprocess.run(COMMAND, check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - start)
    rows = json.loads(output)
    print("plugins:", ", ".join(f"{row['name']} {row['version']} ({row['status']})" for row in rows) or "none")
    print(f"`ymir-runner plugins`: best {min(times):.3f} s, median {statistics.median(times):.3f} s "
          f"over {args.repeat} runs (target <= 0.5 s)")

    trace = subprocess.run([sys.executable, "-X", "importtime", *COMMAND[1:]], check=True, capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1")).stderr
    imports = []
    for line in trace.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if cumulative.isdigit():
                imports.append((int(cumulative), name))
    torch_loaded = any(name.split(".")[0].strip() == "torch" for _, name in imports)
    print(f"torch imported: {'YES (bug)' if torch_loaded else 'no'}")
    print("slowest top-level imports (cumulative us):")
    for cumulative, name in sorted((i for i in imports if not i[1].startswith(" ")), reverse=True)[:8]:
        print(f"  {cumulative:>8}  {name}")


if __name__ == "__main__":
    main()
