"""``python -m bench``: run the scenarios, write results JSON, print a markdown table.

python -m bench                      # every scenario, median of 3 runs
python -m bench --quick              # one run each, smaller sizes
python -m bench --scenario latency   # one scenario (repeatable option)
python -m bench --scenario auth_overhead   # REST reads with and without sign-in + rate limits
python -m bench --scenario failover        # kill -9 of a board's owner -> first accepted command
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.auth_overhead import auth_overhead
from bench.failover import failover
from bench.harness import FULL, NOISY_OTHER_CPU_PCT, QUICK, Bench
from bench.nodes import nodes_commands, nodes_fanout, nodes_latency
from bench.processes import processes
from bench.report import markdown_table
from bench.scenarios import SCENARIOS as CORE_SCENARIOS
from bench.services import machine_info
from bench.storm import reconnect_storm

RESULTS = Path(__file__).resolve().parent / "results"
# The realtime core's scenarios, then what sign-in and rate limits add (which needs their
# helpers, so it lives in a module of its own and joins the list here), then the reconnect
# storm (driven phase by phase, also in a module of its own), then several nodes: the core
# workloads spread over a cluster, a failover, and `serve --processes 2`.
SCENARIOS = {
    **CORE_SCENARIOS,
    "auth_overhead": auth_overhead,
    "reconnect_storm": reconnect_storm,
    "nodes_fanout": nodes_fanout,
    "nodes_commands": nodes_commands,
    "nodes_latency": nodes_latency,
    "failover": failover,
    "processes": processes,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per scenario, smaller sizes")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (may be given more than once)",
    )
    parser.add_argument("--repeat", type=int, help="runs per scenario (median is reported)")
    parser.add_argument("--keep-logs", action="store_true", help="keep server and worker logs")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results JSON goes")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    params = QUICK if args.quick else FULL
    if args.repeat:
        params = dataclasses.replace(params, repeat=max(1, args.repeat))
    names = args.scenario or list(SCENARIOS)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    bench = Bench(params, keep_logs=args.keep_logs)
    # SIGTERM (like Ctrl-C) cancels the run, so everything started is stopped on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    results: dict[str, Any] = {
        "started_utc": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "params": dataclasses.asdict(params),
        "scenarios": {},
        "failed": {},
    }
    bench.progress(
        f"boardcast bench ({results['mode']}, {params.repeat} run(s) each): {', '.join(names)} on "
        f"{results['machine']['nproc']} x {results['machine']['cpu_model']}"
    )
    try:
        await bench.open()
        results["services"] = bench.services
        for name in names:
            bench.progress(f"== {name}")
            try:
                results["scenarios"][name] = await SCENARIOS[name](bench)
            except Exception as e:
                results["failed"][name] = f"{type(e).__name__}: {e}"
                bench.progress(f"!! {name} failed: {type(e).__name__}: {e}")
            finally:
                await bench.reap()
    finally:
        await bench.close()
    if bench.noisy_windows:
        bench.notes.append(
            f"{bench.noisy_windows} measurement window(s) had other processes using more than "
            f"{NOISY_OTHER_CPU_PCT:.0f}% of a core: the machine was not quiet"
        )
    results["noisy_windows"] = bench.noisy_windows
    results["notes"] = bench.notes
    results["duration_s"] = round(time.monotonic() - t0, 1)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = args.output_dir / f"{stamp}.json"
    text = json.dumps(results, indent=2, default=str)
    path.write_text(text)
    (args.output_dir / "latest.json").write_text(text)
    print()
    print(markdown_table(results))
    print()
    bench.progress(f"results: {path} (and {args.output_dir / 'latest.json'})")
    return 1 if results["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return uvloop.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
