"""The emulator as a whole: its counters, a prompt stop, and the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from support import TOKEN

from siro_data.emulator import Emulator, Faults, sample_recordings
from siro_data.sessions import TOKEN_HEADER

from .helpers import sign, signed_url

ROOT = Path(__file__).resolve().parents[2]


def test_stats_count_per_id_and_reset(emulator: Emulator, recordings) -> None:
    first, second = list(recordings)[:2]
    for rec_id in (first, first, second):
        requests.get(signed_url(emulator, rec_id), timeout=5)
    stats = emulator.stats
    assert stats.api_requests == 3 and stats.api_calls == {first: 2, second: 1}
    assert stats.storage_requests == {first: 2, second: 1}
    assert stats.bytes_served[first] == 2 * recordings[first].size
    assert stats.total_bytes_served == 2 * recordings[first].size + recordings[second].size
    assert len(stats.api_headers) == 3 and stats.api_headers[0][TOKEN_HEADER] == TOKEN
    assert len(stats.storage_headers) == 3
    assert stats.connections_opened == {"api": 3, "storage": 3}
    stats.reset()
    assert stats.api_requests == 0 and not stats.api_calls and stats.total_bytes_served == 0
    assert not stats.connections_opened and not stats.api_request_times


def test_stats_snapshot_is_a_copy_and_headers_can_be_dropped(emulator: Emulator, rid: str) -> None:
    requests.get(signed_url(emulator, rid), timeout=5)
    snapshot = emulator.stats.snapshot()
    emulator.stats.forget_headers()
    sign(emulator, rid)
    assert snapshot.api_requests == 1 and snapshot.api_calls == {rid: 1}
    assert snapshot.total_bytes_served == emulator.stats.total_bytes_served > 0
    assert len(snapshot.api_headers) == 1 and len(snapshot.storage_headers) == 1
    assert emulator.stats.api_requests == 2 and emulator.stats.api_calls == {rid: 2}
    assert len(emulator.stats.api_headers) == 1 and emulator.stats.storage_headers == []


def test_stop_is_prompt_with_a_stalled_client(recordings, rid: str) -> None:
    emu = Emulator(recordings=recordings, token=TOKEN, faults=Faults(stall_after={rid: 100}))
    emu.start()
    url = signed_url(emu, rid)
    response = requests.get(url, stream=True, timeout=30)
    assert response.raw.read(100) == recordings[rid].data[:100]  # now the handler sleeps
    idle = requests.Session()
    idle.get(url, timeout=5)  # and an idle keep-alive connection stays open
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        response.content  # noqa: B018
    assert not [t for t in threading.enumerate() if t.name.startswith("siro-emulator")]
    with pytest.raises(RuntimeError):
        emu.api_url  # noqa: B018
    idle.close()


def test_cli_prints_where_it_serves_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "siro_data.emulator", "--recordings", "2", "--token", "cli"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("Serving"):
            lines.append(process.stdout.readline())
            assert lines[-1], "the emulator exited early"
        api_url = lines[0].split()[-1]
        rec_id = next(iter(sample_recordings(n=2)))
        assert any(rec_id in line for line in lines)
        response = requests.post(
            f"{api_url}/v1/core/recordings/{rec_id}/signedUrl",
            headers={TOKEN_HEADER: "cli"},
            timeout=5,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
