"""What ``--help`` tells: the switches the README says it lists."""

from __future__ import annotations

import subprocess
import sys

COMMAND = [sys.executable, "-m", "siro_data.cli"]


def help_text(*args: str) -> str:
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_emulator_help_lists_the_emulators_switches():
    text = help_text("emulator", "--help")
    assert text.startswith("usage: siro-data emulator ")
    for switch in ("--port", "--storage-port", "--token", "--recordings", "--latency"):
        assert switch in text
    for switch in ("--rate-limit", "--retry-after", "--ttfb", "--bandwidth", "--total-bandwidth"):
        assert switch in text
    assert "emulator" in help_text("--help")  # still listed among the commands
