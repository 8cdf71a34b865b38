"""One 2 GiB recording through fetch_all: how much does the client's peak memory rise?

The emulator (its own process) serves a WAV of the requested size generated slice by slice
(a real header, one second of signal repeated), so it never holds the file either. The
client, in a child process, imports everything first; its resident set size is read just
before ``fetch_all`` and its peak (``ru_maxrss``) after: the difference is what streaming,
hashing, writing and checking the file cost in memory.

Usage: ``python benchmarks/big_file.py`` (``--gib 2``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FAST, MB, TOKEN, EmulatorProcess, command_line, load, machine, run_child, table

COMPARE = Path(__file__).resolve().parent / "compare.py"
TARGET = 50 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the recording in GiB")
    args = parser.parse_args()
    size = int(args.gib * 2**30)
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print("world:   loopback, no latency, no bandwidth cap, no rate limit (pacing lifted)")
    with (
        tempfile.TemporaryDirectory(prefix="siro-bench-") as folder,
        EmulatorProcess({"kind": "big", "size": size}, FAST) as emulator,
    ):
        scratch = Path(folder)
        job = {
            "ids": emulator.ids,
            "api_url": emulator.api_url,
            "token": TOKEN,
            "out_dir": str(scratch / "out"),
            "manifest": str(scratch / "manifest.parquet"),
            "requests_per_minute": 10**9,
            "progress": False,
        }
        (scratch / "job.json").write_text(json.dumps(job))
        result = run_child([str(COMPARE), "--child", "siro", "--job", str(scratch / "job.json")])
        stats = emulator.stats()
    served = emulator.sizes[0]
    rise = result["peak_rss"] - result["rss_before"]
    print(
        table(
            [
                "recording",
                "complete",
                "wall s",
                "MB/s",
                "CPU s",
                "RSS before MiB",
                "peak RSS MiB",
                "rise MiB",
                "target",
            ],
            [
                [
                    f"{served / 2**30:.2f} GiB WAV",
                    "yes" if result["ok"] == 1 and stats["bytes_served"] >= served else "NO",
                    f"{result['wall']:.1f}",
                    f"{served / MB / result['wall']:.0f}",
                    f"{result['cpu']:.1f}",
                    f"{result['rss_before'] / 2**20:.0f}",
                    f"{result['peak_rss'] / 2**20:.0f}",
                    f"{rise / 2**20:.1f}",
                    f"< {TARGET / 2**20:.0f} MiB: {'met' if rise < TARGET else 'MISSED'}",
                ]
            ],
        )
    )

    print(f"\nat the end: {load()}")


if __name__ == "__main__":
    main()
