"""What ``--help`` tells: the switches the README says it lists."""

from __future__ import annotations

from support import cli, finish


def help_text(*args: str) -> str:
    code, out, err = finish(cli(list(args)), timeout=60)
    assert code == 0, err
    return out


def test_emulator_help_lists_the_emulators_switches():
    text = help_text("emulator", "--help")
    assert text.startswith("usage: siro-data emulator ")
    for switch in ("--port", "--storage-port", "--token", "--recordings", "--latency"):
        assert switch in text
    for switch in ("--rate-limit", "--retry-after", "--ttfb", "--bandwidth", "--total-bandwidth"):
        assert switch in text
    assert "emulator" in help_text("--help")  # still listed among the commands
