"""``vidinvert serve``: run the page on this machine until interrupted (binds 127.0.0.1 unless told otherwise).

Exposure model: the page has no login, so it is meant for this machine only. Beyond binding to loopback, every
request must name this server in its ``Host`` header, so a web page elsewhere cannot reach it through DNS rebinding:
a loopback name, the ``--host`` given, on a bind beyond loopback also this machine's own names and addresses, and
any ``--allowed-host``. A request that carries an ``Origin`` must come from the page itself (same scheme, host and
port, the host an accepted one), so other sites cannot post uploads or run jobs (CSRF); uploads are capped at
``--max-upload-mb``. Everything the page and Gradio write (uploads, results, Gradio's copies) lives in one temp
folder of the server, removed when it stops (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import math
import re
import signal
import socket
import sys
import tempfile

from ..errors import VidinvertError
from ..models import model_note, resolve_device
from ..options import model_settings


MAX_UPLOAD_MB = 2048.0  # default --max-upload-mb
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # bind to every interface: the machine's own names are accepted
HOST_NAME = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]+")  # what --allowed-host takes: a DNS name or an IP address


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _hostname(value: str) -> str:
    """``"Example.com:7860"`` -> ``"example.com"``; ``"[::1]:7860"`` -> ``"::1"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def machine_names() -> set[str]:
    """This machine's own names and addresses, as far as the standard library finds them cheaply: its host name,
    fully qualified name and their aliases, the addresses they resolve to, and the address it would reach a
    network from (a UDP socket connected, nothing sent)."""
    names: set[str] = set()
    hostname = socket.gethostname()
    for name in (hostname, socket.getfqdn()):
        if not name:
            continue
        names.add(name)
        try:
            canonical, aliases, addresses = socket.gethostbyname_ex(name)
            names.update((canonical, *aliases, *addresses))
        except OSError:
            pass
        try:
            names.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):  # documentation nets
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                names.add(sock.getsockname()[0])
        except OSError:
            pass
    return {_hostname(name.split("%", 1)[0]) for name in names if name}


def check_allowed_host(value: str) -> str:
    """An ``--allowed-host`` value as the guard compares it (lower case, no port); one-line error if it is not a
    host name or address."""
    name = _hostname(value)
    if "/" in value or not HOST_NAME.fullmatch(name):
        raise VidinvertError(f"--allowed-host must be a host name or an IP address, got {value!r}",
                             "give a name such as studio.lan or an address such as 10.0.0.5 (no scheme, no path)")
    return name


def allowed_hosts(host: str, extra: tuple[str, ...] | list[str] = ()) -> frozenset[str]:
    """Host names a request may carry when serving on ``host``: the loopback names and ``host`` itself; beyond
    loopback (a wildcard or another address) also this machine's names and addresses (``machine_names``); and
    ``extra`` (the ``--allowed-host`` values)."""
    names = set(LOOPBACK_NAMES) | {check_allowed_host(name) for name in extra}
    if host not in WILDCARD_HOSTS:
        names.add(_hostname(host))
    if _hostname(host) not in LOOPBACK_NAMES:
        names |= machine_names()
    return frozenset(names)


class HostOriginGuard:
    """ASGI middleware: 403 for a ``Host`` not in ``hosts`` (DNS rebinding) and for an ``Origin`` other than the
    page's own (requests sent by other sites).

    Args:
        app: the ASGI app to guard.
        hosts: accepted host names (lower case, no port), see ``allowed_hosts``.
    """

    def __init__(self, app, hosts: frozenset[str]):
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
        if not host or _hostname(host) not in self.hosts:
            return (f"refused: Host {host!r} is not a name of this server "
                    "(start it with --allowed-host NAME to accept another name)")
        if origin is not None:
            own = {f"{s}://{host.strip().lower()}" for s in (scheme, scheme.replace("ws", "http"))}
            origin = origin.strip().lower().rstrip("/")
            if origin not in own or _hostname(origin.split("://", 1)[-1]) not in self.hosts:
                return f"refused: request from another site ({origin})"
        return None


def _max_upload_mb(args) -> float:
    return getattr(args, "max_upload_mb", MAX_UPLOAD_MB)  # parsers built elsewhere may lack the option


def _allowed_extra(args) -> list[str]:
    return getattr(args, "allowed_host", None) or []  # parsers built elsewhere may lack the option


def launch_options(args, allowed: list[str], hosts: frozenset[str] | None = None) -> dict:
    """The keyword arguments of Gradio's ``launch()`` for the CLI's ``serve`` arguments (``hosts``: the accepted
    Host names, default ``allowed_hosts`` of them)."""
    from starlette.middleware import Middleware

    if hosts is None:
        hosts = allowed_hosts(args.host, _allowed_extra(args))
    # quiet: no Gradio start-up lines (its "set share=True" hint above all: the page is never shared through Gradio's
    # tunnel); ``serve`` prints the address itself
    return dict(server_name=args.host, server_port=args.port, share=False, quiet=True, inbrowser=False,
                show_error=False,
                allowed_paths=allowed, footer_links=["gradio", "settings"], mcp_server=False, run_history=False,
                ssr_mode=False, strict_cors=True, max_file_size=int(_max_upload_mb(args) * 2**20),
                app_kwargs={"middleware": [Middleware(HostOriginGuard, hosts=hosts)]})


def serve(args) -> int:
    """Run the page for the CLI's parsed ``serve`` arguments."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VidinvertError("the web page needs gradio, which is not installed",
                             "pip install 'vidinvert[web]'") from None
    from .page import SAMPLE_VIDEO, build_app, gradio_cache
    from .studio import Studio

    settings = model_settings(vars(args))  # the table's one mapping of the model options
    resolve_device(settings.device)  # refuse a bad --device now, not at the first click
    if not 0 < args.port < 65536:
        raise VidinvertError(f"port must be 1-65535, got {args.port}")
    if not (math.isfinite(_max_upload_mb(args)) and _max_upload_mb(args) > 0):
        raise VidinvertError(f"--max-upload-mb must be a number > 0, got {_max_upload_mb(args)}")
    hosts = allowed_hosts(args.host, _allowed_extra(args))
    studio = Studio(settings)
    if args.host not in LOOPBACK_NAMES:
        print(f"vidinvert: note: serving on {args.host}: anyone who can reach this address can use the page "
              "(no login)", file=sys.stderr)
        print(f"vidinvert: note: requests must name this server as one of {', '.join(sorted(hosts))}; "
              "accept another name with --allowed-host NAME (repeatable)", file=sys.stderr)
    note = model_note(studio.label)
    if note:
        print(f"vidinvert: note: {note}", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C, so that the folder below is removed
    try:
        # Uploads, results and Gradio's copies of them all go into this folder, removed when the server stops.
        with tempfile.TemporaryDirectory(prefix="vidinvert-web-", ignore_cleanup_errors=True) as root, \
                gradio_cache(root):
            app = build_app(studio, root)
            shown = f"[{args.host}]" if ":" in args.host else args.host
            print(f"vidinvert: serving the page on http://{shown}:{args.port}/ (Ctrl-C stops it)", flush=True)
            try:
                app.queue(default_concurrency_limit=1).launch(**launch_options(args, [str(SAMPLE_VIDEO)], hosts))
            except OSError as err:
                raise VidinvertError(f"cannot serve on {args.host}:{args.port} ({err})",
                                     "pick another --port, or stop what is using it") from None
            finally:
                app.close(verbose=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
