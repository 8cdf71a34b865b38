"""Siro's organisation API as far as the emulator serves it: minting access tokens.

``POST /api-externalApi/v1/core/oauth/apps/{clientId}/access-token`` with the organisation's
API token as ``Authorization: Bearer`` and ``{"clientSecret", "userId", "scope"}`` in the body,
as Siro documents it: a fresh access token the emulator's API accepts from then on
(`Faults.minted_token_uses` makes each one expire after so many signing calls, as its 16 hours
would). Errors are JSON ``{"error": ...}``.
"""

from __future__ import annotations

import json
import re

from .base import Handler, unquote_raw

#: Where the organisation API lives on the emulator's API server (Siro: its functions host).
FUNCTIONS_PREFIX = "/api-externalApi"
_MINT_PATH = re.compile(rf"^{FUNCTIONS_PREFIX}/v1/core/oauth/apps/([^/]+)/access-token$")


def serves(path: str) -> bool:
    """Whether `path` (without its query) is the organisation API's."""
    return path.startswith(FUNCTIONS_PREFIX + "/")


def answer(handler: Handler, path: str) -> None:
    """Mint a token, or say why not."""
    emu = handler.emu
    match = _MINT_PATH.match(path)
    body = _body(handler)
    if match is None:
        _json(handler, 404, {"error": "Not Found"})
    elif handler.command != "POST":
        _json(handler, 405, {"error": "Method Not Allowed"})
    elif handler.headers.get("Authorization") != f"Bearer {emu.organization_token}":
        _json(handler, 401, {"error": "Unauthorized: invalid organization API token"})
    elif not isinstance(body, dict) or not all(
        isinstance(body.get(key), str) for key in ("clientSecret", "userId", "scope")
    ):
        _json(handler, 422, {"error": "clientSecret, userId and scope are required"})
    elif (unquote_raw(match.group(1)), body["clientSecret"]) != emu.oauth_app[:2]:
        _json(handler, 403, {"error": "Forbidden: invalid client credentials"})
    elif body["userId"] != emu.oauth_app[2]:
        _json(handler, 404, {"error": "User not found"})
    elif body["scope"] not in ("read", "write"):
        _json(handler, 422, {"error": "scope must be read or write"})
    else:
        token = emu.mint_token()
        _json(handler, 200, {"accessTokenId": f"id-{len(emu.tokens)}", "accessToken": token})


def _body(handler: Handler) -> object:
    length = int(handler.headers.get("Content-Length") or 0)
    try:
        return json.loads(handler.rfile.read(length) or b"null")
    except ValueError:
        return None


def _json(handler: Handler, status: int, payload: object) -> None:
    handler.answer(status, json.dumps(payload).encode(), "application/json")
