"""report.html opens in a real headless Chromium, offline, with its tables and figures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from compare import plots

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
        sys.executable, "-m", "compare.cli", "run", "--workloads", "noop", "sleep",
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
    for text in ("median warm seconds", "fitted time", "cost model vs measured", "Python"):
        assert text in page


def test_chromium_renders_it_with_its_figures(chromium, report, tmp_path):
    dom = _chromium(chromium, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert "noop: median warm seconds" in dom.stdout and dom.stdout.count("<img") == 3
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
