"""Two processes, one out_dir and one manifest: locks keep files and rows whole."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from support import sha256

from siro_data import read_manifest
from siro_data.archive import LOCKS_FOLDER, journal_path

FETCH = textwrap.dedent(
    """
    import json, sys
    from siro_data import fetch_all
    settings = json.loads(sys.argv[1])
    manifest = fetch_all(settings.pop("ids"), progress=False, **settings)
    print(json.dumps(manifest["error"].isna().tolist()))
    """
)


def start_fetch(emu, ids: list[str], out_dir: Path, manifest_path: Path) -> subprocess.Popen:
    settings = {
        "ids": ids,
        "out_dir": str(out_dir),
        "manifest_path": str(manifest_path),
        "token": emu.token,
        "api_url": emu.api_url,
        "workers": 3,
    }
    return subprocess.Popen(
        [sys.executable, "-c", FETCH, json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_overlapping_runs_share_the_work_and_corrupt_nothing(emulator, out_dir, manifest_path):
    emulator.faults.bandwidth = 300_000  # both runs are in flight at once for a while
    ids = list(emulator.recordings)
    first, second = ids[:4], ids[2:]  # two recordings wanted by both

    processes = [start_fetch(emulator, part, out_dir, manifest_path) for part in (first, second)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert all(json.loads(out)), out

    manifest = read_manifest(manifest_path)
    assert sorted(manifest["recording_id"]) == sorted(ids)  # each id exactly once
    assert manifest["error"].isna().all()
    for row in manifest.itertuples():
        assert sha256(row.path) == emulator.recordings[row.recording_id].sha256 == row.sha256
    # The lock made the later process find the shared files finished: none came twice.
    assert emulator.stats.total_bytes_served == sum(r.size for r in emulator.recordings.values())
    assert all(count == 1 for count in emulator.stats.storage_requests.values())
    leftovers = [p.name for p in out_dir.parent.rglob("*") if p.suffix in (".part", ".tmp")]
    assert leftovers == []
    assert list((out_dir / LOCKS_FOLDER).iterdir()) == []  # each removed on its release
    assert not journal_path(manifest_path).exists()
