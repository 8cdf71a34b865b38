"""The emulator's fault switches: what may go wrong, chosen per recording or for all.

Plain data read by the handlers on every request, so a test can flip a switch while the
servers run. One-shot switches are used up through the emulator's `take_once`,
`next_transient` and `spend_token`, under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Faults:
    """Fault switches; each default means "no fault". Mutable while the servers run.

    One-shot faults are consumed as they fire: a `transient` queue is popped one status
    per call (the key is removed once empty), and `cut_after` / `stall_after` entries are
    removed once used (after `cut_times[id]` cuts for `cut_after`), so tests can read
    what is left.
    """

    api_latency: float = 0.0
    """Seconds slept before every API answer."""
    storage_ttfb: float = 0.0
    """Seconds slept before the storage sends its headers."""
    bandwidth: float | None = None
    """Bytes per second per storage response (paced between chunks)."""
    total_bandwidth: float | None = None
    """Bytes per second of all storage responses together: a downlink they share."""
    api_status: dict[str, int] = field(default_factory=dict)
    """id -> status answered with its documented body, on every call."""
    api_error_payload: set[str] = field(default_factory=set)
    """ids answered 200 ``{"data": {"error": true, "errorMessage": ...}}``."""
    not_ready_until: dict[str, float] = field(default_factory=dict)
    """id -> epoch seconds (the emulator's clock) before which the recording's audio is not
    ready: signedUrl answers 200 ``{"data": {"error": true, ...}}`` until then."""
    api_malformed: dict[str, str] = field(default_factory=dict)
    """id -> "html" | "not_json" | "no_url": a 200 the client cannot use."""
    transient: dict[str, list[int]] = field(default_factory=dict)
    """id -> statuses the API answers first, one per call, before behaving normally."""
    storage_transient: dict[str, list[int]] = field(default_factory=dict)
    """id -> statuses the storage answers first, one per request."""
    rate_limit: int | None = None
    """Accepted API requests per token per `rate_window` seconds; beyond it, 429."""
    rate_window: float = 60.0
    retry_after: str | None = None
    """Retry-After header value sent with a 429 or a 503 (None: no header, as Siro documents)."""
    expiration_unit: Literal["ms", "s"] = "ms"
    """Unit of the API's ``expiration``: epoch milliseconds or seconds."""
    url_ttl: float = 900.0
    """Lifetime of signed URLs in seconds; 0 or less signs URLs that are already expired."""
    expired_status: Literal[400, 403] = 400
    """400: GCS ``ExpiredToken``; 403: S3-style ``AccessDenied`` "Request has expired"."""
    expired_says_why: bool = True
    """False: an expired URL gets a bare 403 ``AccessDenied`` that does not mention expiry."""
    cut_after: dict[str, int] = field(default_factory=dict)
    """id -> close the connection after this many body bytes (full Content-Length sent)."""
    cut_times: dict[str, int] = field(default_factory=dict)
    """id -> how many responses `cut_after` cuts (default 1)."""
    stall_after: dict[str, int] = field(default_factory=dict)
    """id -> send this many body bytes, then stall `stall_seconds` (once)."""
    stall_seconds: float = 30.0
    ignore_range: bool | set[str] = False
    """True, or a set of ids: answer 200 with the whole body even when Range is asked."""
    content_length_delta: dict[str, int] = field(default_factory=dict)
    """id -> advertise Content-Length = true length + delta, then close the connection.

    Negative: the body is sent only up to the advertised length (a silently short file).
    Positive: the whole body is sent and the connection is cut (an incomplete read).
    """
    storage_html: set[str] = field(default_factory=set)
    """ids for which the storage answers 200 text/html (a misbehaving CDN)."""
    redirect: dict[str, str] = field(default_factory=dict)
    """id -> absolute URL the API answers a `redirect_status` to."""
    redirect_status: Literal[301, 302, 307, 308] = 307
    clock_offset: float = 0.0
    """Seconds the emulator's clock is ahead of the real one (negative: behind).

    Its one clock (`Emulator.now`) signs, dates and expires URLs, checks expiry at the
    storage and fills both servers' ``Date`` header: an API and storage whose clock is off
    from the client's, as a client on a laptop whose clock has drifted sees them.
    """
    minted_token_uses: int | None = None
    """signedUrl requests each token the organisation API mints is accepted for; then it has
    expired (401), as its 16 hours would. None: minted tokens do not expire."""
    token_uses: dict[str, int] = field(default_factory=dict)
    """token -> signedUrl requests it is still accepted for; then it has expired (401).

    Decremented as requests are accepted: a token that expires mid-run, at a chosen call.
    """
