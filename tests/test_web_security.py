"""What a hostile user or a hostile web site can make the page (and every reader) do.

- Reading: a file whose *content* is a playlist or a concat list (whatever its name) would make FFmpeg open and
  decode other files on the server and show them back; every read refuses those demuxers by detected format.
- Serving: requests that name another Host (DNS rebinding), come from another site's Origin (CSRF), or upload more
  than the limit are refused; the launch options say so.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
import pytest

from vidinvert.errors import VidinvertError
from vidinvert.export import write_video
from vidinvert.video import read_video

from conftest import assert_one_line_error

import torch


@pytest.fixture
def secret(tmp_path) -> Path:
    """A local video (mp4) and the same frames as MPEG-TS, as a file an attacker would like to read back."""
    frames = torch.linspace(-1, 1, 9).view(9, 1, 1, 1).expand(9, 3, 32, 64).contiguous()
    write_video(frames, tmp_path / "secret.mp4", fps=8)
    import av

    with av.open(str(tmp_path / "secret.mp4")) as src, av.open(str(tmp_path / "secret.ts"), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for frame in src.decode(video=0):
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode())
    return tmp_path / "secret.mp4"


def _playlists(folder: Path, secret: Path) -> dict[str, str]:
    ts = secret.with_suffix(".ts")
    hls = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{}\n#EXT-X-ENDLIST\n"
    return {
        "relative.m3u8": hls.format(ts.name),
        "absolute.m3u8": hls.format(ts),
        "url.m3u8": hls.format(f"file://{ts}"),
        "list.ffconcat": f"ffconcat version 1.0\nfile '{secret.name}'\n",
        "list.txt": f"ffconcat version 1.0\nfile '{secret.name}'\n",
        "x.mp4": hls.format(ts.name),
    }


def test_playlists_and_concat_lists_are_refused_by_content(tmp_path, secret):
    import av

    for name, text in _playlists(tmp_path, secret).items():
        path = tmp_path / name
        path.write_text(text)
        if name.endswith((".m3u8", ".ffconcat")):  # FFmpeg itself would decode the secret through these
            with av.open(str(path)) as container:
                assert next(container.decode(video=0)) is not None, name
        words = ("refusing", "pass the video file itself") if name != "x.mp4" else ()  # FFmpeg: not HLS by name
        assert_one_line_error(lambda: read_video(path, 32, 64, min_frames=1, temporal_multiple=1), *words)
    assert read_video(secret, 32, 64, min_frames=1, temporal_multiple=1).frames.shape[0] == 9  # still readable


def test_image_names_are_never_patterns(tmp_path):
    """image2 would read ``a%d.png`` as the sequence a1.png, a2.png ...: only the named file is read."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for name, value in [("a1.png", 10), ("a2.png", 200), ("a%d.png", 100)]:
        Image.fromarray(np.full((32, 64, 3), value, np.uint8)).save(folder / name)
    from vidinvert.video import _read_image

    assert int(_read_image(folder / "a%d.png").mean()) == 100


def test_page_preview_refuses_a_playlist_upload(tmp_path, secret):
    pytest.importorskip("gradio")
    from vidinvert.settings import ReadSettings
    from vidinvert.web.page import preview_frames

    upload = tmp_path / "upload.m3u8"
    upload.write_text(_playlists(tmp_path, secret)["relative.m3u8"])
    assert_one_line_error(lambda: preview_frames(str(upload), ReadSettings(max_frames=49)), "refusing")


# ---- the server ------------------------------------------------------------------------------------------------
def _request(guard, host: str | None, origin: str | None = None, kind: str = "http") -> int:
    """Status the guard answers for a request with these headers (200 if it reaches the app)."""
    headers = [(b"host", host.encode())] if host is not None else []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    sent = []

    async def app(scope, receive, send):
        sent.append({"status": 200})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    guard.app = app
    scope = {"type": kind, "headers": headers, "scheme": "ws" if kind == "websocket" else "http", "method": "GET"}
    asyncio.run(guard(scope, receive, send))
    first = sent[0]
    return first.get("status", 403 if first.get("type") == "websocket.close" else 200)


def test_guard_refuses_foreign_hosts_and_origins():
    from vidinvert.web.serve import HostOriginGuard, allowed_hosts

    guard = HostOriginGuard(None, allowed_hosts("127.0.0.1"))
    assert _request(guard, "127.0.0.1:7860") == 200
    assert _request(guard, "localhost:7860", "http://localhost:7860") == 200
    assert _request(guard, "[::1]:7860") == 200
    assert _request(guard, "evil.example.com:7860") == 403  # DNS rebinding
    assert _request(guard, "evil.example.com") == 403
    assert _request(guard, None) == 403
    assert _request(guard, "127.0.0.1:7860", "http://evil.example.com") == 403  # another site's page
    assert _request(guard, "127.0.0.1:7860", "null") == 403
    assert _request(guard, "127.0.0.1:7860", "http://127.0.0.1:9999") == 403  # another local port
    assert _request(guard, "evil.example.com:7860", kind="websocket") == 403
    assert _request(guard, "127.0.0.1:7860", "http://127.0.0.1:7860", kind="websocket") == 200
    named = HostOriginGuard(None, allowed_hosts("studio.lan"))
    assert _request(named, "studio.lan:7860", "http://studio.lan:7860") == 200
    assert _request(named, "other.lan:7860") == 403
    anywhere = HostOriginGuard(None, allowed_hosts("0.0.0.0"))  # exposed on purpose: any name, same origin only
    assert _request(anywhere, "10.0.0.5:7860") == 200
    assert _request(anywhere, "10.0.0.5:7860", "http://evil.example.com") == 403


def _serve_args(*extra: str) -> argparse.Namespace:
    from vidinvert.cli import build_parser

    return build_parser().parse_args(["serve", *extra])


def test_launch_options_limit_uploads_and_guard_requests():
    pytest.importorskip("gradio")
    from vidinvert.web.serve import HostOriginGuard, launch_options

    options = launch_options(_serve_args("--max-upload-mb", "10"), [])
    assert options["max_file_size"] == 10 * 2**20
    assert options["server_name"] == "127.0.0.1" and options["share"] is False
    assert options["strict_cors"] is True
    assert [m.cls for m in options["app_kwargs"]["middleware"]] == [HostOriginGuard]
    for bad in ("0", "-5", "nan", "inf"):
        from vidinvert.web.serve import serve

        assert_one_line_error(lambda: serve(_serve_args("--max-upload-mb", bad)), "max-upload-mb")


def test_running_page_refuses_rebinding_foreign_origins_and_big_uploads(tmp_path, monkeypatch):
    """The real Gradio app with our launch options, in this process, on a free port."""
    gr = pytest.importorskip("gradio")
    httpx = pytest.importorskip("httpx")
    import socket

    from vidinvert.web.serve import launch_options

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with gr.Blocks() as app:
        gr.File()
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(_serve_args("--port", str(port),
                                                                                 "--max-upload-mb", "1"), []))
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=20) as client:
            assert client.get(url + "/").status_code == 200
            assert client.get(url + "/", headers={"Host": "evil.example.com"}).status_code == 403
            assert client.get(url + "/", headers={"Host": f"evil.example.com:{port}"}).status_code == 403
            small = {"files": ("a.mp4", b"x" * 1000, "video/mp4")}
            assert client.post(url + "/gradio_api/upload", files=small).status_code == 200
            foreign = client.post(url + "/gradio_api/upload", files=small,
                                  headers={"Origin": "http://evil.example.com"})
            assert foreign.status_code == 403
            big = {"files": ("a.mp4", b"x" * (2 * 2**20), "video/mp4")}
            assert client.post(url + "/gradio_api/upload", files=big).status_code >= 400
    finally:
        app.close()
