"""The page's form: widget values (named like the CLI's options) -> the settings dataclasses, with one-line errors.

Initial values come from ``settings.py``, as the CLI's defaults do; nothing here knows the CLI.
"""

from __future__ import annotations

import math

from ..errors import SettingsError
from ..settings import (BlendConfig, EditConfig, FlowEditConfig, InjectionConfig, InvertSettings, OutputSettings,
                        ReadSettings)

LABELS = {  # form key -> the label the page shows (errors name fields by it)
    "skip_frames_start": "Skip start", "skip_frames_end": "Skip end", "frame_sample_step": "Stride",
    "max_num_frames": "Max frames", "height": "Height", "width": "Width", "resize": "Resize", "steps": "Steps",
    "inversion": "Method", "source_prompt": "Source prompt", "guidance": "Guidance", "start": "Start from",
    "seed": "Seed", "injection": "Key/value injection", "injection_steps": "Injection steps",
    "inversion_guidance": "Inversion guidance", "strength": "Strength", "negative_prompt": "Negative prompt",
    "dynamic_guidance": "Dynamic guidance", "blend": "Local blend", "blend_source": "Blend: what the video shows",
    "reference_weight": "Reference weight",
    "metrics": "Temporal metrics",
    "guidance_2": "Guidance 2 (low-noise expert)", "method": "Edit method", "n_max": "FlowEdit n_max",
    "n_min": "FlowEdit n_min", "source_guidance": "Source guidance",
    "window": "Window", "overlap": "Window overlap",
}


SETTING_LABELS = {  # per group: how settings.py names a field in its messages -> the page's label
    "read": {"frames skipped at the start": "Skip start", "frames skipped at the end": "Skip end",
             "frame stride": "Stride", "max frames": "Max frames", "height": "Height", "width": "Width",
             "resize mode": "Resize"},
    "inv": {"steps": "Steps", "inversion guidance": "Inversion guidance", "inversion method": "Method",
            "inversion depth (strength)": "Strength", "window (latent frames)": "Window", "window overlap":
            "Window overlap", "window": "Window"},
    "edit": {"guidance": "Guidance", "seed": "Seed", "start": "Start from",
             "injection step fraction": "Injection steps", "second guidance": "Guidance 2 (low-noise expert)",
             "edit method": "Edit method", "FlowEdit source guidance": "Source guidance",
             "reference weight": "Reference weight"},
}
GROUP_LABELS = {"read": "Frames", "inv": "Inversion", "edit": "Editing"}  # accordion names, for anything else
BLEND_CHOICES = {"model's": None, "on": True, "off": False}  # the page's Local blend choices -> BlendConfig.enabled


def form_defaults() -> dict:
    """Initial widget values, from the settings' own defaults."""
    read, inv, edit, injection = ReadSettings(), InvertSettings(), EditConfig(), InjectionConfig()
    flow = FlowEditConfig()
    return {
        "skip_frames_start": read.skip_start, "skip_frames_end": read.skip_end, "frame_sample_step": 0,
        "max_num_frames": read.max_frames or 0, "height": 0, "width": 0, "resize": read.resize, "steps": inv.steps,
        "inversion": inv.method, "source_prompt": inv.prompt, "guidance": edit.guidance, "start": edit.start,
        "seed": edit.seed, "injection": injection.enabled, "injection_steps": injection.step_fraction,
        "inversion_guidance": inv.guidance, "strength": inv.depth, "negative_prompt": edit.negative_prompt or "",
        "dynamic_guidance": edit.dynamic_guidance, "reference_weight": injection.reference_weight or 0,
        "blend": next(k for k, v in BLEND_CHOICES.items() if v is BlendConfig().enabled),
        "blend_source": BlendConfig().source_prompt, "metrics": OutputSettings().metrics,
        "guidance_2": edit.guidance_2 or 0, "method": edit.method,
        "n_max": flow.n_max or 0, "n_min": flow.n_min, "source_guidance": flow.source_guidance,
        "window": "" if inv.window is None else str(inv.window), "overlap": inv.overlap,
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
    for name, label in sorted(SETTING_LABELS[group].items(), key=lambda item: -len(item[0])):
        if text.startswith(f"{name} "):
            return SettingsError(label + text[len(name):])
        if text.startswith(f"unknown {name} "):
            return SettingsError(f"{label}: unknown value{text[len('unknown ' + name):]}")
    return SettingsError(f"{GROUP_LABELS[group]}: {text}")


def settings_from_form(form: dict) -> tuple[ReadSettings, InvertSettings, EditConfig]:
    """Form values -> ``(ReadSettings, InvertSettings, EditConfig)``; missing keys take the defaults. Every error
    names the field by its label. 0 (or empty) in Max frames, Height, Width, Stride, Guidance 2 and FlowEdit n_max
    leaves the value to the model or the schedule (``None``); an empty negative prompt is the model's default. The
    source prompt is both the inversion's prompt and FlowEdit's source description, as on the CLI."""
    values = {**form_defaults(), **form}
    injection_on = values["injection"] if isinstance(values["injection"], bool) else values["injection"] == "on"
    window = str(values["window"] if values["window"] is not None else "").strip() or None  # empty: one window
    built = {}
    steps = [
        ("inv", lambda: InvertSettings(
            steps=_number(values, "steps", whole=True),
            prompt=(values["source_prompt"] or "").strip(),
            guidance=_number(values, "inversion_guidance"),
            method=values["inversion"],
            depth=_number(values, "strength"),
            window=window,
            overlap=_number(values, "overlap"))),
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
            dynamic_guidance=bool(values["dynamic_guidance"]),
            injection=InjectionConfig(enabled=injection_on,
                                      step_fraction=_number(values, "injection_steps"),
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
    bool / ``None`` as a library caller passes it."""
    if value is None or isinstance(value, bool):
        return value
    if value not in BLEND_CHOICES:
        raise SettingsError(f"Local blend must be one of {', '.join(BLEND_CHOICES)}, got {value!r}",
                            "choose model's, on or off")
    return BLEND_CHOICES[value]


def metrics_from_form(form: dict) -> bool:
    """Whether the form asks for temporal metrics (``OutputSettings.metrics``); missing: the default."""
    return bool({**form_defaults(), **form}["metrics"])


def parse_prompts(text: str | None) -> list[str]:
    """One edit prompt per non-empty line."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise SettingsError("no edit prompt given", "type one or more edit prompts, one per line")
    return prompts
