"""The shipped workflows in the real ComfyUI frontend: headless Chromium (the distribution's package, driven by
selenium through chromedriver) on the real server's page at 127.0.0.1, in a 1280x720 window.

Each UI workflow is loaded into the page's app and must raise no toast (the old "Invalid workflow against zod
schema" warning included), use only node types the page knows, show every node, title bar included, inside the
first view with nothing of the page's own (menu, side bar, minimap) over it, and have no two nodes overlap. It is
then queued from the page; the run must succeed, the Save node must show its video in the page, and the video must
draw the committed thumbnail (workflows/NAME.jpg, scripts/render_thumbnails.py). The template browser must list
every graph with its thumbnail and open a graph from its card.

Needs ``chromium`` and ``chromedriver`` (Debian: apt-get install chromium chromium-driver; or set
UNIFORM_CHROMIUM / UNIFORM_CHROMEDRIVER) and selenium (the dev extra). Screenshots go to the test's temporary
folder, or to ``$UNIFORM_SCREENSHOT_DIR`` (docs/ for the README's pictures).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import requests
from comfy_host import (
    API_DIR,
    EMBEDDED_BUNDLE,
    EXTEND_SECONDS,
    LINK_NAME,
    RUN_TIMEOUT,
    assert_success,
    requires_comfyui,
    saved_video,
)
from PIL import Image

from uniform_core.eval.thumbnail import HEIGHT, WIDTH, difference, video_thumbnail

pytestmark = requires_comfyui

UI_FILES = sorted(API_DIR.parent.glob("*.json"))
VIEWPORT = (1280, 720)  # px: the window the saved views (extra.ds) are laid out for
PAGE_TIMEOUT = 180  # s for the app to start in the page on a busy machine
VIDEO_TIMEOUT = 60  # s for the saved video to play in the page after the run
THUMBNAIL_TOLERANCE = 6.0  # mean 8-bit levels; a run on other threads or a JPEG re-encode differs by 1-3
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Installed once the app is up: every toast that appears and every console error, for the tests to read and reset.
WATCH_JS = """
window.__uniform = {toasts: [], errors: []};
const seen = new WeakSet();
new MutationObserver(() => {
  for (const el of document.querySelectorAll('.p-toast-message')) {
    if (!seen.has(el)) { seen.add(el); window.__uniform.toasts.push(el.innerText.trim()); }
  }
}).observe(document.body, {childList: true, subtree: true});
const consoleError = console.error;
console.error = (...args) => { window.__uniform.errors.push(args.map(String).join(' ')); consoleError(...args); };
window.addEventListener('error', e => window.__uniform.errors.push(String(e.message)));
"""

# Every node's box on the screen (graph bounding box, title bar included, through the canvas transform) and
# what of the page covers each corner: the canvas and the node's own DOM widgets may, nothing else.
LAYOUT_JS = """
const c = window.app.canvas, rect = c.canvas.getBoundingClientRect();
const [ox, oy] = c.ds.offset, s = c.ds.scale;
const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
  (typeof el.className === 'string' && el.className ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
return window.app.graph._nodes.map(n => {
  const b = Array.from(n.boundingRect ?? n.getBounding());
  const [x, y, w, h] = [rect.left + (b[0] + ox) * s, rect.top + (b[1] + oy) * s, b[2] * s, b[3] * s];
  const corners = [[x + 2, y + 2], [x + w - 2, y + 2], [x + 2, y + h - 2], [x + w - 2, y + h - 2]];
  const covered = corners.map(([px, py]) => {
    const el = document.elementFromPoint(px, py);
    return !el ? 'nothing' : (el === c.canvas || el.closest('.dom-widget')) ? null : describe(el);
  }).filter(d => d);
  return {id: n.id, type: n.type, title: n.title, graph: b, screen: [x, y, w, h], covered,
          known: n.type in LiteGraph.registered_node_types};
});
"""


# The pixels an <img> shows, as a base64 PNG.
PICTURE_JS = """
const img = arguments[0], canvas = document.createElement('canvas');
[canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
canvas.getContext('2d').drawImage(img, 0, 0);
return canvas.toDataURL('image/png').split(',')[1];
"""


def chromium_paths() -> tuple[str, str]:
    browser = os.environ.get("UNIFORM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("UNIFORM_CHROMEDRIVER") or shutil.which("chromedriver")
    assert browser and driver, "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
    return browser, driver


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    """The server's page in headless Chromium, the app started, the first-run template dialog already seen."""
    from selenium import webdriver  # the dev extra
    from selenium.webdriver.chrome.service import Service

    requests.post(f"{server.url}/settings/Comfy.TutorialCompleted", json=True, timeout=30).raise_for_status()
    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        width, height = VIEWPORT
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_script_timeout(PAGE_TIMEOUT)
        driver.get(server.url)
        wait_for(
            driver,
            "return !!(window.app?.graph && window.app.canvas && LiteGraph.registered_node_types['UniFormSampler'])",
            PAGE_TIMEOUT,
            "the app to start with the pack's nodes",
        )
        driver.execute_script(WATCH_JS)
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float, what: str, *args):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    """A small PNG (256 colours) of the page, in $UNIFORM_SCREENSHOT_DIR or the test's folder."""
    folder = Path(os.environ.get("UNIFORM_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB").quantize(colors=256).save(
        path, optimize=True
    )
    return path


def drain(driver) -> dict:
    """The toasts and console errors since the last call."""
    return driver.execute_script(
        "const u = window.__uniform, out = {toasts: u.toasts, errors: u.errors};"
        "u.toasts = []; u.errors = []; return out;"
    )


def load(driver, workflow: dict, name: str) -> None:
    driver.execute_async_script(
        "const [wf, name, done] = arguments;"
        "window.app.loadGraphData(wf, true, true, name).then(() => done(null), e => done(String(e)));",
        workflow,
        name,
    )
    time.sleep(1.0)  # the frontend validates and draws after the promise; toasts come within this


def assert_layout(nodes: list[dict], workflow: dict) -> None:
    assert len(nodes) == len(workflow["nodes"]), [n["type"] for n in nodes]
    missing = [n["type"] for n in nodes if not n["known"]]
    assert not missing, f"node types the page does not know: {missing}"
    width, height = VIEWPORT
    for n in nodes:
        x, y, w, h = n["screen"]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, f"{n['title']} is outside the view: {n}"
        assert not n["covered"], f"{n['title']} is covered by {n['covered']}"
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["graph"], b["graph"]
            overlap = min(ax + aw, bx + bw) > max(ax, bx) and min(ay + ah, by + bh) > max(ay, by)
            assert not overlap, f"{a['title']} {a['graph']} overlaps {b['title']} {b['graph']}"


def queue_from_page(driver, server) -> dict:
    """Queue the page's graph as the Run button does and return the finished history entry."""
    before = set(server.get("/history").json())
    error = driver.execute_async_script(
        "const done = arguments[0]; window.app.queuePrompt(0, 1).then(() => done(null), e => done(String(e)));"
    )
    assert error is None, f"queueing from the page failed: {error}"
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (new := set(server.get("/history").json()) - before):  # a prompt enters the history as it ends
        assert time.monotonic() < deadline, f"the page's prompt did not finish within {RUN_TIMEOUT} s"
        time.sleep(0.5)
    return server.wait(new.pop())


def shorten_extend(driver) -> None:
    """The 30 s graph's Extend adds EXTEND_SECONDS here (as in test_comfy_server), not 28 s: minutes on 2 cores."""
    driver.execute_script(
        "for (const n of window.app.graph._nodes.filter(n => n.type === 'UniFormExtend'))"
        "  n.widgets.find(w => w.name === 'seconds').value = arguments[0];",
        EXTEND_SECONDS,
    )


def ui_workflow(server, path: Path) -> dict:
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        if node["type"] == "UniFormLoadBundle" and node["widgets_values"][0] == EMBEDDED_BUNDLE:
            node["widgets_values"][0] = server.bundle
    return workflow


# ---- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_loads_lays_out_and_runs_in_the_page(page, server, path, tmp_path):
    workflow = ui_workflow(server, path)
    drain(page)
    load(page, workflow, path.stem)
    nodes = page.execute_script(LAYOUT_JS)
    events = drain(page)
    assert not events["toasts"], f"loading {path.name} raised toasts: {events['toasts']}"
    assert not events["errors"], f"loading {path.name} logged errors: {events['errors']}"
    assert_layout(nodes, workflow)
    shorten_extend(page)
    entry = queue_from_page(page, server)
    assert_success(entry)
    video = saved_video(server, entry)
    wait_for(
        page,
        "return Array.from(document.querySelectorAll('video'))"
        "  .some(v => v.src.includes(arguments[0]) && v.readyState >= 2 && v.videoWidth > 0);",
        VIDEO_TIMEOUT,
        f"the page to play {video.name}",
        video.name,
    )
    if path.stem == "UniForm text to video with sound":
        screenshot(page, "comfyui_workflow.png", tmp_path)
    events = drain(page)
    assert not events["toasts"], f"running {path.name} raised toasts: {events['toasts']}"
    committed = Image.open(path.with_suffix(".jpg"))
    assert committed.size == (WIDTH, HEIGHT) and committed.format == "JPEG"
    off = difference(committed, video_thumbnail(video))
    assert off < THUMBNAIL_TOLERANCE, (
        f"{path.with_suffix('.jpg').name} is not what the graph makes now (off by {off:.1f} levels): "
        "run scripts/render_thumbnails.py"
    )


def test_the_checks_can_fail(page, server):
    """A node moved off-screen fails the layout check, and a toast the app raises is seen (frontend 1.27.10 raised
    "Invalid workflow against zod schema" for the shipped graphs' old non-UUID id; 1.49 accepts such an id)."""
    workflow = ui_workflow(server, API_DIR.parent / "UniForm text to video with sound.json")
    workflow["nodes"][0]["pos"] = [4000, 0]
    drain(page)
    load(page, workflow, "off_screen")
    with pytest.raises(AssertionError, match="outside the view"):
        assert_layout(page.execute_script(LAYOUT_JS), workflow)
    page.execute_script(
        "window.app.extensionManager.toast.add({severity: 'warn', summary: 'probe', detail: 'seen', life: 3000});"
    )
    time.sleep(1.0)
    assert any("probe" in t for t in drain(page)["toasts"])


def test_template_browser_shows_every_graph_with_its_thumbnail(page, server, tmp_path):
    """Browse Templates -> the pack's category: one card per workflow, its thumbnail loaded from the pack's
    workflows/ folder (not a grey placeholder); a card opens its graph."""
    from selenium.webdriver.common.by import By

    names = sorted(p.stem for p in UI_FILES)
    drain(page)
    error = page.execute_async_script(
        "const done = arguments[0]; window.app.extensionManager.command.execute('Comfy.BrowseTemplates')"
        "  .then(() => done(null), e => done(String(e)));"
    )
    assert error is None, error
    category = wait_for(
        page,
        "return Array.from(document.querySelectorAll('[role=dialog] li, [role=dialog] span, [role=dialog] button'))"
        "  .find(e => e.textContent.trim() === arguments[0]);",
        PAGE_TIMEOUT,
        f"the template browser to list {LINK_NAME}",
        LINK_NAME,
    )
    category.click()
    cards = {}
    for name in names:  # the cards load their pictures lazily, as they scroll into view
        cards[name] = wait_for(
            page,
            "const title = Array.from(document.querySelectorAll('[role=dialog] *'))"
            "  .find(e => !e.children.length && e.textContent.trim() === arguments[0]);"
            "title?.scrollIntoView({block: 'center'});"
            "const img = Array.from(document.querySelectorAll('[role=dialog] img')).find(i => i.alt === arguments[0]);"
            "return img && img.complete && img.naturalWidth > 0 ? img : null;",
            PAGE_TIMEOUT,
            f"the card of {name} to show its picture",
            name,
        )
        shown = Image.open(io.BytesIO(base64.b64decode(page.execute_script(PICTURE_JS, cards[name]))))
        assert shown.size == (WIDTH, HEIGHT), f"{name}'s card shows a {shown.size} picture, not its thumbnail"
        off = difference(shown, Image.open(API_DIR.parent / f"{name}.jpg"))
        assert off < 1.0, f"{name}'s card shows another picture than workflows/{name}.jpg (off by {off:.1f})"
    dialog = page.find_element(By.CSS_SELECTOR, "[role=dialog]").text
    assert all(name in dialog for name in names), f"card titles missing: {dialog}"
    page.execute_script(  # back to the top of the card grid for the picture (cards scrolled past are re-rendered)
        "let e = document.querySelector('[role=dialog] img');"
        "while (e && e.scrollHeight <= e.clientHeight) e = e.parentElement; if (e) e.scrollTop = 0;"
    )
    time.sleep(1.0)
    screenshot(page, "comfyui_templates.png", tmp_path)
    workflow = json.loads((API_DIR.parent / "UniForm text to video with sound.json").read_text())
    title = page.execute_script(
        "const title = Array.from(document.querySelectorAll('[role=dialog] *'))"
        "  .find(e => !e.children.length && e.textContent.trim() === arguments[0]);"
        "title.scrollIntoView({block: 'center'}); return title;",
        "UniForm text to video with sound",
    )
    title.click()
    wait_for(
        page,
        "return !document.querySelector('[role=dialog]') && window.app.graph._nodes.length === arguments[0];",
        PAGE_TIMEOUT,
        "the card to open its graph",
        len(workflow["nodes"]),
    )
    assert sorted(page.execute_script("return window.app.graph._nodes.map(n => n.type)")) == sorted(
        n["type"] for n in workflow["nodes"]
    )
    events = drain(page)
    assert not events["toasts"], f"opening the template raised toasts: {events['toasts']}"
