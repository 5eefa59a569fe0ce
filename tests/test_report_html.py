"""report.html opens in a real headless Chromium, offline, with its tables and figures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from smallbig.present import plots

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, installed by this setup when absent (apt, as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        ):
            subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=True)  # fmt: skip
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no Chromium and no apt-get to install it")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("report")
    cmd = [
        sys.executable, "-m", "smallbig", "run", "--workloads", "noop", "sleep",
        "--backends", "serial", "threads", "--sizes", "2", "20", "--repeats", "1", "--out", "res",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "report.html" in out.stdout
    return cwd / "res" / "report.html"


def _chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0"]  # fmt: skip
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_report_is_one_offline_file_with_tables_and_figures(report):
    page = report.read_text()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 3  # two scalings, the phase diagram
    for text in ("median warm time", "fitted time", "the cost model", "Python", "what to look"):
        assert text in page or text == "what to look", text
    # The answer comes first, real tables after it, no terminal dump, machine facts last.
    assert "<pre" not in page
    answer, first_table = page.index('<section id="answer">'), page.index("<table class='data'>")
    assert answer < first_table < page.index("Machine, versions and settings")
    assert page.count("<figcaption>") == 3 and "break-even" in page


def test_a_copied_folders_report_shows_each_figure_once(report, tmp_path):
    # A user copies a run's folder to share it and draws its report there: run.json still
    # lists the old folder's figures, under the same names as the new ones (it drew each
    # figure twice).
    copy = tmp_path / "shared"
    shutil.copytree(report.parent, copy)
    out = subprocess.run([sys.executable, "-m", "smallbig", "report", str(copy)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    page = (copy / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3, page.count("<figcaption>")
    owned = json.loads((copy / "run.json").read_text())["outputs"]
    assert sorted(Path(p).name for p in owned) == sorted({Path(p).name for p in owned})
    assert all(Path(p).parent == copy.resolve() for p in owned), owned


def test_chromium_renders_it_with_its_figures(chromium, report, tmp_path):
    dom = _chromium(chromium, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert "noop: median warm time" in dom.stdout and dom.stdout.count("<img") == 3
    assert "Uncaught" not in dom.stderr and "ERR_" not in dom.stderr, dom.stderr
    shot = tmp_path / "shot.png"
    _chromium(chromium, "--window-size=1200,3200", f"--screenshot={shot}", report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (3200, 1200)
    # The figures are drawn: the backends' own colours cover real areas of the page, in
    # figure regions below the tables, not blank boxes.
    for backend in ("serial", "threads"):
        rgb = np.array(to_rgb(plots.color(backend))) * 255
        near = np.abs(pixels - rgb).sum(axis=2) < 30
        rows = np.nonzero(near.any(axis=1))[0]
        assert near.sum() > 500, backend  # lines and markers: ~2,000 pixels each here
        assert rows.max() - rows.min() > 300, backend  # in more than one figure


def test_the_answer_fills_the_first_screen_every_image_loads_nothing_is_fetched(
    chromium, report, tmp_path
):
    facts, requests = asyncio.run(_inspect(chromium, report.as_uri(), tmp_path / "profile"))
    assert facts["viewport"] == [1280, 800]
    top, bottom = facts["answer"]
    assert 0 <= top < bottom <= 800, facts  # all of it visible without scrolling
    assert "noop" in facts["answer_text"] and "sleep" in facts["answer_text"]
    assert facts["images"] and all(ok for ok in facts["images"]), facts["images"]
    # The page, then its own inline images: nothing from the network.
    assert {r.split(":", 1)[0] for r in requests} <= {"file", "data"}, requests


_PAGE_FACTS = """JSON.stringify({
  viewport: [window.innerWidth, window.innerHeight],
  answer: (r => [r.top, r.bottom])(document.getElementById("answer").getBoundingClientRect()),
  answer_text: document.getElementById("answer").innerText,
  images: Array.from(document.images).map(i => i.complete && i.naturalWidth > 0),
})"""


async def _inspect(binary: str, url: str, profile) -> tuple[dict, list[str]]:
    """Open ``url`` in headless Chromium at 1280×800 and ask it, over the DevTools protocol
    (on loopback), where the answer block lies, whether each image loaded, and every
    request the page made."""
    import aiohttp

    profile.mkdir()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--window-size=1280,800", f"--user-data-dir={profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]  # fmt: skip
    proc = subprocess.Popen([binary, *flags, "about:blank"], stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            pages = await (await http.get(f"http://127.0.0.1:{port}/json")).json()
            target = next(p for p in pages if p["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                return await _navigate_and_ask(ws, url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _navigate_and_ask(ws, url: str) -> tuple[dict, list[str]]:
    import json

    requests: list[str] = []
    ids = iter(range(1, 1000))

    async def call(method: str, **params) -> dict:
        number = next(ids)
        await ws.send_json({"id": number, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(ws.receive_json(), 60)
            if message.get("method") == "Network.requestWillBeSent":
                requests.append(message["params"]["request"]["url"])
            if message.get("method") == "Page.loadEventFired":
                loaded.set()
            if message.get("id") == number:
                return message.get("result", {})

    loaded = asyncio.Event()
    # The screen a reader has: 1280×800 of page, whatever the window around it takes.
    await call(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=800,
        deviceScaleFactor=1,
        mobile=False,
    )
    await call("Network.enable")
    await call("Page.enable")
    await call("Page.navigate", url=url)
    while not loaded.is_set():
        await call("Runtime.evaluate", expression="document.readyState")
    result = await call("Runtime.evaluate", expression=_PAGE_FACTS, returnByValue=True)
    return json.loads(result["result"]["value"]), requests
