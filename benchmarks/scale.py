"""siro_data over an archive that grows for years, beside the code before the growing-archive
issue, in one run.

1. A manifest of N complete rows whose files are present (written directly: N ok rows and N
   empty files, as siro_data names them), for each N of ``--sizes``: the re-run over all N
   ids (it must ask nothing: the emulator counts), and ``--new-ids`` new ids fetched into that
   folder, less the same into an empty folder.
2. ``fetch_all`` over ``--fetch`` new tiny recordings on loopback, no latency, pacing lifted:
   its peak memory.
3. A daily sync over a growing emulated archive: ``--past-days`` days of ``--per-day``
   recordings, fetched and listed by a first sync, then ``--days`` days of ``--per-day`` new
   ones (``--late`` created before the last watermark, ``--not-ready`` not ready until the next
   day): per day, list calls, new, retried, seconds per new recording; beside a pipeline
   without sync that lists the whole history again each day and runs ``fetch_all`` on it.

Contenders: "now", the library of this checkout, and "before", the library at ``--baseline``
(its ``siro_data`` extracted with ``git archive``, on the children's ``PYTHONPATH``; sections
1 and 2; ``sync`` is new). Each measurement runs in a fresh child process that imports
everything first and reports its wall and CPU seconds, its RSS just before the call and the
call's own peak RSS (``_common.measure``); the emulator, in a process of its own, counts the
requests. MB here are 2**20 bytes, as in every script of this folder.

Usage: ``python benchmarks/scale.py`` (about 30 min); for a shorter run
``--sizes 100000 --fetch 20000 --days 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    FAST,
    REPO,
    TOKEN,
    EmulatorProcess,
    clear,
    command_line,
    folder_bytes,
    git,
    git_commit,
    load,
    machine,
    measure,
    recording_ids,
    run_child,
    table,
    write_json,
)

HERE = Path(__file__).resolve()
MiB = 2**20
#: Requests per minute asked of the client: no pacing (the emulator enforces no limit here).
UNPACED = 10**9
#: Siro's rate limit per token: what list and sign calls cost in time at the real API.
CALLS_PER_MINUTE = 1000
#: Seeds of the ids: the archive's, and the new ones (the emulator's default).
ARCHIVE_SEED, NEW_SEED = 1, 0
#: The growing archive's first day.
START = datetime(2025, 1, 1, tzinfo=timezone.utc)

#: The growing-archive issue's targets, by (figure, N); None: any N.
TARGETS: dict[tuple[str, int | None], float] = {
    ("rerun_s", 300_000): 6,
    ("rerun_mb", 300_000): 200,
    ("rerun_s", 1_000_000): 20,
    ("rerun_mb", 1_000_000): 600,
    ("rerun_requests", None): 0,
    ("new_s", None): 2,
    ("new_mb", None): 50,
    ("fetch_mb", 100_000): 300,
}
#: What the issue measured before it (commit 4976b5f), by (figure, N).
ISSUE_BEFORE: dict[tuple[str, int], float] = {
    ("rerun_s", 100_000): 5.0,
    ("rerun_mb", 100_000): 253,
    ("rerun_s", 300_000): 14.9,
    ("rerun_mb", 300_000): 530,
    ("new_s", 300_000): 1.8,
    ("new_mb", 300_000): 250,
    ("fetch_mb", 100_000): 536,
}
FIGURES = {
    "rerun_s": "re-run over all N ids: wall s",
    "rerun_mb": "re-run: peak RSS growth MB",
    "rerun_requests": "re-run: requests the emulator saw",
    "new_s": "{k} new ids: wall s over an empty folder",
    "new_mb": "{k} new ids: peak RSS growth MB over an empty folder",
    "fetch_mb": "fetch N new ids: peak RSS MB",
}


# --- the contenders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """A version of the library: the ``siro_data`` folder its children import, and how."""

    label: str
    package: Path
    pythonpath: str | None = None

    def env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        return env


def library_at(revision: str, folder: Path) -> Contender:
    """The library as it was at ``revision``: ``git archive REV siro_data | tar -x``."""
    short = git("rev-parse", "--short", revision)
    folder.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", revision, "siro_data"], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, check=True)
    if archive.wait():
        raise RuntimeError(f"git archive {revision} failed")
    return Contender(f"before ({short})", folder / "siro_data", str(folder))


# --- what a child measures --------------------------------------------------------------------


def fetch(job: dict[str, Any], ids: Any) -> dict[str, Any]:
    import siro_data

    manifest = siro_data.fetch_all(
        ids,
        out_dir=job["out_dir"],
        manifest_path=job["manifest"],
        token=TOKEN,
        api_url=job["api_url"],
        progress=False,
        requests_per_minute=UNPACED,
    )
    return {"ok": int(manifest["error"].isna().sum()), "rows": len(manifest)}


def sync(job: dict[str, Any], ids: Any) -> dict[str, Any]:
    import siro_data

    result = siro_data.sync(
        job["manifest"],
        job["out_dir"],
        since=job.get("since"),
        token=TOKEN,
        api_url=job["api_url"],
        progress=False,
        requests_per_minute=UNPACED,
    )
    return {
        "listed": result.listed,
        "calls_said": result.list_calls,
        "new": result.new,
        "retried": result.retried,
        "ok": int(result.recordings["error"].isna().sum()),
        "rows": len(result.recordings),
    }


def relist(job: dict[str, Any], ids: Any) -> dict[str, Any]:
    """A pipeline without sync: list the whole history, then fetch_all on what it lists."""
    import siro_data

    started = time.perf_counter()
    listed = siro_data.list_recordings(
        since=job["since"], token=TOKEN, api_url=job["api_url"], requests_per_minute=UNPACED
    )
    listing = time.perf_counter() - started
    return {"listed": len(listed), "list_wall": listing, **fetch(job, listed)}


TASKS: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {
    "fetch": fetch,
    "sync": sync,
    "relist": relist,
}


def child(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    # What every contender imports, loaded before the clock starts.
    import pandas  # noqa: F401
    import pyarrow.parquet as pq

    import siro_data

    found = Path(siro_data.__file__).resolve().parent
    if found != Path(job["package"]).resolve():
        sys.exit(f"siro_data was imported from {found}, not {job['package']}")
    ids = job.get("ids")
    if ids is None and job.get("ids_from"):  # the ids of a manifest, in its order
        ids = pq.read_table(job["ids_from"], columns=["recording_id"]).column(0).to_pylist()
    measured = measure(lambda: TASKS[job["task"]](job, ids))
    measured.update(measured.pop("result"))
    write_json(measured)


def run(
    contender: Contender,
    task: str,
    job: dict[str, Any],
    emulator: EmulatorProcess,
    scratch: Path,
) -> dict[str, Any]:
    """One measurement in a fresh child: its figures and the requests the emulator saw."""
    job = {**job, "task": task, "package": str(contender.package), "api_url": emulator.api_url}
    job_path = scratch / "job.json"
    job_path.write_text(json.dumps(job))
    before = emulator.stats()
    result = run_child(
        [str(HERE), "--child", "--job", str(job_path)], timeout=6 * 3600, env=contender.env()
    )
    after = emulator.stats()

    def seen(counter: str) -> int:
        return after[counter] - before[counter]

    result["requests"] = seen("api_requests") + seen("storage_requests")
    result["list_calls"] = seen("listing_requests")
    result["sign_calls"] = seen("api_requests") - seen("listing_requests")
    result["growth"] = result["peak_rss"] - result["rss_before"]
    return result


# --- an archive of N complete rows, written directly ------------------------------------------


def build_archive(folder: Path, ids: list[str], extension: str = "m4a") -> Path:
    """A manifest of one complete row per id and the files it names (empty): its path.

    The rows say what siro_data would: paths in ``folder/audio`` named as it names them,
    sizes (0: the files are empty), sha256 hex, durations of 4 to 16 minutes, ``fetched_at``
    spread over the past year. Written as the library writes a manifest (its row groups, pages
    and dictionaries).
    """
    import hashlib

    import numpy as np
    import pyarrow as pa

    from siro_data.naming import file_stem
    from siro_data.rows import REPEATING, SCHEMA, conform
    from siro_data.store import write

    audio = folder / "audio"
    audio.mkdir(parents=True)
    n = len(ids)
    paths = [f"{audio}/{file_stem(rec_id)}.{extension}" for rec_id in ids]
    step = np.timedelta64(365 * 86_400_000_000_000 // max(n, 1), "ns")
    fetched = np.datetime64("2024-06-01T00:00:00", "ns") + np.arange(n) * step
    columns = {
        "recording_id": ids,
        "path": paths,
        "expiration": fetched + np.timedelta64(15, "m"),
        "duration": np.random.default_rng(0).uniform(240, 960, n).round(3),
        "size_bytes": np.zeros(n, dtype=np.int64),
        "sha256": [hashlib.sha256(rec_id.encode()).hexdigest() for rec_id in ids],
        "content_type": ["audio/mp4" if extension == "m4a" else f"audio/{extension}"] * n,
        "fetched_at": fetched,
        "sample_rate": np.full(n, 16_000),
        "channels": np.ones(n, dtype=np.int64),
        "codec": ["aac" if extension == "m4a" else "pcm_s16le"] * n,
    }
    arrays = [
        pa.array(columns[field.name], field.type) if field.name in columns else pa.nulls(n)
        for field in SCHEMA
    ]
    manifest = folder / "manifest.parquet"
    rows = conform(pa.Table.from_arrays(arrays, schema=SCHEMA))  # derived columns
    write(rows, manifest, REPEATING)
    for path in paths:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.sync()  # written back now, not during a measured run (a 1 s stall at a million files)
    return manifest


def own_copy(manifest: Path, folder: Path) -> Path:
    """A contender's copy of a manifest, in a folder of its own (its lock and journal too)."""
    folder.mkdir(parents=True)
    return Path(shutil.copyfile(manifest, folder / manifest.name))


def forget(audio: Path, ids: list[str]) -> None:
    """Remove what fetching ``ids`` into ``audio`` left: their files (a lock file goes with
    its release)."""
    from siro_data.naming import file_stem

    stems = tuple(f"{file_stem(rec_id)}." for rec_id in ids)
    with os.scandir(audio) as entries:  # one pass over a folder of up to a million files
        for entry in entries:
            if entry.name.startswith(stems):
                os.unlink(entry.path)


# --- 1. re-run and new ids over N complete rows -----------------------------------------------


def archive_runs(
    contenders: list[Contender], sizes: list[int], new: EmulatorProcess, scratch: Path
) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Per (contender, N, case): "rerun", "new" (into the N rows) and "empty"."""
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    for n in sizes:
        folder = scratch / f"archive-{n}"
        started = time.perf_counter()
        manifest = build_archive(folder, recording_ids(n, ARCHIVE_SEED))
        print(
            f"\n  {n:,} complete rows and files written in {time.perf_counter() - started:.0f} s"
            f" (manifest {manifest.stat().st_size / MiB:.0f} MB)",
            flush=True,
        )
        audio = folder / "audio"
        for contender in contenders:
            runs = folder / "runs"
            copy = own_copy(manifest, runs / "rerun")
            job = {"ids_from": str(copy), "out_dir": str(audio), "manifest": str(copy)}
            result = results[contender.label, n, "rerun"] = run(
                contender, "fetch", job, new, scratch
            )
            check(result, n, f"{contender.label}: re-run over {n:,}")
            clear(runs)
            report(contender, f"re-run over {n:,}", result)
        for contender in contenders:
            empty = scratch / "empty"
            job = {"ids": new.ids, "out_dir": str(empty / "audio")}
            job["manifest"] = str(empty / "manifest.parquet")
            result = results[contender.label, n, "empty"] = run(
                contender, "fetch", job, new, scratch
            )
            check(result, len(new.ids), f"{contender.label}: new ids into an empty folder")
            clear(empty)
            report(contender, f"{len(new.ids)} new ids into an empty folder", result)
            copy = own_copy(manifest, folder / "runs" / "new")
            job = {"ids": new.ids, "out_dir": str(audio), "manifest": str(copy)}
            result = results[contender.label, n, "new"] = run(contender, "fetch", job, new, scratch)
            check(result, len(new.ids), f"{contender.label}: new ids into {n:,} rows")
            forget(audio, new.ids)
            clear(folder / "runs")
            report(contender, f"{len(new.ids)} new ids into {n:,} rows", result)
        started = time.perf_counter()
        clear(folder)
        os.sync()
        print(f"  (removed in {time.perf_counter() - started:.0f} s)", flush=True)
    return results


def check(result: dict[str, Any], rows: int, what: str) -> None:
    if result["ok"] != rows or result["rows"] != rows:
        raise RuntimeError(f"{what}: {result['ok']} complete rows of {result['rows']}, not {rows}")


def report(contender: Contender, what: str, result: dict[str, Any]) -> None:
    print(
        f"  {contender.label}: {what}: {result['wall']:.2f} s, CPU {result['cpu']:.2f} s, "
        f"peak RSS +{result['growth'] / MiB:.0f} MB, {result['requests']} requests",
        flush=True,
    )


def archive_table(
    contenders: list[Contender],
    sizes: list[int],
    results: dict[tuple[str, int, str], dict[str, Any]],
    new_ids: int,
) -> str:
    names = {
        "rerun": "re-run over all N ids",
        "empty": f"{new_ids} new ids, empty folder",
        "new": f"{new_ids} new ids into the N rows",
    }
    rows = []
    for n in sizes:
        for case, name in names.items():
            for contender in contenders:
                r = results[contender.label, n, case]
                rows.append(
                    [
                        name,
                        f"{n:,}",
                        contender.label,
                        f"{r['wall']:.2f}",
                        f"{r['cpu']:.2f}",
                        f"{r['rss_before'] / MiB:.0f}",
                        f"{r['peak_rss'] / MiB:.0f}",
                        f"{r['growth'] / MiB:.0f}",
                        r["requests"],
                        f"{r['ok']:,}",
                    ]
                )
    headers = ["work", "N", "code", "wall s", "CPU s", "RSS before MB", "peak RSS MB"]
    return table([*headers, "growth MB", "requests", "complete rows"], rows)


# --- 2. fetch many new ids --------------------------------------------------------------------


def fetch_runs(contenders: list[Contender], count: int, scratch: Path) -> dict[str, dict]:
    results = {}
    for contender in contenders:
        folder = scratch / "fetch"
        with EmulatorProcess({"kind": "tiny", "n": count}, FAST) as emulator:
            job = {"ids": emulator.ids, "out_dir": str(folder / "audio")}
            job["manifest"] = str(folder / "manifest.parquet")
            print(f"  {contender.label}: {count:,} ids ...", end="", flush=True)
            result = results[contender.label] = run(contender, "fetch", job, emulator, scratch)
            result["files"] = folder_bytes(folder / "audio")[0]
            result["emulator_cpu"] = emulator.stats()["cpu"]
        print(f" {result['wall']:.0f} s", flush=True)
        clear(folder)
    return results


def fetch_table(results: dict[str, dict], count: int) -> str:
    rows = [
        [
            label,
            f"{count:,}",
            f"{r['wall']:.1f}",
            f"{count / r['wall']:.0f}",
            f"{r['cpu']:.1f}",
            f"{1000 * r['cpu'] / count:.2f}",
            f"{r['rss_before'] / MiB:.0f}",
            f"{r['peak_rss'] / MiB:.0f}",
            f"{r['growth'] / MiB:.0f}",
            f"{r['files']:,}",
        ]
        for label, r in results.items()
    ]
    headers = ["code", "ids", "wall s", "rec/s", "CPU s", "CPU ms/rec", "RSS before MB"]
    return table([*headers, "peak RSS MB", "growth MB", "complete files"], rows)


# --- 3. the daily sync over a growing archive -------------------------------------------------


def daily_sync(
    now: Contender, args: argparse.Namespace, scratch: Path
) -> tuple[dict[str, Any], list[tuple[dict, dict, dict]]]:
    """The first sync over the past, then per day: what was published, sync, no sync."""
    spec = {
        "kind": "growing",
        "per_day": args.per_day,
        "past_days": args.past_days,
        "late": args.late,
        "not_ready": args.not_ready,
        "start": START.isoformat(),
    }
    since = START.isoformat()
    with EmulatorProcess(spec, FAST) as emulator:
        past = emulator.ids
        started = time.perf_counter()
        folders = {name: scratch / name for name in ("sync", "relist")}
        jobs = {}
        for name, folder in folders.items():
            manifest = build_archive(folder, past, extension="wav")
            jobs[name] = {"out_dir": str(folder / "audio"), "manifest": str(manifest)}
        print(
            f"  the past, {len(past):,} recordings, written twice in"
            f" {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        first = checked(run(now, "sync", {**jobs["sync"], "since": since}, emulator, scratch))
        print(f"  first sync: {first['list_calls']} list calls, {first['wall']:.1f} s", flush=True)
        days = []
        for _ in range(args.days):
            published = emulator.ask("day")
            synced = checked(run(now, "sync", jobs["sync"], emulator, scratch))
            relisted = run(now, "relist", {**jobs["relist"], "since": since}, emulator, scratch)
            days.append((published, synced, relisted))
            print(
                f"  day {published['day']}: sync {synced['list_calls']} list calls"
                f" {synced['wall']:.1f} s; without sync {relisted['list_calls']} list calls"
                f" {relisted['wall']:.1f} s",
                flush=True,
            )
    for folder in folders.values():
        clear(folder)
    return first, days


def checked(synced: dict[str, Any]) -> dict[str, Any]:
    """A sync's result, once the list calls it counted are those the emulator saw."""
    if synced["calls_said"] != synced["list_calls"]:
        raise RuntimeError(
            f"sync said {synced['calls_said']} list calls, the emulator saw {synced['list_calls']}"
        )
    return synced


def at_rate_limit(r: dict[str, Any]) -> float:
    """Seconds the run's list and sign calls take at Siro's 1000 calls a minute, at least."""
    return (r["list_calls"] + r["sign_calls"]) * 60 / CALLS_PER_MINUTE


SYNC_HEADERS = ["list calls", "listed", "new", "retried", "sign calls", "wall s", "CPU s"]
RELIST_HEADERS = ["list calls", "listed", "sign calls", "listing s", "wall s", "CPU s"]
COST_HEADERS = ["ms per new", "growth MB", "s at 1000/min"]


def sync_tables(first: dict[str, Any], days: list[tuple[dict, dict, dict]]) -> list[str]:
    """Per day: the sync's figures, those of the pipeline without sync, their ratios."""

    def costs(r: dict[str, Any], count: int | None) -> list[str]:
        per_new = "-" if not count else f"{1000 * r['wall'] / count:.1f}"
        return [per_new, f"{r['growth'] / MiB:.0f}", f"{at_rate_limit(r):.0f}"]

    def synced(day: str, arrived: str, s: dict[str, Any], count: int | None) -> list[Any]:
        figures = [s["list_calls"], s["listed"], s["new"], s["retried"], s["sign_calls"]]
        return [day, arrived, *(f"{x:,}" for x in figures), f"{s['wall']:.2f}"]

    synced_rows = [[*synced("first", "the past", first, None), f"{first['cpu']:.2f}"]]
    synced_rows[0] += costs(first, None)
    relisted_rows, ratio_rows = [], []
    for published, s, r in days:
        count, day = published["published"], str(published["day"])
        arrived = f"{count:,} ({published['late']} late, {published['not_ready']} not ready)"
        synced_rows.append([*synced(day, arrived, s, count), f"{s['cpu']:.2f}", *costs(s, count)])
        figures = [f"{r[key]:,}" for key in ("list_calls", "listed", "sign_calls")]
        timing = [f"{r[key]:.2f}" for key in ("list_wall", "wall", "cpu")]
        relisted_rows.append([day, *figures, *timing, *costs(r, count)])
        ratio_rows.append([day, *ratios(r, s)])
    totals = [
        {key: sum(day[side][key] for day in days) for key in ("list_calls", "sign_calls", "wall")}
        for side in (2, 1)
    ]
    ratio_rows.append(["all days", *ratios(*totals)])
    return [
        table(["day", "published", *SYNC_HEADERS, *COST_HEADERS], synced_rows),
        table(["day", *RELIST_HEADERS, *COST_HEADERS], relisted_rows),
        table(
            [
                "day",
                "list calls: without ÷ with",
                "wall: without ÷ with",
                "at 1000/min: without ÷ with",
            ],
            ratio_rows,
        ),
    ]


def ratios(without: dict[str, Any], with_sync: dict[str, Any]) -> list[str]:
    return [
        f"{without['list_calls'] / with_sync['list_calls']:.1f}",
        f"{without['wall'] / with_sync['wall']:.2f}",
        f"{at_rate_limit(without) / at_rate_limit(with_sync):.2f}",
    ]


# --- the issue's table ------------------------------------------------------------------------


def figures(
    contender: Contender,
    sizes: list[int],
    archive: dict[tuple[str, int, str], dict[str, Any]],
    fetched: dict[int, dict[str, dict]],
) -> dict[tuple[str, int], float]:
    """One contender's figures of the issue's table, by (figure, N)."""
    found: dict[tuple[str, int], float] = {}
    for n in sizes:
        rerun, new, empty = (
            archive[contender.label, n, case] for case in ("rerun", "new", "empty")
        )
        found["rerun_s", n] = rerun["wall"]
        found["rerun_mb", n] = rerun["growth"] / MiB
        found["rerun_requests", n] = rerun["requests"]
        found["new_s", n] = new["wall"] - empty["wall"]
        found["new_mb", n] = (new["growth"] - empty["growth"]) / MiB
    for count, results in fetched.items():
        found["fetch_mb", count] = results[contender.label]["peak_rss"] / MiB
    return found


def issue_table(
    contenders: list[Contender],
    sizes: list[int],
    archive: dict[tuple[str, int, str], dict[str, Any]],
    fetched: dict[int, dict[str, dict]],
    new_ids: int,
) -> tuple[str, list[str]]:
    """The issue's figures, before and now, with its targets; and the targets missed."""
    before, now = (figures(c, sizes, archive, fetched) for c in contenders)
    keys = [(f, n) for f in FIGURES if f != "fetch_mb" for n in sizes]
    keys += [("fetch_mb", count) for count in fetched]
    rows, missed = [], []
    for key in keys:
        figure, n = key
        name = FIGURES[figure].format(k=new_ids)
        target = TARGETS.get(key, TARGETS.get((figure, None)))
        decimals = 2 if figure.endswith("_s") else 0
        verdict = "-"
        if target is not None:
            verdict = "met" if now[key] <= target else "MISSED"
            if verdict == "MISSED":
                missed.append(f"{name} at {n:,}: {now[key]:.{decimals}f} > {target:g}")
        issue = ISSUE_BEFORE.get(key)
        rows.append(
            [
                name,
                f"{n:,}",
                "-" if issue is None else f"{issue:g}",
                f"{before[key]:.{decimals}f}",
                f"{now[key]:.{decimals}f}",
                f"{now[key] / before[key]:.2f}" if before[key] > 0 and now[key] > 0 else "-",
                "-" if target is None else f"≤ {target:g}",
                verdict,
            ]
        )
    headers = ["figure", "N", "issue's figure before", contenders[0].label, contenders[1].label]
    return table([*headers, "now ÷ before", "target", "verdict"], rows), missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--new-ids", type=int, default=10, help="new ids fetched into N rows")
    parser.add_argument("--fetch", type=int, default=100_000, help="new ids fetched (0: skip)")
    parser.add_argument("--baseline", default="4976b5f", help="the revision measured as before")
    parser.add_argument("--days", type=int, default=7, help="days of daily sync (0: skip)")
    parser.add_argument("--per-day", type=int, default=1000, help="recordings a day")
    parser.add_argument("--past-days", type=int, default=30, help="days fetched before")
    parser.add_argument("--late", type=int, default=10, help="recordings a day that come late")
    parser.add_argument("--not-ready", type=int, default=10, help="not ready on their day")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.job)
        return
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    with tempfile.TemporaryDirectory(prefix="siro-bench-") as folder:
        scratch = Path(folder)
        contenders = [
            library_at(args.baseline, scratch / "baseline"),
            Contender(f"now ({git_commit().split()[1]})", REPO / "siro_data"),
        ]
        print(f"code:    before: siro_data at {args.baseline}; now: {git_commit()}")
        archive: dict[tuple[str, int, str], dict[str, Any]] = {}
        if args.sizes:
            print(
                f"\n1. A manifest of N complete rows, files present: the re-run over all N ids;"
                f" {args.new_ids} new ids into it, less the same into an empty folder"
                " (loopback, no latency, pacing lifted)"
            )
            spec = {"kind": "tiny", "n": args.new_ids, "seed": NEW_SEED}
            with EmulatorProcess(spec, FAST) as new:
                archive = archive_runs(contenders, args.sizes, new, scratch)
            print()
            print(archive_table(contenders, args.sizes, archive, args.new_ids))
            print(f"after section 1: {load()}")
        fetched: dict[int, dict[str, dict]] = {}
        if args.fetch:
            print(
                f"\n2. fetch_all over {args.fetch:,} new tiny recordings (4 kB WAV), loopback,"
                " no latency, pacing lifted, default workers"
            )
            fetched[args.fetch] = fetch_runs(contenders, args.fetch, scratch)
            print(fetch_table(fetched[args.fetch], args.fetch))
            print(f"after section 2: {load()}")
        if args.days:
            print(
                f"\n3. Daily sync over a growing archive: {args.past_days} days of"
                f" {args.per_day:,} recordings, then {args.days} days of {args.per_day:,} new"
                f" ({args.late} created two days before, {args.not_ready} not ready until the"
                " next day); loopback, no latency, pacing lifted; list calls and sign calls as"
                f" counted ('s at 1000/min': what they take at Siro's {CALLS_PER_MINUTE} calls"
                " a minute)"
            )
            first, days = daily_sync(contenders[1], args, scratch)
            synced, relisted, ratios = sync_tables(first, days)
            print("\nsiro_data.sync, once a day:")
            print(synced)
            print(
                "\nwithout sync: list_recordings(since=<the first day>), then fetch_all on it,"
                " once a day:"
            )
            print(relisted)
            print()
            print(ratios)
        if archive or fetched:
            print("\nThe growing-archive issue's table (MB = 2**20 bytes):")
            text, missed = issue_table(contenders, args.sizes, archive, fetched, args.new_ids)
            print(text)
            print("targets missed: " + ("; ".join(missed) if missed else "none"))
    print(f"\nat the end: {load()}")


if __name__ == "__main__":
    main()
