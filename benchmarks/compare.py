"""siro_data against what else one could run, side by side, in one invocation.

Contenders, each in its own process (its CPU seconds and peak RSS are its own), each against
a fresh emulator in another process (its counters and rate-limit window are the contender's,
its CPU is not counted against the client):

1. naive: an analyst's loop over the DataFrame: ``requests.post`` for the signed URL, then a
   streamed ``requests.get`` into a file. It is sequential, so it runs on the first
   ``--naive-ids`` ids only (its pace does not depend on how many there are).
2. ``siro_data.fetch_all`` at its default settings, and with ``--tuned-workers``.
3. sign then aria2c: every id signed first (``SiroClient``, paced, as many threads as
   aria2c gets connections), then ``aria2c -i urls.txt -j N -x1`` with an ``out=`` per URL.
4. the lower bound: max(ids ÷ rate limit, bytes ÷ downlink, latency chain ÷ concurrency).

Usage: ``python benchmarks/compare.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MB,
    TOKEN,
    Bound,
    EmulatorProcess,
    World,
    clear,
    command_line,
    folder_bytes,
    load,
    lower_bound,
    machine,
    measure,
    peak_rss,
    run_child,
    table,
    write_json,
)

import siro_data

HERE = Path(__file__).resolve()
#: fetch_all's own default, whatever it is at the commit measured.
DEFAULT_WORKERS = inspect.signature(siro_data.fetch_all).parameters["workers"].default


# --- the contenders, each run in a child process -----------------------------------------------


def naive(job: dict[str, Any]) -> int:
    """What an analyst writes by hand (kept as such on purpose)."""
    import pandas as pd
    import requests

    df = pd.DataFrame({"recording_id": job["ids"]})
    api_url, token, out_dir = job["api_url"], job["token"], job["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    for _, row in df.iterrows():
        rec_id = row["recording_id"]
        r = requests.post(
            f"{api_url}/v1/core/recordings/{rec_id}/signedUrl",
            headers={"x-siro-auth-token": token},
        )
        r.raise_for_status()
        url = r.json()["data"]["url"]
        with requests.get(url, stream=True) as audio:
            audio.raise_for_status()
            with open(os.path.join(out_dir, f"{rec_id}.m4a"), "wb") as f:
                for chunk in audio.iter_content(chunk_size=8192):
                    f.write(chunk)
    return len(df)


def siro(job: dict[str, Any]) -> int:
    import siro_data

    settings = {"workers": job["workers"]} if job.get("workers") else {}  # else its default
    if job.get("requests_per_minute"):
        settings["requests_per_minute"] = job["requests_per_minute"]
    if job.get("progress") is not None:
        settings["progress"] = job["progress"]
    manifest = siro_data.fetch_all(
        job["ids"],
        out_dir=job["out_dir"],
        manifest_path=job["manifest"],
        token=job["token"],
        api_url=job["api_url"],
        **settings,
    )
    return int(manifest["error"].isna().sum())


def sign_then_aria2c(job: dict[str, Any]) -> int:
    from siro_data import SiroClient
    from siro_data.naming import file_stem, url_extension

    workers = job["workers"]
    with SiroClient(job["token"], job["api_url"]) as client, ThreadPoolExecutor(workers) as pool:
        signed = list(pool.map(client.sign, job["ids"]))
    url_list = Path(job["out_dir"]).with_suffix(".urls.txt")
    with url_list.open("w") as out:
        for rec_id, url in zip(job["ids"], signed, strict=True):
            out.write(f"{url.url}\n  out={file_stem(rec_id)}.{url_extension(url.url)}\n")
    aria2c = subprocess.Popen(
        [
            "aria2c",
            "-i",
            str(url_list),
            "-j",
            str(workers),
            "-x1",
            "-d",
            job["out_dir"],
            "--file-allocation=none",
            "--auto-file-renaming=false",
            "--allow-overwrite=true",
            "--console-log-level=error",
            "--summary-interval=0",
            "--download-result=hide",
        ]
    )
    while aria2c.poll() is None:  # its peak memory, read while it runs
        HELPER_PEAK_RSS[0] = max(HELPER_PEAK_RSS[0], peak_rss(aria2c.pid))
        time.sleep(0.05)
    if aria2c.returncode:
        raise RuntimeError(f"aria2c failed with status {aria2c.returncode}")
    return len(signed)


#: Peak RSS of a helper process a contender ran beside itself (aria2c), in bytes.
HELPER_PEAK_RSS = [0]

CONTENDERS = {"naive": naive, "siro": siro, "aria2c": sign_then_aria2c}


def child(name: str, job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    # What every contender imports, loaded before the clock starts.
    import pandas  # noqa: F401
    import requests  # noqa: F401

    import siro_data  # noqa: F401

    measured = measure(lambda: CONTENDERS[name](job))
    measured["ok"] = measured.pop("result")
    # aria2c runs beside its (idle) parent: their peaks are added, an upper bound
    measured["peak_rss"] += HELPER_PEAK_RSS[0]
    write_json(measured)


# --- the parent: one contender after another --------------------------------------------------


def run(
    label: str,
    name: str,
    workers: int | None,
    concurrency: int,
    count: int | None,
    spec: dict[str, Any],
    world: World,
    scratch: Path,
) -> dict[str, Any]:
    out_dir = scratch / label.replace(" ", "_")
    with EmulatorProcess(spec, world) as emulator:
        ids = emulator.ids[:count] if count else emulator.ids
        sizes = emulator.sizes[: len(ids)]
        job = {
            "ids": ids,
            "api_url": emulator.api_url,
            "token": TOKEN,
            "out_dir": str(out_dir),
            "manifest": str(scratch / f"{out_dir.name}.parquet"),
            "workers": workers,
        }
        job_path = scratch / f"{out_dir.name}.json"
        job_path.write_text(json.dumps(job))
        print(f"  {label}: {len(ids)} ids ...", end="", flush=True)
        result = run_child([str(HERE), "--child", name, "--job", str(job_path)])
        stats = emulator.stats()
    files, received = folder_bytes(out_dir)
    clear(out_dir)
    bound = lower_bound(world, sizes, concurrency)
    print(f" {result['wall']:.1f} s", flush=True)
    return {
        "label": label,
        "ids": len(ids),
        "concurrency": concurrency,
        "bytes": sum(sizes),
        "complete": files == len(ids) and received == sum(sizes) and result["ok"] == len(ids),
        "bound": bound,
        **result,
        "stats": stats,
    }


def report(results: list[dict[str, Any]], unbounded: Bound) -> str:
    headers = [
        "contender",
        "ids",
        "conc.",
        "wall s",
        "rec/s",
        "MB/s",
        "CPU s",
        "CPU ms/rec",
        "peak RSS MB",
        "429s",
        "conns API/storage",
        "bound s",
        "x bound",
    ]
    rows = []
    for r in results:
        connections = r["stats"]["connections"]
        rows.append(
            [
                r["label"] + ("" if r["complete"] else " (INCOMPLETE)"),
                r["ids"],
                r["concurrency"],
                f"{r['wall']:.1f}",
                f"{r['ids'] / r['wall']:.2f}",
                f"{r['bytes'] / MB / r['wall']:.1f}",
                f"{r['cpu']:.1f}",
                f"{1000 * r['cpu'] / r['ids']:.0f}",
                f"{r['peak_rss'] / 2**20:.0f}",
                r["stats"]["rate_limited"],
                f"{connections.get('api', 0)}/{connections.get('storage', 0)}",
                f"{r['bound'].seconds:.1f}",
                f"{r['wall'] / r['bound'].seconds:.2f}",
            ]
        )
    n, total = results[-1]["ids"], results[-1]["bytes"]
    sizes_known = [r for r in results if r["ids"] == n]
    for concurrency in sorted({r["concurrency"] for r in sizes_known if r["concurrency"] > 1}):
        bound = next(r["bound"] for r in sizes_known if r["concurrency"] == concurrency)
        rows.append(
            _bound_row(f"lower bound at {concurrency}", n, concurrency, total, bound.seconds)
        )
    rows.append(_bound_row("lower bound at any", n, "any", total, unbounded.seconds))
    return table(headers, rows)


def _bound_row(label: str, n: int, concurrency: Any, total: int, seconds: float) -> list[Any]:
    return [
        label,
        n,
        concurrency,
        f"{seconds:.1f}",
        f"{n / seconds:.2f}",
        f"{total / MB / seconds:.1f}",
        *["-"] * 5,
        f"{seconds:.1f}",
        "1.00",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=300, help="recordings (default 300)")
    parser.add_argument("--naive-ids", type=int, default=40, help="ids for the naive loop")
    parser.add_argument("--tuned-workers", type=int, default=32)
    parser.add_argument(
        "--only", nargs="*", help="run only these contenders (labels' first words)", default=None
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.job)
        return
    if not shutil.which("aria2c"):
        sys.exit("aria2c is not installed (apt-get install aria2)")

    world = World()
    spec = {"kind": "realistic", "n": args.ids}
    tuned = args.tuned_workers
    plan = [
        ("naive", "naive", None, 1, args.naive_ids),
        ("siro_data default", "siro", None, DEFAULT_WORKERS, None),
        (f"siro_data workers={tuned}", "siro", tuned, tuned, None),
        (
            f"sign then aria2c -j {DEFAULT_WORKERS}",
            "aria2c",
            DEFAULT_WORKERS,
            DEFAULT_WORKERS,
            None,
        ),
        (f"sign then aria2c -j {tuned}", "aria2c", tuned, tuned, None),
    ]
    if args.only:
        plan = [step for step in plan if step[0].split()[0] in args.only]
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print(f"world:   {world.describe()}")
    with EmulatorProcess(spec, world) as emulator:
        sizes = emulator.sizes
    mean = sum(sizes) / len(sizes) / MB
    print(
        f"data:    {len(sizes)} .m4a recordings, {sum(sizes) / MB:.0f} MB, "
        f"{min(sizes) / MB:.2f} to {max(sizes) / MB:.2f} MB (mean {mean:.2f})"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="siro-bench-") as folder:
        for label, name, workers, concurrency, count in plan:
            results.append(run(label, name, workers, concurrency, count, spec, world, Path(folder)))
    unbounded = lower_bound(world, sizes, float("inf"))
    print()
    print(report(results, unbounded))
    print()
    for r in results:
        print(
            f"bound of {r['label']} ({r['ids']} ids at {r['concurrency']}): {r['bound'].describe()}"
        )
    print(f"bound at any concurrency ({len(sizes)} ids): {unbounded.describe()}")
    print(f"emulator CPU s per contender: {[round(r['stats']['cpu'], 1) for r in results]}")
    summarize(results, unbounded)
    print(f"\nat the end: {load()}")


def summarize(results: list[dict[str, Any]], unbounded: Bound) -> None:
    """The issue's targets, one line each, with the figures they rest on."""
    by_label = {r["label"]: r for r in results}
    default = by_label.get("siro_data default")
    if default is None:
        return

    def speed(r: dict[str, Any]) -> float:
        return r["ids"] / r["wall"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print()
    own = default["wall"] / default["bound"].seconds
    print(
        f"default ÷ bound at its concurrency ({DEFAULT_WORKERS}): {own:.2f}"
        f" (target ≤ 1.15: {verdict(own <= 1.15)})"
    )
    overall = default["wall"] / unbounded.seconds
    print(
        f"default ÷ bound at any concurrency: {overall:.2f}"
        f" (target ≤ 1.15: {verdict(overall <= 1.15)})"
    )
    for r in results:
        if r["label"].startswith("siro_data workers="):
            print(f"{r['label']} ÷ bound at any concurrency: {r['wall'] / unbounded.seconds:.2f}")
    if "naive" in by_label:
        for r in results:
            if r["label"].startswith("siro_data"):
                ratio = speed(r) / speed(by_label["naive"])
                print(
                    f"{r['label']} vs naive: {ratio:.1f}x the recordings per second"
                    f" (target ≥ 10: {verdict(ratio >= 10)})"
                )
    for r in results:
        if r["label"].startswith("sign then aria2c"):
            mine = [
                m
                for m in results
                if m["label"].startswith("siro_data") and m["concurrency"] == r["concurrency"]
            ]
            for m in mine:
                ratio = m["wall"] / r["wall"]
                print(
                    f"{m['label']} ÷ {r['label']}: {ratio:.2f} of its wall time"
                    f" (target ≤ 1: {verdict(ratio <= 1)})"
                )
    limited = default["stats"]["rate_limited"]
    print(f"429s provoked at default settings: {limited} (target 0: {verdict(limited == 0)})")
    for r in results:
        if r["label"].startswith("siro_data"):
            api = r["stats"]["connections"].get("api", 0)
            print(
                f"{r['label']}: {api} API connections for {r['concurrency']} workers and "
                f"{r['stats']['api_requests']} API requests"
                f" (one per worker: {verdict(api <= r['concurrency'])})"
            )


if __name__ == "__main__":
    main()
