"""The search page of `edge-colbert serve` in a real browser: Debian's chromium driven by
Playwright types a query, waits for the results, checks the top hit, its highlights and the
keyboard, the empty, no-results and error states, dark mode, and saves a screenshot."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_colbert.index import Index

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Short notes on unrelated subjects, one file each, as `index` would store them.
NOTES = {
    # The emoji (one code point, two UTF-16 units) checks that the page converts offsets.
    "volcanoes.md": "🌋 Volcanoes erupt when magma rises through the crust. Pressure from "
    "dissolved gases pushes molten rock and ash out of the vent, and lava flows down the slopes.",
    "bread.md": "To bake bread, mix flour, water, yeast and salt, knead the dough until it is "
    "smooth, let it rise for two hours, then bake it in a hot oven until the crust is brown.",
    "tides.md": "Ocean tides are caused by the gravitational pull of the Moon and the Sun on the "
    "Earth's oceans; most coasts see two high tides and two low tides every day.",
    "bees.md": "Honey bees collect nectar from flowers and turn it into honey in the hive. "
    "Worker bees dance to tell the others where the best flowers are.",
    "chess.md": "In chess, each player starts with sixteen pieces. The aim is to checkmate the "
    "opposing king, so that it is attacked and has no legal move left.",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip(
        "fastapi", reason='needs the server extra: pip install "edge-colbert[server]"'
    )
    pytest.importorskip(
        "uvicorn", reason='needs the server extra: pip install "edge-colbert[server]"'
    )
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason='needs Playwright: pip install "edge-colbert[test-extras]"',
    )
    if not CHROMIUM.is_file():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def notes_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of NOTES made with the bundled model."""
    folder = tmp_path_factory.mktemp("notes")
    texts, ids, metas = [], [], []
    for name, text in NOTES.items():
        path = folder / name
        path.write_text(text + "\n", encoding="utf-8")
        texts.append(text)
        ids.append(f"{path}#0")
        metas.append(
            {"path": str(path), "chunk": 0, "line": 1, "heading": f"Notes > {path.stem.title()}"}
        )
    db = folder / "notes.db"
    with Index(db) as index:
        index.add(texts, ids=ids, metadata=metas)
    return db


@pytest.fixture(scope="module")
def server(browser: Any, notes_db: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_colbert", "serve", str(notes_db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"on (http://\S+/)", line)
    try:
        assert found, (
            f"no URL in {line!r}; stderr: {process.stderr.read() if process.stderr else ''}"
        )
        yield found.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, color_scheme="light")
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    requested: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    opened.requested = requested
    yield opened
    context.close()


def test_typing_a_query_shows_ranked_highlighted_results(
    page: Any, server: str, tmp_path: Path
) -> None:
    page.goto(server)
    # The empty state says what is searched, before anything is typed.
    page.wait_for_selector("#message:has-text('Search 5 files')")
    page.locator("#q").press_sequentially("how do volcanoes erupt", delay=30)
    # Results of shorter prefixes may come first; wait for those of the whole query.
    page.wait_for_selector("#results[data-query='how do volcanoes erupt'] li.hit")
    top = page.locator("li.hit").first
    assert top.locator(".title").inner_text() == "volcanoes.md"
    assert top.locator("a.title").get_attribute("href").startswith("file:///")
    assert top.locator(".loc").inner_text() == "line 1"
    assert top.locator(".heading").inner_text() == "Notes › Volcanoes"
    marked = [text.lower() for text in top.locator("mark").all_inner_texts()]
    assert any("volcano" in text or "erupt" in text for text in marked), marked
    # The highlights are the passage's own words, in order, not markup from the text.
    assert top.locator(".passage").inner_text().startswith("🌋 Volcanoes erupt")
    assert all(re.fullmatch(r"[\w\s]+", text) for text in marked), marked  # whole words
    # The query is kept in the address, so a reload or a bookmark repeats it.
    assert "q=how+do+volcanoes+erupt" in page.url
    # Keyboard: down selects the first hit, Escape goes back to the search box.
    page.keyboard.press("ArrowDown")
    assert "selected" in (top.get_attribute("class") or "")
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.id") == "q"
    page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
    assert (tmp_path / "search-page.png").stat().st_size > 10_000
    # Nothing was fetched from anywhere but this server.
    assert page.requested and all(url.startswith(server) for url in page.requested), page.requested


def test_modes_folder_filter_and_no_results(page: Any, server: str, notes_db: Path) -> None:
    page.goto(server + "?q=bake+bread")
    page.wait_for_selector("li.hit")
    assert page.locator("li.hit .title").first.inner_text() == "bread.md"
    modes = page.evaluate("fetch('api/info').then(r => r.json()).then(i => i.modes)")
    for mode in modes:
        page.locator(f"#modes button[data-mode={mode}]").click()
        page.wait_for_selector(f"#status:has-text('{mode}')")
        assert page.locator("li.hit .title").first.inner_text() == "bread.md"
    # A folder filter that holds nothing: the no-results state names it.
    page.locator("#folder").fill(str(notes_db.parent / "elsewhere"))
    page.wait_for_selector("#message:has-text('No matches for')")
    assert page.locator("li.hit").count() == 0
    page.locator("#folder").fill(str(notes_db.parent))
    page.wait_for_selector("li.hit")


def test_dark_mode_follows_the_system(browser: Any, server: str) -> None:
    context = browser.new_context(color_scheme="dark")
    dark = context.new_page()
    dark.goto(server)
    background = dark.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    context.close()
    red, green, blue = (int(x) for x in re.findall(r"\d+", background)[:3])
    assert max(red, green, blue) < 60, background


def test_a_stopped_server_shows_the_error_state(browser: Any, notes_db: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_colbert", "serve", str(notes_db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert "serving" in process.stdout.readline()
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#message:has-text('Search 5 files')")
    finally:
        process.terminate()
        process.communicate(timeout=30)
    page.locator("#q").fill("tides")
    page.wait_for_selector("#message.error:has-text('Cannot reach the search server')")
    context.close()


def test_weak_hits_wear_a_badge_and_an_all_weak_list_says_so(page: Any, server: str) -> None:
    import json
    import urllib.parse
    import urllib.request

    query = "zebra crossing protocol for llama migrations"
    with urllib.request.urlopen(
        f"{server.rstrip('/')}/api/search?{urllib.parse.urlencode({'q': query})}"
    ) as r:
        weak = [hit["weak"] for hit in json.load(r)["hits"]]
    assert weak and all(flag is True for flag in weak), weak  # the bundled model: unrelated
    page.goto(server)
    page.locator("#q").fill(query)
    page.wait_for_selector(f"#results[data-query='{query}'] li.hit")
    badges = page.locator("li.hit").evaluate_all(
        "items => items.map(item => item.querySelector('.badge.weak') !== null)"
    )
    assert badges == [flag is True for flag in weak]
    status = page.locator("#status").inner_text()
    assert ("no hit is a good match" in status) == all(flag is True for flag in weak)
