"""The API's clock against ours, without a server: skew from a Date header or a signed URL,
the ``expiration`` unit checked against the URL's own lifetime, one warning, and a held URL
judged on the API's clock.
"""

from __future__ import annotations

import logging
import threading

import pandas as pd
import pytest

from siro_data import SignedURL
from siro_data.clock import (
    ApiClock,
    Lifetime,
    cross_checked,
    describe_skew,
    parse_expiration,
    skew_from_date,
    skew_from_url,
)

#: 2026-01-01 00:00:00 UTC.
NEW_YEAR = 1767225600
NEW_YEAR_DATE = "Thu, 01 Jan 2026 00:00:00 GMT"
SIGNATURE = "f00dfeed" * 8


def url(goog_date: str = "20251231T234500Z", expires: str = "900") -> str:
    """A GCS V4 signed URL signed at ``goog_date`` for ``expires`` seconds (by default it
    expires at NEW_YEAR).
    """
    return (
        "https://storage.example/bucket/rec/audio.m4a?X-Goog-Algorithm=GOOG4-HMAC-SHA256"
        f"&X-Goog-Date={goog_date}&X-Goog-Expires={expires}&X-Goog-SignedHeaders=host"
        f"&X-Goog-Signature={SIGNATURE}"
    )


# --- the skew --------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7, 0.99])
def test_clocks_that_agree_differ_by_zero(fraction: float) -> None:
    """A Date is rounded down to its second: anywhere in that second reads as no skew."""
    assert skew_from_date(NEW_YEAR_DATE, NEW_YEAR + fraction) == 0.0


@pytest.mark.parametrize("skew", [-3600, -61, 61, 3600, 86400])
def test_skew_from_a_date_header_in_whole_seconds(skew: int) -> None:
    """The API's clock minus ours: positive when ours is behind."""
    assert skew_from_date(NEW_YEAR_DATE, NEW_YEAR - skew + 0.25) == skew


@pytest.mark.parametrize("header", [None, "", "yesterday", "Thu, 01 Jan 2026 25:61:00 GMT"])
def test_no_usable_date_measures_nothing(header: str | None) -> None:
    assert skew_from_date(header, NEW_YEAR) is None


def test_skew_from_when_the_url_says_it_was_signed() -> None:
    """Without a Date header, X-Goog-Date is the API's clock at signing."""
    stated = Lifetime.of(url(goog_date="20260101T010000Z"))
    assert skew_from_url(stated, NEW_YEAR + 0.4) == 3600.0
    assert skew_from_url(None, NEW_YEAR) is None


# --- the API's expiration, the URL's own lifetime, and the unit ------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767225600, "2026-01-01 00:00:00+00:00"),
        (1767225600000, "2026-01-01 00:00:00+00:00"),
        (1767225600.5, "2026-01-01 00:00:00.500000+00:00"),
        (1767225600500, "2026-01-01 00:00:00.500000+00:00"),
        (0, "1970-01-01 00:00:00+00:00"),
        (99_999_999_999, "5138-11-16 09:46:39+00:00"),
    ],
)
def test_parse_expiration_seconds_and_milliseconds(value: float, expected: str) -> None:
    """Epoch seconds and epoch milliseconds both give the same UTC instant."""
    parsed = parse_expiration(value)
    assert parsed == pd.Timestamp(expected)
    assert str(parsed.tz) == "UTC"


@pytest.mark.parametrize("value", [None, True, False, "", "soon", float("nan"), [1], {}])
def test_parse_expiration_rejects_non_numbers(value: object) -> None:
    """Anything that is not a time means "unknown", not an exception."""
    assert parse_expiration(value) is None


@pytest.mark.parametrize(
    "value", ["1767225600", "1767225600000", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00"]
)
def test_parse_expiration_reads_strings_too(value: str) -> None:
    """The spec says number; a numeric or ISO 8601 string gives the same instant."""
    assert parse_expiration(value) == pd.Timestamp("2026-01-01", tz="UTC")


def test_a_v4_url_states_its_own_lifetime() -> None:
    stated = Lifetime.of(url())
    assert stated == Lifetime(
        pd.Timestamp("2025-12-31 23:45:00", tz="UTC"), pd.Timestamp("2026-01-01", tz="UTC")
    )


@pytest.mark.parametrize(
    "bad",
    [
        "https://storage.example/audio.m4a",
        url(goog_date="2026-01-01"),
        url(expires="soon"),
        url(expires="-5"),
        "https://storage.example/audio.m4a?X-Goog-Date=20260101T000000Z",
    ],
)
def test_a_url_that_states_no_lifetime(bad: str) -> None:
    assert Lifetime.of(bad) is None


@pytest.mark.parametrize(
    "value",
    [NEW_YEAR, NEW_YEAR * 1000, NEW_YEAR + 1, str(NEW_YEAR * 1000), "2026-01-01T00:00:00Z"],
)
def test_an_expiration_that_agrees_with_the_url_is_the_apis(value: object) -> None:
    read = cross_checked(value, Lifetime.of(url()))
    assert abs(read - pd.Timestamp("2026-01-01", tz="UTC")) <= pd.Timedelta(seconds=1)


@pytest.mark.parametrize(
    ("value", "unit"),
    [(NEW_YEAR * 10**6, "us"), (NEW_YEAR * 10**9, "ns"), (str(NEW_YEAR * 10**6), "us")],
)
def test_a_unit_mix_up_is_read_as_the_url_says(
    value: object, unit: str, caplog: pytest.LogCaptureFixture
) -> None:
    """By size, microseconds pass for milliseconds (year 57,971) and nanoseconds overflow:
    the URL's own lifetime tells the unit, said at debug without the URL's query.
    """
    caplog.set_level(logging.DEBUG, logger="siro_data.clock")
    assert cross_checked(value, Lifetime.of(url())) == pd.Timestamp("2026-01-01", tz="UTC")
    assert f"read as epoch {unit}" in caplog.text
    assert SIGNATURE not in caplog.text and "X-Goog" not in caplog.text


def test_a_disagreement_no_unit_explains_keeps_the_apis_instant() -> None:
    """The manifest records the API's word; the URL only corrects a misread unit."""
    later = NEW_YEAR + 3600
    assert cross_checked(later, Lifetime.of(url())) == pd.Timestamp("2026-01-01 01:00", tz="UTC")


def test_without_a_lifetime_the_size_decides() -> None:
    assert cross_checked(NEW_YEAR * 1000, None) == pd.Timestamp("2026-01-01", tz="UTC")
    assert cross_checked(None, Lifetime.of(url())) is None
    assert cross_checked(NEW_YEAR * 10**9, None) is None  # overflows: unknown, not an exception


# --- the warning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew", "words"),
    [
        (3600, "1 h 00 min behind"),
        (-3600, "1 h 00 min ahead of"),
        (-5400, "1 h 30 min ahead of"),
        (95, "1 min 35 s behind"),
        (-61, "1 min 01 s ahead of"),
        (86400, "24 h 00 min behind"),
    ],
)
def test_the_warning_says_by_how_much_and_which_way(skew: float, words: str) -> None:
    assert describe_skew(skew) == (
        f"this machine's clock is {words} the API's; "
        "signed URLs are judged by storage, not by this clock"
    )


def test_one_warning_per_client_however_many_answers(caplog: pytest.LogCaptureFixture) -> None:
    """Sixteen threads measure the same skew: one warning, and the latest skew kept."""
    caplog.set_level(logging.WARNING, logger="siro_data.clock")
    clock = ApiClock()
    assert clock.skew is None
    threads = [threading.Thread(target=clock.observe, args=(-3600.0,)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.observe(None)  # an answer without a Date measures nothing
    assert clock.skew == -3600.0
    clock.observe(7200.0)
    assert clock.skew == 7200.0
    warnings = [r for r in caplog.records if r.name == "siro_data.clock"]
    assert [r.getMessage() for r in warnings] == [describe_skew(-3600)]
    assert warnings[0].levelno == logging.WARNING


@pytest.mark.parametrize("skew", [0.0, 59.0, -60.0])
def test_a_minute_or_less_is_not_worth_a_warning(
    skew: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="siro_data.clock")
    clock = ApiClock()
    clock.observe(skew)
    assert clock.skew == skew
    assert not caplog.records


# --- a held URL, judged on the API's clock ---------------------------------------------------


def test_a_held_url_is_judged_on_the_apis_clock() -> None:
    """An expiration is the API's instant: compared with our clock plus the skew."""
    now = pd.Timestamp.now(tz="UTC")
    half_hour = pd.Timedelta(minutes=30)
    # Our clock an hour behind the API's: 30 min left by ours, expired by the API's.
    behind = SignedURL(url(), now + half_hour, clock_skew=3600.0)
    assert behind.expires_within(0)
    # Our clock an hour ahead: expired 30 min ago by ours, 30 min left by the API's.
    ahead = SignedURL(url(), now - half_hour, clock_skew=-3600.0)
    assert not ahead.expires_within(0)
    assert ahead.expires_within(31 * 60)
    # Clocks that agree: our clock is the API's.
    assert not SignedURL(url(), now + half_hour).expires_within(0)
    assert SignedURL(url(), now - half_hour).expires_within(0)
