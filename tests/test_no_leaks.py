"""No secret escapes: the token and the signed URLs stay out of everything a run leaves behind.

A batch meets every fault the emulator has (API errors, 429, transient 5xx, ``data.error``,
malformed answers, cuts, stalls, ignored ranges, wrong lengths, expired URLs, HTML from
storage) with every logger at DEBUG, urllib3's included. Then the sentinel token, the
signature of every URL the emulator issued and their query strings are looked for in the
logs, stdout/stderr, warnings, exception messages and tracebacks, the reprs of what the
library hands back, the returned manifest, the parquet file, the journal as it grew, and every
file under the run's folder; the ``siro-data fetch -v`` command is checked the same way.
Redirects from the API to another origin must not carry the token, and storage never sees it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from support import FAST_RETRIES, TOKEN, fetch

from siro_data import AuthError, SiroClient, download, read_manifest
from siro_data.archive import journal_path
from siro_data.emulator import Emulator, Recording, sample_recordings
from siro_data.emulator.storage import CLIENT_EMAIL
from siro_data.exceptions import DownloadError, ExpiredURLError, SiroAPIError
from siro_data.sessions import TOKEN_HEADER

#: Fragments no output may hold: bits of the token, and what only a signed URL's query holds.
MARKERS = [TOKEN, "SENTINEL", TOKEN[-10:], "X-Goog-Signature", "X-Goog-Credential", CLIENT_EMAIL]
#: Short stalls, short read timeout: a stalled body costs half a second, not a minute.
TIMEOUT = (5.0, 1.0)
STALL_SECONDS = 2.0


class SigningEmulator(Emulator):
    """The emulator, keeping every signed URL it hands out so their signatures can be sought."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.issued: list[str] = []

    def sign_url(self, recording: Recording) -> tuple[str, int]:
        url, expiration = super().sign_url(recording)
        self.issued.append(url)
        return url, expiration

    def secrets(self) -> list[str]:
        """Every signature issued (whole, and its first 16 characters) and every query string."""
        found = []
        for url in self.issued:
            query = urlsplit(url).query
            signature = parse_qs(query)["X-Goog-Signature"][0]
            found += [query, signature, signature[:16]]
        return found


def clone(recording: Recording, rec_id: str) -> Recording:
    return dataclasses.replace(recording, id=rec_id)


@pytest.fixture(scope="module")
def samples() -> list[Recording]:
    return list(sample_recordings(n=6).values())


@pytest.fixture
def recordings(samples: list[Recording]) -> list[Recording]:
    """One recording per fault: each id names the fault it meets."""
    names = [
        "ok-1",
        "ok-2",
        "cut",
        "cut-twice",
        "stall",
        "ignore-range",
        "length-short",
        "length-long",
        "storage-html",
        "storage-404",
        "storage-5xx-then-expired",
        "api-transient",
        "api-400",
        "api-403",
        "api-404",
        "api-422",
        "api-429",
        "api-500",
        "api-error-payload",
        "api-html",
        "api-not-json",
        "api-no-url",
    ]
    return [clone(samples[i % len(samples)], name) for i, name in enumerate(names)]


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator], recordings) -> SigningEmulator:
    return start_emulator(recordings, SigningEmulator)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every logger at DEBUG, into caplog and into a plain handler on the root logger.

    Loggers an earlier test quietened (the CLI sets urllib3 to ERROR) are opened up again.
    """
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    loggers = [root] + [
        logger for logger in root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    for name in ("urllib3", "requests", "siro_data", "filelock", "portalocker"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


class JournalWatch:
    """Copies the journal beside a manifest as it grows (the run folds it away at the end)."""

    def __init__(self, manifest: Path) -> None:
        self.path = journal_path(manifest)
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if text and (not self.seen or text != self.seen[-1]):
                self.seen.append(text)

    def __enter__(self) -> JournalWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


class Haystack:
    """Everything a user could read after the runs, by where it came from."""

    def __init__(self) -> None:
        self.places: dict[str, str] = {}

    def add(self, where: str, content: str | bytes) -> None:
        if isinstance(content, bytes):
            content = content.decode("latin-1")
        self.places[where] = self.places.get(where, "") + content

    def exception(self, where: str, exc: BaseException) -> None:
        self.add(where, f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}")

    def frame(self, where: str, frame: pd.DataFrame) -> None:
        with pd.option_context("display.max_colwidth", None, "display.width", None):
            self.add(where, f"{frame!r}\n{frame.to_csv()}\n{frame.to_dict('records')}")

    def tree(self, where: str, folder: Path) -> None:
        """Every file under ``folder``: its relative name and its bytes."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.add(f"{where}/{path.relative_to(folder)}", f"{path.relative_to(folder)}\n")
                self.add(f"{where}/{path.relative_to(folder)}", path.read_bytes())

    def assert_free_of(self, secrets: list[str]) -> None:
        leaks = [
            f"{secret[:24]!r} in {where}: ...{text[max(0, i - 80) : i + 80]!r}..."
            for where, text in self.places.items()
            for secret in secrets
            if (i := text.find(secret)) >= 0
        ]
        assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def set_faults(emu: Emulator) -> None:
    """Every fault the emulator has, each on its own recording."""
    faults = emu.faults
    faults.expiration_unit = "s"
    faults.url_ttl = 1.5  # outlived by the storage's own retry backoff (0 + 1 + 2 s)
    faults.cut_after.update({"cut": 20_000, "cut-twice": 5_000, "ignore-range": 8_000})
    faults.cut_times["cut-twice"] = 2
    faults.stall_after["stall"] = 10_000
    faults.stall_seconds = STALL_SECONDS
    faults.ignore_range = {"ignore-range"}
    faults.content_length_delta.update({"length-short": -1_000, "length-long": 1_000})
    faults.storage_html.add("storage-html")
    faults.storage_transient.update(
        {"storage-404": [404], "storage-5xx-then-expired": [503, 503, 503]}
    )
    faults.transient["api-transient"] = [429, 500, 502, 503, 504]
    faults.retry_after = "0"
    faults.api_status.update(
        {"api-400": 400, "api-403": 403, "api-404": 404, "api-422": 422, "api-429": 429}
    )
    faults.api_status["api-500"] = 500
    faults.api_error_payload.add("api-error-payload")
    faults.api_malformed.update(
        {"api-html": "html", "api-not-json": "not_json", "api-no-url": "no_url"}
    )


def test_a_faulty_batch_leaks_no_secret_anywhere(
    emulator, tmp_path, debug_logs, caplog, capfd, recwarn
):
    set_faults(emulator)
    found = Haystack()
    out_dir, manifest_path = tmp_path / "recordings", tmp_path / "manifest.parquet"
    ids = [*emulator.recordings, None, "", "../../etc/passwd?a=b"]

    # 1. The whole batch, progress bars on. The API client retries without backoff sleeps (a
    # persistent 500 costs no 15 s); storage keeps the real backoff: the URL of
    # ``storage-5xx-then-expired`` expires during it.
    api = SiroClient(TOKEN, emulator.api_url, timeout=TIMEOUT, retries=FAST_RETRIES)
    with api, JournalWatch(manifest_path) as journal:
        manifest = fetch(
            emulator, ids, out_dir, manifest_path, client=api, timeout=TIMEOUT, progress="bars"
        )
    found.frame("returned manifest", manifest)
    found.add("journal", "".join(journal.seen))
    by_id = manifest.set_index("recording_id")
    for rec_id in ("ok-1", "cut", "cut-twice", "stall", "ignore-range", "api-transient"):
        assert pd.isna(by_id.at[rec_id, "error"]), (rec_id, by_id.at[rec_id, "error"])
    assert pd.isna(by_id.at["storage-5xx-then-expired", "error"])
    assert emulator.stats.api_calls["storage-5xx-then-expired"] >= 2  # its URL did expire
    for rec_id in ("api-403", "api-429", "api-500", "api-html", "storage-html", "storage-404"):
        assert pd.notna(by_id.at[rec_id, "error"]), rec_id
    faults = emulator.faults
    assert not (faults.cut_after or faults.stall_after or faults.transient)
    assert not faults.storage_transient  # every one-shot fault fired
    assert journal.seen and '"recording_id"' in journal.seen[-1]  # rows were seen on disk

    # 2. The building blocks alone: a client, a signed URL, a download, refusals, expiry.
    with SiroClient(TOKEN, emulator.api_url, timeout=TIMEOUT, retries=FAST_RETRIES) as client:
        signed = client.sign("ok-2")
        found.add("reprs", f"{signed!r} {signed} {client!r} {client}")
        result = download(signed.url, tmp_path / "direct" / "one.m4a", timeout=TIMEOUT)
        found.add("reprs", f"{result!r} {result}")
        for rec_id in ("api-400", "api-403", "api-422", "api-500", "api-html", "nobody"):
            with pytest.raises(SiroAPIError) as refused:
                client.sign(rec_id)
            found.exception(f"exception from sign({rec_id!r})", refused.value)
        faults.url_ttl = 0  # signed already expired
        expired = client.sign("ok-1")
        found.add("reprs", f"{expired!r}")
        for status, says_why, error in [
            (400, True, ExpiredURLError),
            (403, True, ExpiredURLError),
            (403, False, DownloadError),
        ]:
            faults.expired_status, faults.expired_says_why = status, says_why
            with pytest.raises(error) as refused:
                download(expired.url, tmp_path / "direct" / "expired.m4a", timeout=TIMEOUT)
            found.exception(f"exception from an expired download ({status})", refused.value)
        tampered = expired.url.replace("X-Goog-Signature=", "X-Goog-Signature=0")
        with pytest.raises(DownloadError) as refused:
            download(tampered, tmp_path / "direct" / "tampered.m4a", timeout=TIMEOUT)
        found.exception("exception from a tampered URL", refused.value)
    faults.url_ttl, faults.expired_says_why = 900.0, True

    # 3. A 401 stops the run, without a token provider and with one that cannot help.
    faults.expiration_unit = "ms"
    faults.api_status = {"ok-1": 401}
    for token in (TOKEN, lambda: TOKEN):
        with pytest.raises(AuthError) as stopped, JournalWatch(manifest_path) as journal:
            fetch(
                emulator,
                ["ok-2", "ok-1", "cut"],
                out_dir,
                manifest_path,
                token=token,
                timeout=TIMEOUT,
                overwrite=True,
                workers=1,
                progress=True,
            )
        found.exception("AuthError from fetch_all", stopped.value)
        found.add("journal", "".join(journal.seen))

    # Everything the runs left behind.
    parquet = read_manifest(manifest_path)
    assert {"ok-2", "storage-html"} <= set(parquet["recording_id"])
    found.frame("saved manifest", parquet)
    found.tree("tmp_path", tmp_path)
    out, err = capfd.readouterr()
    found.add("stdout", out)
    found.add("stderr", err)
    found.add("log stream", debug_logs.getvalue())
    found.add("caplog", caplog_text(caplog))
    found.add("warnings", "\n".join(str(w.message) for w in recwarn))
    storage_headers = [json.dumps(headers) for headers in emulator.stats.storage_headers]
    found.add("storage request headers", "\n".join(storage_headers))

    # The haystacks hold what they should (a blind check proves nothing) ...
    logs = found.places["log stream"]
    assert "urllib3.connectionpool" in logs and "/siro-recordings/ok-1/audio." in logs
    assert "Incremented Retry" in logs and "?<redacted>" in logs
    assert "recordings" in err  # the progress bars
    assert TOKEN in json.dumps(emulator.stats.api_headers)  # the token did travel, to the API
    # ... and no secret.
    found.assert_free_of(MARKERS + emulator.secrets())


def caplog_text(caplog: pytest.LogCaptureFixture) -> str:
    """What pytest's capture kept: each message, and the traceback of those that had one."""
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(texts)


def test_the_cli_leaks_no_secret_in_verbose_mode(emulator, tmp_path):
    faults = emulator.faults
    faults.cut_after["cut"] = 20_000
    faults.stall_after["stall"] = 10_000
    faults.stall_seconds = STALL_SECONDS
    faults.storage_transient["storage-5xx-then-expired"] = [503]
    faults.transient["api-transient"] = [503]
    faults.api_status.update({"api-403": 403, "api-500": 500})
    faults.api_malformed["api-html"] = "html"
    faults.storage_html.add("storage-html")
    ids = ["ok-1", "cut", "stall", "storage-5xx-then-expired", "api-transient", "api-403"]
    ids += ["api-html", "storage-html", "nobody"]
    ids_csv = tmp_path / "ids.csv"
    pd.DataFrame({"recording_id": ids}).to_csv(ids_csv, index=False)
    env = {**os.environ, "SIRO_AUTH_TOKEN": TOKEN}
    env.pop("SIRO_API_URL", None)
    command = [sys.executable, "-m", "siro_data.cli", "fetch", str(ids_csv), "-v"]
    command += ["--api-url", emulator.api_url, "--out-dir", str(tmp_path / "recordings")]
    command += ["--manifest", str(tmp_path / "manifest.parquet"), "--workers", "4"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    assert done.returncode == 1, done.stderr[-2000:]  # some rows failed, on purpose
    assert "DEBUG urllib3.connectionpool" in done.stderr  # verbose indeed
    assert "/siro-recordings/cut/audio." in done.stderr
    assert "Incremented Retry" in done.stderr  # urllib3's retry lines, storage's included
    assert "9 recordings" in done.stdout
    found = Haystack()
    found.add("stdout", done.stdout)
    found.add("stderr", done.stderr)
    found.tree("tmp_path", tmp_path)
    found.frame("saved manifest", read_manifest(tmp_path / "manifest.parquet"))
    found.assert_free_of(MARKERS + emulator.secrets())


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_to_another_origin_is_not_followed(emulator, tmp_path, other_origin, status):
    host, port = other_origin.server_address[:2]
    emulator.faults.redirect["ok-1"] = f"http://{host}:{port}/v1/core/recordings/ok-1/signedUrl"
    emulator.faults.redirect_status = status
    manifest = fetch(
        emulator, ["ok-1", "ok-2"], tmp_path / "recordings", tmp_path / "manifest.parquet"
    )

    assert other_origin.seen == []  # nothing, so neither the token, reached the other origin
    assert TOKEN in json.dumps(emulator.stats.api_headers)  # it was sent where it belongs
    rows = manifest.set_index("recording_id")
    assert rows.at["ok-1", "error"] == (
        f"{status}: the API redirected to http://{host}:{port}/v1/core/recordings/ok-1/signedUrl"
        " (not followed; check api_url)"
    )
    assert pd.isna(rows.at["ok-2", "error"])
    storage = json.dumps(emulator.stats.storage_headers).lower()
    assert emulator.stats.storage_headers and TOKEN.lower() not in storage
    assert TOKEN_HEADER not in storage


def test_a_redirect_within_the_api_origin_is_not_followed_either(emulator, tmp_path):
    """A POST redirected would be sent again as a GET: a redirect is reported, whatever its host."""
    emulator.faults.redirect["ok-1"] = f"{emulator.api_url}/v1/core/recordings/ok-2/signedUrl"
    manifest = fetch(emulator, ["ok-1"], tmp_path / "recordings", tmp_path / "manifest.parquet")
    assert manifest.loc[0, "error"].startswith("307: the API redirected to http://127.0.0.1:")
    assert manifest.loc[0, "error_kind"] == "api_error"
    assert emulator.stats.api_calls["ok-2"] == 0


def test_storage_never_sees_the_token(emulator, tmp_path):
    emulator.faults.cut_after["cut"] = 5_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = fetch(
            emulator, ["ok-1", "cut"], tmp_path / "recordings", tmp_path / "manifest.parquet"
        )
    assert manifest["error"].isna().all()
    assert len(emulator.stats.storage_headers) >= 3  # two files, one resumed
    for headers in emulator.stats.storage_headers:
        assert TOKEN_HEADER not in headers
        assert not [value for value in headers.values() if "SENTINEL" in value]
