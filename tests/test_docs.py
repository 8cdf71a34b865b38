"""The documentation tells the truth: its code runs, its sample outputs are what siro_data
prints for the same numbers, and every flag it names is one the command offers.

Every page (the README, ``docs/``, CONTRIBUTING) is read as a user reads it:

- its ``python`` blocks run in order, in one namespace, in a fresh folder holding ``ids.csv``,
  against the emulator (``SIRO_AUTH_TOKEN`` and ``SIRO_API_URL`` set as a user sets them);
- the ``siro-data ...`` lines of its ``bash`` blocks run there too, and must succeed;
- a block that cannot run here says why, on the line before it: ``<!-- not run: reason -->``;
- a sample output says what printed it, on the line before it: ``<!-- output: fetch -->``
  (``fetch``, ``sync`` or ``progress``), and is compared with what siro_data prints for the
  numbers it shows;
- every ``--flag`` the page names, in code or prose, is offered by ``siro-data --help``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from support import COMMAND, TOKEN

from siro_data.archive import journal_path
from siro_data.download import partial_path
from siro_data.manifest import read_manifest
from siro_data.rows import stopped_row, to_frame
from siro_data.summary import duration_text, megabytes, summarize
from siro_data.sync import SyncResult
from siro_data.tally import Tally

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    path
    for path in [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]
    if path.exists()
]
#: The commands whose flags a page may name.
COMMANDS = ("fetch", "sync", "demo", "prune", "emulator", "verify")


@dataclass(frozen=True)
class Block:
    """A fenced block of a page: its language, text, line, and the marker on the line before."""

    page: Path
    line: int
    language: str
    text: str
    marker: str | None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, those indented in a list item too."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^( *)```([^`\n]*)\n(.*?)^\1```$", text, re.M | re.S):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = re.fullmatch(r"<!-- (.+?) -->", before.strip())
        line = text[: match.start()].count("\n") + 1
        language, body = match.group(2).split(" ", 1)[0], textwrap.dedent(match.group(3))
        found.append(Block(page, line, language, body, marker.group(1) if marker else None))
    return found


def not_run(block: Block) -> bool:
    """A block the page says cannot run here; the reason is required."""
    if block.marker and block.marker.startswith("not run"):
        assert re.fullmatch(r"not run: \S.{8,}", block.marker), f"{block}: say why it is not run"
        return True
    return False


# --- flags ------------------------------------------------------------------------------------


def offered() -> dict[str, str]:
    """``siro-data <command> --help`` for each command."""
    texts = {}
    for command in COMMANDS:
        done = subprocess.run([*COMMAND, command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        texts[command] = done.stdout
    return texts


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    return offered()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_flag_a_page_names_is_offered(page, help_texts):
    text = page.read_text(encoding="utf-8")
    for line in re.findall(r"^\s*siro-data (.+)$", text, re.M):  # commands: their own flags
        words = shlex.split(line.split("#", 1)[0])
        if not words or words[0] not in COMMANDS:
            continue
        for flag in (word.split("=", 1)[0] for word in words[1:] if word.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", help_texts[words[0]]), (
                f"{page.name}: siro-data {words[0]} has no {flag}"
            )
    everything = "\n".join(help_texts.values())
    for flag in set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text)):  # prose: some command's
        if flag in ("--help", "--version") or flag in NOT_OURS:
            continue
        assert re.search(rf"{re.escape(flag)}\b", everything), f"{page.name} names {flag}"


#: Flags of other tools that pages name (pip, pytest, git...), not siro-data's.
NOT_OURS = {"--upgrade", "--doctest-modules", "--strict", "--check", "--no-sandbox", "--change"}


# --- code that runs ---------------------------------------------------------------------------


@pytest.fixture
def user_folder(tmp_path, emulator, monkeypatch) -> Iterator[Path]:
    """Where a page's code runs: a fresh folder with ``ids.csv``, the emulator as Siro."""
    pd.DataFrame({"recording_id": list(emulator.recordings)}).to_csv(
        tmp_path / "ids.csv", index=False
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIRO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("SIRO_API_URL", emulator.api_url)
    client_id, client_secret, user_id = emulator.oauth_app
    monkeypatch.setenv("SIRO_CLIENT_ID", client_id)  # what minting a token reads
    monkeypatch.setenv("SIRO_CLIENT_SECRET", client_secret)
    monkeypatch.setenv("SIRO_USER_ID", user_id)
    monkeypatch.setenv("SIRO_ORG_TOKEN", emulator.organization_token)
    monkeypatch.setenv("SIRO_FUNCTIONS_URL", emulator.functions_url)
    yield tmp_path


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_code_of_every_page_runs_against_the_emulator(page, user_folder):
    scope: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.language not in ("python", "bash") or not_run(block):
            continue
        if block.language == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    exec(compile(block.text, str(block), "exec"), scope)
                except Exception as exc:
                    exc.add_note(f"in the block at {block}")
                    raise
            continue
        for line in block.text.splitlines():
            if not line.startswith("siro-data "):
                continue
            args = shlex.split(line.split(" #", 1)[0])[1:]
            quiet = [] if args[:1] == ["prune"] else ["-q"]  # prune shows no progress
            done = subprocess.run(
                [*COMMAND, *args, *quiet], capture_output=True, text=True, env=dict(os.environ)
            )
            assert done.returncode == 0, f"{block}: {line}\n{done.stderr}"


# --- sample outputs ---------------------------------------------------------------------------


def numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d.]*", text)


def as_bytes(text: str) -> int:
    """``1.8 MB`` → 1,800,000; ``512 bytes`` → 512 (powers of 1000, as siro_data prints)."""
    value, unit = text.split()
    scale = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]
    return round(float(value) * scale)


def manifest_of(lines: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A manifest with the counts, failures and audio that ``summarize``'s lines show; the
    lines after them."""
    counts = re.fullmatch(
        r"(\d+) recordings: (\d+) ok, (\d+) failed(?:, (\d+) stopped \(.*\))?", lines[0]
    )
    assert counts, lines[0]
    total, ok, failed, stopped = (int(n or 0) for n in counts.groups())
    assert total == ok + failed + stopped, lines[0]
    rows, at = [], 1
    while at < len(lines) and (
        kind := re.fullmatch(r"  (\w+): (\d+) \(e\.g\. '(.+?)': (.+)\)", lines[at])
    ):
        name, count, example, error = kind.groups()
        rows += [{"recording_id": example, "error": error, "error_kind": name}]
        rows += [
            {"recording_id": f"{name}-{n}", "error": error, "error_kind": name}
            for n in range(int(count) - 1)
        ]
        at += 1
    audio = re.fullmatch(r"audio: ([\d.]+) hours in (.+)", lines[at])
    assert audio, lines[at]
    seconds, size = float(audio.group(1)) * 3600, as_bytes(audio.group(2))
    rows += [
        {"recording_id": f"ok-{n}", "duration": seconds / ok, "size_bytes": size // ok}
        for n in range(ok)
    ]
    if ok:
        rows[-1]["size_bytes"] += size - size // ok * ok
    rows += [
        {"recording_id": f"stopped-{n}", "error": "not fetched", "error_kind": "stopped"}
        for n in range(stopped)
    ]
    return to_frame(rows), lines[at + 1 :]


def fetch_output(lines: list[str]) -> list[str]:
    manifest, rest = manifest_of(lines)
    return [*summarize(manifest).splitlines(), *rest[:1]]


def sync_output(lines: list[str]) -> list[str]:
    """What ``siro-data sync`` prints for the numbers of ``lines``."""
    listed = re.fullmatch(
        r"listed (\d+) recordings created after (\S+) \((\d+) list calls\)", lines[0]
    )
    assert listed, lines[0]
    fetched = re.fullmatch(r"fetched (\d+) new, retried (\d+) that had failed", lines[1])
    assert fetched, lines[1]
    known = [line for line in lines if re.match(r"\d+ known failures?, not asked again: ", line)]
    tried, rest = manifest_of([line for line in lines[2:] if line not in known])
    kinds: list[str] = []
    for line in known:  # "1 known failure, not asked again: not_found", or "kind count, ..."
        total, named = line.split(", not asked again: ")
        parts = [part.rpartition(" ") for part in named.split(", ")]
        if len(parts) == 1:
            kinds += [named] * int(total.split()[0])
        else:
            kinds += [kind for kind, _, count in parts for _ in range(int(count))]
    watermark = re.fullmatch(r"watermark: (\S+)", rest[0])
    assert watermark, rest[0]
    known_failed = to_frame(
        {"recording_id": f"known-{n}", "error": "an earlier error", "error_kind": kind}
        for n, kind in enumerate(kinds)
    )
    result = SyncResult(
        recordings=tried,
        tried=tried,
        known_failed=known_failed,
        listed=int(listed.group(1)),
        list_calls=int(listed.group(3)),
        new=int(fetched.group(1)),
        retried=int(fetched.group(2)),
        since=pd.Timestamp(listed.group(2)),
        watermark=pd.Timestamp(watermark.group(1)),
    )
    return [*result.summary().splitlines(), *rest[1:]]


def progress_output(lines: list[str]) -> list[str]:
    """The log lines of a run with the numbers of ``lines``: its start, its counts and bytes
    as a :class:`~siro_data.tally.Tally` fed them says them, its rate, ETA and duration in
    siro_data's formats."""
    prefix = "INFO siro_data.progress: "
    assert all(line.startswith(prefix) for line in lines), lines
    first, *texts = (line[len(prefix) :] for line in lines)
    total, done = (int(n) for n in re.findall(r"\d+", first))
    said = [f"fetching {total} recordings ({done} already complete)"]
    shape = re.compile(
        r"(?P<head>done in (?P<took>.+?): )?(?P<done>\d+) done, (?P<failed>\d+) failed, "
        r"(?P<stopped>\d+) stopped, \d+ remaining; (?P<mb>[\d.]+) MB received"
        r"(?P<tail>, (?P<rate>[\d.]+) MB/s, ETA (?P<eta>.+)|; manifest: .+)"
    )
    for text in texts:
        found = shape.fullmatch(text)
        assert found, text
        tally = Tally()
        tally.start(total=total, done=done, now=0.0)
        for n in range(int(found["done"]) - done):
            tally.finished({"recording_id": f"ok-{n}", "error": None})
        for n in range(int(found["failed"])):
            tally.finished({"recording_id": f"failed-{n}", "error": "an error"})
        for n in range(int(found["stopped"])):
            tally.finished(stopped_row(f"stopped-{n}"))
        tally.add_bytes(round(float(found["mb"]) * 1e6))
        head = f"done in {duration_text(seconds(found['took']))}: " if found["head"] else ""
        tail = found["tail"]
        if found["rate"]:
            eta = "unknown" if found["eta"] == "unknown" else duration_text(seconds(found["eta"]))
            tail = f", {megabytes(float(found['rate']) * 1e6)}/s, ETA {eta}"
        said.append(f"{head}{tally.counts()}; {tally.received()}{tail}")
    return [prefix + line for line in said]


def seconds(text: str) -> float:
    """``5 min 18 s`` → 318 (what :func:`siro_data.summary.duration_text` wrote)."""
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(int(n) * units[unit] for n, unit in re.findall(r"(\d+) (h|min|s)\b", text))


def demo_head(lines: list[str], demo: Path) -> list[str]:
    """``read_manifest(...)[columns].head()`` of the demo's manifest, for the columns shown."""
    columns = lines[0].split()
    manifest = read_manifest(demo / "data" / "manifest.parquet")
    return str(manifest[columns].head()).splitlines()


def demo_tree(lines: list[str], demo: Path) -> list[str]:
    """The tree shown, each entry checked against what the demo wrote.

    An entry is a file or folder the demo left; one "during a run" is named as the library
    names it (a journal, a partial) but gone once the run is over; "..." stands for the
    recordings not shown, so many "in all". Every file the demo left must be shown.
    """
    data = demo / "data"
    left = {str(path.relative_to(demo)) for path in data.rglob("*")}
    shown, folders, in_all = set(), [], None
    for line in lines[1:]:
        indent = len(re.match(r"^[│ ]*(?:[├└]── )?", line).group(0)) // 4
        name, _, note = line[indent * 4 :].partition("  ")
        folders = folders[: indent - 1]
        where = "/".join(["data", *folders, name.rstrip("/")])
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        if name == "...":
            in_all = int(re.search(r"(\d+) recordings in all", note).group(1))
        elif "during a run" in note:
            expected = {
                ".part": partial_path(data / "recordings" / "x.m4a").suffix,
                ".journal": journal_path(data / "manifest.parquet").suffix,
            }[Path(name).suffix]
            assert Path(name).suffix == expected and where not in left, line
            if name.endswith(".part"):
                assert any(Path(path).stem == Path(name).stem for path in left), line
            else:
                assert name == journal_path(data / "manifest.parquet").name, line
        else:
            assert where in left, f"the demo left no {where}"
            shown.add(where)
    recordings = {path for path in left - shown if path.startswith("data/recordings/")}
    assert in_all is None or len(recordings) + sum("recordings/" in p for p in shown) - 1 == in_all
    assert left - shown <= recordings, f"not shown: {sorted(left - shown - recordings)}"
    return lines


#: What printed a sample, by its marker: a function of the sample's lines (and the folder the
#: demo ran in) that gives what siro_data prints.
OUTPUTS: dict[str, Callable[[list[str], Path], list[str]]] = {
    "output: fetch": lambda lines, _demo: fetch_output(lines),
    "output: sync": lambda lines, _demo: sync_output(lines),
    "output: progress": lambda lines, _demo: progress_output(lines),
    "output: demo head": demo_head,
    "output: demo tree": demo_tree,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A folder where ``siro-data demo`` ran."""
    folder = tmp_path_factory.mktemp("demo")
    done = subprocess.run([*COMMAND, "demo", "-q"], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_sample_output_is_what_siro_data_prints_for_its_numbers(page, demo):
    for block in blocks(page):
        if block.language not in ("", "text", "console"):
            continue
        assert block.marker in OUTPUTS or (block.marker or "").startswith("not checked: "), (
            f"{block}: say what printed this sample (<!-- output: ... -->, or not checked: why)"
        )
        if block.marker not in OUTPUTS:
            continue
        lines = block.text.rstrip("\n").splitlines()
        assert OUTPUTS[block.marker](lines, demo) == lines, str(block)


def test_a_sample_that_drifts_is_caught():
    """The checkers are not blind: a number or a word out of place fails them."""
    sample = [
        "12 recordings: 11 ok, 1 failed",
        "  not_found: 1 (e.g. 'rec_9': 404: Recording not found)",
        "audio: 0.08 hours in 1.8 MB",
        "manifest: /srv/job/data/manifest.parquet",
    ]
    assert fetch_output(sample) == sample
    drifted = [*sample[:2], "audio: 0.08 hours in 1800.0 kB", sample[3]]  # not siro_data's unit
    assert fetch_output(drifted) != drifted
    with pytest.raises(AssertionError):  # counts that do not add up
        fetch_output(["12 recordings: 11 ok, 2 failed", *sample[1:]])
    with pytest.raises(AssertionError):  # a thousands separator siro_data never prints
        sync_output(
            ["listed 10,412 recordings created after 2025-05-28T09:12:44.120Z (1 list calls)"]
        )
