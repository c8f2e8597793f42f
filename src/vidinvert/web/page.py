"""The Gradio page over a ``Studio``: upload a clip (or use the bundled sample), set frames and steps, invert once,
edit with several prompts, watch the progress, download the results. With an image-to-video model, an edit may
follow an edited first frame uploaded beside the clip; the page then shows the source's, the edited and each result's
first frame side by side. An edit may be kept to a region (its Edit region panel): a mask file uploaded, or white
strokes drawn on the clip's first frame (saved as a mask image in the run's folder), previewed over that frame as the
model will edit it.

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
from ..engine.plan import FLAGS as PLAN_FLAGS  # settings field -> CLI flag, as messages name it
from ..models import DEMO_MODELS, TINY_MODELS, sample_video
from ..models.registry import (EXAMPLE_HUB_ID, EXAMPLE_PROMPT,  # the one example prompt every front end gives
                               EXAMPLE_WAN_HUB_ID)
from ..settings import MODEL_SETTINGS_FILE
from .form import (DRAW_LABEL, DRAWN_MASK_NAME, FIRST_FRAME_INFO, FIRST_FRAME_LABEL, LABELS, MASK_LABEL,
                   PANEL_TITLES, PANELS, PROMPTS_INFO, PROMPTS_LABEL, can_flowedit, first_frames_from_form, for_method,
                   mask_from_form, metrics_from_form, page_fields, parse_prompts, settings_from_form)
from .studio import Studio

SAMPLE_VIDEO = sample_video()
PREVIEW_FRAMES = 6  # input frames shown under the player
PREVIEW_WIDTH = 256  # pixel width the preview frames are read at (aspect kept)
REAL_MODELS = {"cogvideox": EXAMPLE_HUB_ID, "wan": EXAMPLE_WAN_HUB_ID}  # family -> the real weights its page names
FRAMES_LABEL = "Frames the job reads"  # the gallery's label, then followed by how many it reads and shows
FIRST_FRAMES_LABEL = "First frames: source | edited | result"  # the gallery shown after an edit that followed one
GRADIO_CACHE_CLEANUP = (3600, 6 * 3600)  # hourly, drop Gradio's copies of uploads/results older than 6 h
EDITOR_WIDTH = 512  # pixel width of the first frame Draw the region draws on (the source's aspect kept)
REGION_PREVIEW_WIDTH = 256  # the region's preview is enlarged (each pixel a block) to at least this width
REGION_DIM = 0.3  # brightness the preview leaves the first frame at outside the region
REGION_PREVIEW_LABEL = "Where the edit may change (first frame)"
REGION_NOTE = ("Keep the edit to a region: upload a *Mask file* (an image for every frame, or a video with one frame "
               "per source frame; white = may change, black = kept), or paint the region white in *Draw the region*. "
               "Outside it the result keeps the source exactly.")


def preview_frames(video: str, read, temporal_multiple: int = 1, count: int = PREVIEW_FRAMES) -> tuple[list, str, int]:
    """The frames a job will read (``engine.open_source``'s selection: skip, stride, max frames and the model's frame
    rule ``temporal_multiple * k + 1``; ``read`` with the model's defaults filled in, ``engine.family_defaults``),
    small: up to ``count`` of them evenly spaced, all when there are fewer, as ``[(uint8 [H, W, 3], caption)]``; a
    one-line description; and how many frames the job reads."""
    from ..video import read_video, to_uint8

    clip = read_video(video, None, PREVIEW_WIDTH, skip_start=read.skip_start, skip_end=read.skip_end,
                      stride=read.stride, max_frames=read.frame_cap, resize=read.resize, multiple=2,
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
            f"(source frames {clip.indices[0]}–{clip.indices[-1]}), {shown_of(len(items), total)}")
    return items, text, total


def _first_frame_read(video: str, read, height: int | None, width: int | None, multiple: int):
    """The first frame a job with ``read`` reads (source frame ``skip_start``) at ``height`` x ``width``: a ``Clip``
    of that one frame (only the frames up to it are decoded)."""
    from ..video import read_video

    return read_video(video, height, width, skip_start=read.skip_start, stride=1, max_frames=1, resize=read.resize,
                      multiple=multiple, temporal_multiple=1, min_frames=1)


def editor_background(video: str, read):
    """What Draw the region draws on: the first frame a job reads (``read`` with the model's defaults filled in),
    ``EDITOR_WIDTH`` wide with the source's aspect, as uint8 ``[H, W, 3]``. A drawing is a one-image mask, fitted to
    the clip's size by its resize rule as this frame is, so it lands where it was drawn."""
    from ..video import to_uint8

    return to_uint8(_first_frame_read(video, read, None, EDITOR_WIDTH, 2).frames)[0]


def region_preview(video: str, read, mask: str, grow: int, model) -> tuple:
    """The edit region of the mask file ``mask`` (dilated by ``grow`` latent cells) over the first frame the job
    reads (``read`` with the model's defaults filled in), as the model edits it: on its latent grid, each cell a
    block of pixels (``regions.mask_frames``), the frame dimmed outside the region. An image mask is built and checked
    as the edit builds it (one that selects nothing is refused with the edit's message); of a mask video, the frame
    for the first frame is shown.

    Returns:
        uint8 ``[H, W, 3]`` (enlarged to at least ``REGION_PREVIEW_WIDTH`` wide), a one-line description (what
        share of the frame's latent cells may change) and the region's notes (e.g. that it covers the whole clip).
    """
    import torch

    from ..regions import Region, build_region, mask_frames, read_mask, to_latent_grid
    from ..settings import RegionConfig
    from ..video import IMAGE_SUFFIXES, to_uint8

    height, width = read.height, read.width
    if height is None and width is None:
        height, width = model.native_size()
    clip = _first_frame_read(video, read, height, width, model.size_multiple)
    frame = clip.frames[0]  # [3, H, W] in [-1, 1]
    size = frame.shape[1:]
    spatial, temporal = model.spatial_factor, model.temporal_factor
    notes: list[str] = []
    image_mask = Path(mask).suffix.lower() in IMAGE_SUFFIXES  # one mask for every frame: the first frame's verdict
    if image_mask:
        region = build_region(RegionConfig(mask=mask, grow=grow), clip.indices, clip.source_size, *size, read.resize,
                              spatial, temporal, notes)
    else:
        pixels = read_mask(mask, clip.indices, *size, read.resize)  # [1, 1, H, W]
        region = Region(to_latent_grid(pixels, spatial, temporal, grow), pixels, {})
    inside = mask_frames(region, spatial, temporal)[0, :1] > 0  # [1, H, W]: the cells the edit may change
    shown = torch.where(inside, frame, (frame + 1) * REGION_DIM - 1)  # [3, H, W]: dimmed outside
    image = to_uint8(shown[None])[0]  # [H, W, 3]
    scale = -(-REGION_PREVIEW_WIDTH // image.shape[1])
    if scale > 1:  # small frames: each pixel a block, so the latent cells stay sharp
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    cells = region.latent.shape[-2:]
    text = (f"the edit may change {region.coverage:.0%} of the first frame's {cells[0]}×{cells[1]} latent cells "
            f"(grown by {grow}); dimmed: kept as the source"
            + ("" if image_mask else " (the mask video's frame for it; other frames follow their own)"))
    return image, text, notes


def first_frame_items(job, image: str, resize: str, prompts: list[str]) -> list:
    """After an edit that followed the edited first frame ``image``: the source's first frame (as the job read it),
    the edited one as the model followed it (fitted to the clip's size by ``resize``, the clip's own rule) and each
    result's first frame, as ``[(uint8 [H, W, 3], caption)]``."""
    import torch

    from ..video import read_frame_image, to_uint8

    source = job.prepared.source.clip.frames[0].float().cpu()  # [C, H, W]
    edited, _ = read_frame_image(image, source.shape[1], source.shape[2], resize)
    results = job.videos[:, 0].float().cpu()  # [K, C, H, W]
    images = to_uint8(torch.cat([source[None], edited[None], results]))  # [2 + K, H, W, 3]
    captions = ["source first frame", "edited first frame"] + (
        ["result first frame"] if len(prompts) == 1 else [f"result: {prompt}" for prompt in prompts])
    return list(zip(images, captions))


def shown_of(shown: int, total: int) -> str:
    """How many of the frames the job reads the gallery shows: ``"showing 6 of 9 frames"``."""
    return f"showing all {total} frames" if shown == total else f"showing {shown} of {total} frames"


# ---- the page -------------------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    """Show ``text`` literally in Markdown (paths hold underscores, errors may hold brackets)."""
    for char in "\\`*_{}[]<>#|~":
        text = text.replace(char, "\\" + char)
    return text


FLAG_LABELS = {  # CLI flags that library messages name -> the page's label for the same setting
    **{"--" + key.replace("_", "-"): label for key, label in LABELS.items()},  # form keys are the CLI's names
    "--num-inference-steps": LABELS["steps"], "--guidance-scale": LABELS["guidance"], "--no-blend": LABELS["blend"],
    "--prompt": PROMPTS_LABEL, "--first-frame": FIRST_FRAME_LABEL, "--mask": MASK_LABEL,
}
SERVE_FLAGS = ("--model", "--model-path", "--device", "--dtype", "--cpu-offload", "--vae-tiling", "--vae-slicing")
# ^ options of ``vidinvert serve`` that messages may suggest: how the page's model is loaded, not on the page


SETTING_WORDS = {  # settings fields that library messages name (``skip_start=8``) -> the page's label
    name: FLAG_LABELS[flag] for name, flag in PLAN_FLAGS.items() if flag in FLAG_LABELS}
SETTING_WORDS["stride"] = LABELS["frame_sample_step"]


def page_words(text: str) -> str:
    """A library message in the page's words: a CLI flag the page has a field for becomes that field's label, an
    option of ``vidinvert serve`` (``SERVE_FLAGS``) is named as one; any other flag is a command-line setting the
    page does not have, named without dashes and said to be so (``--krnr`` -> ``krnr (not on this page)``); a
    settings field named in code (``max_frames``, ``skip_start=8``) is named by its label too."""
    def word(match: re.Match) -> str:
        flag = match.group(0).replace("_", "-")
        if flag in FLAG_LABELS:
            return FLAG_LABELS[flag]
        if flag in SERVE_FLAGS:
            return f"`vidinvert serve {flag}`"
        return f"{flag[2:]} (not on this page)"

    text = re.sub(r"(?<![\w-])--[a-z][a-z0-9_-]*", word, text)
    names = "|".join(sorted((n for n in SETTING_WORDS if "_" in n), key=len, reverse=True))
    text = re.sub(rf"\b({names})\b", lambda m: SETTING_WORDS[m.group(1)], text)
    text = re.sub(r"\b(stride)=", lambda m: SETTING_WORDS[m.group(1)] + "=", text)
    text = region_words(text)
    return re.sub(r"([A-Z][\w ]*?) \(\1\)", r"\1", text)  # "Max frames (Max frames)": once


def region_words(text: str) -> str:
    """The library's words for a mask file (``regions.py``: "the mask m.png ...", "mask not found: ...") -> the
    page's field: ``the Mask file m.png``; a drawing, saved as ``DRAWN_MASK_NAME``, is named as Draw the region's."""
    text = re.sub(r"^mask not found\b", f"{MASK_LABEL} not found", text)
    text = re.sub(r"\bthe mask(?: video)? ", f"the {MASK_LABEL} ", text)
    return text.replace(f"the {MASK_LABEL} {DRAWN_MASK_NAME}", f"the drawing in {DRAW_LABEL}")


def error_line(err: BaseException, *uploads: str | None) -> str:
    """The CLI's one-line message for a user error (the temp paths of ``uploads``, the video, the first frame and the
    mask file, shortened to their names); a short line for anything unexpected."""
    if isinstance(err, VidinvertError):
        line = f"vidinvert: error: {page_words(str(err))}"
        for path in filter(None, uploads):
            line = line.replace(str(path), Path(path).name)
        return line
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
    """The uploaded files each browser session used, videos and edited first frames (Gradio's files inside the
    app's folder, not the bundled sample), to remove with the session. Gradio names an upload by its content, so
    sessions that uploaded the same file share it: it is removed when the last session that used it ends."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.by_session: dict[str, set[Path]] = {}
        self.lock = threading.Lock()

    def note(self, session_id: str | None, upload: str | None) -> None:
        if not (session_id and upload and isinstance(upload, str)):
            return
        path = Path(upload).resolve()
        if (path.is_relative_to(self.root) and not path.is_relative_to(session_dir(self.root, session_id))
                and path.is_file() and not filecmp.cmp(path, SAMPLE_VIDEO, shallow=False)):
            with self.lock:
                self.by_session.setdefault(session_id, set()).add(path)

    def drop(self, session_id: str) -> None:
        with self.lock:
            paths = self.by_session.pop(session_id, set())
            paths -= {path for used in self.by_session.values() for path in used}  # still another session's
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


def write_region_preview(image, folder: Path) -> Path:
    """The region's preview (uint8 ``[H, W, 3]``) as a PNG in ``folder`` named by its content, the previous ones
    removed: a changed preview has a new address (no stale copy in the browser), an unchanged one keeps its file (no
    request for it finds it missing while it is rewritten)."""
    from PIL import Image

    path = folder / f"region-{hashlib.sha256(image.tobytes()).hexdigest()[:16]}.png"
    folder.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        partial = path.with_suffix(".part")
        Image.fromarray(image).save(partial, format="PNG")
        os.replace(partial, path)  # whole or absent, for a request that comes meanwhile
    for old in folder.glob("region-*.png"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _family(label: str, model=None) -> str | None:
    """The family of the page's model: the loaded one's, else as its name tells (``None`` when it does not)."""
    if model is not None:
        return model.family
    from ..engine.plan import family_before_loading
    from ..settings import ModelSettings

    return family_before_loading(ModelSettings(name=label))


def recommended_note(model) -> str:
    """The settings the model's folder recommends (its ``MODEL_SETTINGS_FILE``), by the page's labels, as one
    Markdown line; empty when it recommends none."""
    if model is None:
        return ""
    given = {**model.recommended_edit, **model.recommended_invert}

    def shown(value) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(
            value, float) else str(value)

    items = [f"{LABELS.get(key, key.replace('_', ' '))} {shown(value)}" for key, value in given.items()]
    if not items:
        return ""
    return (f"**Recommended settings** of this model (its {MODEL_SETTINGS_FILE}), used where a field is left to "
            f"the model: {', '.join(items)}.")


def header(label: str, model=None) -> str:
    """The page's header Markdown for the model ``label`` (``model``: the loaded model, whose family, FlowEdit and
    recommended settings the header names)."""
    family = _family(label, model)
    flow = can_flowedit(model) if model is not None else family == "wan"
    text = ("# vidinvert\nEdit a video: the clip is inverted (DDIM, or fixed-point for an exact round trip; **Edit** "
            "inverts too when needed, and every inversion is reused for the same clip and settings), then "
            "regenerated under your prompts while attention sees the source's keys and values, which keeps layout "
            "and motion" + (" (or edited by FlowEdit, which needs no inversion)" if flow else "") + ".\n\n")
    text += f"**Model:** `{label}`"
    real = REAL_MODELS.get(family or "cogvideox", EXAMPLE_HUB_ID)
    if label in TINY_MODELS:
        text += (" — the embedded tiny model (random weights, built in code): results are noise-like. For real "
                 f"edits, start the page with `vidinvert serve --model {real}`.")
    elif label in DEMO_MODELS:
        text += (" — the bundled demo model, trained on a synthetic world of coloured shapes: use the bundled sample "
                 f"and a prompt like '{EXAMPLE_PROMPT}'. For real videos, start the page with "
                 f"`vidinvert serve --model {real}`.")
    if model is not None and model.takes_image:
        text += (f"\n\nAn **image-to-video** model: upload an *{FIRST_FRAME_LABEL}* beside the clip and the edit "
                 "follows it, keeping the source's motion.")
    note = recommended_note(model)
    return text + (f"\n\n{note}" if note else "")


def _warnings_box(lines: list[str], notes: list[str] = ()):
    """Update of the warnings box: the warning lines, then the notes, or hidden when there are none."""
    import gradio as gr

    text = "\n".join([*(f"- vidinvert: warning: {_escape(line)}" for line in lines),
                      *(f"- vidinvert: note: {_escape(line)}" for line in notes)])
    return gr.update(value=text, visible=bool(lines) or bool(notes))


def _counted(count: int, what: str) -> str:
    return f"{count} {what}{'s' if count > 1 else ''}"


FLOWEDIT_NOTE = ("With Edit method *flowedit*: the source prompt describes the video, Guidance is the target's scale, "
                 "Steps the schedule.")
ROW = 4  # fields side by side in a panel's row (a text field has a row of its own)


def build_app(studio: Studio | None = None, output_root: str | os.PathLike | None = None):
    """The Gradio ``Blocks`` of the page, its fields generated from the options table for the studio's model
    (loaded now: the fields it cannot use are hidden, its hints name its own values).

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
    model = studio.model()
    root = Path(output_root) if output_root is not None else Path(tempfile.mkdtemp(prefix="vidinvert-web-"))
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()  # as Gradio compares paths: files inside are served in place, not copied
    uploads = Uploads(root)
    fields = page_fields(model)
    takes_image = bool(model.takes_image)  # an image-to-video model: it may follow a first frame
    running: dict[str, str] = {}  # session -> the run it has going (its folder stays until the run ends)
    closed: set[str] = set()  # sessions that ended while their run went on
    guard = threading.Lock()

    def say_with(progress) -> Callable[[str], None]:
        return lambda text: progress(0, desc=text)

    def widget(field):
        common = dict(label=field.label, info=field.info or None, visible=field.visible and field.method in (
            None, "inversion"), elem_id=field.key.replace("_", "-"))
        if field.kind == "number":
            # No minimum=/maximum=: Gradio's own range check would pre-empt ours with a message naming no field,
            # and precision=None keeps a typed 2.5 as 2.5 so that whole-number fields refuse it instead of rounding.
            return gr.Number(field.value, precision=None, **common)
        if field.kind == "tick":
            return gr.Checkbox(field.value, **common)
        if field.kind == "text":
            return gr.Textbox(field.value, **common)
        # Any value sent reaches the handler, whose check (form.check_choices) names the field and its choices;
        # Gradio's own check would answer with a message naming no field. (An instance attribute, not a subclass:
        # Gradio writes a .pyi file next to the module of every component subclass.)
        radio = gr.Radio(list(field.choices), value=field.value, **common)
        radio.preprocess = lambda payload: payload
        return radio

    def region_widgets():
        """The Edit region panel's own widgets: the Mask file upload, Draw the region (white strokes on the clip's
        first frame, set when a clip is chosen) and the preview of the region with its description."""
        gr.Markdown(REGION_NOTE)
        with gr.Row():
            upload = gr.File(label=MASK_LABEL, type="filepath", height=140, elem_id="mask-file")
            # The handlers read the file themselves (``regions.read_mask``'s checks, one line naming the field);
            # Gradio's own would refuse with a message naming no field, and leaves an empty temp file per call.
            upload.preprocess = lambda payload: None if payload is None else getattr(payload, "path", None)
            shown = gr.Image(label=REGION_PREVIEW_LABEL, type="filepath", interactive=False, height=220,
                             elem_id="region-preview")
        editor = gr.ImageEditor(label=DRAW_LABEL, type="numpy", image_mode="RGBA", sources=[], transforms=[],
                                layers=False, brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff",
                                                             color_mode="fixed"),
                                height=380, elem_id="mask-drawing")
        info = gr.Markdown("", elem_id="region-info")
        return upload, editor, shown, info

    def panel_visible(group: str, method: str) -> bool:
        return any(f.visible and f.method in (None, method) for f in fields if f.group == group)

    with gradio_cache(root), gr.Blocks(title="vidinvert", analytics_enabled=False,
                                       delete_cache=GRADIO_CACHE_CLEANUP) as app:
        state = gr.State(new_session, delete_callback=drop_session)
        gr.Markdown(header(studio.label, model), elem_id="header")
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(label="Input video", sources=["upload"], elem_id="input-video", height=300)
                sample = gr.Button("Use the bundled sample", size="sm", elem_id="use-sample")
                first_frame = gr.Image(label=FIRST_FRAME_LABEL, type="filepath", sources=["upload"], height=200,
                                       visible=takes_image, elem_id="first-frame")
                gr.Markdown(_escape(FIRST_FRAME_INFO), visible=takes_image, elem_id="first-frame-info")  # its info
                # The handler reads the upload itself (``form.first_frames_from_form``: the video reader's checks,
                # one line naming the field); Gradio's own would open any file with PIL and answer a file that is no
                # image with a message naming no field. (An instance attribute, as for the radios below.)
                first_frame.preprocess = lambda payload: None if payload is None else payload.path
                frames = gr.Gallery(label=FRAMES_LABEL, columns=3, height="auto", object_fit="contain",
                                    allow_preview=False, elem_id="input-frames")
            with gr.Column(scale=7):
                prompts = gr.Textbox(label=PROMPTS_LABEL, lines=2, elem_id="prompts", placeholder=EXAMPLE_PROMPT,
                                     info=PROMPTS_INFO if takes_image else None)
                with gr.Row():
                    invert_button = gr.Button("Invert", elem_id="invert")
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown(_status("Upload a clip or use the bundled sample, type a prompt, then Edit."),
                                     elem_id="status")
                progress_box = gr.Markdown("", elem_id="progress", min_height=40)
                warnings_box = gr.Markdown("", visible=False, elem_id="warnings")
                form, panels = {}, {}
                for group in PANELS:  # one folded panel per group of the options table
                    with gr.Accordion(PANEL_TITLES[group], open=False, elem_id=f"{group}-settings",
                                      visible=panel_visible(group, "inversion")) as panels[group]:
                        if group == "flowedit":
                            gr.Markdown(FLOWEDIT_NOTE)
                        if group == "region":
                            mask_file, drawing, region_shown, region_info = region_widgets()
                        row: list = []
                        for field in [f for f in fields if f.group == group] + [None]:
                            if row and (field is None or field.kind == "text" or len(row) == ROW):
                                with gr.Row():
                                    for queued in row:
                                        form[queued.key] = widget(queued)
                                row = []
                            if field is not None and field.kind == "text":
                                form[field.key] = widget(field)
                            elif field is not None:
                                row.append(field)
        with gr.Row():
            comparison = gr.Video(label="Source | result", interactive=False, autoplay=True, loop=True, height=320,
                                  scale=2, elem_id="comparison-video")
            result = gr.Video(label="Result", interactive=False, autoplay=True, loop=True, height=320, scale=1,
                              elem_id="result-video")
        first_frames = gr.Gallery(label=FIRST_FRAMES_LABEL, columns=3, height="auto", object_fit="contain",
                                  allow_preview=False, visible=False, elem_id="first-frame-compare")
        shown = gr.Radio([], label="Result shown", visible=False, elem_id="result-choice")
        files = gr.File(label="Downloads: results, comparisons, settings", file_count="multiple", interactive=False,
                        elem_id="downloads")

        names = {component: name for name, component in form.items()}
        by_method = [f for f in fields if f.method is not None]  # fields shown for one edit method only
        method_panels = [g for g in PANELS if {f.method for f in fields if f.group == g} <= {"inversion", "flowedit"}]

        def values_of(data: dict) -> dict:
            """The form's values; the fields of the other edit method (hidden) at their defaults."""
            return for_method({names[c]: v for c, v in data.items() if c in names})

        def fail(err: BaseException, *uploads: str | None) -> str:
            """The status for a failed action: one line, replacing whatever the status said before (``uploads``:
            the paths it may name, shortened to their names)."""
            if not isinstance(err, VidinvertError):
                traceback.print_exc()
            return _status(error_line(err, *uploads), "error")

        def on_video(data, request: gr.Request):
            path = data[video]
            if not path:
                return gr.update(value=[], label=FRAMES_LABEL), _status("Upload a clip or use the bundled sample.")
            try:
                uploads.note(request.session_hash, path)
                read, inv, _ = settings_from_form(values_of(data))
                read, _, _ = family_defaults(model, read, inv)
                items, text, total = preview_frames(path, read, model.temporal_factor)
                label = f"{FRAMES_LABEL}: {total} ({shown_of(len(items), total)})"
                files = write_preview(items, session_dir(root, request.session_hash) / "preview")
                return gr.update(value=files, label=label), _status(text)
            except Exception as err:  # noqa: BLE001 - shown in the page, the app stays usable
                return gr.update(value=[], label=FRAMES_LABEL), fail(err, path)

        def on_first_frame(path, request: gr.Request):
            """An Edited first frame uploaded (checked now, as the edit will read it) or removed."""
            if not path:
                return _status(f"No {FIRST_FRAME_LABEL}: an edit follows the source's own first frame.")
            try:
                uploads.note(request.session_hash, path)
                first_frames_from_form(path)
                return _status(f"{FIRST_FRAME_LABEL}: {Path(path).name}. Edit regenerates the clip to follow it "
                               f"(prompts optional: without one, the Source prompt).")
            except Exception as err:  # noqa: BLE001 - shown in the page, the app stays usable
                return fail(err, path)

        def region_of(data, folder: Path, drawing_value) -> tuple:
            """The preview of the form's edit region (the Mask file, or the drawing written into ``folder``) for
            the chosen clip: ``(image update, description, the mask's path)``; no mask: nothing shown (``None``)."""
            mask = mask_from_form(data[mask_file], drawing_value, folder)
            if mask is None:
                return gr.update(value=None), "", None
            what = f"{MASK_LABEL} {Path(data[mask_file]).name}" if data[mask_file] else f"The drawing in {DRAW_LABEL}"
            if not data[video]:
                return gr.update(value=None), f"{what}: choose a clip to see the region over it.", mask
            read, inv, config = settings_from_form({**values_of(data), "mask": mask})
            read, _, _ = family_defaults(model, read, inv)
            image, text, notes = region_preview(data[video], read, mask, config.region.grow, model)
            notes = "".join(f" Note: {page_words(note)}." for note in notes)
            shown = write_region_preview(image, folder / "preview")
            return gr.update(value=str(shown)), f"{what}: {text}.{notes}", mask

        def on_region(data, request: gr.Request):
            """The Mask file uploaded or removed, the drawing changed, or Mask grow typed: the region's preview and
            status, or one line naming the field."""
            try:
                uploads.note(request.session_hash, data[mask_file])
                shown, text, mask = region_of(data, session_dir(root, request.session_hash) / "region", data[drawing])
                return shown, _escape(text), (_status(text) if mask else gr.skip())
            except Exception as err:  # noqa: BLE001 - shown in the page, the app stays usable
                return gr.update(value=None), "", fail(err, data[video], data[mask_file])

        def on_clip_region(data, request: gr.Request):
            """A clip chosen or its frame settings changed: Draw the region draws on the first frame the job reads
            (another frame clears the drawing, the same one keeps it) and the preview follows (its errors in its
            description; the status is the clip's)."""
            folder = session_dir(root, request.session_hash) / "region"
            drawing_value = data[drawing]
            try:
                if not data[video]:
                    editor, drawing_value = None, None
                else:
                    read, inv, _ = settings_from_form(values_of(data))
                    read, _, _ = family_defaults(model, read, inv)
                    image = editor_background(data[video], read)
                    target = folder / f"first-frame-{hashlib.sha256(image.tobytes()).hexdigest()[:16]}.png"
                    editor = gr.skip()
                    if not target.is_file():
                        from PIL import Image

                        for old in folder.glob("first-frame-*.png"):
                            old.unlink()
                        folder.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(image).save(target)
                        editor = {"background": str(target), "layers": [], "composite": str(target)}
                        drawing_value = None  # the new frame's drawing is empty
                shown, text, _ = region_of(data, folder, drawing_value)
                return editor, shown, _escape(text)
            except Exception as err:  # noqa: BLE001 - the clip's own errors are the status's (on_video)
                return gr.skip(), gr.update(value=None), f"**{_escape(error_line(err, data[video], data[mask_file]))}**"

        def on_method(method):
            """Show the fields (and panels) of the chosen edit method, hide the other's; Invert is for inversion."""
            return ([gr.update(visible=f.visible and f.method == method) for f in by_method]
                    + [gr.update(visible=panel_visible(g, method)) for g in method_panels]
                    + [gr.update(visible=method != "flowedit")])

        def busy(what: str):
            """Before a run: the status says what runs, warnings cleared, Invert and Edit disabled until it ends."""
            return _status(f"{what}…"), "", _warnings_box([]), *idle(False)

        def idle(enabled: bool = True):
            return gr.update(interactive=enabled), gr.update(interactive=enabled)

        @contextmanager
        def run_of(session: str, what: str):
            """A run of ``session``: its folder stays until the run ends, also when the session ends first."""
            with guard:
                running[session] = what
            try:
                yield
            finally:
                with guard:
                    running.pop(session, None)
                    gone = session in closed
                    closed.discard(session)
                if gone:
                    remove_session(session)

        def on_invert(data, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            started = time.perf_counter()
            try:
                uploads.note(request.session_hash, data[video])
                uploads.note(request.session_hash, data[first_frame])
                read, inv, config = settings_from_form(values_of(data))
                if config.method == "flowedit":
                    raise VidinvertError("FlowEdit makes no inversion", "press Edit, or choose Edit method inversion")
                seen: list[str] = []
                with run_of(request.session_hash, "Inverting"):  # as the Edit that follows will want it
                    prepared = studio.prepared(data[video], read, inv, say_with(progress), seen,
                                               first_frame=bool(data[first_frame]))
                frames_used, inversion = prepared.source.clip.frames, prepared.inversion
                how = ("reused from the cache" if prepared.reused
                       else f"in {time.perf_counter() - started:.1f} s (reading, encoding and inverting)")
                text = (f"Inverted {frames_used.shape[0]} frames at {frames_used.shape[3]}×{frames_used.shape[2]} "
                        f"({len(inversion.meta.timesteps)} {inversion.meta.method} steps, "
                        f"{sum(inversion.meta.iterations)} evaluations) {how}. Now type prompts and Edit.")
                if seen:
                    text += f" {len(seen)} warning{'s' if len(seen) > 1 else ''}: see below."
                return _status(text, "ok"), "", _warnings_box([page_words(line) for line in seen])
            except Exception as err:  # noqa: BLE001
                return fail(err, data[video], data[first_frame]), "", _warnings_box([])

        def on_edit(data, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            started = time.perf_counter()
            session = data[state]
            try:
                uploads.note(request.session_hash, data[video])
                uploads.note(request.session_hash, data[first_frame])
                uploads.note(request.session_hash, data[mask_file])
                settings_from_form(values_of(data))  # every field checked before anything is written
                edited = first_frames_from_form(data[first_frame])
                # with an edited first frame the prompts are optional: each takes the source prompt (as on the CLI)
                prompt_list = parse_prompts(data[prompts], bool(edited), takes_image) or None
                folder = session_folder(session, root, request.session_hash)
                mask = mask_from_form(data[mask_file], data[drawing], folder)  # a drawing: saved in the run's folder
                read, inv, config = settings_from_form({**values_of(data), "mask": mask})
                notes: list[str] = []
                with run_of(request.session_hash, "Editing"):
                    results, job = studio.edit(data[video], read, inv, prompt_list, config, folder,
                                               say=say_with(progress), metrics=metrics_from_form(values_of(data)),
                                               first_frames=edited, notes=notes)
                    compared = gr.update(value=[], visible=False)
                    if edited:
                        items = first_frame_items(job, edited[0], read.resize, [r.prompt for r in results])
                        compared = gr.update(value=write_preview(items, folder / "first-frames"), visible=True)
            except Exception as err:  # noqa: BLE001
                return (fail(err, data[video], data[first_frame], data[mask_file]), "", _warnings_box([]), gr.skip(),
                        gr.skip(), gr.skip(), gr.skip(), gr.skip(), session)
            session["results"] = [dataclasses.asdict(r) for r in results]
            summary = job.summary
            how = " (inversion reused)" if summary.get("inversion_reused") else ""
            if summary.get("method") == "flowedit":
                how = f" by FlowEdit ({summary['flowedit']['n_max']} of {summary['flowedit']['steps']} steps)"
            asked = f"{len(results)} prompt{'s' if len(results) > 1 else ''}" if prompt_list else "the Source prompt"
            if edited:
                asked += f", following the {FIRST_FRAME_LABEL} {Path(edited[0]).name}"
            region = summary.get("region")
            if region:
                drawn = not data[mask_file]
                asked += (f", inside {'the drawing in ' + DRAW_LABEL if drawn else MASK_LABEL + ' ' + region['mask']}"
                          f" ({region['coverage']:.0%} of the latent grid may change)")
            text = (f"Edited {summary['frames']} frames at {summary['size'][1]}×{summary['size'][0]} with {asked} in "
                    f"{time.perf_counter() - started:.1f} s{how}.")
            for r, measured in zip(results, job.metrics):
                text += f" {r.prompt if len(results) > 1 else 'Temporal'}: {measured.describe()}."
            told = [_counted(len(lines), what) for lines, what in ((job.warnings, "warning"), (notes, "note")) if lines]
            if told:
                text += f" {' and '.join(told)}: see below."
            downloads = [str(p) for r in results for p in (r.video, r.comparison, r.settings)]
            if region and not data[mask_file]:
                downloads.append(mask)  # the drawing, as the settings JSON names it
            choice = gr.update(choices=[r.prompt for r in results], value=results[0].prompt, visible=len(results) > 1)
            return (_status(text, "ok"), "", _warnings_box([page_words(line) for line in job.warnings],
                                                           [page_words(line) for line in notes]),
                    str(results[0].comparison), str(results[0].video), downloads, choice, compared, session)

        def remove_session(session: str) -> None:
            shutil.rmtree(session_dir(root, session), ignore_errors=True)
            uploads.drop(session)

        def on_close(request: gr.Request):
            """The tab was closed or reloaded: its outputs and preview frames (served in place, never copied) and
            its uploads go; with a run still going, when that run ends."""
            with guard:
                if request.session_hash in running:
                    closed.add(request.session_hash)
                    return
            remove_session(request.session_hash)

        def on_load():
            """A page opened (or reloaded) while a job runs says so: it finishes first, its results not shown here."""
            if studio.running is None:
                return gr.skip()
            what, since = studio.running
            return _status(f"A job is running on this server ({what.lower()}, {time.monotonic() - since:.0f} s so "
                           "far; one started before a reload goes on in the background and its results are not "
                           "shown here). Invert and Edit start when it ends.")

        def on_stop():
            return (_status("Stopped: the page no longer waits for the run (a run already inside the model finishes "
                            "in the background)."), "", _warnings_box([]), *idle())

        def on_choice(session, prompt):
            for item in (session or {}).get("results", []):
                if item["prompt"] == prompt:
                    return str(item["comparison"]), str(item["video"])
            return gr.skip(), gr.skip()

        # This module's annotations are strings (``from __future__ import annotations``) naming a local ``gr``, which
        # Gradio cannot resolve: give it the real class, or it passes no request (and the Progress in its place).
        for handler in (on_video, on_first_frame, on_region, on_clip_region, on_invert, on_edit, on_close):
            handler.__annotations__["request"] = gr.Request

        reports, buttons = [status, progress_box, warnings_box], [invert_button, edit_button]
        sample.click(lambda: str(SAMPLE_VIDEO), None, video, api_name=False)
        frame_fields = [form[f.key] for f in fields if f.group == "frames" and f.kind != "text"]
        gr.on([video.change, *(c.change for c in frame_fields)], on_video,
              {video, *form.values()}, [frames, status], api_name=False, trigger_mode="always_last",
              show_progress="hidden")
        # (no trigger_mode="always_last" here: with it, Gradio 6.31 shows "Error" on the progress box when Stop
        # cancels an edit)
        first_frame.change(on_first_frame, first_frame, status, api_name=False, show_progress="hidden")
        region_inputs = {video, mask_file, drawing, *form.values()}
        gr.on([video.change, *(c.change for c in frame_fields)], on_clip_region, region_inputs,
              [drawing, region_shown, region_info], api_name=False, trigger_mode="always_last", show_progress="hidden")
        gr.on([mask_file.change, drawing.input, form["mask_grow"].change], on_region, region_inputs,
              [region_shown, region_info, status], api_name=False, trigger_mode="always_last", show_progress="hidden")
        form["method"].change(on_method, form["method"], [*(form[f.key] for f in by_method),
                                                          *(panels[g] for g in method_panels), invert_button],
                              api_name=False, queue=False, show_progress="hidden")
        invert_run = invert_button.click(lambda: busy("Inverting"), None, [*reports, *buttons], api_name=False,
                                         queue=False).then(
            on_invert, {video, first_frame, state, *form.values()}, reports, api_name="invert",
            concurrency_id="model", concurrency_limit=1, show_progress_on=progress_box)
        invert_run.then(idle, None, buttons, api_name=False, queue=False)
        edit_run = edit_button.click(lambda: busy("Editing"), None, [*reports, *buttons], api_name=False,
                                     queue=False).then(
            on_edit, {video, first_frame, mask_file, drawing, state, prompts, *form.values()},
            [*reports, comparison, result, files, shown, first_frames, state], api_name="edit",
            concurrency_id="model", concurrency_limit=1, show_progress_on=progress_box)
        edit_run.then(idle, None, buttons, api_name=False, queue=False)
        stop_button.click(on_stop, None, [*reports, *buttons], api_name="stop", cancels=[invert_run, edit_run],
                          queue=False)
        shown.change(on_choice, [state, shown], [comparison, result], api_name=False, show_progress="hidden")
        app.load(on_load, None, status, api_name=False, queue=False)
        app.unload(on_close)
    return app

