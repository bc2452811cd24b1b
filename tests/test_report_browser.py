"""A real browser opens the report: Debian's headless Chromium driven by Python Playwright
(no browser download). Every image and plot must render, the console must stay free of
errors, and no request may leave the page (everything that is not file: or data: is
routed to abort and recorded). Screenshots are kept under test-artifacts/.

Runs by default (CI installs chromium in .ci/run); skips only when the chromium binary
or the playwright package is truly absent, and says which.
"""

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from deid.report import build_report, summary_path
from deid.report.testing import make_metrics_dir
from deid.testing import ColorFaceDetector

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    want = os.environ.get("DEID_CHROMIUM", "/usr/bin/chromium")
    path = want if Path(want).is_file() else shutil.which("chromium")
    if not path:
        pytest.skip(f"Debian chromium not installed ({want} absent): `apt-get install -y chromium` "
                    "(CI's .ci/run installs it; `make browser` too)")
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        pytest.skip("python playwright is not installed: pip install -e '.[test]'")
    return path


def open_in_chromium(html: Path, screenshot: Path | None = None, composite: Path | None = None) -> dict:
    """Load ``html`` from file:// in headless Chromium; return what the page did."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    seen, blocked, console, page_errors = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="deid-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=exe, headless=True, args=LAUNCH_ARGS,
                                                   viewport={"width": 1280, "height": 1000})
        try:
            def route(r):
                url = r.request.url
                seen.append(url)
                if url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    blocked.append(url)
                    r.abort()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda req: seen.append(req.url))
            page.goto(html.resolve().as_uri(), wait_until="load")
            imgs = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, w: e.naturalWidth, h: e.naturalHeight}))")
            title = page.title()
            h2 = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            if composite is not None:
                _composite(page, composite)
        finally:
            ctx.close()
    return {"images": imgs, "seen": seen, "blocked": blocked, "console": console, "page_errors": page_errors,
            "title": title, "h2": h2}


def _composite(page, out: Path) -> None:
    """A README-sized picture: the top of the report (verdict, AP table) above the first
    frame-strip rows (processed frames with the two skeletons)."""
    import io

    from PIL import Image

    table = page.locator("#pose table").first.bounding_box()
    h_top = int(table["y"] + table["height"] + 16) if table else 1000
    top = Image.open(io.BytesIO(page.screenshot(clip={"x": 0, "y": 0, "width": 1280, "height": min(h_top, 1100)},
                                                full_page=True)))
    parts = [top]
    box = page.locator("#frames").bounding_box()
    if box:
        y = box["y"] + page.evaluate("window.scrollY")
        parts.append(Image.open(io.BytesIO(page.screenshot(
            clip={"x": 0, "y": y, "width": 1280, "height": min(900, box["height"])}, full_page=True))))
    w = max(p.width for p in parts)
    canvas = Image.new("RGB", (w, sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        canvas.paste(p.convert("RGB"), (0, y))
        y += p.height
    canvas = canvas.resize((w * 3 // 4, canvas.height * 3 // 4), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)  # README-sized file


def check_page(res: dict, html: Path) -> None:
    assert res["blocked"] == [], f"requests left the page: {res['blocked'][:5]}"
    assert all(u.startswith(("file:", "data:")) for u in res["seen"]), res["seen"][:5]
    assert res["console"] == [] and res["page_errors"] == [], (res["console"], res["page_errors"])
    n_img = html.read_text(encoding="utf-8").count("<img ")
    assert len(res["images"]) == n_img and n_img > 0
    broken = [i["alt"] for i in res["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, f"images that did not render: {broken}"


def test_report_renders_offline_in_chromium(tmp_path):
    chromium_path()
    md = make_metrics_dir(tmp_path, videos=("patient_a",), swap=True, n_frames=32)
    html = build_report(md, tmp_path / "report.html", detector=ColorFaceDetector())
    res = open_in_chromium(html, ARTIFACTS / "report.png")
    check_page(res, html)
    assert res["title"] == "deid evaluation report"
    for section in ("Overview", "Pose kept (OKS AP)", "Identity (re-identification)", "Clinical features",
                    "Frames (processed only)", "Per-video status and audit", "Configuration and models"):
        assert section in res["h2"], section
    s = json.loads(summary_path(html).read_text())
    plots = [i for i in res["images"] if not i["alt"].split()[0] in ("swap", "mask", "blur", "pixelate")]
    thumbs = [i for i in res["images"] if i not in plots]
    assert len(thumbs) == s["frame_strips"]["thumbnails"] > 0 and len(plots) >= 4
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_a_page_that_asks_for_the_network_is_caught(tmp_path):
    """The harness itself: a page with an external image is blocked, recorded, and fails the check."""
    chromium_path()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                   '<img alt="remote" src="http://example.invalid/x.png"></body></html>')
    res = open_in_chromium(bad)
    assert any("example.invalid" in u for u in res["blocked"])
    with pytest.raises(AssertionError):
        check_page(res, bad)


def test_demo_report_in_chromium():
    """The report `make demo` wrote (demo_out/report.html, or $DEID_REPORT_HTML): same checks,
    plus the README screenshot (test-artifacts/demo_report.png; copy it to docs/report.png)."""
    chromium_path()
    html = Path(os.environ.get("DEID_REPORT_HTML", REPO / "demo_out" / "report.html"))
    if not html.is_file():
        pytest.skip(f"no demo report at {html}: run `make demo` first (or set DEID_REPORT_HTML)")
    res = open_in_chromium(html, ARTIFACTS / "demo_report_full.png", composite=ARTIFACTS / "demo_report.png")
    check_page(res, html)
