"""Commands a scheduler can trust: every way ``siro-data`` ends is a code of the documented table,
and every failure is one line on stderr, never a traceback (that takes ``-v``).

Each failure is run as a user meets it: a subprocess against the emulator, or against a port
where nothing answers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from support import cli, finish, free_port, markdown_table

from siro_data import cli as command
from siro_data.manifest import read_manifest

EXIT_CODES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "exit-codes.md"


def one_line(err: str) -> str:
    """The one line a failure leaves on stderr."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def ids_csv(tmp_path, emulator) -> Path:
    path = tmp_path / "ids.csv"
    pd.DataFrame({"recording_id": list(emulator.recordings)}).to_csv(path, index=False)
    return path


def test_the_documented_table_lists_every_exit_status_the_command_has():
    codes = [int(row[0]) for row in markdown_table(EXIT_CODES_PAGE, "Exit statuses")]
    assert codes == list(command.EXIT_CODES)
    text = finish(cli(["fetch", "--help"]))[1]
    for code in command.EXIT_CODES:  # --help says them too
        assert f"\n{code}\n    " in text


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "the following arguments are required: command"),
        (["fetch"], "the following arguments are required: ids"),
        (["fetch", "{ids}", "--bogus"], "unrecognized arguments: --bogus"),
        (["sync", "--workers", "many"], "argument --workers: invalid int value: 'many'"),
        (["sync", "--overwrite"], "unrecognized arguments: --overwrite"),  # sync has none
        (["fetch", "{ids}", "--id-column", "rid"], "no column 'rid' in the DataFrame"),
        (["fetch", "{folder}/ids.txt"], "expected a .csv or .parquet file"),
        (["fetch", "{ids}", "--workers", "0"], "workers must be a positive integer, got 0"),
        (["sync", "--out-dir", "{ids}"], "needs since="),
        (["sync", "--since", "someday"], "since"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(emulator, ids_csv, args, said):
    args = [arg.format(ids=ids_csv, folder=ids_csv.parent) for arg in args]
    code, _, err = finish(cli(args, emulator, cwd=ids_csv.parent))
    assert code == command.EXIT_SETUP
    line = one_line(err)
    assert line.startswith("siro-data: error: ") and said in line, line
    assert emulator.stats.api_requests == 0


def test_no_token_exits_2_naming_the_variable(emulator, ids_csv):
    code, _, err = finish(cli(["fetch", str(ids_csv)], emulator, cwd=ids_csv.parent, token=None))
    assert code == command.EXIT_SETUP
    assert "SIRO_AUTH_TOKEN" in one_line(err)


@pytest.mark.parametrize("what", ["fetch", "sync"])
def test_a_refused_token_exits_2_and_never_shows_it(emulator, ids_csv, what):
    args = ["fetch", str(ids_csv)] if what == "fetch" else ["sync", "--since", "2025-01-01"]
    code, _, err = finish(cli([*args, "-q"], emulator, cwd=ids_csv.parent, token="wrong-tok-xyz"))
    assert code == command.EXIT_SETUP
    line = one_line(err)
    assert line.startswith("siro-data: authentication failed (401: ") and "the run stopped" in line
    assert "wrong-tok-xyz" not in err
    assert emulator.stats.api_requests == 1


def test_a_folder_that_cannot_be_made_exits_2_before_any_request(emulator, ids_csv):
    """A folder the user may not write is the same sentence with its cause (as another Unix
    user: ``test_shared_folder.py``, a colleague who may only read)."""
    audio = ids_csv / "recordings"  # under a file: no one can make it, root included
    args = ["fetch", str(ids_csv), "-q", "--out-dir", str(audio)]
    code, _, err = finish(cli(args, emulator, cwd=ids_csv.parent))
    assert code == command.EXIT_SETUP
    assert one_line(err) == f"siro-data: error: out_dir {audio} cannot be created: Not a directory"
    assert emulator.stats.api_requests == 0


def test_an_api_that_does_not_answer_during_the_listing_exits_3(tmp_path):
    """Nothing listens: urllib3's retries, then one line and 3, a code apart from 1."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    args = ["sync", "-q", "--since", "2025-01-01", "--api-url", nowhere]
    code, _, err = finish(cli(args, cwd=tmp_path))
    assert code == command.EXIT_UNAVAILABLE
    line = one_line(err)
    assert line.startswith("siro-data: Siro's API is unavailable (no answer from the API: ")
    assert "run again later" in line


def test_an_api_refusing_every_signature_exits_3(emulator, ids_csv):
    """The token's calls are all taken (429 whatever the retries): nothing got through."""
    emulator.faults.rate_limit, emulator.faults.retry_after = 0, "1"
    code, out, err = finish(cli(["fetch", str(ids_csv), "-q"], emulator, cwd=ids_csv.parent))
    assert code == command.EXIT_UNAVAILABLE, err
    assert f"rate_limited: {len(emulator.recordings)} (e.g. " in out
    assert "Traceback" not in err


def test_an_api_that_goes_down_mid_run_stops_the_run_and_exits_3(
    start_emulator, recordings, tmp_path
):
    """After five rows the API answers 503 to everything: two workers see it twice each, the
    run stops (the other ids are left for the next run) with one line and 3."""
    copies = [replace(rec, id=f"{rec.id}-{n}") for n in range(7) for rec in recordings.values()]
    emulator = start_emulator(copies)
    ids = list(emulator.recordings)
    emulator.faults.retry_after = "1"  # its retries, quickly
    emulator.faults.api_status.update({rec_id: 503 for rec_id in ids[5:]})
    ids_csv = tmp_path / "ids.csv"
    pd.DataFrame({"recording_id": ids}).to_csv(ids_csv, index=False)

    code, _, err = finish(
        cli(["fetch", str(ids_csv), "-q", "--workers", "2"], emulator, cwd=tmp_path)
    )

    assert code == command.EXIT_UNAVAILABLE
    line = one_line(err)
    assert line.startswith("siro-data: Siro's API is unavailable (the API failed 4 recordings")
    assert line.endswith(f"the rows finished are kept in {tmp_path / 'data' / 'manifest.parquet'}")
    saved = read_manifest(tmp_path / "data" / "manifest.parquet")
    assert set(saved["recording_id"][saved["status"] == "ok"]) == set(ids[:5])
    assert len(emulator.stats.api_calls) < 12  # it stopped: 35 more would fail alike


def test_an_interrupt_exits_130_with_one_line(emulator, ids_csv):
    emulator.faults.bandwidth = 50_000
    process = cli(["fetch", str(ids_csv), "-q", "--workers", "2"], emulator, cwd=ids_csv.parent)
    deadline = time.monotonic() + 60
    while not sum(emulator.stats.bytes_served.values()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == command.EXIT_INTERRUPTED
    assert one_line(err).startswith("siro-data: interrupted: the manifest keeps the rows finished")


#: The command with a bug planted in it: its fetch raises what nobody foresaw.
PLANTED = """
import sys
from siro_data import cli

def broken(*args, **kwargs):
    raise RuntimeError("planted")

cli.fetch_all = broken
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_unforeseen_error_exits_70_and_shows_its_traceback_only_with_v(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("recording_id\na\n")
    planted = [sys.executable, "-c", PLANTED, "fetch", str(ids), "-q"]
    done = subprocess.run(planted, capture_output=True, text=True, timeout=60)
    assert done.returncode == command.EXIT_BUG
    assert one_line(done.stderr) == "siro-data: unexpected error: RuntimeError: planted"
    done = subprocess.run([*planted, "-v"], capture_output=True, text=True, timeout=60)
    assert done.returncode == command.EXIT_BUG
    assert "Traceback" in done.stderr and ", in broken\n" in done.stderr
