"""siro_data at the scale of hundreds of thousands of recordings.

1. Saving progress: the manifest journal's cost per row when it already holds 1,000, 10,000
   and 100,000 rows (one append per finished row), and its fold into parquet at the end.
2. fetch_all over 1,000 / 10,000 / 100,000 tiny recordings on loopback with no latency
   (pacing lifted): wall, CPU per row and peak memory of the client process.
3. The re-run: fetch_all again over the largest set, every row complete: its wall time
   and how many requests the emulator saw (there should be none).

The emulator runs in a process of its own; each fetch_all in a child process.

Usage: ``python benchmarks/scale.py`` (``--sizes 1000 10000`` for a shorter run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    FAST,
    TOKEN,
    EmulatorProcess,
    command_line,
    folder_bytes,
    load,
    machine,
    run_child,
    table,
)

from siro_data.manifest import Journal, compact, journal_path, read_manifest

COMPARE = Path(__file__).resolve().parent / "compare.py"
TAIL = 1000  # rows timed at the end of each journal


def row(index: int, now: pd.Timestamp) -> dict:
    return {
        "recording_id": f"rec{index:07d}",
        "path": f"/data/recordings/rec{index:07d}-0123456789abcdef.m4a",
        "expiration": now + pd.Timedelta(minutes=15),
        "duration": 612.5,
        "size_bytes": 2_463_620,
        "sha256": f"{index:064x}",
        "content_type": "audio/mp4",
        "fetched_at": now,
    }


def journal_costs(sizes: list[int], scratch: Path) -> list[list[str]]:
    """Per-row cost of a journal line as the journal grows, and of the fold at the end."""
    now = pd.Timestamp.now(tz="UTC")
    warm_up = scratch / "warm-up.parquet"  # first calls pay for lazy set-up: not a row's cost
    for index in range(TAIL):
        Journal(warm_up).append(row(index, now))
    compact(warm_up)
    read_manifest(warm_up)
    rows = []
    for size in sizes:
        manifest = scratch / f"journal-{size}.parquet"
        journal = Journal(manifest)
        started = time.perf_counter()
        for index in range(size - TAIL):
            journal.append(row(index, now))
        middle = time.perf_counter()
        for index in range(size - TAIL, size):
            journal.append(row(index, now))
        ended = time.perf_counter()
        journal_bytes = journal_path(manifest).stat().st_size
        folded = time.perf_counter()
        compact(manifest)
        fold = time.perf_counter() - folded
        read = time.perf_counter()
        assert len(read_manifest(manifest)) == size
        reading = time.perf_counter() - read
        rows.append(
            [
                f"{size:,}",
                f"{(ended - started) / size * 1e6:.0f}",
                f"{(ended - middle) / TAIL * 1e6:.0f}",
                f"{journal_bytes / size:.0f}",
                f"{fold:.2f}",
                f"{fold / size * 1e6:.1f}",
                f"{reading / size * 1e6:.1f}",
            ]
        )
    return rows


def fetch(emulator: EmulatorProcess, scratch: Path, label: str) -> dict:
    job = {
        "ids": emulator.ids,
        "api_url": emulator.api_url,
        "token": TOKEN,
        "out_dir": str(scratch / f"out-{label}"),
        "manifest": str(scratch / f"manifest-{label}.parquet"),
        "requests_per_minute": 10**9,  # no pacing: this emulator enforces no limit
    }
    job_path = scratch / f"{label}.json"
    job_path.write_text(json.dumps(job))
    before = emulator.stats()
    result = run_child([str(COMPARE), "--child", "siro", "--job", str(job_path)], timeout=4 * 3600)
    after = emulator.stats()
    result["requests"] = (after["api_requests"] - before["api_requests"]) + (
        after["storage_requests"] - before["storage_requests"]
    )
    result["emulator_cpu"] = after["cpu"] - before["cpu"]
    result["files"] = folder_bytes(Path(job["out_dir"]))[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--journal-sizes", type=int, nargs="+", default=None)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    with tempfile.TemporaryDirectory(prefix="siro-bench-") as folder:
        scratch = Path(folder)
        journal_sizes = args.journal_sizes or args.sizes
        print(f"\n1. Saving progress: {', '.join(f'{n:,}' for n in journal_sizes)} journal lines")
        costs = journal_costs(journal_sizes, scratch)
        print(
            table(
                [
                    "rows",
                    "µs/row (all)",
                    f"µs/row (last {TAIL})",
                    "bytes/row",
                    "fold s",
                    "fold µs/row",
                    "read µs/row",
                ],
                costs,
            )
        )
        first, last = float(costs[0][2]), float(costs[-1][2])
        print(f"last rows at {journal_sizes[-1]:,} ÷ at {journal_sizes[0]:,}: {last / first:.2f}")

        print(
            "\n2. fetch_all over tiny recordings (4 kB WAV), loopback, no latency, no pacing;"
            " default workers"
        )
        runs = []
        for size in args.sizes:
            print(f"  {size:,} ids ...", end="", flush=True)
            emulator = EmulatorProcess({"kind": "tiny", "n": size}, FAST).__enter__()
            result = fetch(emulator, scratch, f"{size}")
            print(f" {result['wall']:.1f} s", flush=True)
            runs.append((size, result))
            if size != args.sizes[-1]:
                emulator.__exit__(None, None, None)
        print(
            table(
                [
                    "ids",
                    "wall s",
                    "rec/s",
                    "CPU s",
                    "CPU ms/row",
                    "RSS before MB",
                    "peak RSS MB",
                    "complete files",
                ],
                [
                    [
                        f"{size:,}",
                        f"{r['wall']:.1f}",
                        f"{size / r['wall']:.0f}",
                        f"{r['cpu']:.1f}",
                        f"{1000 * r['cpu'] / size:.2f}",
                        f"{r['rss_before'] / 2**20:.0f}",
                        f"{r['peak_rss'] / 2**20:.0f}",
                        f"{r['files']:,}",
                    ]
                    for size, r in runs
                ],
            )
        )
        (small, first_run), (large, last_run) = runs[0], runs[-1]
        print(
            f"CPU per row at {large:,} ÷ at {small:,}: "
            f"{last_run['cpu'] / large / (first_run['cpu'] / small):.2f}"
        )

        print(f"\n3. Re-run over the {large:,} complete rows")
        rerun = fetch(emulator, scratch, f"{large}")
        emulator.__exit__(None, None, None)
        print(
            table(
                ["ids", "wall s", "CPU s", "peak RSS MB", "requests seen by the emulator"],
                [
                    [
                        f"{large:,}",
                        f"{rerun['wall']:.2f}",
                        f"{rerun['cpu']:.2f}",
                        f"{rerun['peak_rss'] / 2**20:.0f}",
                        rerun["requests"],
                    ]
                ],
            )
        )

    print(f"\nat the end: {load()}")


if __name__ == "__main__":
    main()
