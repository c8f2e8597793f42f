"""``vidinvert serve``: run the page on this machine until interrupted (binds 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import signal
import sys
import tempfile

from ..errors import VidinvertError
from ..models import model_note, resolve_device
from ..settings import ModelSettings


def _interrupt(signum, frame):
    raise KeyboardInterrupt


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
            app.queue(default_concurrency_limit=1).launch(
                server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=False,
                allowed_paths=[str(SAMPLE_VIDEO)], footer_links=["gradio", "settings"], mcp_server=False,
                run_history=False)
        except OSError as err:
            raise VidinvertError(f"cannot serve on {args.host}:{args.port} ({err})",
                                 "pick another --port, or stop what is using it") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0
