"""``vidinvert serve``: run the page on this machine until interrupted (binds 127.0.0.1 unless told otherwise).

Exposure model: the page has no login, so it is meant for this machine only. Beyond binding to loopback, every
request must name this server in its ``Host`` header (a loopback name, or the ``--host`` given), so a web page
elsewhere cannot reach it through DNS rebinding; a request that carries an ``Origin`` must come from the page
itself (same scheme, host and port), so other sites cannot post uploads or run jobs (CSRF); uploads are capped at
``--max-upload-mb``.
"""

from __future__ import annotations

import math
import signal
import sys
import tempfile

from ..errors import VidinvertError
from ..models import model_note, resolve_device
from ..settings import ModelSettings


MAX_UPLOAD_MB = 2048.0  # default --max-upload-mb
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # bind to every interface: any Host name may be legitimate


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _hostname(value: str) -> str:
    """``"Example.com:7860"`` -> ``"example.com"``; ``"[::1]:7860"`` -> ``"::1"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(host: str) -> frozenset[str] | None:
    """Host names a request may carry when serving on ``host``; ``None``: any (bound to every interface)."""
    if host in WILDCARD_HOSTS:
        return None
    return frozenset((*LOOPBACK_NAMES, _hostname(host)))


class HostOriginGuard:
    """ASGI middleware: 403 for a ``Host`` not in ``hosts`` (DNS rebinding) and for an ``Origin`` other than the
    page's own (requests sent by other sites).

    Args:
        app: the ASGI app to guard.
        hosts: accepted host names (lower case, no port); ``None`` accepts any Host (origins are still checked).
    """

    def __init__(self, app, hosts: frozenset[str] | None):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self.refuse(headers.get("host", ""), headers.get("origin"), scope.get("scheme", "http"))
        if problem is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = f"vidinvert: {problem}\n".encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def refuse(self, host: str, origin: str | None, scheme: str) -> str | None:
        """Why a request with these headers is refused, or ``None`` to let it through."""
        if not host or (self.hosts is not None and _hostname(host) not in self.hosts):
            return f"refused: Host {host!r} is not this server (serve with --host NAME to use another name)"
        if origin is not None:
            own = {f"{s}://{host.strip().lower()}" for s in (scheme, scheme.replace("ws", "http"))}
            if origin.strip().lower().rstrip("/") not in own:
                return f"refused: request from another site ({origin})"
        return None


def _max_upload_mb(args) -> float:
    return getattr(args, "max_upload_mb", MAX_UPLOAD_MB)  # parsers built elsewhere may lack the option


def launch_options(args, allowed: list[str]) -> dict:
    """The keyword arguments of Gradio's ``launch()`` for the CLI's ``serve`` arguments."""
    from starlette.middleware import Middleware

    return dict(server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=False,
                allowed_paths=allowed, footer_links=["gradio", "settings"], mcp_server=False, run_history=False,
                ssr_mode=False, strict_cors=True, max_file_size=int(_max_upload_mb(args) * 2**20),
                app_kwargs={"middleware": [Middleware(HostOriginGuard, hosts=allowed_hosts(args.host))]})


def serve(args) -> int:
    """Run the page for the CLI's parsed ``serve`` arguments."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VidinvertError("the web page needs gradio, which is not installed",
                             "pip install 'vidinvert[web]'") from None
    from .page import SAMPLE_VIDEO, build_app
    from .studio import Studio

    settings = ModelSettings(name=args.model, dtype=args.dtype, device=args.device, cpu_offload=args.cpu_offload,
                             vae_tiling=args.vae_tiling, vae_slicing=args.vae_slicing)
    resolve_device(settings.device)  # refuse a bad --device now, not at the first click
    if not 0 < args.port < 65536:
        raise VidinvertError(f"port must be 1-65535, got {args.port}")
    if not (math.isfinite(_max_upload_mb(args)) and _max_upload_mb(args) > 0):
        raise VidinvertError(f"--max-upload-mb must be a number > 0, got {_max_upload_mb(args)}")
    studio = Studio(settings)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"vidinvert: note: serving on {args.host}: anyone who can reach this address can use the page "
              "(no login)", file=sys.stderr)
    note = model_note(studio.label)
    if note:
        print(f"vidinvert: note: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vidinvert-web-", ignore_cleanup_errors=True) as root:
        app = build_app(studio, root)
        previous = signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C, so the outputs are removed
        try:
            app.queue(default_concurrency_limit=1).launch(**launch_options(args, [str(SAMPLE_VIDEO)]))
        except OSError as err:
            raise VidinvertError(f"cannot serve on {args.host}:{args.port} ({err})",
                                 "pick another --port, or stop what is using it") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0
