"""CPU seconds per recording, on loopback with no latency, and where they go.

The emulator (in its own process) answers at once, with no bandwidth cap and no rate limit;
``fetch_all`` runs in a child process with its default workers and pacing lifted (pacing
sleeps, it costs no CPU). Two data sets separate the fixed cost of a recording from the cost
of its bytes: tiny WAVs (4 kB) and realistic .m4a (1 to 4 MB). The naive requests loop is
measured alike, for scale. Then the same runs under py-spy (every thread, the samples of the one
holding the GIL), summarised by category and by the innermost siro_data function on the stack
and what it called.

Usage: ``python benchmarks/profile_cpu.py`` (needs ``py-spy``: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    FAST,
    MB,
    TOKEN,
    EmulatorProcess,
    base_recordings,
    clear,
    command_line,
    load,
    machine,
    run_child,
    table,
)

COMPARE = Path(__file__).resolve().parent / "compare.py"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):\d+\)$")
RATE = 250  # py-spy samples per second per thread
#: py-spy on the PATH, else beside this Python (a virtual environment's bin/)
PY_SPY = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def job_for(emulator: EmulatorProcess, scratch: Path, label: str) -> Path:
    job = {
        "ids": emulator.ids,
        "api_url": emulator.api_url,
        "token": TOKEN,
        "out_dir": str(scratch / label),
        "manifest": str(scratch / f"{label}.parquet"),
        "requests_per_minute": 10**9,  # no pacing: the emulator enforces no limit here
        "progress": False,
    }
    path = scratch / f"{label}.json"
    path.write_text(json.dumps(job))
    return path


def measure(kind: str, n: int, contender: str, scratch: Path) -> dict[str, Any]:
    with EmulatorProcess({"kind": kind, "n": n}, FAST) as emulator:
        label = f"{contender}-{kind}"
        result = run_child(
            [str(COMPARE), "--child", contender, "--job", str(job_for(emulator, scratch, label))]
        )
        stats = emulator.stats()
    clear(scratch / label)
    return {
        "kind": kind,
        "contender": contender,
        "n": n,
        "bytes": sum(emulator.sizes),
        **result,
        "emulator": stats,
    }


def profile(
    kind: str, n: int, scratch: Path
) -> tuple[collections.Counter, collections.Counter, int, float]:
    """py-spy samples of fetch_all, grouped (siro_data function → callee) and by category.

    Only samples of the thread holding the GIL count (``--gil``): they add up to the CPU
    time of Python code. The rest of the measured CPU (the fourth value, in seconds) was
    spent with the GIL released: hashing large chunks, socket and file I/O, the kernel.
    """
    raw = scratch / f"profile-{kind}.txt"
    with EmulatorProcess({"kind": kind, "n": n}, FAST) as emulator:
        job = job_for(emulator, scratch, f"profiled-{kind}")
        done = subprocess.run(
            [
                PY_SPY,
                "record",
                "--rate",
                str(RATE),
                "--gil",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--",
                sys.executable,
                str(COMPARE),
                "--child",
                "siro",
                "--job",
                str(job),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    result = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{"))
    measured = json.loads(result)["cpu"]  # py-spy writes its own lines there too
    clear(scratch / f"profiled-{kind}")
    places: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_FRAME.match(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if frame]
        if not frames:
            continue
        if any("importlib" in f["file"] for f in frames):
            continue  # imports happen before the clock starts in the measured runs
        samples = int(count)
        total += samples
        places[_place(frames)] += samples
        categories[_category(frames)] += samples
    return places, categories, total, measured


def _module(file: str) -> str:
    """py-spy names files relative to sys.path: a package's first component, else the stem."""
    name = file.replace("\\", "/").removesuffix(".py")
    if name.startswith("siro_data/"):
        return "siro_data." + name.split("/", 1)[1].replace("/", ".")
    return name.split("/", 1)[0]


def _innermost(frames: list[re.Match]) -> int | None:
    """Index of the innermost siro_data frame of a stack (root first), if any."""
    for index in range(len(frames) - 1, -1, -1):
        if frames[index]["file"].startswith("siro_data/"):
            return index
    return None


def _place(frames: list[re.Match]) -> str:
    """The innermost siro_data function and the module it was calling."""
    index = _innermost(frames)
    if index is None:
        return f"(no siro_data frame) {_module(frames[-1]['file'])}.{frames[-1]['function']}"
    own = f"{_module(frames[index]['file'])}.{frames[index]['function']}"
    callee = _module(frames[index + 1]["file"]) if index + 1 < len(frames) else "itself, or C"
    return f"{own} → {callee}"


def _category(frames: list[re.Match]) -> str:
    """What the sample was doing, in a dozen plain categories."""
    index = _innermost(frames)
    if index is None:
        return f"outside siro_data: {_module(frames[-1]['file'])}"
    module, function = _module(frames[index]["file"]), frames[index]["function"]
    callee = _module(frames[index + 1]["file"]) if index + 1 < len(frames) else ""
    if callee in ("filelock", "portalocker"):
        return "file locks (per recording, manifest)"
    if function == "_Partial._digest":
        return "hashing every byte (SHA-256 and MD5)"
    if function == "_body":
        return "reading the body (urllib3 read1)"
    if function == "_Partial.append":
        return "writing the file"
    if module == "siro_data.audio":
        return "checking the audio (PyAV / soundfile)"
    if module in ("siro_data.manifest", "siro_data.disk", "siro_data.journal"):
        return "manifest: journal lines, final fold and frame"
    if module in ("siro_data.client", "siro_data.ratelimit"):
        return "API call (requests/urllib3, JSON)"
    if module in ("siro_data.download", "siro_data.sessions"):
        return "storage request (requests/urllib3, headers)"
    if callee in ("pandas", "numpy"):
        return "pandas (timestamps, frames)"
    return f"other in {module}"


def components(scratch: Path, repeat: int = 300) -> list[list[str]]:
    """CPU of each step of a recording's life, timed alone in this one thread."""
    import hashlib

    from siro_data import SiroClient, audio, download
    from siro_data.archive import Archive
    from siro_data.locks import acquire
    from siro_data.sessions import make_session

    def cpu_per_call(step: Any, calls: int = repeat) -> float:
        started = time.process_time()
        for index in range(calls):
            step(index)
        return (time.process_time() - started) / calls * 1e6

    rows = []
    with EmulatorProcess({"kind": "tiny", "n": repeat}, FAST) as emulator:
        ids = emulator.ids
        with SiroClient(TOKEN, emulator.api_url, requests_per_minute=10**9) as client:
            client.sign(ids[0])  # a kept-alive connection, as a worker has
            rows.append(
                ["sign one id (SiroClient.sign)", cpu_per_call(lambda i: client.sign(ids[i]))]
            )
            urls = [client.sign(rec_id).url for rec_id in ids]
        session = make_session()
        download(urls[0], scratch / "warm.wav", session=session)
        rows.append(
            [
                "download a 4 kB file (download, kept-alive session)",
                cpu_per_call(lambda i: download(urls[i], scratch / f"c{i}.wav", session=session)),
            ]
        )
        session.close()
    wav = scratch / "c0.wav"
    rows.append(["check a 4 kB WAV (audio.duration)", cpu_per_call(lambda i: audio.duration(wav))])
    m4a = base_recordings()[4]
    rows.append(
        [
            f"check a {m4a.stat().st_size / MB:.1f} MB .m4a (audio.duration)",
            cpu_per_call(lambda i: audio.duration(m4a)),
        ]
    )
    archive = Archive(scratch, scratch / "manifest.parquet")

    def lock(index: int) -> None:
        taken = archive.audio.lock(str(index))
        acquire(taken, 0.2, lambda: None)
        taken.release()

    rows.append(["per-recording lock: acquire and release (core)", cpu_per_call(lock)])
    row = {"recording_id": "x", "path": str(wav), "size_bytes": 4044, "duration": 0.25}
    journal = archive.manifest
    rows.append(["journal line (manifest.append)", cpu_per_call(lambda i: journal.append([row]))])
    block = os.urandom(MB)

    def digest(index: int) -> None:
        hashlib.sha256(block).digest()
        hashlib.md5(block, usedforsecurity=False).digest()

    rows.append(["SHA-256 and MD5 of 1 MB", cpu_per_call(digest, 50)])
    return [[name, f"{micro / 1000:.2f}"] for name, micro in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", type=int, default=1000, help="tiny recordings (4 kB WAV)")
    parser.add_argument("--realistic", type=int, default=150, help="realistic .m4a recordings")
    parser.add_argument("--top", type=int, default=14, help="lines of the profile summary")
    args = parser.parse_args()
    if not PY_SPY:
        sys.exit("py-spy is not installed (pip install -e '.[bench]')")
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print("world:   loopback, no latency, no bandwidth cap, no rate limit (pacing lifted)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="siro-bench-") as folder:
        scratch = Path(folder)
        runs = [
            measure(kind, n, contender, scratch)
            for kind, n in (("tiny", args.tiny), ("realistic", args.realistic))
            for contender in ("siro", "naive")
        ]
        for r in runs:
            rows.append(
                [
                    "siro_data fetch_all" if r["contender"] == "siro" else "naive loop",
                    r["kind"],
                    r["n"],
                    f"{r['bytes'] / r['n'] / MB:.3f}",
                    f"{r['wall']:.1f}",
                    f"{r['cpu']:.2f}",
                    f"{1000 * r['cpu'] / r['n']:.1f}",
                    f"{1000 * r['system'] / r['n']:.1f}",
                    f"{1000 * r['cpu'] / (r['bytes'] / MB):.2f}",
                    f"{1000 * r['emulator']['cpu'] / r['n']:.1f}",
                ]
            )
        print()
        print(
            table(
                [
                    "client",
                    "data",
                    "ids",
                    "MB/rec",
                    "wall s",
                    "CPU s",
                    "CPU ms/rec",
                    "of which kernel",
                    "CPU ms/MB",
                    "emulator CPU ms/rec",
                ],
                rows,
            )
        )
        print("\nEach step alone (one thread, CPU time per call):")
        print(table(["step", "CPU ms"], components(scratch)))
        siro = {r["kind"]: r for r in runs if r["contender"] == "siro"}
        tiny, real = siro["tiny"], siro["realistic"]
        per_byte = (real["cpu"] / real["n"] - tiny["cpu"] / tiny["n"]) / (
            real["bytes"] / real["n"] - tiny["bytes"] / tiny["n"]
        )
        fixed = tiny["cpu"] / tiny["n"] - per_byte * tiny["bytes"] / tiny["n"]
        print(
            f"\nsiro_data: about {1000 * fixed:.1f} ms per recording plus "
            f"{1000 * per_byte * MB:.2f} ms per MB received"
        )
        for kind, n in (("tiny", args.tiny), ("realistic", args.realistic)):
            places, categories, total, measured = profile(kind, n, scratch)
            ms = 1000 / RATE / n  # CPU ms per recording that one sample stands for
            held, cpu = total * ms, 1000 * measured / n
            print(
                f"\npy-spy --gil, fetch_all over {n} {kind} recordings: {total} samples at"
                f" {RATE} Hz; measured CPU {cpu:.1f} ms/rec (profiler included), of which"
                f" Python holding the GIL {held:.1f} and with the GIL released"
                f" (hashing, socket and file I/O, kernel) {max(cpu - held, 0):.1f}"
            )
            print(
                table(
                    ["Python code holding the GIL, all threads", "share", "ms/rec"],
                    [
                        [name, f"{100 * count / total:.0f}%", f"{count * ms:.2f}"]
                        for name, count in categories.most_common()
                    ],
                )
            )
            print()
            print(
                table(
                    ["innermost siro_data function → what it was calling", "share", "ms/rec"],
                    [
                        [name, f"{100 * count / total:.0f}%", f"{count * ms:.2f}"]
                        for name, count in places.most_common(args.top)
                    ],
                )
            )

    print(f"\nat the end: {load()}")


if __name__ == "__main__":
    main()
