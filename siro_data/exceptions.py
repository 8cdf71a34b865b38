"""Typed errors: each carries what a caller needs to decide, never a secret.

Unlike ``requests`` exceptions, these do not carry the response object: its
request holds the auth token and, for storage, the signed URL.
"""

from __future__ import annotations

from .rows import UNAVAILABLE_KINDS, Kind


class SiroDataError(Exception):
    """Base class of every error siro_data raises."""

    #: Short, stable name of the failure, used to group errors in the manifest
    #: (:class:`siro_data.rows.Kind`; each subclass names its own).
    kind = Kind.UNEXPECTED


class SiroAPIError(SiroDataError):
    """The Siro API refused to sign a recording (its status and own message).

    Parameters
    ----------
    status : int or None
        HTTP status of the answer (``None`` when no answer came).
    message : str
        The server's own message, already free of secrets.
    """

    def __init__(self, status: int | None, message: str) -> None:
        self.status = status
        self.message = message
        prefix = f"{status}: " if status is not None else ""
        super().__init__(f"{prefix}{message}")

    @property
    def kind(self) -> str:  # type: ignore[override]
        if self.status is None:
            return Kind.CONNECTION
        return {
            400: Kind.BAD_REQUEST,
            403: Kind.FORBIDDEN,
            404: Kind.NOT_FOUND,
            422: Kind.INVALID,
            429: Kind.RATE_LIMITED,
        }.get(self.status, Kind.SERVER_ERROR if self.status >= 500 else Kind.API_ERROR)

    @property
    def retry_later(self) -> bool:
        """Whether the API, not the request, failed (no answer, 5xx, 429): try again later."""
        return self.kind in UNAVAILABLE_KINDS


class AuthError(SiroAPIError):
    """The token was rejected (401): the whole run stops, since every call would fail."""

    kind = Kind.UNAUTHORIZED


class UnavailableError(SiroAPIError):
    """The API kept failing (no answer, 5xx, 429 after the retries): try again later.

    A run stops with it once so many recordings in a row failed that way that
    the API, not the recordings, is at fault: the ids not reached are
    ``stopped`` rows, fetched by the next run.
    """

    kind = Kind.UNAVAILABLE

    @property
    def retry_later(self) -> bool:
        return True


class DownloadError(SiroDataError):
    """Storage did not deliver the file (status and message, never the URL)."""

    kind = Kind.DOWNLOAD

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        self.message = message
        prefix = f"download {status}: " if status is not None else "download: "
        super().__init__(f"{prefix}{message}")


class ExpiredURLError(DownloadError):
    """The signed URL expired: not a failure, the caller signs again and resumes."""

    kind = Kind.EXPIRED_URL


class NotAudioError(SiroDataError):
    """What arrived is not audio (an HTML or XML error page, truncated bytes)."""

    kind = Kind.NOT_AUDIO


class LocalFileError(SiroDataError, OSError):
    """A file or folder of the run could not be read or written: the run stopped cleanly.

    Its text is one sentence, what and where and why ("cannot write
    /data/recordings/x.part: No space left on device"); ``errno``,
    ``strerror`` and ``filename`` are those of the error it stands for. The
    manifest keeps every finished row and partial files are kept: once the
    cause is mended, the next run continues.

    Parameters
    ----------
    error : OSError
        What the operating system said.
    doing : str
        What was being done, as a verb ("write", "read", "save the manifest to").
    path : path-like, optional
        The file, when ``error`` does not name it.
    """

    def __init__(self, error: OSError, doing: str, path: object = None) -> None:
        super().__init__(error.errno, error.strerror or str(error), error.filename or path)
        self.doing = doing

    def __str__(self) -> str:
        where = f" {self.filename}" if self.filename else ""
        return f"cannot {self.doing}{where}: {self.strerror}"


class Interrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, the kernel's interrupt); its manifest is saved.

    A ``KeyboardInterrupt``, so that it stops whatever called the run, a
    notebook's Run All included; IPython shows it as its one line of text
    rather than a traceback through siro_data's internals.

    Examples
    --------
    >>> error = Interrupted("interrupted: the manifest is saved; run again to resume")
    >>> isinstance(error, KeyboardInterrupt), error._render_traceback_()
    (True, ['KeyboardInterrupt: interrupted: the manifest is saved; run again to resume'])
    """

    def _render_traceback_(self) -> list[str]:
        """What IPython shows in place of a traceback."""
        return [f"KeyboardInterrupt: {self}"]
