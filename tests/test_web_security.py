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
    anywhere = HostOriginGuard(None, allowed_hosts("0.0.0.0", ["10.0.0.5"]))  # exposed on purpose, this name too
    assert _request(anywhere, "10.0.0.5:7860") == 200
    assert _request(anywhere, "10.0.0.5:7860", "http://evil.example.com") == 403


def test_wildcard_bind_accepts_only_this_machines_names_and_allowed_hosts():
    """DNS rebinding on ``--host 0.0.0.0``: a foreign Host or Origin is refused; this machine's own names, the
    loopback names and ``--allowed-host`` values are accepted."""
    import socket

    from vidinvert.web.serve import HostOriginGuard, allowed_hosts, machine_names

    own = socket.gethostname().lower()
    assert own in machine_names() and socket.getfqdn().lower() in machine_names()
    anywhere = HostOriginGuard(None, allowed_hosts("0.0.0.0", ["Studio.LAN", "10.0.0.5:7860"]))
    assert _request(anywhere, "evil.example.com:7860") == 403
    assert _request(anywhere, "evil.example.com:7860", "http://evil.example.com:7860") == 403
    assert _request(anywhere, "evil.example.com:7860", kind="websocket") == 403
    assert _request(anywhere, "10.0.0.6:7860") == 403  # another address: not this machine's, not allowed
    assert _request(anywhere, f"{own}:7860") == 200
    assert _request(anywhere, f"{own}:7860", f"http://{own}:7860") == 200
    assert _request(anywhere, "127.0.0.1:7860") == 200 and _request(anywhere, "localhost") == 200
    assert _request(anywhere, "studio.lan:7860", "http://studio.lan:7860") == 200  # --allowed-host, any case
    assert _request(anywhere, "10.0.0.5:7860") == 200
    assert _request(anywhere, "studio.lan:7860", "http://evil.example.com:7860") == 403  # another site's page
    assert _request(anywhere, f"{own}:7860", "http://studio.lan:7860") == 403  # an origin other than the page's
    assert _request(HostOriginGuard(None, allowed_hosts("::")), "evil.example.com") == 403  # IPv6 wildcard
    named = HostOriginGuard(None, allowed_hosts("10.0.0.7"))  # one LAN address: it, and this machine's names
    assert _request(named, "10.0.0.7:7860") == 200 and _request(named, f"{own}:7860") == 200
    assert _request(named, "evil.example.com:7860") == 403
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}  # loopback bind: as before
    assert allowed_hosts("127.0.0.1", ["studio.lan"]) == {"127.0.0.1", "localhost", "::1", "studio.lan"}
    for bad in ("http://studio.lan", "studio.lan/page", "two names", ""):
        assert_one_line_error(lambda: allowed_hosts("0.0.0.0", [bad]), "--allowed-host")


def _serve_args(*extra: str) -> argparse.Namespace:
    from vidinvert.cli import build_parser

    return build_parser().parse_args(["serve", *extra])


def test_launch_options_limit_uploads_and_guard_requests():
    pytest.importorskip("gradio")
    from vidinvert.web.serve import HostOriginGuard, launch_options

    options = launch_options(_serve_args("--max-upload-mb", "10"), [])
    assert options["max_file_size"] == 10 * 2**20
    assert options["server_name"] == "127.0.0.1" and options["share"] is False
    assert options["quiet"] is True  # no Gradio start-up lines: no "set share=True" hint
    assert options["strict_cors"] is True
    assert [m.cls for m in options["app_kwargs"]["middleware"]] == [HostOriginGuard]
    exposed = launch_options(_serve_args("--host", "0.0.0.0", "--allowed-host", "studio.lan", "--allowed-host",
                                          "10.0.0.5"), [])
    hosts = exposed["app_kwargs"]["middleware"][0].kwargs["hosts"]
    assert {"studio.lan", "10.0.0.5", "localhost"} <= hosts and "evil.example.com" not in hosts
    for bad in ("0", "-5", "nan", "inf"):
        from vidinvert.web.serve import serve

        assert_one_line_error(lambda: serve(_serve_args("--max-upload-mb", bad)), "max-upload-mb")


def test_running_page_refuses_rebinding_foreign_origins_and_big_uploads(tmp_path, monkeypatch, capfd):
    """The real Gradio app with our launch options, in this process, on a free port (Gradio prints nothing: no
    "set share=True" hint)."""
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
    app.launch(prevent_thread_lock=True, **launch_options(_serve_args("--port", str(port),
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
    assert "share=True" not in capfd.readouterr().out


def test_serve_lists_accepted_hosts_and_removes_its_folder_on_sigterm(monkeypatch, capsys):
    """Everything Gradio and the page write goes into the server's temp folder (``GRADIO_TEMP_DIR`` points there
    while it runs), which is gone once SIGTERM (mapped to Ctrl-C) stops the server; the start-up notes list the
    accepted Host names and how to add one."""
    gr = pytest.importorskip("gradio")
    import os
    import signal

    from vidinvert.web.serve import serve

    seen = {}

    def launch(self, **options):
        root = Path(os.environ["GRADIO_TEMP_DIR"])
        seen["root"], seen["hosts"] = root, options["app_kwargs"]["middleware"][0].kwargs["hosts"]
        assert root.name.startswith("vidinvert-web-") and self.blocks and all(
            Path(block.GRADIO_CACHE) == root for block in self.blocks.values())
        (root / "session-x" / "run001").mkdir(parents=True)
        for name in ("clip_edit_1.mp4", "clip_edit_1_comparison.mp4", "clip_edit_1.json"):
            (root / "session-x" / "run001" / name).write_bytes(b"x")
        (root / "0a1b" / "clip.mp4").parent.mkdir()
        (root / "0a1b" / "clip.mp4").write_bytes(b"upload")
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler raises KeyboardInterrupt at the next bytecode
            sum(range(1000))
        raise AssertionError("SIGTERM did not stop the server")

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        serve(_serve_args("--host", "0.0.0.0", "--allowed-host", "studio.lan", "--model", "tiny"))
    assert not seen["root"].exists()  # results, comparisons, settings JSON and uploads: all gone
    assert "GRADIO_TEMP_DIR" not in os.environ and signal.getsignal(signal.SIGTERM) == before
    captured = capsys.readouterr()
    err = captured.err
    assert "vidinvert: serving the page on http://0.0.0.0:7860/" in captured.out and "share" not in captured.out
    note = next(line for line in err.splitlines() if "requests must name this server" in line)
    assert note.startswith("vidinvert: note: ") and "studio.lan" in note and "--allowed-host NAME" in note
    assert set(note.split("one of ", 1)[1].split(";")[0].split(", ")) == set(seen["hosts"])


# ---- the running page: its API and its files ------------------------------------------------------------------
@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """The page over the tiny model, served in this process as ``serve`` does (``GRADIO_TEMP_DIR`` in its folder):
    ``(url, app, root, clip)`` with ``clip`` a small video to upload."""
    pytest.importorskip("gradio")
    pytest.importorskip("httpx")
    import socket

    from conftest import moving_square

    from vidinvert.settings import ModelSettings
    from vidinvert.web import Studio
    from vidinvert.web.page import build_app, gradio_cache
    from vidinvert.web.serve import launch_options

    folder = tmp_path_factory.mktemp("page")
    clip = folder / "clip.mp4"
    write_video(moving_square(), clip, fps=8)
    root = folder / "root"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with gradio_cache(root):
        app = build_app(Studio(ModelSettings(name="tiny")), root)
        app.queue().launch(prevent_thread_lock=True,
                           **launch_options(_serve_args("--port", str(port)), []))
        try:
            yield f"http://127.0.0.1:{port}/gradio_api", app, root, clip
        finally:
            app.close(verbose=False)


def _handler(app, name: str):
    return next(fn for fn in app.fns.values() if fn.fn is not None and fn.fn.__name__ == name)


def _inputs(fn, video, prompts: str = "a red disc", **changes) -> dict:
    """A page handler's inputs by component: every field at its default (Steps 2, Max frames 5) but ``changes``
    (form keys)."""
    from vidinvert.web.form import LABELS, PROMPTS_LABEL, form_defaults

    values = {**form_defaults(), "steps": 2, "max_num_frames": 5, **changes}
    keys = {label: key for key, label in LABELS.items()}
    data = {}
    for block in fn.inputs:
        label = getattr(block, "label", None)
        if label in keys:
            data[block] = values[keys[label]]
        else:
            data[block] = {"Input video": video, PROMPTS_LABEL: prompts}.get(label)
    return data


def _call(url: str, fn, data: dict, session: str) -> list:
    """Run a page endpoint through ``/gradio_api/call/<name>`` as any HTTP client can; its outputs."""
    import json

    import httpx

    with httpx.Client(timeout=120) as client:
        payload = [data[block] for block in fn.inputs]
        event = client.post(f"{url}/call/{fn.api_name}", json={"data": payload, "session_hash": session})
        assert event.status_code == 200, event.text
        answer = client.get(f"{url}/call/{fn.api_name}/{event.json()['event_id']}").text
    kind, data_line = [line for line in answer.splitlines() if line.startswith(("event:", "data:"))][-2:]
    assert kind == "event: complete", answer
    return json.loads(data_line[len("data: "):])


def _upload(url: str, path: Path) -> dict:
    import httpx

    with httpx.Client(timeout=60) as client:
        uploaded = client.post(f"{url}/upload", files={"files": (path.name, path.read_bytes(), "video/mp4")})
    return {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def test_page_files_go_when_the_session_ends(page_server):
    """A session's results, comparisons, settings JSON, preview frames and upload are served from the server's
    folder in place (Gradio makes no copies elsewhere) and removed when the session ends; what any session left
    goes when the app closes."""
    from types import SimpleNamespace

    from vidinvert.web.page import session_dir

    url, app, root, clip = page_server
    edit = _handler(app, "on_edit")
    upload = _upload(url, clip)
    assert Path(upload["path"]).is_relative_to(root.resolve())
    outputs = _call(url, edit, _inputs(edit, upload, "a red disc\na blue disc"), "session-a")
    assert outputs[0].startswith("Edited 5 frames"), outputs[0]
    own = session_dir(root.resolve(), "session-a")
    served = [outputs[3]["path"], outputs[4]["path"], *(item["path"] for item in outputs[5])]
    assert len(served) == 8 and all(Path(path).is_relative_to(own) and Path(path).is_file() for path in served)
    request = SimpleNamespace(session_hash="session-a")
    preview = _handler(app, "on_video")
    gallery, _ = preview.fn(_inputs(preview, upload["path"]), request)
    items = gallery["value"]
    assert gallery["label"] == "Frames the job reads: 5 (showing all 5 frames)"
    assert len(items) == 5 and all(Path(path).is_relative_to(own / "preview") for path, _ in items)
    written = _files(root)
    assert written and all(p.is_relative_to(own) or p == Path(upload["path"]) for p in written), written

    _handler(app, "on_close").fn(request)  # what Gradio runs when the tab is closed
    assert _files(root) == [] and not own.exists()


def test_an_upload_two_sessions_share_stays_until_the_last_one_ends(page_server):
    """Gradio names an upload by its content: two sessions that upload the same clip share one file, which the first
    session's end leaves for the other (its Edit still works) and the last one's removes."""
    from types import SimpleNamespace

    url, app, root, clip = page_server
    edit, close = _handler(app, "on_edit"), _handler(app, "on_close")
    first, second = _upload(url, clip), _upload(url, clip)
    assert first["path"] == second["path"]
    for session, upload in (("share-a", first), ("share-b", second)):
        assert _call(url, edit, _inputs(edit, upload), session)[0].startswith("Edited 5 frames")
    close.fn(SimpleNamespace(session_hash="share-a"))
    assert Path(first["path"]).is_file()  # still share-b's
    assert _call(url, edit, _inputs(edit, second), "share-b")[0].startswith("Edited 5 frames")
    close.fn(SimpleNamespace(session_hash="share-b"))
    assert not Path(first["path"]).exists()


def test_page_api_refuses_values_outside_the_choices_naming_the_field(page_server):
    """Radio values outside their choices, sent over ``/gradio_api/call/...`` or passed to the handlers, give the
    page's one-line error naming the field's label and its choices (not a Gradio error or a traceback)."""
    from types import SimpleNamespace

    from vidinvert.web.form import CHOICES, LABELS, PROMPTS_LABEL

    url, app, root, clip = page_server
    upload = _upload(url, clip)
    request = SimpleNamespace(session_hash="session-b")
    for name in ("on_edit", "on_invert"):
        fn = _handler(app, name)
        for key, choices in CHOICES.items():
            for bad in ("sometimes", None if key != "blend" else 3, ["a"]):
                status = _call(url, fn, _inputs(fn, upload, **{key: bad}), "session-b")[0]
                direct = fn.fn(_inputs(fn, upload["path"], **{key: bad}), request, lambda *a, **k: None)[0]
                for text in (status, direct):
                    assert text.startswith("**vidinvert: error: ") and "\n" not in text, text
                    assert f"{LABELS[key]} must be one of {', '.join(choices)}, got unknown value" in text, text
        status = _call(url, fn, _inputs(fn, upload, injection="maybe"), "session-b")[0]
        assert "Key/value injection must be ticked or not" in status, status
    edit = _handler(app, "on_edit")
    status = _call(url, edit, _inputs(edit, upload, "\n".join(f"prompt {i}" for i in range(9))), "session-b")[0]
    assert f"{PROMPTS_LABEL}: 9 prompts, at most 8" in status, status
    _handler(app, "on_close").fn(request)
    import vidinvert.web.page

    assert not Path(vidinvert.web.page.__file__).with_suffix(".pyi").exists()  # Gradio writes one per subclass
