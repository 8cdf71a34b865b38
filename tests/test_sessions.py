"""The HTTP machinery's pure helpers: secrets kept out of messages."""

from __future__ import annotations

from support import TOKEN

from siro_data.sessions import redact


def test_redact() -> None:
    """Query strings and secrets of 8+ characters are removed; shorter ones are left alone."""
    url = "GET https://s.example/b/a.m4a?X-Goog-Signature=abc&X-Goog-Date=1 failed"
    assert redact(url) == "GET https://s.example/b/a.m4a?<redacted> failed"
    assert redact(f"token {TOKEN} rejected", TOKEN) == "token <redacted> rejected"
    assert redact("token short1 rejected", "short1") == "token short1 rejected"
    assert redact("nothing here", None, "") == "nothing here"
    assert redact(f"'http://h/p?sig=1' and {TOKEN}", "x" * 20, TOKEN) == (
        "'http://h/p?<redacted>' and <redacted>"
    )
