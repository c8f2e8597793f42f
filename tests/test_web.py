"""The web page (``vidinvert serve``), end to end in headless Chromium driven by Playwright, plus its plain parts.

The browser tests start ``python -m vidinvert.web`` (the embedded tiny model) on a free localhost port and use the
page as a person would: upload, set steps, type prompts, click, wait, download, then check the files with PyAV. They
skip, with the reason, when gradio, playwright or /usr/bin/chromium is missing (``scripts/ci_web_deps.sh`` installs
the browser). ``VIDINVERT_SCREENSHOT=1`` also saves the finished page to docs/web.png.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vidinvert.errors import VidinvertError
from vidinvert.web import SAMPLE_VIDEO, Studio, error_line, parse_prompts, settings_from_form

TINY_CLIP = Path(__file__).resolve().parents[1] / "src" / "vidinvert" / "assets" / "sample.mp4"  # 33 frames 128x128

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
STEPS = "4"  # keeps a run to seconds on a CPU


# ---- plain parts (no browser) ---------------------------------------------------------------------------------
def test_form_defaults_are_the_cli_defaults():
    from vidinvert.editing import EditConfig
    from vidinvert.jobs import InvertSettings, ReadSettings

    assert settings_from_form({}) == (ReadSettings(), InvertSettings(), EditConfig())
    read, inv, config = settings_from_form({"frame_sample_step": 0, "height": 0, "width": None, "steps": 4.0,
                                            "injection": False, "injection_steps": 0.5})
    assert (read.stride, read.height, read.width, inv.steps) == (None, None, None, 4)
    assert not config.injection.enabled and config.injection.steps == 0.5
    with pytest.raises(VidinvertError, match="injection steps"):
        settings_from_form({"injection_steps": 1.5})
    with pytest.raises(VidinvertError, match="steps must be a whole number"):
        settings_from_form({"steps": 2.5})


def test_prompts_and_error_lines():
    assert parse_prompts(" a red disc \n\n a blue disc\n") == ["a red disc", "a blue disc"]
    with pytest.raises(VidinvertError, match="no edit prompt"):
        parse_prompts("  \n ")
    err = VidinvertError("cannot read /tmp/x/y/clip.mp4 as a video", "check it is a video file")
    line = error_line(err, "/tmp/x/y/clip.mp4")
    assert line == "vidinvert: error: cannot read clip.mp4 as a video; check it is a video file"
    assert error_line(KeyError("boom")).startswith("vidinvert: internal error: KeyError")


def test_serve_parser_binds_locally_by_default():
    import argparse

    from vidinvert.web import add_serve_parser

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.model, args.device, args.dtype) == ("127.0.0.1", 7860, None, "auto", "auto")


def test_studio_inverts_once_and_edits_several_prompts(tiny_pipes, tmp_path):
    from vidinvert.models import VideoModel

    studio = Studio.from_model(VideoModel(tiny_pipes["5b"], name="tiny"))
    read, inv, config = settings_from_form({"max_num_frames": 9, "steps": 2})
    _, first, reused = studio.inversion(str(SAMPLE_VIDEO), read, inv)
    assert not reused
    results, summary = studio.edit(str(SAMPLE_VIDEO), read, inv, ["a red disc", "a blue disc"], config, tmp_path)
    assert summary["inversion_reused"] and summary["transformer_calls"] == 2 and summary["batch_rows"] == [5]
    assert [r.video.name for r in results] == ["sample_edit_1.mp4", "sample_edit_2.mp4"]
    assert all(r.video.is_file() and r.comparison.is_file() and r.settings.is_file() for r in results)
    record = json.loads(results[1].settings.read_text())
    assert record["result"]["prompts"] == ["a red disc", "a blue disc"] and record["inversion"]["num_steps"] == 2
    _, again, reused = studio.inversion(str(SAMPLE_VIDEO), read, inv)
    assert reused and again is first


# ---- the page in a browser ------------------------------------------------------------------------------------
def _browser_stack():
    """Skip (with the reason) unless gradio, playwright and Debian's chromium are all here."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (install it with scripts/ci_web_deps.sh)")
    pytest.importorskip("gradio", reason="gradio not installed (pip install 'vidinvert[web]')")
    return pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m vidinvert.web`` on a free port with the tiny model; yields its URL."""
    _browser_stack()
    folder = tmp_path_factory.mktemp("web")
    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TMPDIR": str(folder)}
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vidinvert.web", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{(folder / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within 90 s:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = _browser_stack()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser):
    """A fresh browser session on the page, loaded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_selector("#edit")
    yield page
    context.close()


def _expect():
    from playwright.sync_api import expect

    return expect


def _status(page) -> str:
    return page.locator("#status").inner_text().strip()


def _downloads(page) -> dict[str, str]:
    """File name -> URL of every link in the downloads list."""
    links = page.locator("#downloads a[href]")
    urls = [links.nth(i).get_attribute("href") for i in range(links.count())]
    return {url.rsplit("/", 1)[-1]: url for url in urls}


def _fetch(page, url: str, path: Path) -> Path:
    """Download ``url`` through the browser's own session."""
    response = page.request.get(url)
    assert response.ok, f"{url}: HTTP {response.status}"
    path.write_bytes(response.body())
    return path


def _video_info(path: Path) -> tuple[int, int, int]:
    """(decoded frames, height, width) of a video file, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert frames, f"{path} holds no frames"
    return len(frames), frames[0].height, frames[0].width


def _run_edit(page, prompts: str, timeout: float = 90_000) -> None:
    page.locator("#steps input").fill(STEPS)
    page.locator("#prompts textarea").fill(prompts)
    page.click("#edit")
    _expect()(page.locator("#status")).to_contain_text("Edited", timeout=timeout)
    page.wait_for_selector("#result-video video")


def test_page_edits_the_uploaded_sample(page, tmp_path):
    page.locator("#input-video input[type=file]").set_input_files(str(TINY_CLIP))
    _expect()(page.locator("#input-frames img").first).to_be_visible()
    assert "33 frames" in _status(page)  # the preview describes the selected range
    _run_edit(page, "a blue disc moving right")
    assert _status(page).startswith("Edited 33 frames at 64×64 with 1 prompt")

    files = _downloads(page)
    assert set(files) == {"sample_edit.mp4", "sample_edit_comparison.mp4", "sample_edit.json"}
    assert _video_info(_fetch(page, files["sample_edit.mp4"], tmp_path / "result.mp4")) == (33, 64, 64)
    assert _video_info(_fetch(page, files["sample_edit_comparison.mp4"], tmp_path / "cmp.mp4")) == (33, 64, 130)
    record = json.loads(_fetch(page, files["sample_edit.json"], tmp_path / "settings.json").read_text())
    assert record["result"]["prompts"] == ["a blue disc moving right"]
    assert record["inversion"]["num_steps"] == int(STEPS) and record["edit"]["guidance"] == 6.0
    player = page.locator("#result-video video").get_attribute("src")
    assert _video_info(_fetch(page, player, tmp_path / "player.mp4")) == (33, 64, 64)

    if os.environ.get("VIDINVERT_SCREENSHOT") == "1":
        page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
                               timeout=10_000)
        page.evaluate("document.querySelectorAll('video').forEach(v => { v.pause(); v.currentTime = 1.5; })")
        page.wait_for_timeout(500)
        (REPO / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO / "docs" / "web.png"), full_page=True)


def test_bad_file_shows_one_line_error_then_page_still_works(page, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is a text file, not a video\n" * 20)
    page.locator("#input-video input[type=file]").set_input_files(str(broken))
    _expect()(page.locator("#status")).to_contain_text("vidinvert: error: cannot read broken.mp4 as a video")
    line = _status(page)
    assert "\n" not in line and "Traceback" not in line and "/tmp" not in line

    page.click("#edit")  # with no prompt the click is refused in one line too, and nothing breaks
    _expect()(page.locator("#status")).to_contain_text("vidinvert: error:")

    page.click("#use-sample")
    _expect()(page.locator("#status")).to_contain_text("sample.mp4")
    page.locator("#steps input").fill(STEPS)
    page.click("#invert")
    _expect()(page.locator("#status")).to_contain_text("Inverted 9 frames", timeout=90_000)  # the demo clip
    _run_edit(page, "a red disc\na green square")
    assert "with 2 prompts" in _status(page) and "(inversion reused)" in _status(page)
    files = _downloads(page)
    assert len(files) == 6 and {"sample_edit_1.mp4", "sample_edit_2.mp4"} <= set(files)
    assert _video_info(_fetch(page, files["sample_edit_2.mp4"], tmp_path / "second.mp4")) == (9, 64, 64)
    _expect()(page.locator("#result-choice")).to_be_visible()
