"""The documentation site builds with no warning and no network, its references are written
from the code (every public name, every option of the command), and its links resolve.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import siro_data
from siro_data import cli

ROOT = Path(__file__).resolve().parents[1]
#: Markdown pages a reader follows links in: the README, CONTRIBUTING, the docs.
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(ROOT.glob("docs/**/*.md"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it: warnings are errors, broken references too (-n)."""
    out = tmp_path_factory.mktemp("site")
    offline = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    build = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html"]
    done = subprocess.run(
        [*build, str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, **offline},  # anything it fetched would fail, and warn
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_site_builds_without_a_warning(site):
    for page in ("index", "guides/daily", "reference/api", "reference/cli", "faq"):
        assert (site / f"{page}.html").exists()


def test_the_api_reference_documents_every_public_name(site):
    text = (site / "reference" / "api.html").read_text(encoding="utf-8")
    missing = [
        name
        for name in siro_data.__all__
        if not name.startswith("__") and f'id="siro_data.{name}"' not in text
    ]
    assert not missing, f"not in the API reference: {missing}"


def test_the_cli_reference_is_written_from_the_parser(site):
    text = html.unescape((site / "reference" / "cli.html").read_text(encoding="utf-8"))
    text = text.replace("\u2019", "'")  # Sphinx's typographic apostrophes
    commands = next(
        action for action in cli.parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name, command in commands.choices.items():
        for action in command._actions:
            for option in action.option_strings:
                assert option in text, f"siro-data {name} {option} is not in the reference"
    for meaning in cli.EXIT_CODES.values():
        assert meaning.split(":")[0] in text


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub and MyST make it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {
        slug(title) for title in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_internal_link_resolves(page):
    text = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # another site: not ours to check offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name} links to {target}: no such section"
