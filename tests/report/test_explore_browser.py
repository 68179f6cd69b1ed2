"""The explorer page in a real headless browser (Debian's chromium + chromium-driver).

Skipped, with the reason, where selenium, chromium or chromedriver is missing or the
browser cannot start (``.ci/run`` installs them when it can). Expected values come
from the trace and the replay's JSON, not from the page's own data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc.report.explore import build_replay_data, build_tour_data
from pyvmalloc.report.explore_html import write_html
from pyvmalloc.trace.replay import load_capture, replay

from .conftest import kernel_busy_counts

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
LARGEST = CAPTURES / "everything-concurrent"


def _find(*names: str) -> str | None:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


@pytest.fixture(scope="module")
def browser() -> Any:
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser tests need selenium (pip install -e '.[dev]')")
    chrome = _find("chromium", "chromium-browser", "google-chrome")
    driver = _find("chromedriver")
    if chrome is None or driver is None:
        pytest.skip(
            "browser tests need chromium and chromedriver "
            "(apt-get install chromium chromium-driver); not found on PATH"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1300",
    ):
        opts.add_argument(a)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # chromium refuses to run as root otherwise
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(driver), options=opts)
    except WebDriverException as e:
        pytest.skip(f"chromium did not start: {str(e).splitlines()[0]}")
    drv.set_script_timeout(30)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def largest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    data = build_replay_data(LARGEST)
    path = tmp_path_factory.mktemp("explore") / "largest.html"
    write_html(data, path)
    return path, data


def _open(drv: Any, path: Path) -> list[dict]:
    drv.get(path.resolve().as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(drv, 20).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "1"
    )
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def _text(drv: Any, element_id: str) -> str:
    return drv.execute_script(f"return document.getElementById('{element_id}').textContent")


def test_loads_from_file_without_errors(browser: Any, largest: tuple[Path, dict]) -> None:
    path, _data = largest
    assert path.stat().st_size < 6e6, "a page of a bundled capture stays a few MB"
    problems = _open(browser, path)
    assert problems == [], problems
    trace, snap, meta = load_capture(LARGEST)
    res = replay(trace, snap, meta=meta, end_snapshot=LARGEST / "vmallocinfo.end")
    pct = f"{100 * res.agreement:.2f} %"
    assert _text(browser, "headline") == (
        f"kernel 6.18, 2 CPUs: {res.allocs_matched}/{res.allocs_compared} allocations agree ({pct})"
    )
    browser.save_screenshot(str(path.with_suffix(".png")))


def test_busy_areas_and_scrubbing(browser: Any, largest: tuple[Path, dict]) -> None:
    path, _data = largest
    _open(browser, path)
    _, counts = kernel_busy_counts(LARGEST)
    assert int(_text(browser, "stat-busy")) == counts[0]
    # Scrub with the slider itself (keyboard), then jump far along it.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = browser.find_element(By.ID, "slider")
    slider.click()
    browser.execute_script("explorer.setEvent(0)")
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert browser.execute_script("return explorer.event") == 5
    assert int(_text(browser, "stat-busy")) == counts[5]
    for i in (len(counts) // 2, len(counts) - 1, 17):
        browser.execute_script(
            "const s = document.getElementById('slider'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input'));",
            i,
        )
        assert int(_text(browser, "stat-busy")) == counts[i], i
        assert f"event {i + 1} of {len(counts)}" in _text(browser, "event")


def test_map_draws_a_busy_area_where_it_is(browser: Any, largest: tuple[Path, dict]) -> None:
    """The first vmallocinfo line's area is drawn in the busy colour at its place."""
    path, _ = largest
    _open(browser, path)
    first = (LARGEST / "vmallocinfo").read_text().split()[0]
    start, end = (int(x, 16) for x in first.split("-"))
    vs = 0xFFFFC90000000000
    pg0, pg1 = (start - vs) // 4096, (end - vs) // 4096
    colour = browser.execute_script(
        """
        explorer.setEvent(0);
        explorer.zoomTo(arguments[0], arguments[1]);
        explorer.timeDraw();
        const [v0, span] = explorer.view;
        const c = document.getElementById('map');
        const W = c.clientWidth - 150, rowSpan = span / 6;
        const mid = (arguments[0] + arguments[1] - 1) / 2;   // not the guard page
        const row = Math.floor((mid - v0) / rowSpan);
        const x = 150 + (mid - v0 - row * rowSpan) / rowSpan * W;
        const y = row * 58 + 4 + 10;
        const dpr = window.devicePixelRatio || 1;
        return Array.from(c.getContext('2d').getImageData(x * dpr, y * dpr, 1, 1).data);
        """,
        pg0,
        pg1,
    )
    assert colour[:3] == [0x3B, 0x6F, 0xB6], colour


def test_divergence_list_matches_replay_json(browser: Any, largest: tuple[Path, dict]) -> None:
    path, _ = largest
    _open(browser, path)
    trace, snap, meta = load_capture(LARGEST)
    res = replay(trace, snap, meta=meta, end_snapshot=LARGEST / "vmallocinfo.end").as_json()
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#mismatches tr[data-j]')).map("
        "tr => Array.from(tr.cells).slice(0, 7).map(td => td.textContent))"
    )
    want = [
        [
            str(m["line"]),
            str(m["size"]),
            str(m["align"]),
            str(m["cpu"]),
            f"{m['kernel']:#x}" if m["kernel"] is not None else "failed",
            f"{m['model']:#x}" if m["model"] is not None else "failed",
            str(m.get("cause") or "unclassified"),
        ]
        for m in res["mismatches"]
    ]
    assert rows == want
    # Clicking one scrubs to its event: the event text names its trace line.
    browser.execute_script("document.querySelector('#mismatches tr[data-j=\"1\"]').click()")
    assert f"trace line {res['mismatches'][1]['line']}" in _text(browser, "event")
    assert "DISAGREES" in _text(browser, "event")


def test_responsive_on_the_largest_capture(browser: Any, largest: tuple[Path, dict]) -> None:
    path, data = largest
    _open(browser, path)
    n = len(data["events"])
    draw = browser.execute_script(
        "explorer.zoomTo(0, 1 << 20); let t = 0; for (let i = 0; i < 5; i++) t = Math.max(t, explorer.timeDraw()); return t;"
    )
    scrub = browser.execute_script(f"return explorer.timeScrub(0, {n - 1})")
    assert draw < 60, f"one map frame took {draw} ms"
    assert scrub < 1500, f"scrubbing the whole timeline took {scrub} ms"


def test_tour_page_shows_call_tree(browser: Any, tmp_path: Path) -> None:
    data = build_tour_data(ops=40, seed=2)
    path = tmp_path / "tour.html"
    write_html(data, path)
    assert _open(browser, path) == []
    browser.execute_script("explorer.setEvent(0)")
    text = _text(browser, "calls")
    assert "alloc_vmap_area" in text and "PTEs" in text
    assert text.splitlines()[0].startswith(data["events"][0][3])
    browser.execute_script("document.getElementById('step-next').click()")
    browser.execute_script("document.getElementById('step-next').click()")
    assert _text(browser, "call-step").startswith("step 2 of ")
    assert len(_text(browser, "calls").splitlines()) == 2
    browser.execute_script("document.getElementById('step-all').click()")
    walk = _text(browser, "walk")
    assert "find" in walk or "request" in walk
    browser.save_screenshot(str(tmp_path / "tour.png"))
