"""The page in a real browser (the distribution's headless Chromium, driven by Playwright): the avatar
list, a render that plays, a live stream whose frames arrive and are shown in time with the sound,
the microphone as a stream, and recorded speech rendered.

Skipped on a developer machine without Chromium or Playwright; in CI (CI=true) it must run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import MODELS, REPO
from helpers_serve import NAME, SR, served_person, speech

CHROMIUM = os.environ.get("SYNCTALK_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]
SCREENSHOT = REPO / "docs" / "serve_page.png"


def _need_browser():
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing.append(f"chromium at {CHROMIUM}")
    if missing:
        why = "needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test {why} (.ci/run installs both)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("aiohttp")
    _need_browser()
    from synctalk.serve.app import BackgroundServer, ServerConfig

    person = served_person(tmp_path_factory)
    srv = BackgroundServer(ServerConfig(dataset_dir=person.dataset_dir, checkpoint_dir=person.checkpoint_dir,
                                        work_dir=tmp_path_factory.mktemp("browser_work"), device="cpu",
                                        max_batch=8, models_dir=MODELS))
    yield srv
    srv.stop()


def _wav(path: Path, seconds: float) -> Path:
    import soundfile as sf

    sf.write(str(path), speech(seconds), SR, subtype="PCM_16")
    return path


def test_page_renders_and_streams(server, tmp_path):
    from playwright.sync_api import sync_playwright

    short = _wav(tmp_path / "hello.wav", 1.2)
    longer = _wav(tmp_path / "live.wav", 4.0)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                   headless=True, args=FLAGS, viewport={"width": 1180, "height": 860})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector(f".card[data-name='{NAME}'] .badge.ready", timeout=60_000)
            assert page.inner_text("#current") == NAME

            # render an uploaded file; the MP4 comes back and plays
            page.set_input_files("#render-file", str(short))
            page.click("#render-form button[type=submit]")
            page.wait_for_function("() => window.synctalkStats.renders >= 1", timeout=180_000)
            page.wait_for_function("() => { const v = document.getElementById('render-video');"
                                   " return v.error || (v.readyState >= 2 && v.currentTime > 0.3); }",
                                   timeout=60_000)
            video = page.evaluate("() => { const v = document.getElementById('render-video');"
                                  " return {error: v.error && v.error.code, duration: v.duration, t: v.currentTime}; }")
            assert video["error"] is None, video
            assert video["duration"] == pytest.approx(1.2, abs=0.1)

            # stream a file through the WebSocket: every speech frame arrives and is drawn on time
            page.set_input_files("#live-file", str(longer))
            page.click("#stream-file")
            page.wait_for_function("() => window.synctalkStats.speech >= 50", timeout=120_000)
            page.screenshot(path=str(tmp_path / "serve_page.png"))
            page.wait_for_function("() => window.synctalkStats.ends >= 1", timeout=120_000)
            page.wait_for_timeout(1500)  # the last frames are shown when the sound reaches them
            stats = page.evaluate("() => window.synctalkStats")
            assert stats["errors"] == [] and errors == []
            assert stats["ready"]["min_delay_ms"] == 326.0
            assert stats["speech"] == 100 and stats["lastIndex"] == 99
            assert stats["shown"] >= 60  # drawn when their time came (late ones are skipped, not bunched)
            assert stats["idle"] > 0  # the resting avatar before the first window was complete

            # the microphone (Chromium's fake capture device): its sound streams and frames come back
            page.click("#mic")
            page.wait_for_function("() => window.synctalkStats.mode === 'mic' && window.synctalkStats.speech >= 110",
                                   timeout=120_000)
            page.click("#stop")
            assert page.evaluate("() => window.synctalkStats.errors") == []

            # speech recorded in the page (MediaRecorder, WebM/Opus) is rendered and plays as well
            page.click("#record")
            page.wait_for_timeout(1500)
            page.click("#record")
            page.wait_for_function("() => window.synctalkStats.renders >= 2", timeout=180_000)
            page.wait_for_function("() => { const v = document.getElementById('render-video');"
                                   " return v.error || (v.readyState >= 2 && v.currentTime > 0.2); }",
                                   timeout=60_000)
            assert page.evaluate("() => document.getElementById('render-video').error") is None
        finally:
            ctx.close()
    if os.environ.get("SYNCTALK_UPDATE_SCREENSHOT") == "1":
        import cv2

        img = cv2.imread(str(tmp_path / "serve_page.png"))
        img = cv2.resize(img, (img.shape[1] * 3 // 4, img.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(SCREENSHOT), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
