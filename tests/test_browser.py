"""The quickstart as a new user meets it: JupyterLab on 127.0.0.1, Debian's Chromium, Run All.

Playwright for Python drives ``/usr/bin/chromium`` (it never downloads a browser of its own).
Three runs of a copy of ``notebooks/quickstart.ipynb``:

- the demo, Run All: the panel renders as a widget while the fetch runs (bar, Stop, summary),
  the plots and the player render, no cell shows an error; saved and reopened with no kernel
  alive, the fetch cell shows the run's summary, not a widget's repr;
- against "the real API" (an emulator of this test, slowed down) the user clicks Stop during
  Run All: the cell ends within 2 s, and no later cell asks the API or the storage for anything;
- the same with the kernel's Interrupt: the cell ends within 2 s with one short message, the
  cells after it do not run, nothing is fetched twice.

Where Chromium or Playwright is missing the tests skip, except under ``.ci/run``
(``SIRO_DATA_CI``): there they fail.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from support import free_port, require

from siro_data.emulator import Emulator, sample_recordings

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
#: Without the networking switches a closed network refuses Chromium's background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FETCH_CELL = "manifest = siro_data.fetch_all(wanted, **settings)"
#: JupyterLab's own settings for the run: every cell in the page (no windowing), no news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

try:
    from playwright.sync_api import Browser, Locator, Page, sync_playwright
except ImportError:  # told by the fixture below
    sync_playwright = None


def _browser_or_skip() -> None:
    missing = [
        what
        for what, absent in (
            ("Playwright for Python", sync_playwright is None),
            (f"Chromium at {CHROMIUM} (apt-get install chromium)", not CHROMIUM.exists()),
        )
        if absent
    ]
    require(not missing, "no " + " and no ".join(missing))


@dataclass
class Lab:
    """A JupyterLab server of this test: its URL and token, its folders, its log."""

    url: str
    token: str
    root: Path
    data: Path
    log: Path

    def notebook(self, folder: str, kernel: str | None = None) -> str:
        """A copy of the quickstart in ``root/folder/notebooks``; its ``../data`` is in folder."""
        target = self.root / folder / "notebooks" / NOTEBOOK.name
        target.parent.mkdir(parents=True)
        notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
        if kernel is not None:
            notebook["metadata"]["kernelspec"] = {"name": kernel, "display_name": kernel}
        target.write_text(json.dumps(notebook), encoding="utf-8")
        return target.relative_to(self.root).as_posix()

    def kernel(self, name: str, env: dict[str, str]) -> str:
        """A kernel of this Python with ``env`` added (the API's token and URL, say)."""
        spec = self.data / "kernels" / name / "kernel.json"
        spec.parent.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec.write_text(json.dumps({"argv": argv, "display_name": name, "env": env}))
        return name

    def api(self, method: str, path: str) -> requests.Response:
        answer = requests.request(
            method, f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}
        )
        answer.raise_for_status()
        return answer

    def shut_kernels_down(self) -> None:
        for kernel in self.api("GET", "/api/kernels").json():
            self.api("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _browser_or_skip()
    base = tmp_path_factory.mktemp("lab")
    root, data, settings = base / "root", base / "data", base / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    root.mkdir()
    port, token = free_port(), "lab-token-for-this-test"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIRO_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    log = base / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root"),
                *("--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}"),
                f"--ServerApp.root_dir={root}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    started = Lab(f"http://127.0.0.1:{port}", token, root, data, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"JupyterLab ended:\n{log.read_text()[-3000:]}"
            try:
                started.api("GET", "/api/status")
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, f"JupyterLab not up:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
        yield started
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, lab: Lab, tmp_path: Path) -> Iterator[Page]:
    """A fresh page; what it showed last is kept as a screenshot, with the server's log."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    yield opened
    try:
        opened.screenshot(path=tmp_path / "last.png")
    finally:
        context.close()
        lab.shut_kernels_down()
        shutil.copy(lab.log, tmp_path / "server.log")
        print(f"screenshots and the server's log in {tmp_path}")  # shown when the test fails


def open_notebook(page: Page, lab: Lab, path: str) -> None:
    """Open ``path`` and wait until its kernel is connected and idle (the status bar says so)."""
    page.goto(f"{lab.url}/lab/tree/{path}?reset&token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    wait_for(
        lambda: re.search(r"\| Idle\b", page.locator("#jp-main-statusbar").inner_text()),
        60,
        "the kernel to be ready",
        page,
        step=0.2,
    )


def run_all(page: Page) -> None:
    menu(page, "Run", "Run All Cells")
    wait_for(lambda: any(p != "[ ]:" for p in prompts(page)), 10, "Run All to start", page)


def menu(page: Page, top: str, item: str) -> None:
    """Click a menu's item, as a person does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def shown(page: Page) -> Locator:
    """The notebook on screen (a workspace may keep others open in hidden tabs)."""
    return page.locator(".jp-NotebookPanel:visible")


def code_cell(page: Page, source: str) -> Locator:
    found = shown(page).locator(".jp-CodeCell").filter(has_text=source)
    assert found.count() == 1, source
    return found


def cell_index(page: Page, source: str) -> int:
    """The place of the code cell holding ``source`` among the code cells."""
    texts = shown(page).locator(".jp-CodeCell .jp-InputArea-editor").all_inner_texts()
    return next(index for index, text in enumerate(texts) if source in text)


def prompts(page: Page) -> list[str]:
    return [
        text.strip()
        for text in shown(page).locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    ]


def wait_for(check, timeout: float, what: str, page: Page, step: float = 0.05):
    """Poll ``check()`` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; prompts {prompts(page)}")
        page.wait_for_timeout(step * 1000)


def ran(prompt: str) -> bool:
    return re.fullmatch(r"\[\d+\]:", prompt) is not None


def wait_until_idle(page: Page, timeout: float = 120) -> None:
    """Until the kernel is idle and no cell is running or queued."""
    wait_for(
        lambda: (
            "*" not in "".join(prompts(page))
            and shown(page).locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
            == 1
        ),
        timeout,
        "Run All to end",
        page,
        step=0.2,
    )


def rows_done(cell: Locator) -> int:
    """The "N done" of the live panel in ``cell`` (0 while it is not shown)."""
    shown = cell.locator(".widget-html").all_inner_texts()
    found = re.search(r"(\d+) done", " ".join(shown))
    return int(found.group(1)) if found else 0


def shown_text(page: Page) -> str:
    return "\n".join(shown(page).locator(".jp-OutputArea-output").all_inner_texts())


def test_run_all_shows_the_panel_the_plots_and_the_player_and_the_saved_notebook_reads_well(
    lab, page, tmp_path
):
    path = lab.notebook("demo")
    open_notebook(page, lab, path)
    run_all(page)

    fetch = code_cell(page, FETCH_CELL)
    fetch.locator(".widget-hprogress").wait_for(timeout=60_000)  # the panel, as a widget
    assert fetch.locator("button.jupyter-button", has_text="Stop").is_visible()
    assert "running" in " ".join(fetch.locator(".widget-html").all_inner_texts())
    fetch.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "panel.png")
    wait_until_idle(page)
    page.screenshot(path=tmp_path / "after-run-all.png", full_page=True)

    assert all(ran(prompt) for prompt in prompts(page)), prompts(page)
    shown = shown_text(page)
    assert "Traceback (most recent call last)" not in shown
    record = fetch.locator(".siro-data-record").inner_text()
    assert "siro_data.fetch_all: done" in record and "12 recordings: 10 ok, 2 failed" in record
    assert fetch.locator(".jupyter-widgets").count() == 0  # the panel gave way to its record
    for source in ("plot.hist(", "plot.scatter(", "Waveform of"):
        image = code_cell(page, source).locator(".jp-OutputArea-output img")
        assert image.count() == 1 and image.evaluate("img => img.naturalWidth") > 100, source
    player = code_cell(page, "Audio(filename=").locator("audio source")
    assert player.get_attribute("src").startswith("data:audio/mp4;base64,")

    saved = lab.root / path
    page.keyboard.press("Control+s")
    wait_for(lambda: "siro-data-record" in saved.read_text(), 10, "the notebook saved", page)
    notebook = json.loads(saved.read_text())
    outputs = [output for cell in notebook["cells"] for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"]
    fetch_outputs = next(
        c["outputs"] for c in notebook["cells"] if FETCH_CELL in "".join(c["source"])
    )
    kept = [output["data"] for output in fetch_outputs if "data" in output]
    assert [sorted(data) for data in kept] == [["text/html", "text/plain"]]
    plain = "".join(kept[0]["text/plain"])  # saved as a list of lines
    assert plain.startswith("siro_data.fetch_all: done\n12 recordings: 10 ok, 2 failed\n")

    lab.shut_kernels_down()  # reopened later: no kernel, no widget state
    page.goto("about:blank")
    open_notebook(page, lab, path)
    fetch = code_cell(page, FETCH_CELL)
    fetch.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "reopened.png")
    reopened = fetch.locator(".jp-OutputArea").inner_text()
    assert "siro_data.fetch_all: done" in reopened
    assert "12 recordings: 10 ok, 2 failed" in reopened and "manifest: " in reopened
    for widget_trace in ("VBox(", "IntProgress", "Error displaying widget", "Loading widget"):
        assert widget_trace not in reopened


def recent_recordings() -> dict:
    """The samples, made yesterday: what the notebook lists with a token (the last 7 days)."""
    now = datetime.now(timezone.utc)
    return {
        rec.id: dataclasses.replace(rec, date_created=now - timedelta(days=1, minutes=index))
        for index, rec in enumerate(sample_recordings().values())
    }


@pytest.fixture
def api(lab: Lab) -> Iterator[Emulator]:
    """The "real API" of a run, served slowly: each download takes seconds."""
    with Emulator(recent_recordings(), token="tok-browser") as emulator:
        emulator.faults.bandwidth = 30_000
        yield emulator


def start_and_wait_for_a_row(page: Page, lab: Lab, api: Emulator, name: str) -> Locator:
    """Run All on a copy using ``api``; the fetch cell, once its panel counts a row done."""
    kernel = lab.kernel(name, {"SIRO_AUTH_TOKEN": api.token, "SIRO_API_URL": api.api_url})
    open_notebook(page, lab, lab.notebook(name, kernel=kernel))
    run_all(page)
    fetch = code_cell(page, FETCH_CELL)
    wait_for(lambda: rows_done(fetch) >= 1, 60, "a first row in the panel", page)
    return fetch


def assert_each_recording_fetched_at_most_once(api: Emulator) -> None:
    stats = api.stats.snapshot()
    assert set(stats.api_calls.values()) == {1}, stats.api_calls  # signed once, none again
    assert max(stats.storage_requests.values()) == 1, stats.storage_requests
    for rec_id, served in stats.bytes_served.items():
        assert served <= api.recordings[rec_id].size


def test_stop_during_run_all_ends_the_fetch_and_no_later_cell_downloads(lab, page, api, tmp_path):
    fetch = start_and_wait_for_a_row(page, lab, api, "stop")
    fetch.locator("button.jupyter-button", has_text="Stop").click()
    clicked = time.monotonic()
    wait_for(lambda: ran(fetch.locator(".jp-InputPrompt").inner_text().strip()), 10, "Stop", page)
    ended = time.monotonic()
    page.screenshot(path=tmp_path / "stopped.png")
    wait_until_idle(page)

    assert ended - clicked < 2
    assert all(ran(prompt) for prompt in prompts(page)), prompts(page)  # Run All went on
    assert "Traceback (most recent call last)" not in shown_text(page)
    record = fetch.locator(".siro-data-record").inner_text()
    stopped = int(re.search(r"siro_data.fetch_all: stopped: (\d+) not fetched", record).group(1))
    ok = 12 - stopped
    assert 1 <= ok < 12
    assert f"12 recordings: {ok} ok, 0 failed, {stopped} stopped" in record
    statuses = code_cell(page, 'print("By status:"').locator(".jp-OutputArea").inner_text()
    counts = ast.literal_eval(re.search(r"By status: (\{.*\})", statuses).group(1))
    assert counts == {"ok": ok, "stopped": stopped}
    rerun = code_cell(page, "emulator.stats.reset()").locator(".jp-OutputArea").inner_text()
    assert f"{ok} recordings: {ok} ok, 0 failed" in rerun
    assert_each_recording_fetched_at_most_once(api)  # no later cell fetched a stopped one
    served = api.stats.bytes_served
    assert sum(served[rec_id] == rec.size for rec_id, rec in api.recordings.items()) == ok


def test_an_interrupt_during_run_all_stops_the_queue(lab, page, api, tmp_path):
    fetch = start_and_wait_for_a_row(page, lab, api, "interrupt")
    menu(page, "Kernel", "Interrupt Kernel")
    clicked = time.monotonic()
    wait_for(lambda: ran(fetch.locator(".jp-InputPrompt").inner_text().strip()), 10, "the ■", page)
    ended = time.monotonic()
    wait_until_idle(page)
    fetch.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "interrupted.png")

    assert ended - clicked < 2
    shown = fetch.locator(".jp-OutputArea").inner_text()
    assert "KeyboardInterrupt: interrupted: the manifest keeps the rows finished, in " in shown
    assert "siro_data.fetch_all: interrupted: " in shown
    assert "Traceback" not in shown  # one short message
    assert re.search(r"(?m)^\d+ of \d+ recordings failed", shown) is None
    later = prompts(page)[cell_index(page, FETCH_CELL) + 1 :]
    assert later and not any(ran(prompt) for prompt in later), later  # the rest did not run
    saved = lab.root / "interrupt" / "data" / "manifest.parquet"
    assert saved.exists()
    assert_each_recording_fetched_at_most_once(api)
