"""Every fault the emulator can inject, met by fetch_all in a mixed batch.

One table, one row per fault: what is switched on, what each row of the manifest must say,
what is left on disk, and how many requests and body bytes crossed the wire. The faulty
recording ("bad") always runs beside two healthy ones ("ok1", "ok2"), which must come out
byte-identical whatever happens next to them; a fault that hits every row (a slow API, URLs
that are expired when signed) says so with ``rest=``.

Adding a fault is one line in ``CASES``; ``test_every_fault_switch_has_a_case`` fails when
the emulator grows a switch the table does not exercise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from support import FAST_RETRIES, TOKEN, fetch, final_path, sha256

from siro_data import Downloader, SiroClient, read_manifest
from siro_data.archive import journal_path
from siro_data.download import partial_path
from siro_data.emulator import Emulator, Faults, Recording, make_recording

ROLES = ("bad", "ok1", "ok2")

Setup = Callable[[Emulator, str], None]
"""Switches faults on, given the emulator and the faulty recording's id."""


# --- what a row must look like -------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One recording's outcome.

    ``error`` is the exact message (``{size}`` is the recording's size), None for success.
    ``served`` is the body bytes the storage sends for it, as a function of its size
    (None: not deterministic, only the batch's bound applies). ``part`` is the size of
    the ``.part`` left behind, as a function of its size (None: no partial).
    ``api`` / ``storage`` count requests for it (None: not deterministic).
    """

    error: str | None = None
    kind: str | None = None
    api: int | None = 1
    storage: int | None = 1
    served: Callable[[int], int] | None = lambda size: size
    part: Callable[[int], int] | None = None
    typed: bool = True
    """Whether an ok row's content_type is the storage's (unknown after a bare 416)."""


OK = Expect()


def fails(error: str, kind: str, *, api: int = 1, storage: int = 0, **more) -> Expect:
    """A row that fails; by default at the API, so storage is never asked and nothing served."""
    more.setdefault("served", lambda size: 0)
    return Expect(error=error, kind=kind, api=api, storage=storage, **more)


def ok(**more) -> Expect:
    return dataclasses.replace(OK, **more)


# --- how a fault is switched on ------------------------------------------------------------------


def per_id(switch: str, value: object = True) -> Setup:
    """Turn on a per-id switch (a set or a dict) for the faulty id; value may use its size."""

    def setup(emu: Emulator, bad: str) -> None:
        target = getattr(emu.faults, switch)
        if isinstance(target, set):
            target.add(bad)
        else:
            size = emu.recordings[bad].size
            target[bad] = value(size) if callable(value) else value

    return setup


def globally(**settings: object) -> Setup:
    """Set global switches (they touch every row)."""

    def setup(emu: Emulator, bad: str) -> None:
        for name, value in settings.items():
            setattr(emu.faults, name, value)

    return setup


def ignore_range(emu: Emulator, bad: str) -> None:
    """The storage answers the faulty id's ranged requests with a 200 and the whole body."""
    emu.faults.ignore_range = {bad}


#: A redirect from the API is reported, never followed (a POST would turn GET, the token go astray).
NOT_FOLLOWED = (
    "{status}: the API redirected to {{storage_url}}/moved/signedUrl (not followed; check api_url)"
)


def redirect_to_storage(status: int) -> Setup:
    """The API answers a redirect to another origin (the storage host)."""

    def setup(emu: Emulator, bad: str) -> None:
        emu.faults.redirect[bad] = f"{emu.storage_url}/moved/signedUrl"
        emu.faults.redirect_status = status

    return setup


def all_of(*setups: Setup) -> Setup:
    def setup(emu: Emulator, bad: str) -> None:
        for one in setups:
            one(emu, bad)

    return setup


def leave_partial(content: Callable[[bytes], bytes]) -> Callable[[Path, Recording], None]:
    """An earlier run left ``content(data)`` in the recording's .part."""

    def before(out_dir: Path, recording: Recording) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        partial_path(final_path(out_dir, recording)).write_bytes(content(recording.data))

    return before


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    setup: Setup
    bad: Expect
    rest: Expect = OK
    """What the healthy ids must end as (a global fault touches them too)."""
    timeout: tuple[float, float] = (2.0, 2.0)
    before: Callable[[Path, Recording], None] | None = None
    """Leaves files in out_dir before the run, for the faulty recording."""
    wire_ratio: float = 1.1
    """Bound on body bytes served / bytes of the batch's files."""
    check: Callable[[Emulator, pd.DataFrame], None] | None = None
    """Anything else this fault must show."""


def api_span_at_least(seconds: float) -> Callable[[Emulator, pd.DataFrame], None]:
    def check(emu: Emulator, manifest: pd.DataFrame) -> None:
        times = emu.stats.api_request_times
        assert max(times) - min(times) >= seconds

    return check


def api_span_below(seconds: float) -> Callable[[Emulator, pd.DataFrame], None]:
    def check(emu: Emulator, manifest: pd.DataFrame) -> None:
        times = emu.stats.api_request_times
        assert max(times) - min(times) < seconds

    return check


def expiration_in(ttl: float) -> Callable[[Emulator, pd.DataFrame], None]:
    """Each row's expiration is ``ttl`` seconds after now, whatever unit the API used."""

    def check(emu: Emulator, manifest: pd.DataFrame) -> None:
        now = pd.Timestamp.now(tz="UTC")
        for expiration in manifest["expiration"]:
            assert now + pd.Timedelta(seconds=ttl - 10) < expiration
            assert expiration <= now + pd.Timedelta(seconds=ttl + 1)

    return check


def rate_limited(emu: Emulator, manifest: pd.DataFrame) -> None:
    assert emu.stats.rate_limited >= 1


def token_stayed_home(emu: Emulator, manifest: pd.DataFrame) -> None:
    """The redirect was not followed: the other origin saw no request from the API call."""
    downloads = sum(emu.stats.storage_requests.values())
    assert len(emu.stats.storage_headers) == downloads
    assert all("x-siro-auth-token" not in headers for headers in emu.stats.storage_headers)


def half(size: int) -> int:
    return size // 2


#: An expired URL met mid-download: URLs live 1.5 to 2.5 s, the storage stalls half-way
#: and the client's read timeout (2.6 s) outlasts the URL, so the resume meets the expiry.
EXPIRY_MIDWAY = all_of(globally(url_ttl=1.5, stall_seconds=10.0), per_id("stall_after", half))
EXPIRY_TIMEOUT = (2.0, 2.6)
RESIGNED = ok(api=2, storage=3)
#: Storage refuses an expired URL with a bare 403 that does not say why.
BARE_403 = globally(expired_status=403, expired_says_why=False)
#: Every URL has expired when signed: each of 3 fresh URLs is tried once, then the row ends.
GIVEN_UP = fails(
    "download: signed URL expired 3 times in a row without progress", "download", api=3, storage=3
)
HOUR = 3600.0

READ_TIMEOUT = "ConnectionError: Read timed out. (read timeout=0.3)"

CASES = [
    # --- the signed-URL API --------------------------------------------------------------------
    Case("api latency under the timeout", globally(api_latency=0.3), OK),
    Case(
        "api latency over the timeout",
        globally(api_latency=0.6),
        fails(f"no answer from the API: {READ_TIMEOUT}", "connection", api=6),
        rest=fails(f"no answer from the API: {READ_TIMEOUT}", "connection", api=6),
        timeout=(2.0, 0.3),
    ),
    Case("400", per_id("api_status", 400), fails("400: Bad Request", "bad_request")),
    Case(
        "403",
        per_id("api_status", 403),
        fails("403: Forbidden: user does not have access to this recording", "forbidden"),
    ),
    Case("404", per_id("api_status", 404), fails("404: Recording not found", "not_found")),
    Case("422", per_id("api_status", 422), fails("422: ZodError: id: Required", "invalid")),
    Case(
        "500 persistent",
        per_id("api_status", 500),
        fails("500: Internal Server Error", "server_error", api=6),
    ),
    Case(
        "503 persistent",
        per_id("api_status", 503),
        fails("503: Service Unavailable", "server_error", api=6),
    ),
    Case(
        "429 persistent without Retry-After",
        per_id("api_status", 429),
        fails("429: Too Many Requests", "rate_limited", api=6),
    ),
    Case(
        "429 once with Retry-After",
        all_of(per_id("transient", [429]), globally(retry_after="1")),
        ok(api=2),
        check=api_span_at_least(0.95),
    ),
    Case(
        "429 once without Retry-After",
        per_id("transient", [429]),
        ok(api=2),
        check=api_span_below(0.9),
    ),
    Case(
        "429 from the server's own rate limit",
        globally(rate_limit=2, rate_window=1.0, retry_after="1"),
        ok(api=None),
        rest=ok(api=None),
        check=rate_limited,
    ),
    Case("502 once", per_id("transient", [502]), ok(api=2)),
    Case("503 once", per_id("transient", [503]), ok(api=2)),
    Case("504 once", per_id("transient", [504]), ok(api=2)),
    Case(
        "200 with data.error true",
        per_id("api_error_payload"),
        fails("200: signedUrl error: Recording audio is not available yet", "api_error"),
    ),
    Case(
        "audio not ready until later",
        per_id("not_ready_until", 4e9),  # 2096, by the emulator's clock
        fails("200: signedUrl error: Recording audio is not available yet", "api_error"),
    ),
    Case(
        "200 with an HTML page",
        per_id("api_malformed", "html"),
        fails(
            "200: signedUrl answer is not the expected JSON (text/html; charset=utf-8)",
            "api_error",
        ),
    ),
    Case(
        "200 with JSON cut short",
        per_id("api_malformed", "not_json"),
        fails("200: signedUrl answer is not the expected JSON (application/json)", "api_error"),
    ),
    Case(
        "200 without a url",
        per_id("api_malformed", "no_url"),
        fails("200: signedUrl answer has no usable url", "api_error"),
    ),
    Case(
        "307 to another origin",
        redirect_to_storage(307),
        fails(NOT_FOLLOWED.format(status=307), "api_error"),
        check=token_stayed_home,
    ),
    Case(
        "302 to another origin",
        redirect_to_storage(302),
        fails(NOT_FOLLOWED.format(status=302), "api_error"),
        check=token_stayed_home,
    ),
    Case(
        "expiration in seconds",
        globally(expiration_unit="s"),
        OK,
        check=expiration_in(900),
    ),
    Case(
        "expiration in milliseconds",
        globally(expiration_unit="ms"),
        OK,
        check=expiration_in(900),
    ),
    # --- the storage ---------------------------------------------------------------------------
    Case("slow storage", globally(bandwidth=400_000, storage_ttfb=0.1), OK),
    Case("slow downlink shared by all answers", globally(total_bandwidth=400_000), OK),
    Case(
        "storage answers no headers in time",
        globally(storage_ttfb=0.6),
        fails(f"download: no answer from storage: {READ_TIMEOUT}", "download", storage=6),
        rest=fails(f"download: no answer from storage: {READ_TIMEOUT}", "download", storage=6),
        timeout=(2.0, 0.3),
    ),
    Case("storage 503 once", per_id("storage_transient", [503]), ok(storage=2)),
    Case(
        "storage 500 persistent",
        per_id("storage_transient", [500] * 20),  # more than 1 + 5 attempts
        fails("download 500: InternalServerError: Internal Server Error.", "download", storage=6),
    ),
    Case(
        "storage 404",
        per_id("storage_transient", [404]),
        fails("download 404: NotFound: Not Found.", "download", storage=1),
    ),
    Case(
        "storage answers HTML",
        per_id("storage_html"),
        fails(
            "storage answered 200 with text/html; charset=utf-8, not audio", "not_audio", storage=1
        ),
    ),
    Case("cut mid-body", per_id("cut_after", half), ok(storage=2)),
    Case(
        "cut mid-body three times",
        all_of(per_id("cut_after", lambda size: size // 4), per_id("cut_times", 3)),
        ok(storage=4),
    ),
    Case(
        "stall mid-body",
        all_of(per_id("stall_after", half), globally(stall_seconds=10.0)),
        ok(storage=2),
        timeout=(2.0, 0.5),
    ),
    Case(
        "storage ignores Range, met by a resume",
        all_of(ignore_range, per_id("cut_after", half)),
        ok(storage=2, served=lambda size: half(size) + size),
        wire_ratio=1.6,
    ),
    Case(
        "complete .part left by an earlier run (416)",
        globally(),
        ok(storage=1, served=lambda size: 0, typed=False),
        before=leave_partial(lambda data: data),
    ),
    Case(
        ".part longer than the file (416, then afresh)",
        globally(),
        ok(storage=2),
        before=leave_partial(lambda data: data + b"\0" * 500),
    ),
    Case(
        "Content-Length 1000 bytes short",
        per_id("content_length_delta", -1000),
        fails(
            "download: gave up after 5 attempts without progress: "
            "body ended at {short} of {size} bytes",
            "download",
            storage=7,
            served=lambda size: size - 1000,
            part=lambda size: size - 1000,
        ),
    ),
    Case("Content-Length 1000 bytes long", per_id("content_length_delta", 1000), ok(storage=2)),
    Case(
        "URL expires mid-download: 400 ExpiredToken",
        EXPIRY_MIDWAY,
        RESIGNED,
        timeout=EXPIRY_TIMEOUT,
    ),
    Case(
        "URL expires mid-download: 403 saying why",
        all_of(EXPIRY_MIDWAY, globally(expired_status=403)),
        RESIGNED,
        timeout=EXPIRY_TIMEOUT,
    ),
    Case(
        "URL expires mid-download: bare 403",
        all_of(EXPIRY_MIDWAY, BARE_403),
        RESIGNED,
        timeout=EXPIRY_TIMEOUT,
    ),
    Case(
        "URL already expired when signed",  # each fresh URL is tried: storage says it expired
        globally(url_ttl=-5),
        GIVEN_UP,
        rest=GIVEN_UP,
    ),
    # --- the API's clock and ours ----------------------------------------------------------------
    Case("API clock an hour behind ours", globally(clock_offset=-HOUR), OK, rest=OK),
    Case("API clock an hour ahead of ours", globally(clock_offset=HOUR), OK, rest=OK),
    Case(
        "API clock an hour behind ours, URL expires mid-download: bare 403",
        all_of(EXPIRY_MIDWAY, BARE_403, globally(clock_offset=-HOUR)),
        RESIGNED,
        timeout=EXPIRY_TIMEOUT,
    ),
    Case(
        "API clock an hour ahead of ours, URL expires mid-download: bare 403",
        all_of(EXPIRY_MIDWAY, BARE_403, globally(clock_offset=HOUR)),
        RESIGNED,
        timeout=EXPIRY_TIMEOUT,
    ),
    Case(
        "API clock an hour behind ours, storage refuses a valid URL with a bare 403",
        all_of(per_id("storage_transient", [403] * 5), globally(clock_offset=-HOUR)),
        fails("download 403: Forbidden: Forbidden.", "download", storage=1),
    ),
]

#: Switches tested elsewhere, not by a fetch_all batch.
COVERED_ELSEWHERE = {
    "token_uses": "tests/test_tokens.py",
    "minted_token_uses": "tests/test_tokens.py",
}


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch() -> dict[str, Recording]:
    """Small real audio: the faulty recording (m4a, 25 kB) and two healthy ones (mp3, flac)."""
    return {
        "bad": make_recording("faulty-rec", 6.0, "m4a", seed=1),
        "ok1": make_recording("healthy-mp3", 3.0, "mp3", seed=2),
        "ok2": make_recording("healthy-flac", 2.0, "flac", seed=3),
    }


@pytest.fixture
def recordings(batch: dict[str, Recording]) -> dict[str, Recording]:
    return {rec.id: rec for rec in batch.values()}


# --- helpers -------------------------------------------------------------------------------------


def check_row(
    row: pd.Series, expect: Expect, recording: Recording, out_dir: Path, storage_url: str
) -> None:
    final = final_path(out_dir.absolute(), recording)
    part = partial_path(final)
    if expect.error is None:
        assert pd.isna(row["error"]), row["error"]
        assert pd.isna(row["error_kind"])
        assert row["path"] == str(final)
        assert sha256(final) == recording.sha256 == row["sha256"]
        assert row["size_bytes"] == recording.size
        assert row["duration"] == pytest.approx(recording.duration, rel=0.02)
        if expect.typed:
            assert row["content_type"] == recording.content_type
        else:
            assert pd.isna(row["content_type"])
        assert not part.exists()
    else:
        short = recording.size - 1000
        message = expect.error.format(size=recording.size, short=short, storage_url=storage_url)
        assert row["error"] == message
        assert row["error_kind"] == expect.kind
        assert row[["path", "size_bytes", "sha256", "duration"]].isna().all()
        assert not final.exists(), "a failed row left a file under its final name"
        if expect.part is None:
            assert not part.exists()
        else:
            assert part.read_bytes() == recording.data[: expect.part(recording.size)]


# --- the matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault(
    case: Case,
    emulator: Emulator,
    batch: dict[str, Recording],
    tmp_path: Path,
) -> None:
    out_dir, manifest_path = tmp_path / "recordings", tmp_path / "manifest.parquet"
    if case.before is not None:
        case.before(out_dir, batch["bad"])
    case.setup(emulator, batch["bad"].id)
    ids = [batch[role].id for role in ROLES]

    client = SiroClient(
        TOKEN,
        emulator.api_url,
        requests_per_minute=60_000,
        timeout=case.timeout,
        retries=FAST_RETRIES,
    )
    with client, Downloader(timeout=case.timeout, retries=FAST_RETRIES) as downloader:
        manifest = fetch(
            emulator, ids, out_dir, manifest_path, workers=3, client=client, downloader=downloader
        )
    served = emulator.stats.bytes_served.copy()  # before a stalled answer could send more

    expected = {role: case.bad if role == "bad" else case.rest for role in ROLES}
    assert list(manifest["recording_id"]) == ids
    for role, row in zip(ROLES, manifest.to_dict("index").values(), strict=True):
        check_row(pd.Series(row), expected[role], batch[role], out_dir, emulator.storage_url)
    saved = read_manifest(manifest_path).set_index("recording_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(saved, manifest)  # on disk in the order rows finished
    assert not journal_path(manifest_path).exists()

    # On disk: the files of ok rows and the expected partials, no other file.
    left = {
        final_path(out_dir, batch[role]).name
        if expect.error is None
        else partial_path(final_path(out_dir, batch[role])).name
        for role, expect in expected.items()
        if expect.error is None or expect.part is not None
    }
    assert {p.name for p in out_dir.iterdir() if p.is_file()} == left

    # On the wire.
    for role, expect in expected.items():
        rec_id, size = batch[role].id, batch[role].size
        if expect.api is not None:
            assert emulator.stats.api_calls[rec_id] == expect.api, role
        if expect.storage is not None:
            assert emulator.stats.storage_requests[rec_id] == expect.storage, role
        if expect.served is not None:
            assert served[rec_id] == expect.served(size), role
    assert sum(served.values()) <= case.wire_ratio * sum(rec.size for rec in batch.values())
    assert all("x-siro-auth-token" not in headers for headers in emulator.stats.storage_headers)
    if case.check is not None:
        case.check(emulator, manifest)


def test_every_fault_switch_has_a_case(emulator: Emulator, batch: dict[str, Recording]) -> None:
    """A switch added to the emulator's Faults without a line in CASES fails here."""
    defaults = Faults()
    exercised = set()
    for case in CASES:
        emulator.faults = Faults()
        case.setup(emulator, batch["bad"].id)
        exercised |= {
            f.name
            for f in dataclasses.fields(Faults)
            if getattr(emulator.faults, f.name) != getattr(defaults, f.name)
        }
    switches = {f.name for f in dataclasses.fields(Faults)}
    assert switches - exercised - set(COVERED_ELSEWHERE) == set()


def test_case_names_are_distinct() -> None:
    assert len({case.name for case in CASES}) == len(CASES)
