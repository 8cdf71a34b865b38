"""Requests to a running emulator, shared by its tests."""

from __future__ import annotations

from urllib.parse import quote

import requests
from support import TOKEN

from siro_data.emulator import Emulator
from siro_data.sessions import TOKEN_HEADER


def endpoint(emu: Emulator, rec_id: str) -> str:
    segment = quote(rec_id, safe="")
    if segment in (".", ".."):  # as literal dot segments, URL normalisation would drop them
        segment = segment.replace(".", "%2E")
    return f"{emu.api_url}/v1/core/recordings/{segment}/signedUrl"


def sign(emu: Emulator, rec_id: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
    headers = {} if token is None else {TOKEN_HEADER: token}
    return requests.post(endpoint(emu, rec_id), headers=headers, timeout=5, **kwargs)


def signed_url(emu: Emulator, rec_id: str) -> str:
    response = sign(emu, rec_id)
    assert response.status_code == 200, response.text
    return response.json()["data"]["url"]
