"""Where the Siro token comes from: given, read from the environment, or minted when needed.

Siro's access tokens are minted for one user from the organisation's OAuth app, last 16
hours and have no refresh token. A run that may outlive its token, or a pipeline that runs
every day, takes a *token function* instead of a string: :class:`TokenMinter` is one, which
mints a fresh token through Siro's organisation API whenever the API client asks (at the
start, and once more after a 401). The API client alone holds the token
(:class:`siro_data.SiroClient`); nothing here logs or shows it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from urllib.parse import quote

import requests

from .exceptions import AuthError
from .sessions import DEFAULT_TIMEOUT, describe_error, make_session, redact

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], str]

#: An access token, as a string.
TOKEN_ENV = "SIRO_AUTH_TOKEN"
#: What :meth:`TokenMinter.from_environment` reads: argument name → variable.
MINTER_ENV = {
    "client_id": "SIRO_CLIENT_ID",
    "client_secret": "SIRO_CLIENT_SECRET",
    "user_id": "SIRO_USER_ID",
    "organization_token": "SIRO_ORG_TOKEN",
}
#: Siro's organisation API (where access tokens are minted), if not Siro's own.
FUNCTIONS_URL_ENV = "SIRO_FUNCTIONS_URL"
DEFAULT_FUNCTIONS_URL = "https://functions.siro.ai/api-externalApi"


class TokenMinter:
    """A token function: each call mints a fresh access token for one user.

    ``POST {functions_url}/v1/core/oauth/apps/{client_id}/access-token`` with the
    organisation's API token (``Authorization: Bearer``) and the app's secret, as
    Siro documents it. Pass it as ``token=`` to :func:`siro_data.fetch_all`,
    :func:`siro_data.sync` or :class:`siro_data.SiroClient`; the ``siro-data``
    command makes one from the environment (:meth:`from_environment`) when
    ``SIRO_AUTH_TOKEN`` is not set. It can be pickled to Dask workers; its repr
    shows no secret.

    Parameters
    ----------
    client_id : str
        The OAuth app's client id (Siro web app: Settings, API, OAuth apps).
    client_secret : str
        The app's client secret.
    user_id : str
        The Siro user the token acts for: it sees that user's recordings.
    organization_token : str
        The organisation's API token, made by an admin in the Siro web app.
    functions_url : str, optional
        Default: ``$SIRO_FUNCTIONS_URL``, else Siro's organisation API.
    scope : {"read", "write"}
        What the token may do; siro_data only reads.
    timeout : (float, float)
        Connect and read timeouts in seconds.

    Examples
    --------
    >>> from siro_data.emulator import Emulator
    >>> with Emulator() as emu:
    ...     mint = TokenMinter(*emu.oauth_app, organization_token=emu.organization_token,
    ...                        functions_url=emu.functions_url)
    ...     token = mint()
    ...     token in emu.tokens, emu.oauth_app[1] in repr(mint)
    (True, False)
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        user_id: str,
        organization_token: str,
        *,
        functions_url: str | None = None,
        scope: str = "read",
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        given = {
            "client_id": client_id,
            "client_secret": client_secret,
            "user_id": user_id,
            "organization_token": organization_token,
        }
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ValueError(f"TokenMinter needs {', '.join(missing)}")
        self.client_id = client_id
        self.user_id = user_id
        self.functions_url = (
            functions_url or os.environ.get(FUNCTIONS_URL_ENV) or DEFAULT_FUNCTIONS_URL
        ).rstrip("/")
        self.scope = scope
        self.timeout = timeout
        self._client_secret = client_secret
        self._organization_token = organization_token

    @classmethod
    def from_environment(cls) -> TokenMinter | None:
        """A minter from ``SIRO_CLIENT_ID``, ``SIRO_CLIENT_SECRET``, ``SIRO_USER_ID`` and
        ``SIRO_ORG_TOKEN`` (and ``SIRO_FUNCTIONS_URL``); None when none of them is set.

        Raises
        ------
        ValueError
            Some are set and others not: the missing ones are named.
        """
        values = {name: os.environ.get(variable) for name, variable in MINTER_ENV.items()}
        if not any(values.values()):
            return None
        missing = [MINTER_ENV[name] for name, value in values.items() if not value]
        if missing:
            raise ValueError(f"to mint Siro tokens, also set {', '.join(missing)}")
        return cls(**values)  # type: ignore[arg-type]

    def __call__(self) -> str:
        """A fresh access token.

        Raises
        ------
        AuthError
            Siro refused (a wrong secret, a revoked organisation token) or did not answer;
            the message has Siro's own words and no secret.
        """
        url = (
            f"{self.functions_url}/v1/core/oauth/apps/{quote(self.client_id, safe='')}/access-token"
        )
        body = {"clientSecret": self._client_secret, "userId": self.user_id, "scope": self.scope}
        secrets = (self._client_secret, self._organization_token)
        with make_session() as session:
            try:
                answer = session.post(
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {self._organization_token}"},
                    timeout=self.timeout,
                    allow_redirects=False,  # the organisation's token goes nowhere else
                )
            except requests.RequestException as exc:
                message = f"could not mint an access token: {describe_error(exc, *secrets)}"
                raise AuthError(None, message) from None
        body = _json(answer)
        token = body.get("accessToken")
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            said = body.get("error") or answer.text.strip()[:200] or answer.reason or "no message"
            message = f"could not mint an access token: {redact(str(said), *secrets)}"
            raise AuthError(answer.status_code, message)
        log.info("minted a Siro access token for user %s", self.user_id)
        return token

    def __repr__(self) -> str:
        return f"TokenMinter(client_id={self.client_id!r}, user_id={self.user_id!r}, <secrets>)"


def _json(answer: requests.Response) -> dict:
    """The answer's JSON object, or an empty one."""
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def resolve_token(token: TokenSource | None) -> TokenSource:
    """The token given; else ``$SIRO_AUTH_TOKEN``; else a :class:`TokenMinter` from the
    environment; a clear ``ValueError`` when there is none.
    """
    if token:  # an empty string is no token either
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    minter = TokenMinter.from_environment()
    if minter is not None:
        return minter
    raise ValueError(
        f"no Siro token: pass token=... (a string or a function returning one), set "
        f"{TOKEN_ENV}, or set {', '.join(MINTER_ENV.values())} to mint tokens as needed"
    )


class Token:
    """The current token, and one renewal per rejection when a function was given.

    A renewed token that is rejected before any success means the function
    cannot help: from then on every refresh fails at once, without asking it.
    """

    def __init__(self, source: TokenSource) -> None:
        self._provider = source if callable(source) else None
        self._value = self._ask() if self._provider else source
        self._lock = threading.Lock()
        self._renewed_unproven = False
        self._hopeless = False
        if not self._value:
            raise ValueError("token is empty")

    def _ask(self) -> str:
        assert self._provider is not None
        try:
            token = self._provider()
        except AuthError:  # a minter's refusal, in Siro's words and with no secret
            raise
        except Exception as exc:  # anything else may carry a secret: its type only
            raise AuthError(None, f"token provider failed: {type(exc).__name__}") from None
        if not isinstance(token, str) or not token:
            raise AuthError(None, "token provider returned no token")
        return token

    @property
    def value(self) -> str:
        return self._value

    @property
    def hopeless(self) -> bool:
        """A 401 that no renewal can cure was seen: send nothing more."""
        return self._hopeless

    def accepted(self, token: str) -> None:
        """The API took ``token``: a later rejection of it may be renewed again."""
        if token == self._value:
            self._renewed_unproven = False

    def give_up(self) -> None:
        """A renewed token was rejected: no more renewals, every refresh fails at once."""
        self._hopeless = True

    def refresh(self, rejected: str) -> str:
        """A new token after ``rejected`` got a 401; threads share one renewal."""
        with self._lock:
            if self._hopeless:
                raise AuthError(401, "token rejected")
            if self._value != rejected:
                return self._value
            if self._provider is None:
                self._hopeless = True
                raise AuthError(401, "token rejected; pass a token provider to renew it")
            if self._renewed_unproven:
                self._hopeless = True
                raise AuthError(401, "the renewed token was rejected too")
            self._value = self._ask()
            self._renewed_unproven = True
            log.info("token renewed after a 401")
            return self._value

    def __repr__(self) -> str:
        return "<token redacted>"
