"""The page's form, generated from the options table: its fields (widget kind, initial value, choices, label, info
text and panel, for the loaded model and edit method) and its values -> the settings dataclasses, with one-line
errors naming the fields by their labels.

Every page field is an option of ``options.OPTIONS`` with a ``label``; its panel is the option's group, but for the
inputs beside the video: the prompts box and, for an image-to-video model, the Edited first frame upload; and the
Mask file, an upload in its group's panel (Edit region) beside a drawing on the clip's first frame. The few
conventions of the page alone live in ``UNSET``, ``SETTINGS_OWN``, ``BLEND_CHOICES`` and ``field_kind``: a number
left to the model shows 0 (an empty text, the radio's "model's"), an on/off choice is a tick box. Values are mapped
onto settings by ``options.settings_from_values``' parts, as the CLI's and the batch's are; nothing here knows the
CLI.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..options import (EDIT, GROUP_TITLES, Option, defaults, edit_config, for_command, invert_settings,
                       read_settings)
from ..settings import InvertSettings
from ..video import MIN_IMAGE_SIDE, read_frame_image

PROMPT_OPTION = next(o for o in for_command(EDIT) if o.dest == "prompt")  # the prompts box: a run's list of edits
FIRST_FRAME_OPTION = next(o for o in for_command(EDIT) if o.dest == "first_frame")  # an image upload beside the video
MASK_OPTION = next(o for o in for_command(EDIT) if o.dest == "mask")  # a file upload (or a drawing): Edit region
INPUT_OPTIONS = (PROMPT_OPTION, FIRST_FRAME_OPTION, MASK_OPTION)  # the page's uploads and prompts, not typed fields
PAGE_OPTIONS: tuple[Option, ...] = tuple(o for o in for_command(EDIT) if o.label and o not in INPUT_OPTIONS)
OPTION = {option.dest: option for option in PAGE_OPTIONS}  # form key -> its option
PAGE_FIELDS = tuple(OPTION)  # form keys: the options (by dest) the page shows, in table order
LABELS = {key: option.label for key, option in OPTION.items()}  # form key -> label
SETTING_LABELS = {name: option.label for option in PAGE_OPTIONS  # the name of a field in settings' messages -> the
                  for name in option.setting_names}  # page's label
PANELS = tuple(dict.fromkeys(option.group for option in PAGE_OPTIONS))  # the page's panels: the table's groups
PANEL_TITLES = {group: GROUP_TITLES[group][0].upper() + GROUP_TITLES[group][1:] for group in PANELS}
GROUP_LABELS = {"read": PANEL_TITLES["frames"], "inv": PANEL_TITLES["inversion"],  # a message naming no field:
                "edit": PANEL_TITLES["editing"]}  # the panel of the settings it came from
PROMPTS_LABEL = PROMPT_OPTION.label
FIRST_FRAME_LABEL = FIRST_FRAME_OPTION.label
MASK_LABEL = MASK_OPTION.label
DRAW_LABEL = "Draw the region"  # the page's other way to give a mask: white strokes on the clip's first frame
DRAWN_MASK_NAME = "drawn-mask.png"  # a drawing, saved as a mask image in the run's folder (the JSON names it so)
FIRST_FRAME_INFO = ("optional; the clip follows this frame (PNG or JPEG), keeping the source's motion; without one the "
                    "model follows the source's own first frame")  # the page's words: the table's help is the CLI's
PROMPTS_INFO = f"optional with an {FIRST_FRAME_LABEL}: without a prompt it takes the Source prompt"  # an I2V page's
MAX_PROMPTS = 8  # edit prompts one page run takes (each adds transformer batch rows: memory and time)
INFO_LENGTH = 140  # info text under a field, at most (the option's help, shortened)

# ---- the page's own conventions (everything else comes from the table) ----------------------------------------
UNSET = {"int": 0, "float": 0, "text": "", "toggle": "model's"}  # a kind's widget value for "left to the model"
SETTINGS_OWN = {"steps": InvertSettings.steps, "edit_fraction": InvertSettings.depth}  # None in the table that is a
# value of the settings' own, shown as that value (and sent on as None while it is left at it)
BLEND_CHOICES = {"model's": None, "on": True, "off": False}  # the page's Local blend choices -> BlendConfig.enabled
ON_OFF = ("on", "off")  # a choice of these is a tick box on the page


def field_kind(option: Option) -> str:
    """The widget an option gets: ``number``, ``text``, ``radio`` or ``tick``."""
    if option.kind in ("int", "float"):
        return "number"
    if option.kind == "switch" or option.choices == ON_OFF:
        return "tick"
    if option.kind in ("choice", "toggle"):
        return "radio"
    return "text"


def _choices(option: Option) -> tuple:
    return tuple(BLEND_CHOICES) if option.kind == "toggle" else option.choices


CHOICES = {key: _choices(o) for key, o in OPTION.items() if field_kind(o) == "radio"}  # form key -> radio values
TICK_BOXES = tuple(key for key, o in OPTION.items() if field_kind(o) == "tick")  # form keys of check boxes
NUMBERS = tuple(key for key, o in OPTION.items() if field_kind(o) == "number")
OPTIONAL = tuple(key for key in NUMBERS if OPTION[key].default is None and key not in SETTINGS_OWN)  # 0: unset

# which edit method a field is for (``None``: both); FlowEdit refuses the inversion's fields (engine.plan, EditConfig)
INVERSION_ONLY_GROUPS = ("injection", "blend")
INVERSION_ONLY = ("edit_fraction", "krnr", "start", "dynamic_guidance", "guidance_2", "inversion",
                  "inversion_guidance")


def method_of(key: str) -> str | None:
    """The edit method a form field belongs to: ``"inversion"``, ``"flowedit"`` or ``None`` (both)."""
    group = OPTION[key].group
    if group in INVERSION_ONLY_GROUPS or key in INVERSION_ONLY:
        return "inversion"
    return "flowedit" if group == "flowedit" else None


def for_method(form: dict) -> dict:
    """Form values with the fields of the edit method not chosen (hidden on the page) at their defaults, so that
    what a hidden field holds does not reach the job; an unknown method is left for ``check_choices`` to refuse."""
    method = form.get("method", OPTION["method"].default)
    if method not in OPTION["method"].choices:
        return dict(form)
    initial = form_defaults()
    return {key: initial[key] if key in OPTION and method_of(key) not in (None, method) else value
            for key, value in form.items()}


def form_defaults() -> dict:
    """Initial widget values: the table's defaults, in the page's conventions."""
    values = {}
    for key, option in OPTION.items():
        value = SETTINGS_OWN.get(key, option.default)
        if value is None:
            value = UNSET[option.kind]
        if field_kind(option) == "tick":
            value = value == "on" if isinstance(value, str) else bool(value)
        values[key] = value
    return values


# ---- info text: the option's help, in the page's words --------------------------------------------------------
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _page_flags(text: str) -> str:
    """CLI flags of page fields -> their labels (other flags are left for ``_shorten`` to drop)."""
    labels = {**{OPTION[key].flag: label for key, label in LABELS.items()}, PROMPT_OPTION.flag: "each edit prompt"}
    return _FLAG.sub(lambda m: labels.get(m.group(0), m.group(0)), text)


def _parts(text: str) -> list[str]:
    """``text`` split at its top-level parentheses: ``["a ", "(b (c))", " d"]``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            if depth == 0:
                parts.append(text[start:i])
                start = i
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if depth == 0:
                parts.append(text[start:i + 1])
                start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _clauses(parts: list[str]) -> list[list[str]]:
    """Parts (``_parts``) grouped into the clauses of their top-level ``"; "``."""
    clauses: list[list[str]] = [[]]
    for part in parts:
        if part.startswith("("):
            clauses[-1].append(part)
            continue
        pieces = part.split("; ")
        clauses[-1].append(pieces[0])
        clauses += [[piece] for piece in pieces[1:]]
    return [c for c in clauses if "".join(c).strip()]


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+([;,:.)])", r"\1", text).strip().rstrip(";,:")


def info_text(option: Option, unset_means: str | None = None, families: tuple[str, ...] = ()) -> str:
    """An option's help for the page: without its default (the field shows its value: ``(%(default)s)`` and a
    parenthesis opening with the value go), CLI flags as labels, parentheses naming a flag the page lacks or a
    family of ``families`` (the page names its own model's values) dropped, shortened to ``INFO_LENGTH`` (the last
    clause's parentheses, then the last clause go, then the text is cut at a comma), and, for a field that leaves
    its value to the model, what that means (``"0 = ..."``; ``unset_means``: the loaded model's own, else the
    help's ``(default: ...)``)."""
    unset = UNSET.get(option.kind) if option.default is None and option.dest not in SETTINGS_OWN else None
    initial = form_defaults()[option.dest]
    shown = f"{initial:g}" if isinstance(initial, (int, float)) and not isinstance(initial, bool) else None
    parts = []
    for part in _parts(option.help.replace("{what}", "output")):
        if part.startswith("(default"):
            unset_means = unset_means or _page_flags(part[len("(default"):-1].lstrip(":").split("; ")[0].strip())
            continue
        if "%(default)s" in part or (shown is not None and part.startswith(f"({shown};")):
            continue
        parts.append(_page_flags(part))
    droppable = [p for p in parts if p.startswith("(") and (_FLAG.search(p) or any(f in p for f in families))]
    parts = [p for p in parts if p not in droppable]
    suffix = f"; {unset if unset != '' else 'empty'} = {unset_means}" if unset is not None and unset_means else ""
    room = max(INFO_LENGTH - len(suffix), 64)
    clauses = _clauses(parts)
    while len(_tidy("; ".join("".join(c) for c in clauses))) > room:
        last = clauses[-1]
        if any(p.startswith("(") for p in last):
            last.pop(max(i for i, p in enumerate(last) if p.startswith("(")))
        elif len(clauses) > 1:
            clauses.pop()
        else:
            break
    text = _tidy("; ".join("".join(c) for c in clauses))
    if len(text) > room:
        cut = max(text.rfind(sep, 0, room + len(sep)) for sep in (", ", ": "))
        text = text[:cut] if cut > 20 else text[:text.rfind(" ", 0, room - 1)] + "…"
    return _FLAG.sub(lambda m: m.group(0)[2:], _tidy(text) + suffix)  # a flag left in a sentence: its name


# ---- the fields, for the loaded model -------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One field of the page: what a widget needs."""

    key: str  # form key (the option's dest)
    kind: str  # number, text, radio, tick (``field_kind``)
    label: str
    value: Any  # initial value
    choices: tuple  # a radio's values
    info: str
    group: str  # its panel
    method: str | None  # the edit method it is for (None: both)
    visible: bool  # whether the loaded model can use it at all


def model_facts(model) -> dict[str, str]:
    """What 0 / empty / "model's" means in a field for the loaded ``model`` (a family adapter): the page names the
    model's own values where the table's help names every family's."""
    if model is None:
        return {}
    height, width = model.native_size()
    latent = (model.trained_frames - 1) // model.temporal_factor + 1
    window = model.recommended_invert.get("window")
    edit = {"reference_weight": 1.0, "blend": False, **model.recommended_edit}
    return {
        "height": f"the model's, {height}", "width": f"the model's, {width}",
        "max_num_frames": f"the model's, {model.default_frames} (with a Window: every frame)",
        "window": (f"its recommendation, {window}; " if window is not None else "one window; ")
                  + f"auto = its trained length, {latent} latent frames; off = one window",
        "negative_prompt": "the model's, " + ("none" if not model.default_negative_prompt else "its published one"),
        "reference_weight": f"its recommendation, {edit['reference_weight']:g}",
        "blend": f"its recommendation, {'on' if edit['blend'] else 'off'}",
    }


def _with_multiple(info: str, multiple: int) -> str:
    """A Height/Width info naming the loaded model's own multiple (pixels per token)."""
    info = info.replace("a multiple of the model's pixels per token", f"a multiple of {multiple} (this model's pixels "
                        "per token)")
    return info if f"multiple of {multiple}" in info else f"{info}; a multiple of {multiple}"


FAMILY_LABELS = ("CogVideoX", "Wan")  # the families' names: a loaded model's page names its own values instead


def two_experts(model) -> bool:
    """Whether ``model`` has two experts (Wan 2.2 A14B: ``transformer_2`` for the low-noise steps)."""
    return len(getattr(model, "experts", ())) == 2


def can_flowedit(model) -> bool:
    """Whether ``model`` is flow-matching (FlowEdit needs one; ``engine.plan.FLOW_FAMILIES``)."""
    from ..engine.plan import FLOW_FAMILIES

    return model is None or model.family in FLOW_FAMILIES


def page_fields(model=None) -> list[Field]:
    """The page's fields for the loaded ``model`` (``None``: any model), in table order."""
    facts, initial = model_facts(model), form_defaults()
    fields = []
    for key, option in OPTION.items():
        visible = True
        if model is not None and (key == "guidance_2" and not two_experts(model)
                                  or method_of(key) == "flowedit" and not can_flowedit(model)
                                  or key == "method" and not can_flowedit(model)):
            visible = False
        info = info_text(option, facts.get(key), () if model is None else FAMILY_LABELS)
        if model is not None and key in ("height", "width"):
            info = _with_multiple(info, model.size_multiple)
        fields.append(Field(key, field_kind(option), option.label, initial[key], CHOICES.get(key, ()), info,
                            option.group, method_of(key), visible))
    return fields


# ---- values -> settings ---------------------------------------------------------------------------------------
def _number(values: dict, key: str):
    """A form number: empty is refused (``None`` for an optional one, as is 0); whole numbers stay whole."""
    label, whole, optional = LABELS[key], OPTION[key].kind == "int", key in OPTIONAL
    value = values[key]
    if value is None or value == "":
        if optional:
            return None
        raise SettingsError(f"{label} is empty", f"type a {'whole ' if whole else ''}number in {label}")
    if isinstance(value, bool):
        raise SettingsError(f"{label} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{label} must be a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{label} must be a finite number, got {value}")
    if whole:
        if number != int(number):
            raise SettingsError(f"{label} must be a whole number, got {number:g}", f"type a whole number in {label}")
        number = int(number)
    if optional and number == 0:
        return None
    if key in SETTINGS_OWN and number == SETTINGS_OWN[key]:
        return None  # left at the settings' own value, as a front end that does not set it
    return number


def _text(values: dict, key: str) -> str | None:
    value = values[key]
    if value is not None and not isinstance(value, str):
        raise SettingsError(f"{LABELS[key]} must be text, got {_shown(value)}")
    text = (value or "").strip()
    return None if text == "" and OPTION[key].default is None else text


def _labelled(group: str, err: SettingsError) -> SettingsError:
    """``err`` with the field named by its page label: the setting's own name at the start of the message is
    replaced by the label (``"steps must be ..."`` -> ``"Steps must be ..."``), ``"unknown <name> 'x'"`` becomes
    ``"<label>: unknown value 'x'"``; a message naming no known field is prefixed with its panel
    (``"Inversion: ..."``)."""
    text = str(err)
    for label in LABELS.values():
        if text.startswith(f"{label} "):
            return err
    for name, label in sorted(SETTING_LABELS.items(), key=lambda item: -len(item[0])):
        if text.startswith(f"{name} "):
            return SettingsError(label + text[len(name):])
        if text.startswith(f"unknown {name} "):
            return SettingsError(f"{label}: unknown value{text[len('unknown ' + name):]}")
    return SettingsError(f"{GROUP_LABELS[group]}: {text}")


def _shown(value) -> str:
    """A form value as an error quotes it (short: a hostile caller may send anything)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_choices(values: dict) -> None:
    """Refuse, with one line naming the field and its choices, a radio value outside its choices (the page's radios
    pass any value on, see ``page.build_app``) and a check box that is neither ticked nor clear. Local blend also takes
    a bool or ``None`` and Key/value injection ``"on"``/``"off"``, as library callers pass them."""
    for key, choices in CHOICES.items():
        value = values[key]
        if OPTION[key].kind == "toggle" and (value is None or isinstance(value, bool)):
            continue
        if not (isinstance(value, str) and value in choices):
            raise SettingsError(f"{LABELS[key]} must be one of {', '.join(choices)}, got unknown value "
                                f"{_shown(value)}")
    for key in TICK_BOXES:
        value = values[key]
        if not (isinstance(value, bool) or (OPTION[key].choices == ON_OFF and value in ON_OFF)):
            raise SettingsError(f"{LABELS[key]} must be ticked or not (true or false), got {_shown(value)}")


def option_values(form: dict) -> dict:
    """Form values (missing keys: the defaults) -> option values (``{dest: value}``), as the CLI's flags give them:
    numbers parsed, 0 / empty / "model's" as ``None`` (left to the model or the settings), tick boxes of an on/off
    choice as ``"on"``/``"off"``. Errors name the field by its label."""
    values = {**form_defaults(), **form}
    check_choices(values)
    out = {}
    for key, option in OPTION.items():
        kind, value = field_kind(option), values[key]
        if kind == "number":
            out[key] = _number(values, key)
        elif kind == "text":
            out[key] = _text(values, key)
        elif kind == "tick":
            out[key] = ("on" if value in (True, "on") else "off") if option.choices == ON_OFF else value
        elif option.kind == "toggle":
            out[key] = value if value is None or isinstance(value, bool) else BLEND_CHOICES[value]
        else:
            out[key] = value
    return out


def settings_from_form(form: dict):
    """Form values -> ``(ReadSettings, InvertSettings, EditConfig)`` through the options table's one mapping
    (``options.read_settings``, ``invert_settings``, ``edit_config``: ``settings_from_values``' parts); missing keys
    take the defaults. Every error names the field by its label. The source prompt is both the inversion's prompt
    and FlowEdit's source description, as on the CLI. ``form["mask"]``: the edit region's mask file
    (``mask_from_form``), if any."""
    values = {**defaults(EDIT), **option_values(form), "mask": _mask_path(form.get("mask"))}  # errors name fields
    built = {}
    for name, build in (("inv", invert_settings), ("read", read_settings), ("edit", edit_config)):
        try:
            built[name] = build(values)
        except SettingsError as err:
            raise _labelled(name, err) from None
    return built["read"], built["inv"], built["edit"]


def metrics_from_form(form: dict) -> bool:
    """Whether the form asks for temporal metrics (``OutputSettings.metrics``); missing: the default."""
    return bool({**form_defaults(), **form}["metrics"])


def parse_prompts(text: str | None, optional: bool = False, first_frame_field: bool = False) -> list[str]:
    """One edit prompt per non-empty line, at most ``MAX_PROMPTS``.

    Args:
        optional: none is fine (``[]``): an edit that follows an edited first frame then takes the source prompt,
            as on the CLI.
        first_frame_field: the page has the Edited first frame upload, which the hint for a missing prompt names.
    """
    if text is not None and not isinstance(text, str):
        raise SettingsError(f"{PROMPTS_LABEL} must be text, got {_shown(text)}")
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts and not optional:
        raise SettingsError("no edit prompt given", f"type one or more prompts in {PROMPTS_LABEL}"
                            + (f", or upload an {FIRST_FRAME_LABEL}" if first_frame_field else ""))
    if len(prompts) > MAX_PROMPTS:
        raise SettingsError(f"{PROMPTS_LABEL}: {len(prompts)} prompts, at most {MAX_PROMPTS} per run",
                            f"keep {MAX_PROMPTS} lines and edit with the others in another run")
    return prompts


def first_frames_from_form(value) -> list[str]:
    """The Edited first frame upload (a file path; ``None`` or empty: none) -> the job's ``first_frames``, the image
    checked now, as the edit reads it (``video.read_frame_image``: a PNG or JPEG file of at least
    ``MIN_IMAGE_SIDE`` pixels a side, through the video reader's safe demuxers), with errors naming the field."""
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        raise SettingsError(f"{FIRST_FRAME_LABEL} must be an uploaded image file, got {_shown(value)}")
    read_frame_image(value, MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, what=FIRST_FRAME_LABEL)
    return [value]


# ---- the edit region: an uploaded mask file or a drawing --------------------------------------------------------
def _mask_path(value) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SettingsError(f"{MASK_LABEL} must be an uploaded image or video file, got {_shown(value)}")
    return value


def drawn_mask(value):
    """The Draw the region editor's value (Gradio's ``{"background", "layers", "composite"}``, images as numpy
    ``[H, W, 4]`` RGBA) -> bool numpy ``[H, W]``: where a stroke was drawn (alpha at least half, any layer; the brush
    is white, the eraser removes strokes); ``None`` when nothing was drawn. Errors name the field."""
    import numpy as np

    if value is None:
        return None
    layers = value.get("layers") if isinstance(value, dict) else None
    if not isinstance(layers, list):
        raise SettingsError(f"{DRAW_LABEL} must be a drawing, got {_shown(value)}")
    drawn = None
    for layer in layers:
        if not (isinstance(layer, np.ndarray) and layer.ndim == 3 and layer.shape[2] == 4):
            raise SettingsError(f"{DRAW_LABEL} must be a drawing (RGBA layers), got {_shown(layer)}")
        strokes = layer[..., 3] >= 128  # [H, W]
        if drawn is not None and strokes.shape != drawn.shape:
            raise SettingsError(f"{DRAW_LABEL}: its layers differ in size", "clear the drawing and draw again")
        drawn = strokes if drawn is None else drawn | strokes
    return drawn if drawn is not None and bool(drawn.any()) else None


def mask_from_form(upload, drawing, folder) -> str | None:
    """The Edit region's inputs -> the job's mask file (``RegionConfig.mask``; ``None``: the edit may change
    everything). ``upload``: the Mask file (a path; ``None`` or empty: none); ``drawing``: the Draw the region
    editor's value (``drawn_mask``), written as a black-and-white PNG (white = drawn) to ``folder`` /
    ``DRAWN_MASK_NAME``, a one-image mask for every frame, fitted to the clip as the first frame it was drawn on.
    One of them at most; errors name the fields."""
    from PIL import Image

    path = _mask_path(upload)
    drawn = drawn_mask(drawing)
    if drawn is None:
        return path
    if path is not None:
        raise SettingsError(f"both a {MASK_LABEL} and a drawing in {DRAW_LABEL} were given",
                            f"remove the {MASK_LABEL}, or clear the drawing")
    target = Path(folder) / DRAWN_MASK_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drawn.astype("uint8") * 255).convert("RGB").save(target)
    return str(target)
