"""Tokens that expire mid-run, renewed once for every thread, and tokens that cannot be renewed.

Siro's access tokens expire after 16 hours, so a long run meets a 401. The emulator's
``faults.token_uses`` makes a token expire at a chosen call, as if its 16 hours ended then.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import requests
from support import TOKEN, TokenProvider, cli, fetch, final_path, finish, sha256

from siro_data import AuthError, TokenMinter, read_manifest
from siro_data.download import partial_path
from siro_data.emulator import Emulator, Recording, make_recording

#: The emulator's token, then the one a renewal brings.
FIRST, SECOND = TOKEN, f"{TOKEN}-second"
UNAUTHORIZED = "Unauthorized: invalid or expired access token"
LATENCY = 0.3


@pytest.fixture(scope="module")
def small() -> list[Recording]:
    """Twelve short recordings (a few kB each)."""
    return [make_recording(f"rec-{i:02d}", 2.0 + i % 3, seed=i) for i in range(12)]


@pytest.fixture(scope="module")
def long() -> Recording:
    """About 240 kB: at 100 kB/s it is still downloading when the run stops."""
    return make_recording("rec-long", 60.0, seed=99)


@pytest.fixture
def recordings(small: list[Recording], long: Recording) -> dict[str, Recording]:
    """What the emulator serves here: the long one first."""
    return {rec.id: rec for rec in [long, *small]}


def sent_with(emu: Emulator, token: str) -> int:
    return sum(headers.get("x-siro-auth-token") == token for headers in emu.stats.api_headers)


def test_token_uses_expires_a_token_at_the_chosen_call(emulator: Emulator, long: Recording) -> None:
    """The emulator switch itself: accepted twice, then 401 as an expired token."""
    emulator.faults.token_uses[FIRST] = 2
    url = f"{emulator.api_url}/v1/core/recordings/{long.id}/signedUrl"
    with requests.Session() as session:
        answers = [session.post(url, headers={"x-siro-auth-token": FIRST}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 401]
    assert answers[2].json() == {"error": UNAUTHORIZED}
    assert emulator.faults.token_uses == {FIRST: 0}


def test_token_expiring_mid_run_is_renewed_once_for_all_threads(
    emulator: Emulator, small: list[Recording], tmp_path: Path
) -> None:
    """Two threads meet the expiry at once; the provider is asked once, and every row is ok."""
    emulator.tokens.add(SECOND)
    emulator.faults.token_uses[FIRST] = 2
    emulator.faults.api_latency = LATENCY  # the 4 workers' first calls are all in flight at expiry
    provider = TokenProvider(FIRST, SECOND, f"{TOKEN}-third", emulator=emulator)
    ids = [rec.id for rec in small]

    manifest = fetch(
        emulator,
        ids,
        tmp_path / "recordings",
        tmp_path / "manifest.parquet",
        token=provider,
        workers=4,
        requests_per_minute=60_000,
    )

    assert manifest["error"].isna().all(), manifest["error"].dropna().tolist()
    for row, recording in zip(manifest.itertuples(), small, strict=True):
        assert sha256(Path(row.path)) == recording.sha256 == row.sha256
    # Once at the start (before any request), once after the expiry: not once per thread.
    assert provider.calls == 2
    assert provider.requests_seen[0] == 0
    refused = sent_with(emulator, FIRST) - 2
    assert refused >= 2  # at least two threads met the 401 together
    assert sent_with(emulator, SECOND) == len(ids) - 2
    assert emulator.stats.api_requests == len(ids) + refused
    assert max(emulator.stats.api_calls.values()) <= 2


def test_renewed_token_rejected_too_stops_the_run_keeping_what_finished(
    emulator: Emulator, small: list[Recording], long: Recording, tmp_path: Path, caplog
) -> None:
    """A second 401: AuthError naming the cause, finished rows kept, partials kept, no new call.

    The long recording is downloading when the first token expires (4th call) and the
    renewed one is refused: it stops mid-body and its partial stays for the next run.
    """
    out_dir, manifest_path = tmp_path / "recordings", tmp_path / "manifest.parquet"
    workers = 3
    emulator.faults.token_uses[FIRST] = 4
    emulator.faults.api_latency = LATENCY
    emulator.faults.bandwidth = 100_000
    never_valid = f"{TOKEN}-never-valid"
    provider = TokenProvider(FIRST, never_valid, emulator=emulator)
    recordings = {rec.id: rec for rec in [long, *small]}

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as info:
        fetch(emulator, list(recordings), out_dir, manifest_path, token=provider, workers=workers)

    error = info.value
    assert error.status == 401
    # The server's words when the run's first AuthError is the renewed token's own 401; a
    # thread that meets the hopeless token afterwards says less, never anything else.
    assert re.fullmatch(
        f"401: (the renewed token was rejected too(: {UNAUTHORIZED})?|token rejected)", str(error)
    )
    for text in (str(error), repr(error), caplog.text):
        assert FIRST not in text
        assert never_valid not in text
        assert TOKEN not in text
    assert provider.calls == 2

    # No API request after the stop but those in flight: each thread sends at most one
    # refused call per token, and none arrives later than an answer's latency after the
    # first call with the renewed token (the one whose 401 stopped the run).
    assert emulator.stats.api_requests <= 4 + 2 * workers
    times = emulator.stats.api_request_times
    renewed = [
        at
        for at, headers in zip(times, emulator.stats.api_headers, strict=True)
        if headers.get("x-siro-auth-token") == never_valid
    ]
    assert renewed
    assert max(times) <= renewed[0] + LATENCY + 0.2
    assert len(emulator.stats.api_calls) < len(recordings)  # ids were left for the next run

    # The manifest on disk: the rows that finished, whole; nothing else claims a file.
    saved = read_manifest(manifest_path)
    finished = saved[saved["error"].isna()]
    assert len(finished) >= 1
    for row in finished.itertuples():
        recording = recordings[row.recording_id]
        assert sha256(Path(row.path)) == recording.sha256 == row.sha256
        assert row.size_bytes == recording.size
    assert saved.loc[saved["error"].notna(), "path"].isna().all()

    # No half file under a final name; partials are prefixes of the real bytes, kept.
    for recording in recordings.values():
        final, part = final_path(out_dir, recording), partial_path(final_path(out_dir, recording))
        if recording.id in set(finished["recording_id"]):
            assert not part.exists()
            continue
        assert not final.exists(), f"{recording.id}: file under its final name, not in manifest"
        if part.exists():
            assert recording.data.startswith(part.read_bytes())
    kept = partial_path(final_path(out_dir, long)).read_bytes()
    assert 0 < len(kept) < long.size
    assert long.id not in set(saved["recording_id"])


def test_plain_token_rejected_stops_before_any_download(
    emulator: Emulator, small: list[Recording], tmp_path: Path
) -> None:
    """A string token cannot be renewed: the first 401 is an AuthError, nothing is fetched."""
    wrong = f"{TOKEN}-wrong"
    out_dir, manifest_path = tmp_path / "recordings", tmp_path / "manifest.parquet"
    workers = 4

    with pytest.raises(AuthError) as info:
        fetch(
            emulator,
            [rec.id for rec in small],
            out_dir,
            manifest_path,
            token=wrong,
            workers=workers,
            requests_per_minute=240,  # the other workers wait 0.25 s and more for their turn
        )

    assert info.value.status == 401
    assert str(info.value).startswith("401: token rejected")
    assert TOKEN not in str(info.value)
    assert sum(emulator.stats.storage_requests.values()) == 0
    assert emulator.stats.api_requests == 1  # the waiting workers learnt of the 401: none sent
    assert read_manifest(manifest_path).empty
    assert [p for p in out_dir.iterdir() if p.is_file()] == []


def minter_for(emu: Emulator, **changes: str) -> TokenMinter:
    """A minter with the emulator's organisation token and OAuth app (``changes`` replace)."""
    client_id, client_secret, user_id = emu.oauth_app
    settings = {
        "client_id": client_id,
        "client_secret": client_secret,
        "user_id": user_id,
        "organization_token": emu.organization_token,
        **changes,
    }
    return TokenMinter(**settings, functions_url=emu.functions_url)


def test_a_minter_gets_a_token_and_a_fresh_one_whenever_it_expires(
    emulator: Emulator, out_dir: Path, manifest_path: Path
) -> None:
    """Each minted token lasts four signing calls here (16 hours at Siro): the run goes on."""
    emulator.faults.minted_token_uses = 4
    ids = list(emulator.recordings)
    manifest = fetch(emulator, ids, out_dir, manifest_path, token=minter_for(emulator), workers=2)
    assert manifest["error"].isna().all(), manifest["error"]
    assert emulator.stats.mint_requests >= len(ids) // 4  # the first, then one per expiry
    minted = {h["x-siro-auth-token"] for h in emulator.stats.api_headers}
    assert TOKEN not in minted and len(minted) == emulator.stats.mint_requests
    secrets = (emulator.organization_token, emulator.oauth_app[1])
    assert not any(s in str(h) for h in emulator.stats.api_headers for s in secrets)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"client_secret": "not-the-secret"}, "403: could not mint an access token: Forbidden"),
        ({"organization_token": "not-the-org-token"}, "401: could not mint an access token"),
        ({"user_id": "somebody"}, "404: could not mint an access token: User not found"),
    ],
)
def test_a_minter_refused_stops_before_any_signing_and_shows_no_secret(
    emulator: Emulator, out_dir: Path, manifest_path: Path, change, said
) -> None:
    minter = minter_for(emulator, **change)
    with pytest.raises(AuthError, match=re.escape(said)) as raised:
        fetch(emulator, list(emulator.recordings), out_dir, manifest_path, token=minter)
    assert emulator.stats.api_requests == 0
    text = f"{raised.value} {raised.value!r} {minter!r}"
    given = (value for name, value in change.items() if name != "user_id")  # not a secret
    secrets = (*given, emulator.oauth_app[1], emulator.organization_token)
    assert not any(secret in text for secret in secrets)


def test_the_command_mints_from_the_environment_when_no_token_is_set(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A daily job sets the OAuth app's variables once, never an access token that expires."""
    emulator.faults.minted_token_uses = 5
    client_id, client_secret, user_id = emulator.oauth_app
    ids = pd.DataFrame({"recording_id": list(emulator.recordings)})
    ids.to_csv(tmp_path / "ids.csv", index=False)
    environment = {
        "SIRO_CLIENT_ID": client_id,
        "SIRO_CLIENT_SECRET": client_secret,
        "SIRO_USER_ID": user_id,
        "SIRO_ORG_TOKEN": emulator.organization_token,
        "SIRO_FUNCTIONS_URL": emulator.functions_url,
    }
    args = ["fetch", "ids.csv", "-q", "--workers", "2"]
    code, _, err = finish(cli(args, emulator, cwd=tmp_path, token=None, env_extra=environment))
    assert code == 0, err
    assert emulator.stats.mint_requests >= 2
    del environment["SIRO_ORG_TOKEN"]
    args = [*args, "--out-dir", "elsewhere", "--manifest", "elsewhere.parquet"]  # to do again
    code, _, err = finish(cli(args, emulator, cwd=tmp_path, token=None, env_extra=environment))
    assert code == 2
    assert err.strip() == "siro-data: error: to mint Siro tokens, also set SIRO_ORG_TOKEN"
