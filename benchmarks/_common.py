"""What the benchmarks share: the world they imitate, the emulator in a process of its own,
recordings of realistic size, the lower bound, and measurements of a process.

Not a test: every script here runs contenders side by side in one invocation and prints
ratios, so that a noisy machine slows them all alike.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import random
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MB = 1_000_000
TOKEN = "bench-token-0123456789"


@dataclass(frozen=True)
class World:
    """The network and the API as the emulator imitates them."""

    api_latency: float = 0.100
    """Seconds before every API answer."""
    ttfb: float = 0.050
    """Seconds before the storage sends its headers."""
    bandwidth: float | None = 4 * MB
    """Bytes per second per storage connection."""
    total_bandwidth: float | None = 40 * MB
    """Bytes per second of all storage connections together (the client's downlink)."""
    rate_limit: int | None = 100
    """API requests per token per `rate_window` seconds; 429 beyond."""
    rate_window: float = 6.0

    @property
    def rate(self) -> float:
        """API requests per second allowed on average."""
        return math.inf if self.rate_limit is None else self.rate_limit / self.rate_window

    def faults(self) -> dict[str, Any]:
        return {
            "api_latency": self.api_latency,
            "storage_ttfb": self.ttfb,
            "bandwidth": self.bandwidth,
            "total_bandwidth": self.total_bandwidth,
            "rate_limit": self.rate_limit,
            "rate_window": self.rate_window,
        }

    def describe(self) -> str:
        def rate(value: float | None) -> str:
            return "unlimited" if not value else f"{value / MB:g} MB/s"

        limit = (
            "none"
            if self.rate_limit is None
            else f"{self.rate_limit} per {self.rate_window:g} s"
            f" (= {self.rate * 60:g}/min; 429 without Retry-After beyond)"
        )
        return (
            f"API latency {self.api_latency * 1000:g} ms, storage TTFB {self.ttfb * 1000:g} ms, "
            f"per-connection bandwidth {rate(self.bandwidth)}, "
            f"shared downlink {rate(self.total_bandwidth)}, rate limit {limit}"
        )


FAST = World(api_latency=0.0, ttfb=0.0, bandwidth=None, total_bandwidth=None, rate_limit=None)
"""Loopback with nothing in the way: what is left is the client's own cost."""


@dataclass(frozen=True)
class Bound:
    """The lower bound of a run's wall time: max(rate, bandwidth, latency chain ÷ concurrency)."""

    rate: float
    bandwidth: float
    chain: float

    @property
    def seconds(self) -> float:
        return max(self.rate, self.bandwidth, self.chain)

    def describe(self) -> str:
        return (
            f"max(ids ÷ rate {self.rate:.1f} s, bytes ÷ downlink {self.bandwidth:.1f} s, "
            f"latency chain ÷ concurrency {self.chain:.1f} s) = {self.seconds:.1f} s"
        )


def lower_bound(world: World, sizes: Sequence[int], concurrency: float) -> Bound:
    """No client can do better, at this concurrency, in this world.

    A recording's latency chain is the API's latency, the storage's time to first byte
    and its bytes at the per-connection bandwidth (loopback adds no round trip).
    """
    per_connection = world.bandwidth or math.inf
    chain = sum(world.api_latency + world.ttfb + size / per_connection for size in sizes)
    return Bound(
        rate=len(sizes) / world.rate,
        bandwidth=sum(sizes) / world.total_bandwidth if world.total_bandwidth else 0.0,
        chain=chain / concurrency,
    )


# --- recordings ------------------------------------------------------------------------------

#: Call lengths in minutes, one realistic .m4a each (16 kHz mono AAC at 32 kbit/s, ~240 kB
#: a minute): the ids cycle through them, so sizes spread from about 1 MB to 4 MB.
BASE_MINUTES = (4.0, 5.5, 7.0, 8.5, 10.0, 11.5, 13.0, 16.0)


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "siro-data-bench"


def base_recordings(minutes: Sequence[float] = BASE_MINUTES) -> list[Path]:
    """The .m4a files the realistic recordings are made of, encoded once and cached."""
    from concurrent.futures import ThreadPoolExecutor

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)

    def build(length: float) -> Path:
        path = folder / f"speech-{length:g}min.m4a"
        if not path.exists():
            import numpy as np

            from siro_data.emulator.samples import encode, speech_like

            phrase = speech_like(60.0, 16_000, seed=int(length * 10))  # a minute, repeated
            samples = np.tile(phrase, math.ceil(length))[: round(length * 60 * 16_000)]
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(encode(samples, 16_000, "m4a"))
            temporary.replace(path)
        return path

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return list(pool.map(build, minutes))


def recording_ids(n: int, seed: int = 0) -> list[str]:
    """`n` distinct ids shaped like Siro's (20 letters and digits), the same on every run."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    ids: dict[str, None] = {}
    while len(ids) < n:
        ids["".join(rng.choices(alphabet, k=20))] = None
    return list(ids)


# --- the emulator in its own process ---------------------------------------------------------


@dataclass
class EmulatorProcess:
    """``_serve.py`` in a child process, so that its CPU is not counted against the client.

    ``spec`` says what it serves: ``{"kind": "realistic", "n": 300}``, ``{"kind": "tiny",
    "n": 100000}``, ``{"kind": "big", "size": 2**31}`` or ``{"kind": "none"}``.
    """

    spec: dict[str, Any]
    world: World
    info: dict[str, Any] = field(default_factory=dict)
    _process: subprocess.Popen | None = None

    def __enter__(self) -> EmulatorProcess:
        config = {"spec": self.spec, "faults": self.world.faults(), "token": TOKEN}
        self._process = subprocess.Popen(
            [sys.executable, str(HERE / "_serve.py"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process did not start")
        self.info = json.loads(line)
        return self

    @property
    def api_url(self) -> str:
        return self.info["api_url"]

    @property
    def ids(self) -> list[str]:
        return self.info["ids"]

    @property
    def sizes(self) -> list[int]:
        return self.info["sizes"]

    def stats(self) -> dict[str, Any]:
        """The emulator's counters: requests, 429s, connections opened, bytes, its CPU."""
        return self.ask("stats")

    def ask(self, command: str) -> dict[str, Any]:
        """Send one command line to ``_serve.py``; its one-line JSON answer."""
        assert self._process is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


# --- measuring a process ---------------------------------------------------------------------


def usage() -> dict[str, float]:
    """CPU seconds so far (this process and its waited-for children), and peak RSS in bytes.

    The peak is the kernel's high-water mark of this program's own memory (``VmHWM``), not
    ``ru_maxrss``: Linux carries a parent's peak over into a child's ``ru_maxrss`` across
    fork and exec, so a child of a big parent would report the parent's size.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        "system": own.ru_stime + children.ru_stime,
        "peak_rss": peak_rss(),
    }


def reset_peak_rss() -> None:
    """Set this process's high-water mark back to its resident set now (``clear_refs`` 5).

    What a measurement reports as its peak is then its own, not that of whatever ran
    before it in the process (imports, reading its job).
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(call: Callable[[], Any]) -> dict[str, Any]:
    """Run ``call`` and measure it: wall and CPU seconds, RSS just before, peak RSS during.

    The peak is reset just before the call, so it is the call's own. Returns those figures
    and ``result``, what ``call`` returned.
    """
    gc.collect()
    rss_before = current_rss()
    reset_peak_rss()
    before = usage()
    started = time.perf_counter()
    result = call()
    wall = time.perf_counter() - started
    after = usage()
    return {
        "wall": wall,
        "cpu": after["cpu"] - before["cpu"],
        "system": after["system"] - before["system"],
        "rss_before": rss_before,
        "peak_rss": max(after["peak_rss"], rss_before),
        "result": result,
    }


def peak_rss(pid: int | str = "self") -> int:
    """High-water mark of a process's resident set, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def current_rss() -> int:
    """Resident set size now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(
    argv: Sequence[str], timeout: float = 3600, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run a measured child; its last stdout line is its JSON result.

    ``env``: the child's whole environment (default: this process's).
    """
    log = Path(tempfile.gettempdir()) / f"siro-bench-child-{os.getpid()}.log"
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
        )
    if done.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise RuntimeError(f"child {argv[:3]} failed with status {done.returncode}")
    log.unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def folder_bytes(folder: Path, suffixes: Sequence[str] = (".m4a", ".wav")) -> tuple[int, int]:
    """(files, bytes) of finished audio files under `folder`."""
    count = total = 0
    for entry in os.scandir(folder):
        if entry.is_file() and entry.name.endswith(tuple(suffixes)):
            count += 1
            total += entry.stat().st_size
    return count, total


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# --- describing the run ----------------------------------------------------------------------


def machine() -> str:
    """CPU, cores, memory, OS, Python and library versions (no host names, no paths)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import requests
    import urllib3

    import siro_data

    aria2 = shutil.which("aria2c")
    aria2_version = (
        subprocess.run([aria2, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        if aria2
        else "aria2c not installed"
    )
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM ({load()}); {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; siro_data "
        f"{siro_data.__version__} at {git_commit()}; requests {requests.__version__}, urllib3 "
        f"{urllib3.__version__}; {aria2_version}"
    )


def load() -> str:
    """The machine's load average: others' work slows every contender alike, but it shows."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} over 1 min, {five:.1f} over 5"


def git(*args: str) -> str:
    """What a git command prints about this checkout (CalledProcessError if it fails)."""
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def git_commit() -> str:
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "siro_data")
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {commit}" + (" with uncommitted changes to siro_data" if dirty else "")


def command_line() -> str:
    return " ".join(["python", *[arg if " " not in arg else repr(arg) for arg in sys.argv]])


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |"
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def write_json(data: Any) -> None:
    """The result line a measured child hands to its parent."""
    print(json.dumps(data), flush=True)


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start
