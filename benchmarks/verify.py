"""How fast does ``siro_data.verify`` read an archive, against ``sha256sum --check``?

A few thousand files of random bytes (sizes spread around a recording's, 1.5 GB in all by
default) are written once into a temporary folder, with a manifest of ok rows written by
siro_data's own writer (paths named by ``naming.file_stem``, sizes, sha256) and the same
hashes as a ``SHA256SUMS`` file. Then, in one run, each contender checks every file against
its hash: coreutils' ``sha256sum --check`` (one process, one file at a time) and
``siro_data.verify`` in a child process at 1, 2 and 4 workers (the call alone is timed, not
Python's start); ``openssl dgst -sha256`` over the same files shows how much of the gap is
the SHA-256 code itself (``hashlib`` calls OpenSSL's, which uses the CPU's SHA extensions
where there are some; coreutils' ``sha256sum`` has its own). The page cache cannot be
dropped without root: the files are read once first, and every contender runs twice, in
turn, on a warm cache, so this measures hashing and reading from memory, not the disk. MB
are 1,000,000 bytes.

Usage: ``python benchmarks/verify.py`` (``--files 2000 --gb 1.5 --workers 1 2 4``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MB, command_line, load, machine, measure, run_child, table, write_json

ROUNDS = 2


def make_archive(folder: Path, files: int, total: int) -> int:
    """``files`` files of random bytes, ``total`` bytes in all, their manifest and
    ``SHA256SUMS``; the bytes written."""
    import siro_data
    from siro_data.naming import file_stem
    from siro_data.rows import ok_row, to_frame

    out = folder / "audio"
    out.mkdir()
    rng = random.Random(0)
    weights = [rng.uniform(0.3, 1.7) for _ in range(files)]
    scale = total / sum(weights)
    rows, sums, written = [], [], 0
    for n, weight in enumerate(weights):
        data = os.urandom(int(weight * scale))
        path = out / f"{file_stem(f'rec-{n}')}.m4a"
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        rows.append(
            ok_row(
                f"rec-{n}",
                path=str(path),
                expiration=None,
                duration=None,
                size_bytes=len(data),
                sha256=digest,
                content_type="audio/mp4",
            )
        )
        sums.append(f"{digest}  {path}\n")
        written += len(data)
    siro_data.write_manifest(to_frame(rows), folder / "manifest.parquet")
    (folder / "SHA256SUMS").write_text("".join(sums))
    return written


def warm(folder: Path) -> None:
    """Every file read once, so that each contender finds them in the page cache."""
    for path in (folder / "audio").iterdir():
        with path.open("rb", buffering=0) as source:
            while source.read(8 * 2**20):
                pass


def sha256sum(folder: Path) -> float:
    """Seconds ``sha256sum --check --quiet`` takes over the files."""
    started = time.perf_counter()
    subprocess.run(["sha256sum", "--check", "--quiet", str(folder / "SHA256SUMS")], check=True)
    return time.perf_counter() - started


def openssl(folder: Path) -> float:
    """Seconds ``openssl dgst -sha256`` takes to hash the files (one process; the digests
    printed, not compared: the hashing that ``sha256sum`` and ``hashlib`` do, by OpenSSL's
    code, which ``hashlib`` also calls)."""
    paths = sorted(str(path) for path in (folder / "audio").iterdir())
    started = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", "-r", *paths], check=True, capture_output=True)
    return time.perf_counter() - started


def verify(folder: Path, workers: int) -> float:
    """Seconds ``siro_data.verify`` takes in a child (imports done before the clock starts)."""
    result = run_child(
        [__file__, "--child", str(folder), "--workers", str(workers)], env=dict(os.environ)
    )
    if not result["ok"]:
        raise RuntimeError(f"verify found damage in an archive that has none: {result}")
    return result["wall"]


def child(folder: Path, workers: int) -> None:
    import siro_data

    measured = measure(
        lambda: siro_data.verify(
            folder / "manifest.parquet", folder / "audio", workers=workers, progress=False
        )
    )
    write_json({"wall": measured["wall"], "cpu": measured["cpu"], "ok": measured["result"].ok})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="how many files")
    parser.add_argument("--gb", type=float, default=1.5, help="their total size, in GB")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers[0])
        return
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print(f"at the start: {load()}")
    with tempfile.TemporaryDirectory(prefix="siro-bench-verify-") as name:
        folder = Path(name)
        total = make_archive(folder, args.files, int(args.gb * 1e9))
        warm(folder)
        contenders = {
            "sha256sum --check": lambda: sha256sum(folder),
            "openssl dgst -sha256": lambda: openssl(folder),
        }
        for workers in args.workers:
            contenders[f"siro_data.verify, {workers} workers"] = lambda workers=workers: verify(
                folder, workers
            )
        walls: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(ROUNDS):  # in turn: a change of load slows all of them alike
            for label, run in contenders.items():
                walls[label].append(run())
    print(f"at the end: {load()}")
    print(f"{args.files} files, {total / MB:,.0f} MB, page cache warm, {ROUNDS} runs each")
    baseline = total / min(walls["sha256sum --check"])
    rows = [
        [
            label,
            " / ".join(f"{wall:.2f}" for wall in runs),
            f"{total / min(runs) / MB:,.0f}",
            f"{total / min(runs) / baseline:.2f}",
        ]
        for label, runs in walls.items()
    ]
    print(table(["contender", "wall s (each run)", "MB/s (best)", "ratio to sha256sum"], rows))


if __name__ == "__main__":
    main()
