"""The page's form: widget values (named like the CLI's options) -> the settings dataclasses, with one-line errors.

Initial values come from ``settings.py``, as the CLI's defaults do; nothing here knows the CLI.
"""

from __future__ import annotations

import math

from ..errors import SettingsError
from ..options import EDIT, for_command
from ..settings import (EDIT_METHODS, METHODS, RESIZE_MODES, STARTS, BlendConfig, EditConfig, FlowEditConfig,
                        InjectionConfig, InvertSettings, OutputSettings, ReadSettings)

PAGE_FIELDS = ("skip_frames_start", "skip_frames_end", "frame_sample_step", "max_num_frames", "height", "width",
               "resize", "steps", "inversion", "source_prompt", "guidance", "start", "seed", "injection",
               "injection_fraction", "inversion_guidance", "edit_fraction", "negative_prompt", "dynamic_guidance", "blend",
               "blend_source", "reference_weight", "metrics", "guidance_2", "method", "n_max", "n_min",
               "source_guidance", "window", "overlap_fraction")  # form keys: the options (by dest) the page shows
LABELS = {option.dest: option.label for option in for_command(EDIT) if option.dest in PAGE_FIELDS}  # -> label
assert set(LABELS) == set(PAGE_FIELDS) and all(LABELS.values()), "every page field has a label in the options table"
SETTING_LABELS = {name: option.label for option in for_command(EDIT) if option.dest in PAGE_FIELDS  # settings'
                  for name in option.setting_names}  # name of a field in its messages -> the page's label
GROUP_LABELS = {"read": "Frames", "inv": "Inversion", "edit": "Editing"}  # accordion names, for anything else
BLEND_CHOICES = {"model's": None, "on": True, "off": False}  # the page's Local blend choices -> BlendConfig.enabled
CHOICES = {  # form key -> the values its radio offers; any other value is refused with one line naming the field
    "resize": RESIZE_MODES, "inversion": METHODS, "start": STARTS, "method": EDIT_METHODS,
    "blend": tuple(BLEND_CHOICES),
}
TICK_BOXES = ("injection", "dynamic_guidance", "metrics")  # form keys of check boxes: True or False
PROMPTS_LABEL = "Edit prompts (one per line)"  # the prompts box (not a settings field: a run's list of edits)
MAX_PROMPTS = 8  # edit prompts one page run takes (each adds transformer batch rows: memory and time)


def form_defaults() -> dict:
    """Initial widget values, from the settings' own defaults."""
    read, inv, edit, injection = ReadSettings(), InvertSettings(), EditConfig(), InjectionConfig()
    flow = FlowEditConfig()
    return {
        "skip_frames_start": read.skip_start, "skip_frames_end": read.skip_end, "frame_sample_step": 0,
        "max_num_frames": read.max_frames or 0, "height": 0, "width": 0, "resize": read.resize, "steps": inv.steps,
        "inversion": inv.method, "source_prompt": inv.prompt, "guidance": edit.guidance, "start": edit.start,
        "seed": edit.seed, "injection": injection.enabled, "injection_fraction": injection.step_fraction,
        "inversion_guidance": inv.guidance, "edit_fraction": inv.depth, "negative_prompt": edit.negative_prompt or "",
        "dynamic_guidance": edit.dynamic_guidance, "reference_weight": injection.reference_weight or 0,
        "blend": next(k for k, v in BLEND_CHOICES.items() if v is BlendConfig().enabled),
        "blend_source": BlendConfig().source_prompt, "metrics": OutputSettings().metrics,
        "guidance_2": edit.guidance_2 or 0, "method": edit.method,
        "n_max": flow.n_max or 0, "n_min": flow.n_min, "source_guidance": flow.source_guidance,
        "window": "" if inv.window is None else str(inv.window), "overlap_fraction": inv.overlap,
    }


def _number(values: dict, key: str, whole: bool = False, optional: bool = False):
    """A form number: empty is refused (or ``None`` when ``optional``, as is 0); whole numbers stay whole."""
    label = LABELS[key]
    value = values[key]
    if value is None or value == "":
        if optional:
            return None
        raise SettingsError(f"{label} is empty", f"type a {'whole ' if whole else ''}number in {label}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{label} must be a finite number, got {value}")
    if whole:
        if number != int(number):
            raise SettingsError(f"{label} must be a whole number, got {value:g}", f"type a whole number in {label}")
        number = int(number)
        if optional and number == 0:
            return None
    return number


def _labelled(group: str, err: SettingsError) -> SettingsError:
    """``err`` with the field named by its page label: the setting's own name at the start of the message is
    replaced by the label (``"steps must be ..."`` -> ``"Steps must be ..."``), ``"unknown <name> 'x'"`` becomes
    ``"<label>: unknown value 'x'"``; a message naming no known field is prefixed with its group
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
        if key == "blend" and (value is None or isinstance(value, bool)):
            continue
        if not (isinstance(value, str) and value in choices):
            raise SettingsError(f"{LABELS[key]} must be one of {', '.join(choices)}, got unknown value "
                                f"{_shown(value)}")
    for key in TICK_BOXES:
        value = values[key]
        if not (isinstance(value, bool) or (key == "injection" and value in ("on", "off"))):
            raise SettingsError(f"{LABELS[key]} must be ticked or not (true or false), got {_shown(value)}")


def settings_from_form(form: dict) -> tuple[ReadSettings, InvertSettings, EditConfig]:
    """Form values -> ``(ReadSettings, InvertSettings, EditConfig)``; missing keys take the defaults. Every error
    names the field by its label. 0 (or empty) in Max frames, Height, Width, Stride, Guidance 2 and FlowEdit n_max
    leaves the value to the model or the schedule (``None``); an empty negative prompt is the model's default. The
    source prompt is both the inversion's prompt and FlowEdit's source description, as on the CLI."""
    values = {**form_defaults(), **form}
    check_choices(values)
    injection_on = values["injection"] if isinstance(values["injection"], bool) else values["injection"] == "on"
    window = str(values["window"] if values["window"] is not None else "").strip() or None  # empty: one window
    built = {}
    steps = [
        ("inv", lambda: InvertSettings(
            steps=_number(values, "steps", whole=True),
            prompt=(values["source_prompt"] or "").strip(),
            guidance=_number(values, "inversion_guidance"),
            method=values["inversion"],
            depth=_number(values, "edit_fraction"),
            window=window,
            overlap=_number(values, "overlap_fraction"))),
        ("read", lambda: ReadSettings(
            height=_number(values, "height", whole=True, optional=True),
            width=_number(values, "width", whole=True, optional=True),
            skip_start=_number(values, "skip_frames_start", whole=True),
            skip_end=_number(values, "skip_frames_end", whole=True),
            stride=_number(values, "frame_sample_step", whole=True, optional=True),
            max_frames=_number(values, "max_num_frames", whole=True, optional=True),
            resize=values["resize"])),
        ("edit", lambda: EditConfig(
            guidance=_number(values, "guidance"),
            negative_prompt=values["negative_prompt"] or None,
            start=values["start"],
            seed=_number(values, "seed", whole=True),
            dynamic_guidance=values["dynamic_guidance"],
            injection=InjectionConfig(enabled=injection_on,
                                      step_fraction=_number(values, "injection_fraction"),
                                      reference_weight=_number(values, "reference_weight", optional=True) or None),
            blend=BlendConfig(enabled=_blend_choice(values["blend"]), source_prompt=(values["blend_source"] or "").strip()),
            guidance_2=_number(values, "guidance_2", optional=True) or None,
            method=values["method"],
            flowedit=FlowEditConfig(source_prompt=(values["source_prompt"] or "").strip(),
                                    n_max=_number(values, "n_max", whole=True, optional=True),
                                    n_min=_number(values, "n_min", whole=True),
                                    source_guidance=_number(values, "source_guidance")))),
    ]
    for name, build in steps:
        try:
            built[name] = build()
        except SettingsError as err:
            raise _labelled(name, err) from None
    return built["read"], built["inv"], built["edit"]


def _blend_choice(value) -> bool | None:
    """Local blend from the form: a choice of ``BLEND_CHOICES`` (``"model's"``: the model's recommendation), or a
    bool / ``None`` as a library caller passes it (``check_choices`` has refused anything else)."""
    return value if value is None or isinstance(value, bool) else BLEND_CHOICES[value]


def metrics_from_form(form: dict) -> bool:
    """Whether the form asks for temporal metrics (``OutputSettings.metrics``); missing: the default."""
    return bool({**form_defaults(), **form}["metrics"])


def parse_prompts(text: str | None) -> list[str]:
    """One edit prompt per non-empty line, at most ``MAX_PROMPTS``."""
    if text is not None and not isinstance(text, str):
        raise SettingsError(f"{PROMPTS_LABEL} must be text, got {_shown(text)}")
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise SettingsError("no edit prompt given", f"type one or more prompts in {PROMPTS_LABEL}")
    if len(prompts) > MAX_PROMPTS:
        raise SettingsError(f"{PROMPTS_LABEL}: {len(prompts)} prompts, at most {MAX_PROMPTS} per run",
                            f"keep {MAX_PROMPTS} lines and edit with the others in another run")
    return prompts
