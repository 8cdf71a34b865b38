"""What ``--help`` tells: the switches the documentation says it lists, each doing what it says."""

from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace

import pytest
from support import cli, finish

from siro_data import cli as command_line
from siro_data.rows import to_frame

#: The commands that run siro_data (the emulator's switches are its own).
COMMANDS = ("fetch", "sync", "demo", "verify", "prune")


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


def described(value: object) -> object:
    """What a call argument says, comparable: a reporter by its kind and settings."""
    if hasattr(value, "finished") and hasattr(value, "start"):  # a Reporter
        settings = ("disable", "interval")
        return type(value).__name__, *(getattr(value, name, None) for name in settings)
    return value


def asked(command: str, argv: list[str], monkeypatch, tmp_path) -> dict[str, object]:
    """What ``siro-data <command> *argv`` asks of the library: the arguments of its call,
    and the logging level it sets (``-v``)."""
    calls: list[dict[str, object]] = []

    def fetch_all(ids, **options):
        calls.append({"ids": list(ids[options["id_column"]]), **options})
        return to_frame([])

    def sync(manifest_path, out_dir, **options):
        calls.append({"manifest_path": manifest_path, "out_dir": out_dir, **options})
        return SimpleNamespace(summary=lambda: "", tried=to_frame([]))

    def verify(manifest_path, out_dir, **options):
        calls.append({"manifest_path": manifest_path, "out_dir": out_dir, **options})
        return SimpleNamespace(summary=lambda: "", ok=True)

    def prune(manifest_path, out_dir, **options):
        calls.append({"manifest_path": manifest_path, "out_dir": out_dir, **options})
        return SimpleNamespace(summary=lambda: "")

    monkeypatch.setattr(command_line, "fetch_all", fetch_all)
    monkeypatch.setattr(command_line, "sync", sync)
    monkeypatch.setattr(command_line, "verify", verify)
    monkeypatch.setattr(command_line, "prune", prune)
    monkeypatch.setattr(logging.root, "handlers", [])  # basicConfig configures anew each time
    assert command_line.main([command, *argv]) == 0
    [call] = calls
    return {
        **{name: described(value) for name, value in call.items()},
        "log level": logging.root.level,
    }


def options_of(command: str) -> list[argparse.Action]:
    """The options ``siro-data <command> --help`` lists."""
    subparsers = next(
        action
        for action in command_line.parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    parser = subparsers.choices[command]
    return [action for action in parser._actions if action.option_strings and action.dest != "help"]


def other_value(action: argparse.Action) -> list[str]:
    """The option given a value other than its default."""
    flag = action.option_strings[0]
    if action.nargs == 0:  # store_true
        return [flag]
    if action.choices:
        return [flag, next(choice for choice in action.choices if choice != action.default)]
    if action.type in (int, float):
        return [flag, str(action.default + 1)]
    if "=" in (action.metavar or ""):  # KEY=VALUE
        return [flag, "a-key=a-value"]
    values = ["first-value", "second-value"] if action.nargs == "+" else ["a-value"]
    return [flag, *values]


@pytest.mark.parametrize(
    ("command", "option"),
    [(command, action.dest) for command in COMMANDS for action in options_of(command)],
)
def test_every_option_help_offers_changes_what_the_command_asks(
    command, option, monkeypatch, tmp_path
):
    """Each flag ``--help`` offers reaches the library (a value, a reporter, the log level):
    none is offered and then ignored."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.csv").write_text("recording_id,a-value\nrec-1,rec-2\n")
    base = {
        "fetch": ["ids.csv"],
        "sync": ["--since", "2025-01-01"],
        "demo": [],
        "verify": [],
        "prune": ["--older-than", "90d"],
    }[command]
    action = next(action for action in options_of(command) if action.dest == option)
    plain = asked(command, base, monkeypatch, tmp_path)
    changed = asked(command, [*base, *other_value(action)], monkeypatch, tmp_path)
    assert changed != plain, f"siro-data {command} {action.option_strings[0]} changes nothing"
