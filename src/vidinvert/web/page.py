"""The Gradio page over a ``Studio``: upload a clip (or use the bundled sample), set frames and steps, invert once,
edit with several prompts, watch the progress, download the results.

Every ``VidinvertError`` appears as the CLI's one-line ``vidinvert: error: ...``, in the page's words (fields by
their labels, never CLI flags), and the page stays usable; warnings of a run are shown beside its result and listed
in its settings JSON. Gradio keeps its files (copies, uploads) in the app's output folder, and each browser session
writes its outputs and preview frames into its own folder inside it, which Gradio serves in place (no copies): the
session's folder and its uploads are removed when the session ends, the whole folder when the server stops. Gradio
is imported only when the app is built.
"""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import VidinvertError
from ..engine import family_defaults
from ..models import DEMO_MODELS, TINY_MODELS, sample_video
from ..models.registry import EXAMPLE_HUB_ID, EXAMPLE_PROMPT  # the one example prompt every front end gives
from .form import (CHOICES, LABELS, PROMPTS_LABEL, form_defaults, metrics_from_form, parse_prompts,
                   settings_from_form)
from .studio import Studio

SAMPLE_VIDEO = sample_video()
PREVIEW_FRAMES = 6  # input frames shown under the player
PREVIEW_WIDTH = 256  # pixel width the preview frames are read at (aspect kept)
REAL_MODEL = EXAMPLE_HUB_ID  # the real weights the page's hints name
GRADIO_CACHE_CLEANUP = (3600, 6 * 3600)  # hourly, drop Gradio's copies of uploads/results older than 6 h


def preview_frames(video: str, read, temporal_multiple: int = 1, count: int = PREVIEW_FRAMES) -> tuple[list, str]:
    """The frames a job will read (``engine.open_source``'s selection: skip, stride, max frames and the model's frame
    rule ``temporal_multiple * k + 1``; ``read`` with the model's defaults filled in, ``engine.family_defaults``),
    small: up to ``count`` of them evenly spaced, all when there are fewer, as ``[(uint8 [H, W, 3], caption)]``, and
    a one-line description."""
    from ..video import read_video, to_uint8

    clip = read_video(video, None, PREVIEW_WIDTH, skip_start=read.skip_start, skip_end=read.skip_end,
                      stride=read.stride, max_frames=read.max_frames, resize=read.resize, multiple=2,
                      temporal_multiple=temporal_multiple)
    total = clip.frames.shape[0]
    if total <= count:
        picks = list(range(total))
    else:
        picks = sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})
    images = to_uint8(clip.frames[picks])  # [n, H, W, 3]
    items = [(images[j], f"frame {clip.indices[i]}") for j, i in enumerate(picks)]
    height, width = clip.source_size
    text = (f"{Path(video).name}: {width}×{height} at {clip.fps:g} fps; the job reads {total} frames "
            f"(source frames {clip.indices[0]}–{clip.indices[-1]})")
    return items, text


# ---- the page -------------------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    """Show ``text`` literally in Markdown (paths hold underscores, errors may hold brackets)."""
    for char in "\\`*_{}[]<>#|~":
        text = text.replace(char, "\\" + char)
    return text


FLAG_LABELS = {  # CLI flags that library messages name -> the page's label for the same setting
    **{"--" + key.replace("_", "-"): label for key, label in LABELS.items()},  # form keys are the CLI's names
    "--num-inference-steps": LABELS["steps"], "--guidance-scale": LABELS["guidance"], "--no-blend": LABELS["blend"],
    "--prompt": PROMPTS_LABEL,
}
SERVE_FLAGS = ("--model", "--model-path", "--device", "--dtype", "--cpu-offload", "--vae-tiling", "--vae-slicing")
# ^ options of ``vidinvert serve`` that messages may suggest: how the page's model is loaded, not on the page


def page_words(text: str) -> str:
    """A library message in the page's words: a CLI flag the page has a field for becomes that field's label, an
    option of ``vidinvert serve`` (``SERVE_FLAGS``) is named as one; any other flag is a command-line setting the
    page does not have, named without dashes and said to be so (``--krnr`` -> ``krnr (not on this page)``)."""
    def word(match: re.Match) -> str:
        flag = match.group(0).replace("_", "-")
        if flag in FLAG_LABELS:
            return FLAG_LABELS[flag]
        if flag in SERVE_FLAGS:
            return f"`vidinvert serve {flag}`"
        return f"{flag[2:]} (not on this page)"

    return re.sub(r"(?<![\w-])--[a-z][a-z0-9_-]*", word, text)


def error_line(err: BaseException, video: str | None = None) -> str:
    """The CLI's one-line message for a user error (an upload's temp path shortened to its name); a short line for
    anything unexpected."""
    if isinstance(err, VidinvertError):
        line = f"vidinvert: error: {page_words(str(err))}"
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


@contextmanager
def gradio_cache(folder: str | os.PathLike):
    """Within: Gradio keeps its files in ``folder`` (``GRADIO_TEMP_DIR``, which Gradio reads when a component is
    made and when a server starts: uploads, copies of results, preview images), then the previous setting is back."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(Path(folder).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous


class Uploads:
    """The uploaded videos each browser session used (Gradio's files inside the app's folder, not the bundled
    sample), to remove with the session. Gradio names an upload by its content: a session that uploaded the same
    clip finds it gone too, and is told to upload it again."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.by_session: dict[str, set[Path]] = {}
        self.lock = threading.Lock()

    def note(self, session_id: str | None, video: str | None) -> None:
        if not (session_id and video):
            return
        path = Path(video).resolve()
        if (path.is_relative_to(self.root) and not path.is_relative_to(session_dir(self.root, session_id))
                and path.is_file() and not filecmp.cmp(path, SAMPLE_VIDEO, shallow=False)):
            with self.lock:
                self.by_session.setdefault(session_id, set()).add(path)

    def drop(self, session_id: str) -> None:
        with self.lock:
            paths = self.by_session.pop(session_id, set())
        for path in paths:
            path.unlink(missing_ok=True)
            try:
                if path.parent != self.root:
                    path.parent.rmdir()  # Gradio's per-upload folder, if now empty
            except OSError:
                pass


def write_preview(items: list, folder: Path) -> list[tuple[str, str]]:
    """Preview frames ``[(uint8 [H, W, 3], caption)]`` as PNG files in ``folder`` (replacing the previous ones):
    ``[(path, caption)]``, which the gallery serves in place."""
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for i, (image, caption) in enumerate(items):
        path = folder / f"frame{i:02d}.png"
        Image.fromarray(image).save(path)
        files.append((str(path), caption))
    return files


def header(label: str) -> str:
    """The page's header Markdown for the model ``label``."""
    text = ("# vidinvert\nEdit a video with CogVideoX or Wan: the clip is inverted (DDIM, or fixed-point for an exact "
            "round trip; **Edit** inverts too when needed, and every inversion is reused for the same clip and "
            "settings), then regenerated under your prompts while attention sees the source's keys and values, "
            "which keeps layout and motion (Wan models can also use FlowEdit, which needs no inversion).\n\n")
    text += f"**Model:** `{label}`"
    if label in TINY_MODELS:
        text += (" — the embedded tiny model (random weights, built in code): results are noise-like. For real edits, "
                 f"start the page with `vidinvert serve --model {REAL_MODEL}`.")
    elif label in DEMO_MODELS:
        text += (" — the bundled demo model, trained on a synthetic world of coloured shapes: use the bundled sample "
                 f"and a prompt like '{EXAMPLE_PROMPT}'. For real videos, start the page with "
                 f"`vidinvert serve --model {REAL_MODEL}`.")
    return text


def _warnings_box(lines: list[str]):
    """Update of the warnings box: the lines, or hidden when there are none."""
    import gradio as gr

    text = "\n".join(f"- vidinvert: warning: {_escape(line)}" for line in lines)
    return gr.update(value=text, visible=bool(lines))


def build_app(studio: Studio | None = None, output_root: str | os.PathLike | None = None):
    """The Gradio ``Blocks`` of the page.

    Args:
        studio: the model and inversion cache (default: a new one over the default model, see
            ``models.default_model``).
        output_root: folder of the app's files: one folder per browser session (removed when the session ends)
            and Gradio's own files (default: a new temp folder; the caller removes it when the app stops, as
            ``serve`` does, and points ``GRADIO_TEMP_DIR`` at it while serving, ``gradio_cache``, so that uploads
            go there too).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no calls home
    import gradio as gr

    studio = studio or Studio()
    root = Path(output_root) if output_root is not None else Path(tempfile.mkdtemp(prefix="vidinvert-web-"))
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()  # as Gradio compares paths: files inside are served in place, not copied
    uploads = Uploads(root)
    d = form_defaults()

    def say_with(progress) -> Callable[[str], None]:
        return lambda text: progress(0, desc=text)

    def number(key: str, **options):
        # No minimum=/maximum=: Gradio's own range check would pre-empt ours with a message naming no field, and
        # precision=None keeps a typed 2.5 as 2.5 so that whole-number fields refuse it instead of rounding it.
        return gr.Number(d[key], label=LABELS[key], precision=None, elem_id=key.replace("_", "-"), **options)

    def choice(key: str, **options):
        # Any value sent reaches the handler, whose check (form.check_choices) names the field and its choices;
        # Gradio's own check would answer with a message naming no field. (An instance attribute, not a subclass:
        # Gradio writes a .pyi file next to the module of every component subclass.)
        radio = gr.Radio(list(CHOICES[key]), value=d[key], label=LABELS[key], **options)
        radio.preprocess = lambda payload: payload
        return radio

    with gradio_cache(root), gr.Blocks(title="vidinvert", analytics_enabled=False,
                                       delete_cache=GRADIO_CACHE_CLEANUP) as app:
        state = gr.State(new_session, delete_callback=drop_session)
        gr.Markdown(header(studio.label), elem_id="header")
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(label="Input video", sources=["upload"], elem_id="input-video", height=300)
                sample = gr.Button("Use the bundled sample", size="sm", elem_id="use-sample")
                frames = gr.Gallery(label="Frames the job reads", columns=3, height="auto", object_fit="contain",
                                    allow_preview=False, elem_id="input-frames")
            with gr.Column(scale=7):
                prompts = gr.Textbox(label=PROMPTS_LABEL, lines=2, elem_id="prompts",
                                     placeholder=EXAMPLE_PROMPT)
                with gr.Row():
                    invert_button = gr.Button("Invert", elem_id="invert")
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown(_status("Upload a clip or use the bundled sample, type a prompt, then Edit."),
                                     elem_id="status")
                progress_box = gr.Markdown("", elem_id="progress", min_height=40)
                warnings_box = gr.Markdown("", visible=False, elem_id="warnings")
                with gr.Accordion("Frames", open=False, elem_id="frames-settings"):
                    with gr.Row():
                        skip_start = number("skip_frames_start")
                        skip_end = number("skip_frames_end")
                        stride = number("frame_sample_step", info="0 = auto (only if too long)")
                        max_frames = number("max_num_frames", info="0 = the model's (49 CogVideoX, 81 Wan; every "
                                                                    "frame with a window); 4k+1")
                    with gr.Row():
                        height = number("height", info="multiple of 16; 0 = the model's")
                        width = number("width", info="multiple of 16; 0 = the model's")
                        resize = choice("resize")
                    with gr.Row():  # long clips: temporal windows (windows.py)
                        window = gr.Textbox(d["window"], label=LABELS["window"], elem_id="window",
                                            placeholder="empty = one window",
                                            info="latent frames per temporal window for a long clip; auto = the "
                                                 "model's trained length")
                        overlap_fraction = number("overlap_fraction", info="share of a window its neighbours overlap, below 1")
                with gr.Accordion("Inversion", open=False, elem_id="inversion-settings"):
                    with gr.Row():
                        steps = number("steps")
                        method = choice("inversion", info="fixed-point: exact round trip, ~3× slower")
                    source_prompt = gr.Textbox(d["source_prompt"], label=LABELS["source_prompt"],
                                               placeholder="what the video shows (optional)")
                with gr.Accordion("Editing", open=False, elem_id="editing-settings"):
                    method_choice = choice("method", elem_id="method",
                                           info="inversion: invert, then regenerate with key/value injection; "
                                                "flowedit: no inversion (Wan models only; see FlowEdit below)")
                    with gr.Row():
                        guidance = number("guidance")
                        guidance_2 = number("guidance_2", info="Wan 2.2 A14B's second expert; 0 = Guidance")
                        start = choice("start")
                        seed = number("seed")
                    with gr.Row():
                        injection = gr.Checkbox(d["injection"], label=LABELS["injection"])
                        injection_fraction = gr.Slider(0, 1, value=d["injection_fraction"], step=0.05,
                                                    label=LABELS["injection_fraction"])
                    with gr.Row():
                        blend = choice("blend", elem_id="blend", info="edit only where the edit prompt departs "
                                       "from the source's description; model's: what the model recommends (else off)")
                        reference_weight = number("reference_weight", info="how much more the edit attends to the "
                                                  "source's tokens; 0 = the model's recommendation (else 1)")
                    with gr.Row():
                        inversion_guidance = number("inversion_guidance")
                        edit_fraction = gr.Slider(0.05, 1, value=d["edit_fraction"], step=0.05, label=LABELS["edit_fraction"])
                    negative_prompt = gr.Textbox(d["negative_prompt"], label=LABELS["negative_prompt"],
                                                 placeholder="empty: the model's (for Wan weights, Wan's published one)")
                    dynamic_guidance = gr.Checkbox(d["dynamic_guidance"], label=LABELS["dynamic_guidance"])
                    metrics = gr.Checkbox(d["metrics"], label=LABELS["metrics"], elem_id="metrics",
                                          info="warp error and motion error of each result against the source")
                with gr.Accordion("FlowEdit", open=False, elem_id="flowedit-settings"):
                    gr.Markdown("With Edit method *flowedit*: the source prompt describes the video, Guidance is the "
                                "target's scale, Steps the schedule.")
                    with gr.Row():
                        n_max = number("n_max", info="steps that edit, from the clean end; 0 = 33/50 of Steps")
                        n_min = number("n_min", info="last steps run as plain sampling of the target")
                        source_guidance = number("source_guidance", info="guidance of the source prompt")
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
                "seed": seed, "injection": injection, "injection_fraction": injection_fraction,
                "inversion_guidance": inversion_guidance, "edit_fraction": edit_fraction, "negative_prompt": negative_prompt,
                "dynamic_guidance": dynamic_guidance, "metrics": metrics, "method": method_choice,
                "guidance_2": guidance_2, "n_max": n_max, "n_min": n_min, "source_guidance": source_guidance,
                "window": window, "overlap_fraction": overlap_fraction, "blend": blend, "reference_weight": reference_weight}
        names = {component: name for name, component in form.items()}

        def values_of(data: dict) -> dict:
            return {names[c]: v for c, v in data.items() if c in names}

        def fail(err: BaseException, video_path: str | None) -> str:
            """The status for a failed action: one line, replacing whatever the status said before."""
            if not isinstance(err, VidinvertError):
                traceback.print_exc()
            return _status(error_line(err, video_path), "error")

        def on_video(data, request: gr.Request):
            path = data[video]
            if not path:
                return [], _status("Upload a clip or use the bundled sample.")
            try:
                uploads.note(request.session_hash, path)
                read, _, _ = settings_from_form(values_of(data))
                model = studio.model()
                read, _, _ = family_defaults(model, read)
                items, text = preview_frames(path, read, model.temporal_factor)
                return write_preview(items, session_dir(root, request.session_hash) / "preview"), _status(text)
            except Exception as err:  # noqa: BLE001 - shown in the page, the app stays usable
                return [], fail(err, path)

        def on_start(what: str):
            """Before a run: the status says what runs (no old line stays beside the progress), warnings cleared."""
            return _status(f"{what}…"), "", _warnings_box([])

        def on_invert(data, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            try:
                uploads.note(request.session_hash, data[video])
                read, inv, config = settings_from_form(values_of(data))
                if config.method == "flowedit":
                    raise VidinvertError("FlowEdit makes no inversion", "press Edit, or choose Edit method inversion")
                started = time.perf_counter()
                seen: list[str] = []
                prepared = studio.prepared(data[video], read, inv, say_with(progress), seen)
                frames_used, inversion = prepared.source.clip.frames, prepared.inversion
                how = "reused from the cache" if prepared.reused else f"in {time.perf_counter() - started:.1f} s"
                text = (f"Inverted {frames_used.shape[0]} frames at {frames_used.shape[3]}×{frames_used.shape[2]} "
                        f"({len(inversion.meta.timesteps)} {inversion.meta.method} steps, "
                        f"{sum(inversion.meta.iterations)} evaluations) {how}. Now type prompts and Edit.")
                if seen:
                    text += f" {len(seen)} warning{'s' if len(seen) > 1 else ''}: see below."
                return _status(text, "ok"), "", _warnings_box([page_words(line) for line in seen])
            except Exception as err:  # noqa: BLE001
                return fail(err, data[video]), "", _warnings_box([])

        def on_edit(data, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            session = data[state]
            try:
                uploads.note(request.session_hash, data[video])
                read, inv, config = settings_from_form(values_of(data))
                prompt_list = parse_prompts(data[prompts])
                folder = session_folder(session, root, request.session_hash)
                results, job = studio.edit(data[video], read, inv, prompt_list, config, folder,
                                           say=say_with(progress), metrics=metrics_from_form(values_of(data)))
            except Exception as err:  # noqa: BLE001
                return (fail(err, data[video]), "", _warnings_box([]), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                        session)
            session["results"] = [dataclasses.asdict(r) for r in results]
            summary = job.summary
            reused = " (inversion reused)" if summary.get("inversion_reused") else ""
            if summary.get("method") == "flowedit":
                reused = f" by FlowEdit ({summary['flowedit']['n_max']} of {summary['flowedit']['steps']} steps)"
            text = (f"Edited {summary['frames']} frames at {summary['size'][1]}×{summary['size'][0]} with "
                    f"{len(results)} prompt{'s' if len(results) > 1 else ''} in {summary['edit_seconds']:.1f} s{reused}.")
            for r, measured in zip(results, job.metrics):
                text += f" {r.prompt if len(results) > 1 else 'Temporal'}: {measured.describe()}."
            if job.warnings:
                text += f" {len(job.warnings)} warning{'s' if len(job.warnings) > 1 else ''}: see below."
            downloads = [str(p) for r in results for p in (r.video, r.comparison, r.settings)]
            choice = gr.update(choices=[r.prompt for r in results], value=results[0].prompt, visible=len(results) > 1)
            return (_status(text, "ok"), "", _warnings_box([page_words(line) for line in job.warnings]),
                    str(results[0].comparison), str(results[0].video), downloads, choice, session)

        def on_close(request: gr.Request):
            """The tab was closed or reloaded: its outputs and preview frames (served in place, never copied) and
            its uploads go."""
            shutil.rmtree(session_dir(root, request.session_hash), ignore_errors=True)
            uploads.drop(request.session_hash)

        def on_choice(session, prompt):
            for item in (session or {}).get("results", []):
                if item["prompt"] == prompt:
                    return str(item["comparison"]), str(item["video"])
            return gr.skip(), gr.skip()

        # This module's annotations are strings (``from __future__ import annotations``) naming a local ``gr``, which
        # Gradio cannot resolve: give it the real class, or it passes no request (and the Progress in its place).
        for handler in (on_video, on_invert, on_edit, on_close):
            handler.__annotations__["request"] = gr.Request

        reports = [status, progress_box, warnings_box]
        sample.click(lambda: str(SAMPLE_VIDEO), None, video, api_name=False)
        gr.on([video.change, *(c.change for c in (skip_start, skip_end, stride, max_frames, resize))], on_video,
              {video, *form.values()}, [frames, status], api_name=False, trigger_mode="always_last",
              show_progress="hidden")
        invert_run = invert_button.click(lambda: on_start("Inverting"), None, reports, api_name=False).then(
            on_invert, {video, state, *form.values()}, reports, api_name="invert", concurrency_id="model",
            concurrency_limit=1, show_progress_on=progress_box)
        edit_run = edit_button.click(lambda: on_start("Editing"), None, reports, api_name=False).then(
            on_edit, {video, state, prompts, *form.values()},
            [*reports, comparison, result, files, shown, state], api_name="edit", concurrency_id="model",
            concurrency_limit=1, show_progress_on=progress_box)
        stop_button.click(lambda: (_status("Stopped."), "", _warnings_box([])), None, reports, api_name="stop",
                          cancels=[invert_run, edit_run], queue=False)
        shown.change(on_choice, [state, shown], [comparison, result], api_name=False, show_progress="hidden")
        app.unload(on_close)
    return app
