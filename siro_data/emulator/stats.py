"""What the emulator's servers saw: requests, bytes and connections, counted under a lock.

The handlers count through the ``count_*`` methods; tests read the fields directly, and a
process that polls while the servers run reads a consistent copy with `Stats.snapshot`.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Stats:
    """What the servers saw; read freely, counters are updated under a lock."""

    api_requests: int = 0
    api_calls: collections.Counter[str] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    """Number of 429 answers."""
    listing_requests: int = 0
    mint_requests: int = 0
    """Requests to the organisation API's token minting, not in api_requests."""
    """Requests to the recordings listing (``GET /v1/core/recordings``), also in api_requests."""
    api_headers: list[dict[str, str]] = field(default_factory=list)
    api_request_times: list[float] = field(default_factory=list)
    """time.monotonic() at each API request's arrival."""
    storage_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    storage_headers: list[dict[str, str]] = field(default_factory=list)
    bytes_served: collections.Counter[str] = field(default_factory=collections.Counter)
    """id -> body bytes written to the socket."""
    connections_opened: collections.Counter[str] = field(default_factory=collections.Counter)
    """"api" / "storage" -> TCP connections accepted."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_bytes_served(self) -> int:
        """Body bytes written by the storage, all recordings together."""
        return sum(self.bytes_served.values())

    def reset(self) -> None:
        """Zero every counter (fault state and rate-limit windows are kept)."""
        fresh = Stats()
        with self._lock:
            for name in self._counters():
                setattr(self, name, getattr(fresh, name))

    def snapshot(self) -> Stats:
        """A copy of every counter taken at one instant: totals that agree with each other.

        For a reader polling while the servers run, which must not hold the lock itself.
        """
        with self._lock:
            return Stats(**{name: copy.copy(value) for name, value in self._counters().items()})

    def forget_headers(self) -> None:
        """Drop the request headers kept so far: a long run that needs only counts stays small."""
        with self._lock:
            self.api_headers.clear()
            self.storage_headers.clear()

    def count_api(self, rec_id: str | None, headers: dict[str, str]) -> None:
        """Count an API request (either route) on arrival; `rec_id` None off the signedUrl path."""
        with self._lock:
            self.api_requests += 1
            self.api_request_times.append(time.monotonic())
            self.api_headers.append(headers)
            if rec_id is not None:
                self.api_calls[rec_id] += 1

    def count_listing(self) -> None:
        """Count a request to the listing route, apart from the signedUrl calls."""
        with self._lock:
            self.listing_requests += 1

    def count_mint(self) -> None:
        """Count a request to the organisation API (minting a token)."""
        with self._lock:
            self.mint_requests += 1

    def count_rate_limited(self) -> None:
        """Count a 429 answer, whichever route or fault gave it."""
        with self._lock:
            self.rate_limited += 1

    def count_storage(self, rec_id: str | None, headers: dict[str, str]) -> None:
        """Count a storage request on arrival; `rec_id` None for a path that names no object."""
        with self._lock:
            self.storage_headers.append(headers)
            if rec_id is not None:
                self.storage_requests[rec_id] += 1

    def count_served(self, rec_id: str, n: int) -> None:
        """Count `n` body bytes of `rec_id` as written (negative: take back an unsent write)."""
        with self._lock:
            self.bytes_served[rec_id] += n

    def count_connection(self, kind: str) -> None:
        """Count a TCP connection accepted by the "api" or "storage" server."""
        with self._lock:
            self.connections_opened[kind] += 1

    def _counters(self) -> dict[str, Any]:
        """Every field but the lock, by name (read or written under the lock)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}
