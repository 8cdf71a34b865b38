"""`Emulator`: a local stand-in for Siro's signed-URL API and the cloud storage behind it.

Two real HTTP/1.1 servers on 127.0.0.1 (two origins, as in production: the token must never
reach the storage host), built on the standard library only so the tests exercise the
client's real network code: connection reuse, timeouts, cut bodies, Range resumption.
Every fault a client must survive can be switched on while the servers run (`Faults`),
and what the clients did is counted (`Stats`).

The handlers (`api`, `storage`) use the emulator through its public state and methods only
(`base.Backend` lists them); this module holds the state they share and the life cycle.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone

from .api import ApiHandler, RateLimiter
from .base import Handler, Server
from .faults import Faults
from .oauth import FUNCTIONS_PREFIX
from .samples import Recording, sample_recordings
from .stats import Stats
from .storage import Downlink, StorageHandler, UrlSigner

logger = logging.getLogger(__name__)


class Emulator:
    """Siro's signed-URL API and a GCS-like storage, served on two ephemeral local ports.

    Parameters
    ----------
    recordings : Mapping[str, Recording] or Iterable[Recording], optional
        What the emulator serves; `sample_recordings()` by default. Copied: add
        recordings later with `add_recording` or by setting ``emu.recordings[id]``.
    token : str
        The accepted ``x-siro-auth-token``. ``emu.tokens`` (a set) may be changed at
        run time to rotate or revoke tokens; tokens minted by the organisation API
        (``functions_url``, with ``organization_token`` and ``oauth_app``) join it.
    faults : Faults, optional
        Initial fault switches; ``emu.faults`` can be changed while running.
    host : str
        Interface to bind.
    api_port, storage_port : int
        Ports to bind; 0 picks free ones.

    Examples
    --------
    >>> import requests
    >>> with Emulator(token="t") as emu:
    ...     answer = requests.post(f"{emu.api_url}/v1/core/recordings/unknown/signedUrl",
    ...                            headers={"x-siro-auth-token": "t"})
    >>> answer.status_code, answer.json()
    (404, {'error': 'Recording not found'})
    """

    def __init__(
        self,
        recordings: Mapping[str, Recording] | Iterable[Recording] | None = None,
        token: str = "test-token",
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        api_port: int = 0,
        storage_port: int = 0,
    ) -> None:
        if recordings is None:
            recordings = sample_recordings()
        if isinstance(recordings, Mapping):
            self.recordings: dict[str, Recording] = dict(recordings)
        else:
            self.recordings = {rec.id: rec for rec in recordings}
        #: What Siro deleted or purged (`delete`, `purge`), by id: no longer served nor listed.
        self.deleted: dict[str, Recording] = {}
        self.token = token
        self.tokens: set[str] = {token}
        #: The organisation's API token (``Authorization: Bearer``) that may mint tokens.
        self.organization_token = f"org-{token}"
        #: The OAuth app that mints them: client id, client secret, and the user they act for.
        self.oauth_app = ("emulator-app", f"app-secret-{token}", "emulator-user")
        self.faults = faults if faults is not None else Faults()
        self.stats = Stats()
        self.last_modified = email.utils.formatdate(self.now(), usegmt=True)
        self._host = host
        self._ports = (api_port, storage_port)
        self._signer = UrlSigner()
        self._limiter = RateLimiter()
        self._downlink = Downlink()
        self._lock = threading.Lock()  # one-shot fault state
        self._stopping = threading.Event()
        self._servers: list[Server] = []
        self._threads: list[threading.Thread] = []

    @property
    def api_url(self) -> str:
        """Base URL of the API, without a trailing slash."""
        return self._url(0)

    @property
    def functions_url(self) -> str:
        """Base URL of the organisation API (Siro's functions host), where tokens are minted."""
        return self._url(0) + FUNCTIONS_PREFIX

    @property
    def storage_url(self) -> str:
        """Base URL of the storage, without a trailing slash."""
        return self._url(1)

    def _url(self, index: int) -> str:
        if len(self._servers) < 2:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._servers[index].server_address[:2]
        return f"http://{host}:{port}"

    def add_recording(self, recording: Recording) -> None:
        """Serve `recording` too (replacing one with the same id)."""
        self.recordings[recording.id] = recording

    def publish(
        self,
        recording: Recording,
        *,
        created: datetime | None = None,
        ready_in: float | None = None,
    ) -> Recording:
        """A recording appears in the archive now: listed from now on, as Siro's grows.

        Parameters
        ----------
        recording : Recording
            What to serve.
        created : datetime, optional
            Its ``dateCreated``; default: now, by the emulator's clock. An earlier
            date makes a recording that shows up late, after syncs that listed
            past its date.
        ready_in : float, optional
            Seconds until its audio is ready: until then signedUrl answers
            "Recording audio is not available yet" (``faults.not_ready_until``).

        Returns
        -------
        Recording
            The recording as served, with its ``date_created``.
        """
        when = created or datetime.fromtimestamp(self.now(), timezone.utc)
        published = replace(recording, date_created=when)
        self.add_recording(published)
        if ready_in is not None:
            self.faults.not_ready_until[published.id] = self.now() + ready_in
        return published

    def delete(self, recording_id: str) -> Recording:
        """Siro deletes a recording: gone from the listing, and its signedUrl answers 404
        ``Recording not found`` as for an id Siro never knew; storage no longer serves it.

        Returns the recording (kept in ``emu.deleted``); KeyError if it is not served.

        Examples
        --------
        >>> import requests
        >>> with Emulator(token="t") as emu:
        ...     gone = emu.delete(next(iter(emu.recordings)))
        ...     answer = requests.post(f"{emu.api_url}/v1/core/recordings/{gone.id}/signedUrl",
        ...                            headers={"x-siro-auth-token": "t"})
        >>> answer.status_code, gone.id in emu.recordings, gone.id in emu.deleted
        (404, False, True)
        """
        recording = self.recordings.pop(recording_id)
        self.deleted[recording_id] = recording
        return recording

    def purge(self, before: datetime) -> list[str]:
        """An organisation's retention: the recordings created before ``before`` are gone
        for good (Siro's organisation listing says so in ``rootDataPurgedAt``), as `delete`
        leaves them. Returns their ids, oldest first.
        """
        cutoff = before if before.tzinfo is not None else before.replace(tzinfo=timezone.utc)
        old = sorted(
            (rec for rec in self.recordings.values() if rec.date_created < cutoff),
            key=lambda rec: (rec.date_created, rec.id),
        )
        return [self.delete(rec.id).id for rec in old]

    def start(self) -> Emulator:
        """Bind both servers and serve them on daemon threads; returns self."""
        if self._servers:
            return self
        self._stopping.clear()
        handlers: tuple[tuple[str, type[Handler], int], ...] = (
            ("api", ApiHandler, self._ports[0]),
            ("storage", StorageHandler, self._ports[1]),
        )
        try:
            for kind, handler, port in handlers:
                server = Server((self._host, port), handler, self, kind)
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.02},  # stop() waits up to this
                    name=f"siro-emulator-{kind}",
                    daemon=True,
                )
                self._servers.append(server)
                self._threads.append(thread)
                thread.start()
        except BaseException:
            self.stop()
            raise
        logger.info("emulator: API at %s, storage at %s", self.api_url, self.storage_url)
        return self

    def stop(self) -> None:
        """Stop both servers and close every connection, stalled ones included."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.close_open_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what the handlers use (`base.Backend`) ------------------------------------------------

    def now(self) -> float:
        """Epoch seconds by the emulator's clock: the real one, `faults.clock_offset` off.

        Signing dates, expirations, storage's expiry check, ``Date`` headers, readiness and
        Last-Modified (read at construction) all come from here.
        """
        return time.time() + self.faults.clock_offset

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless stopping (then True at once), so no handler outlives `stop`."""
        return self._stopping.wait(seconds)

    def spend_token(self, token: str) -> bool:
        """Use up one of `faults.token_uses` (False once none is left): a token expires mid-run."""
        with self._lock:
            uses = self.faults.token_uses
            if token not in uses:
                return True
            if uses[token] <= 0:
                return False
            uses[token] -= 1
            return True

    def mint_token(self) -> str:
        """A fresh access token, accepted from now on (for `faults.minted_token_uses` calls)."""
        with self._lock:
            token = f"{self.token}-minted-{len(self.tokens)}"
            if self.faults.minted_token_uses is not None:
                self.faults.token_uses[token] = self.faults.minted_token_uses
            self.tokens.add(token)
        return token

    def admit(self, token: str) -> bool:
        """Whether `token` is within `faults.rate_limit` (counting it): one budget, both routes."""
        return self._limiter.admit(token, self.faults.rate_limit, self.faults.rate_window)

    def next_transient(self, queues: dict[str, list[int]], rec_id: str) -> int | None:
        """Pop the next status queued for `rec_id` (None if none): each queued fault fires once."""
        with self._lock:
            queue = queues.get(rec_id)
            if not queue:
                return None
            status = queue.pop(0)
            if not queue:
                del queues[rec_id]
            return status

    def take_once(
        self, switch: dict[str, int], times: dict[str, int] | None, rec_id: str
    ) -> int | None:
        """A one-shot switch's value for `rec_id` (cut, stall), gone after `times[rec_id]` uses."""
        with self._lock:
            if rec_id not in switch:
                return None
            value = switch[rec_id]
            remaining = times.get(rec_id, 1) if times is not None else 1
            if remaining > 1 and times is not None:
                times[rec_id] = remaining - 1
            else:
                del switch[rec_id]
                if times is not None:
                    times.pop(rec_id, None)
            return value

    def sign_url(self, recording: Recording) -> tuple[str, int]:
        """A storage URL for `recording`, expiring in `faults.expiration_unit`: a 200's data."""
        url, expiration = self._signer.sign(
            self.storage_url, recording, self.now(), self.faults.url_ttl
        )
        return url, expiration * 1000 if self.faults.expiration_unit == "ms" else expiration

    def signature_ok(self, rec_id: str, extension: str, params: dict[str, str]) -> bool:
        """Whether a storage query was signed here for that object: only URLs the API gave work."""
        return self._signer.verify(rec_id, extension, params)

    def link_due(self, n: int) -> float:
        """When `n` more bytes will have crossed the downlink all storage responses share."""
        return self._downlink.due(n, self.faults.total_bandwidth)
