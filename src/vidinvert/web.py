"""``vidinvert serve``: a local web page (Gradio) to invert a video once and edit it with several prompts.

The page is another front end over the same user-level steps as the CLI, with the CLI's defaults:
``jobs.open_source`` / ``invert_source`` / ``decode``, ``editing.edit`` (several prompts in one batch),
``video.write_video`` / ``side_by_side`` and ``outputs.write_json``. It holds no inversion or editing logic of its own.

``Studio`` (no Gradio in it) owns the one model of the app, loaded on first use, and an in-memory cache of inversions
keyed by (video content hash, frame settings, inversion settings, model), so "Invert" then "Edit" -- or several
edits of the same clip -- invert once. ``build_app`` lays the page out over a ``Studio``. Every ``VidinvertError``
appears in the page as the CLI's one-line ``vidinvert: error: ...`` and the page stays usable. Each browser session
writes its outputs into its own temp folder, removed when the session ends.

Gradio is optional (``pip install 'vidinvert[web]'``) and imported only when the app is built; run the page with
``vidinvert serve`` (or ``python -m vidinvert.web``). It binds to 127.0.0.1 unless ``--host`` says otherwise.
"""

import argparse
import dataclasses
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import VidinvertError



def _sample_video() -> Path:
    """The bundled clip: the demo world's held-out sample where the demo model ships, else the tiny model's clip."""
    from .demo import SAMPLE_CLIP

    return SAMPLE_CLIP if SAMPLE_CLIP.is_file() else Path(__file__).parent / "assets" / "sample.mp4"


SAMPLE_VIDEO = _sample_video()
PREVIEW_FRAMES = 6  # input frames shown under the player
PREVIEW_WIDTH = 256  # pixel width the preview frames are read at (aspect kept)
CACHE_SIZE = 4  # inversions kept in memory (least recently used dropped first)
GRADIO_CACHE_CLEANUP = (3600, 6 * 3600)  # hourly, drop Gradio's copies of uploads/results older than 6 h
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


# ---- defaults: the CLI's own ----------------------------------------------------------------------------------
def cli_defaults() -> dict:
    """The defaults of ``vidinvert edit``, read from the CLI's parser so the page can never drift from it."""
    from .cli import DEFAULT_STEPS, build_parser

    defaults = vars(build_parser().parse_args(["edit", "--prompt", ""]))
    if defaults["steps"] is None:  # the CLI leaves it open so a saved inversion can bring its own
        defaults["steps"] = DEFAULT_STEPS
    if defaults["strength"] is None:  # unset: the whole schedule (the page has no K-RNR option)
        defaults["strength"] = 1.0
    return defaults


def _optional_int(value, name: str) -> int | None:
    """A form number that may be left empty (None or 0 mean "automatic")."""
    if value is None or value == "" or value == 0:
        return None
    return _int(value, name)


def _int(value, name: str) -> int:
    if value is None or value == "":
        raise VidinvertError(f"{name} is empty", f"type a whole number for {name}")
    if float(value) != int(float(value)):
        raise VidinvertError(f"{name} must be a whole number, got {value}")
    return int(float(value))


def _float(value, name: str) -> float:
    if value is None or value == "":
        raise VidinvertError(f"{name} is empty", f"type a number for {name}")
    return float(value)


def settings_from_form(form: dict):
    """Form values (named like the CLI's options) -> ``(ReadSettings, InvertSettings, EditConfig)``.

    Keys: skip_frames_start, skip_frames_end, frame_sample_step, max_num_frames, height, width, resize, steps,
    inversion, source_prompt, inversion_guidance, strength, guidance, negative_prompt, start, seed,
    dynamic_guidance, injection (bool), injection_steps. Missing keys take the CLI's defaults.
    """
    from .attention import InjectionConfig
    from .editing import EditConfig
    from .jobs import InvertSettings, ReadSettings

    values = {**cli_defaults(), **form}
    read = ReadSettings(
        height=_optional_int(values["height"], "height"),
        width=_optional_int(values["width"], "width"),
        skip_start=_int(values["skip_frames_start"], "skip start"),
        skip_end=_int(values["skip_frames_end"], "skip end"),
        stride=_optional_int(values["frame_sample_step"], "stride"),
        max_frames=_int(values["max_num_frames"], "max frames"),
        resize=values["resize"],
    )
    inv = InvertSettings(
        steps=_int(values["steps"], "steps"),
        prompt=(values["source_prompt"] or "").strip(),
        guidance=_float(values["inversion_guidance"], "inversion guidance"),
        method=values["inversion"],
        strength=_float(values["strength"], "strength"),
        tol=values["tol"],
        max_iter=values["max_iter"],
        anderson=values["anderson"],
    )
    injection_on = values["injection"] if isinstance(values["injection"], bool) else values["injection"] == "on"
    try:
        injection = InjectionConfig(enabled=injection_on, steps=_float(values["injection_steps"], "injection steps"),
                                    reference_text=values["reference_text"])
    except ValueError as err:
        raise VidinvertError(str(err), "use a fraction between 0 and 1") from None
    config = EditConfig(guidance=_float(values["guidance"], "guidance"),
                        negative_prompt=values["negative_prompt"] or "", start=values["start"],
                        seed=_int(values["seed"], "seed"),
                        dynamic_guidance=bool(values["dynamic_guidance"]), injection=injection)
    return read, inv, config


def parse_prompts(text: str | None) -> list[str]:
    """One edit prompt per non-empty line."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise VidinvertError("no edit prompt given", "type one or more edit prompts, one per line")
    return prompts


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the cache key of an uploaded video)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- the engine behind the page -------------------------------------------------------------------------------
@dataclass
class EditResult:
    """Files written for one edit prompt."""

    prompt: str
    video: Path
    comparison: Path
    settings: Path


@dataclass
class Studio:
    """The model of one app (loaded lazily, once) and its cache of inversions; safe to share between sessions.

    Args:
        model: pipeline folder, hub id, or ``None``/``"tiny"``/``"tiny-2b"`` for the embedded tiny random model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU, as the CLI), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        cache_size: inversions kept in memory.
    """

    model_name: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_size: int = CACHE_SIZE
    _model: object = field(default=None, init=False, repr=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    @classmethod
    def from_model(cls, model, cache_size: int = CACHE_SIZE) -> "Studio":
        """A ``Studio`` over an already loaded ``VideoModel`` (for notebooks and tests)."""
        studio = cls(model_name=model.name, device=str(model.device), cache_size=cache_size)
        studio._model = model
        return studio

    @property
    def is_tiny(self) -> bool:
        return self.label.startswith("tiny")

    @property
    def label(self) -> str:
        from .model import default_model

        return self.model_name or default_model()

    def model(self):
        """The app's ``VideoModel``, loaded on first use (the CLI's device and dtype rules)."""
        with self._lock:
            if self._model is None:
                from .model import VideoModel, load_pipeline, resolve_device

                device = resolve_device(self.device)
                dtype = self.dtype if self.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
                pipe = load_pipeline(self.model_name, dtype=dtype, device=device)
                self._model = VideoModel(pipe, name=self.label)
            return self._model

    def inversion(self, video: str, read, inv, say: Callable[[str], None] = lambda text: None):
        """``(source, inversion, reused)`` for a video file: from the cache, or opened and inverted now."""
        from .jobs import invert_source, open_source

        if not video:
            raise VidinvertError("no video chosen", "upload a clip or click 'Use the bundled sample'")
        if not Path(video).is_file():
            raise VidinvertError(f"video not found: {video}", "upload the clip again")
        with self._lock:
            if self._model is None:
                say("loading the model")
            model = self.model()
            key = (file_hash(video), read, inv, model.name, model.fingerprint())
            if key in self._cache:
                self._cache.move_to_end(key)
                source, inversion = self._cache[key]
                return source, inversion, True
            say("reading and encoding the video")
            source = open_source(model, video, read)
            say("inverting")
            inversion = invert_source(model, source, inv, progress=True)
            self._cache[key] = (source, inversion)
            while len(self._cache) > max(1, self.cache_size):
                self._cache.popitem(last=False)
            return source, inversion, False

    def edit(self, video: str, read, inv, prompts: list[str], config, folder: Path, record: dict | None = None,
             say: Callable[[str], None] = lambda text: None) -> tuple[list[EditResult], dict]:
        """Invert (or reuse) and edit with ``prompts`` in one batch; write result, comparison and settings files.

        Returns:
            One ``EditResult`` per prompt, and the run's summary (as the CLI prints it).
        """
        from . import __version__
        from .editing import EditStats, edit
        from .jobs import decode, guard_memory, peak_memory
        from .outputs import write_json
        from .export import side_by_side, write_video

        with self._lock:
            started = time.perf_counter()
            source, inversion, reused = self.inversion(video, read, inv, say)
            model = self.model()
            say(f"editing with {len(prompts)} prompt{'s' if len(prompts) > 1 else ''}")
            stats = EditStats()
            with guard_memory("editing"):
                latents = edit(model, inversion, prompts, config, progress=True, stats=stats)
            say("decoding")
            videos = decode(model, latents)  # [K, F, C, H, W]
        say("writing videos")
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(video).stem
        fps = source.clip.fps
        results = []
        for k, prompt in enumerate(prompts):
            name = f"{stem}_edit" if len(prompts) == 1 else f"{stem}_edit_{k + 1}"
            result = EditResult(prompt, folder / f"{name}.mp4", folder / f"{name}_comparison.mp4",
                                folder / f"{name}.json")
            write_video(videos[k], result.video, fps=fps)
            write_video(side_by_side(source.clip.frames, videos[k]), result.comparison, fps=fps)
            results.append(result)
        summary = {"outputs": [str(r.video) for r in results], "comparisons": [str(r.comparison) for r in results],
                   "prompts": prompts, "frames": videos.shape[1], "size": list(videos.shape[3:]), "fps": fps,
                   "inversion_reused": reused, "transformer_calls": len(stats.batch_rows),
                   "batch_rows": sorted(set(stats.batch_rows)), "seconds": round(time.perf_counter() - started, 2),
                   **peak_memory()}
        settings = {"vidinvert": __version__, "command": "serve", "options": record or {}, "result": summary,
                    "model": {"name": self.label, "device": self.device, "dtype": self.dtype},
                    "read": dataclasses.asdict(read), "inversion": dataclasses.asdict(inversion.meta),
                    "edit": dataclasses.asdict(config)}
        for result in results:
            write_json(result.settings, settings)
        return results, summary


def preview_frames(video: str, read, count: int = PREVIEW_FRAMES) -> tuple[list, str]:
    """A few frames of the selected range, small, as ``[(uint8 [H, W, 3], caption)]``, and a one-line description."""
    from .video import read_video, to_uint8

    clip = read_video(video, None, PREVIEW_WIDTH, skip_start=read.skip_start, skip_end=read.skip_end,
                      stride=read.stride, max_frames=read.max_frames, multiple=2, temporal_multiple=1, min_frames=1)
    total = clip.frames.shape[0]
    picks = sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(min(count, total))})
    images = to_uint8(clip.frames[picks])  # [n, H, W, 3]
    items = [(images[j], f"frame {clip.indices[i]}") for j, i in enumerate(picks)]
    height, width = clip.source_size
    text = (f"{Path(video).name}: {width}×{height} at {clip.fps:g} fps; the range holds {total} frames "
            f"(source frames {clip.indices[0]}–{clip.indices[-1]})")
    return items, text


# ---- the page -------------------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    """Show ``text`` literally in Markdown (paths hold underscores, errors may hold brackets)."""
    for char in "\\`*_{}[]<>#|~":
        text = text.replace(char, "\\" + char)
    return text


def error_line(err: BaseException, video: str | None = None) -> str:
    """The CLI's one-line message for a user error (an upload's temp path shortened to its name); a short line for
    anything unexpected."""
    if isinstance(err, VidinvertError):
        line = f"vidinvert: error: {err}"
        return line.replace(str(video), Path(video).name) if video else line
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return f"vidinvert: internal error: {type(err).__name__}: {first} (details in the server log)"


def _status(text: str, kind: str = "info") -> str:
    """Status Markdown: the text shown literally, an error in bold."""
    return f"**{_escape(text)}**" if kind == "error" else _escape(text)


def new_session() -> dict:
    """Per-browser-session state: its output folder (set on first use) and its latest results."""
    return {"dir": None, "runs": 0, "results": []}


def session_dir(root: Path, session_id: str) -> Path:
    """The output folder of one browser session: named by a hash of its id (which the browser chooses)."""
    return Path(root) / f"session-{hashlib.sha256(str(session_id).encode()).hexdigest()[:16]}"


def session_folder(state: dict, root: Path, session_id: str) -> Path:
    """A new numbered run folder inside the session's own folder."""
    state["dir"] = str(session_dir(root, session_id))
    state["runs"] = state.get("runs", 0) + 1
    return Path(state["dir"]) / f"run{state['runs']:03d}"


def drop_session(state: dict | None) -> None:
    """Remove a session's output folder (when Gradio drops the session's state)."""
    if state and state.get("dir"):
        shutil.rmtree(state["dir"], ignore_errors=True)


def build_app(studio: Studio | None = None, output_root: str | os.PathLike | None = None):
    """The Gradio ``Blocks`` of the page.

    Args:
        studio: the model and inversion cache (default: a new one over the default model, see
            ``model.default_model``).
        output_root: folder that holds one temp folder per browser session (default: a new temp folder; the
            caller removes it when the app stops, as ``cmd_serve`` does).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no calls home
    import gradio as gr

    from .model import DEMO_MODEL

    studio = studio or Studio()
    root = Path(output_root) if output_root is not None else Path(tempfile.mkdtemp(prefix="vidinvert-web-"))
    d = cli_defaults()

    def say_with(progress) -> Callable[[str], None]:
        return lambda text: progress(0, desc=text)

    with gr.Blocks(title="vidinvert", analytics_enabled=False, delete_cache=GRADIO_CACHE_CLEANUP) as app:
        state = gr.State(new_session, delete_callback=drop_session)
        gr.Markdown("# vidinvert\nEdit a video with CogVideoX: invert it once (DDIM), then regenerate it under new "
                    "prompts while attention sees the source's keys and values (keeps layout and motion).")
        note = f"**Model:** `{studio.label}`"
        if studio.is_tiny:
            note += (" — the embedded tiny model (random weights, built in code): results are noise-like. "
                     "Start with `vidinvert serve --model THUDM/CogVideoX-5b` for real edits.")
        elif studio.label == DEMO_MODEL:
            note += (" — the bundled demo model, trained on a synthetic world of coloured shapes: try the sample and "
                     "prompts like 'a green disc moving right in a dark sky'. Start with "
                     "`vidinvert serve --model THUDM/CogVideoX-5b` for real videos.")
        gr.Markdown(note)
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(label="Input video", sources=["upload"], elem_id="input-video", height=300)
                sample = gr.Button("Use the bundled sample", size="sm", elem_id="use-sample")
                frames = gr.Gallery(label="Input frames", columns=3, height="auto", object_fit="contain",
                                    allow_preview=False, elem_id="input-frames")
            with gr.Column(scale=7):
                with gr.Accordion("Frames", open=True):
                    with gr.Row():
                        skip_start = gr.Number(d["skip_frames_start"], label="Skip start", precision=0, minimum=0)
                        skip_end = gr.Number(d["skip_frames_end"], label="Skip end", precision=0, minimum=0)
                        stride = gr.Number(d["frame_sample_step"] or 0, label="Stride", precision=0, minimum=0,
                                           info="0 = auto (only if too long)")
                        max_frames = gr.Number(d["max_num_frames"], label="Max frames", precision=0, minimum=1,
                                               info="trimmed to 4k+1")
                    with gr.Row():
                        height = gr.Number(d["height"] or 0, label="Height", precision=0, minimum=0,
                                           info="multiple of 16; 0 = the model's")
                        width = gr.Number(d["width"] or 0, label="Width", precision=0, minimum=0,
                                          info="multiple of 16; 0 = the model's")
                        resize = gr.Radio(["stretch", "crop"], value=d["resize"], label="Resize")
                with gr.Accordion("Inversion", open=True):
                    with gr.Row():
                        steps = gr.Number(d["steps"], label="Steps", precision=0, minimum=1, elem_id="steps")
                        method = gr.Radio(["ddim", "fixed-point"], value=d["inversion"], label="Method",
                                          info="fixed-point: exact round trip, ~3× slower")
                    source_prompt = gr.Textbox(d["source_prompt"], label="Source prompt",
                                               placeholder="what the video shows (optional)")
                with gr.Accordion("Editing", open=True):
                    prompts = gr.Textbox(label="Edit prompts (one per line)", lines=3, elem_id="prompts",
                                         placeholder="a red disc moving across a blue sky")
                    with gr.Row():
                        guidance = gr.Number(d["guidance"], label="Guidance", minimum=1)
                        start = gr.Radio(["inverted", "random"], value=d["start"], label="Start from")
                        seed = gr.Number(d["seed"], label="Seed", precision=0)
                    with gr.Row():
                        injection = gr.Checkbox(d["injection"] == "on", label="Key/value injection")
                        injection_steps = gr.Slider(0, 1, value=d["injection_steps"], step=0.05,
                                                    label="Injection steps (fraction, from the noisiest)")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        inversion_guidance = gr.Number(d["inversion_guidance"], label="Inversion guidance", minimum=1)
                        strength = gr.Slider(0.05, 1, value=d["strength"], step=0.05, label="Strength")
                    negative_prompt = gr.Textbox(d["negative_prompt"], label="Negative prompt")
                    dynamic_guidance = gr.Checkbox(d["dynamic_guidance"], label="Dynamic guidance")
                with gr.Row():
                    invert_button = gr.Button("Invert", elem_id="invert")
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                status = gr.Markdown(_status("Upload a clip or use the bundled sample, type a prompt, then Edit."),
                                     elem_id="status")
        with gr.Row():
            comparison = gr.Video(label="Source | result", interactive=False, autoplay=True, loop=True, height=320,
                                  scale=2, elem_id="comparison-video")
            result = gr.Video(label="Result", interactive=False, autoplay=True, loop=True, height=320, scale=1,
                              elem_id="result-video")
        shown = gr.Radio([], label="Result shown", visible=False, elem_id="result-choice")
        files = gr.File(label="Downloads: results, comparisons, settings", file_count="multiple", interactive=False,
                        elem_id="downloads")

        form = {"skip_frames_start": skip_start, "skip_frames_end": skip_end, "frame_sample_step": stride,
                "max_num_frames": max_frames, "height": height, "width": width, "resize": resize, "steps": steps,
                "inversion": method, "source_prompt": source_prompt, "guidance": guidance, "start": start,
                "seed": seed, "injection": injection, "injection_steps": injection_steps,
                "inversion_guidance": inversion_guidance, "strength": strength, "negative_prompt": negative_prompt,
                "dynamic_guidance": dynamic_guidance}
        names = {component: name for name, component in form.items()}

        def values_of(data: dict) -> dict:
            return {names[c]: v for c, v in data.items() if c in names}

        def fail(err: BaseException, video_path: str | None):
            if not isinstance(err, VidinvertError):
                traceback.print_exc()
            line = error_line(err, video_path)
            gr.Warning(line)
            return _status(line, "error")

        def on_video(data):
            path = data[video]
            if not path:
                return [], _status("Upload a clip or use the bundled sample.")
            try:
                read, _, _ = settings_from_form(values_of(data))
                items, text = preview_frames(path, read)
                return items, _status(text)
            except Exception as err:  # noqa: BLE001 - shown in the page, the app stays usable
                return [], fail(err, path)

        def on_invert(data, progress=gr.Progress(track_tqdm=True)):
            try:
                read, inv, _ = settings_from_form(values_of(data))
                started = time.perf_counter()
                source, inversion, reused = studio.inversion(data[video], read, inv, say_with(progress))
                frames_used = source.clip.frames
                how = "reused from the cache" if reused else f"in {time.perf_counter() - started:.1f} s"
                text = (f"Inverted {frames_used.shape[0]} frames at {frames_used.shape[3]}×{frames_used.shape[2]} "
                        f"({len(inversion.meta.timesteps)} {inversion.meta.method} steps, "
                        f"{sum(inversion.meta.iterations)} evaluations) {how}. Now type prompts and Edit.")
                return _status(text, "ok")
            except Exception as err:  # noqa: BLE001
                return fail(err, data[video])

        def on_edit(data, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            session = data[state]
            try:
                read, inv, config = settings_from_form(values_of(data))
                prompt_list = parse_prompts(data[prompts])
                record = {**values_of(data), "prompts": prompt_list, "video": Path(data[video] or "").name}
                folder = session_folder(session, root, request.session_hash)
                results, summary = studio.edit(data[video], read, inv, prompt_list, config, folder, record=record,
                                               say=say_with(progress))
            except Exception as err:  # noqa: BLE001
                return fail(err, data[video]), gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
            session["results"] = [dataclasses.asdict(r) for r in results]
            reused = " (inversion reused)" if summary["inversion_reused"] else ""
            text = (f"Edited {summary['frames']} frames at {summary['size'][1]}×{summary['size'][0]} with "
                    f"{len(results)} prompt{'s' if len(results) > 1 else ''} in {summary['seconds']:.1f} s{reused}.")
            downloads = [str(p) for r in results for p in (r.video, r.comparison, r.settings)]
            choice = gr.update(choices=[r.prompt for r in results], value=results[0].prompt, visible=len(results) > 1)
            return (_status(text, "ok"), str(results[0].comparison), str(results[0].video), downloads, choice,
                    session)

        def on_close(request: gr.Request):
            """The tab was closed or reloaded: its outputs go (Gradio's own copies follow its cache cleanup)."""
            shutil.rmtree(session_dir(root, request.session_hash), ignore_errors=True)

        def on_choice(session, prompt):
            for item in (session or {}).get("results", []):
                if item["prompt"] == prompt:
                    return str(item["comparison"]), str(item["video"])
            return gr.skip(), gr.skip()

        sample.click(lambda: str(SAMPLE_VIDEO), None, video, api_name=False)
        video.change(on_video, {video, *form.values()}, [frames, status], api_name=False, trigger_mode="always_last",
                     show_progress="hidden")
        invert_button.click(on_invert, {video, state, *form.values()}, status, api_name="invert",
                            concurrency_id="model", concurrency_limit=1)
        edit_button.click(on_edit, {video, state, prompts, *form.values()},
                          [status, comparison, result, files, shown, state], api_name="edit",
                          concurrency_id="model", concurrency_limit=1)
        shown.change(on_choice, [state, shown], [comparison, result], api_name=False, show_progress="hidden")
        app.unload(on_close)
    return app


# ---- `vidinvert serve` ----------------------------------------------------------------------------------------
def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it, no login)")
    parser.add_argument("--port", type=int, default=7860, help="port (7860)")
    parser.add_argument("--model", "--model-path", dest="model", default=None,
                        help="pipeline folder or hub id (THUDM/CogVideoX-5b); default: 'demo', the bundled demo model "
                             "('tiny' = tiny random model)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="model dtype; auto = bf16 on CUDA, fp32 on CPU")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to the CLI's subcommands (``cli.build_parser`` calls this)."""
    parser = subparsers.add_parser(
        "serve", help="open the web page (Gradio) to invert and edit videos in a browser",
        description="Serve a local web page to invert a video once and edit it with several prompts. "
                    "Needs the web extra: pip install 'vidinvert[web]'.")
    _add_serve_options(parser)
    return parser


def cmd_serve(args) -> int:
    """Run the page until interrupted."""
    from .model import resolve_device, resolve_dtype

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VidinvertError("the web page needs gradio, which is not installed",
                             "pip install 'vidinvert[web]'") from None
    resolve_device(args.device)  # refuse a bad --device now, not at the first click
    if args.dtype != "auto":
        resolve_dtype(args.dtype)
    if not 0 < args.port < 65536:
        raise VidinvertError(f"port must be 1-65535, got {args.port}")
    studio = Studio(model_name=args.model, device=args.device, dtype=args.dtype)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: serving on {args.host}: anyone who can reach this address can use the page (no login)",
              file=sys.stderr)
    if studio.is_tiny:
        print("note: using the embedded tiny model (random weights, built in code): results are noise-like; "
              "pass --model THUDM/CogVideoX-5b for real edits", file=sys.stderr)
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m vidinvert.web [--host H] [--port P] [--model M] [--device D] [--dtype T]``."""
    parser = argparse.ArgumentParser(prog="python -m vidinvert.web", description="Serve the vidinvert web page.")
    _add_serve_options(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_serve(args)
    except VidinvertError as err:
        print(f"vidinvert: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
