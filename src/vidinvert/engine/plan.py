"""The request, resolved and checked before any model work: prompts, settings a saved inversion or FlowEdit cannot
apply, what the model's family rules out, the defaults left to the model, and the output paths.

Errors name the CLI's flags (the batch's keys and the page's fields are named after them). What needs the loaded
model (``check_model_fits``, ``check_saved_windows``) is checked once it is open, before the video is inverted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..editing import edit_offset
from ..errors import SettingsError, VidinvertError
from ..inversion import Inversion, InversionMeta
from ..krnr import refuse_on_flow
from ..models.base import VideoFamily, negative_prompt_for
from ..outputs import comparison_path, numbered, plan_outputs, settings_path
from ..settings import (
    DEFAULT_OVERLAP,
    MODEL_SETTINGS_FILE,
    VIDEO_SUFFIXES,
    WINDOW_OFF,
    EditConfig,
    InvertSettings,
    ModelSettings,
    OutputSettings,
    ReadSettings,
    field_defaults,
    with_model_edit_defaults,
    with_model_guidance,
)
from ..windows import resolve as resolve_windows, spread


def is_saved_inversion(path: str | None) -> bool:
    return path is not None and Path(path).suffix == ".inv"


def check_prompts(prompts: list[str]) -> None:
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise VidinvertError("no edit prompt given", "give one or more edit prompts")


# Errors of a request name the CLI's flags (the batch's keys and the page's fields are named after them): a settings
# field's flag is ``--`` and its name with dashes, except these.
FLAGS = {"skip_start": "--skip-frames-start", "skip_end": "--skip-frames-end", "stride": "--frame-sample-step",
         "max_frames": "--max-num-frames", "prompt": "--source-prompt", "guidance": "--inversion-guidance",
         "method": "--inversion", "depth": "--edit-fraction", "record_kv": "--reuse-kv", "overlap": "--overlap-fraction",
         "negative_prompt": "the inversion's negative prompt"}
# InvertSettings fields that say how an inversion runs, not what it makes: nothing to apply, nor to contradict, in a
# job that runs none (a batch passes them to every clip, whether it reuses an inversion or not)
RUN_ONLY = ("kv_budget_gb", "checkpoint_every", "trajectory_device")
FIXED_POINT_ONLY = ("tol", "max_iter", "clean_max_iter", "anderson")  # the fixed-point solver's own options
# InvertSettings fields a saved inversion is checked against on their own: its steps, its windows, the edit strength
# (``--edit-fraction`` is then the edit's alone) and key/value reuse (caches are never saved)
SAVED_OWN_CHECKS = ("steps", "depth", "window", "overlap", "record_kv")
# InvertSettings fields FlowEdit reads (its schedule, the source's description, the windows); the others shape an
# inversion, which FlowEdit does not make
FLOWEDIT_READS = ("steps", "prompt", "window", "overlap")
FLOW_FAMILIES = ("wan",)  # families whose models are flow-matching (FlowEdit needs one; K-RNR does not apply)
_UNRECORDED = object()


def flag(name: str) -> str:
    """The CLI flag of the settings field ``name``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _flag_value(name: str, value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return repr(value) if name in ("prompt", "negative_prompt") else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def changed_fields(settings, skip: tuple[str, ...] = ()) -> list[str]:
    """Fields of a settings dataclass that differ from the class's defaults (those in ``skip`` left out)."""
    defaults = field_defaults(type(settings))
    return [f.name for f in dataclasses.fields(settings)
            if f.name not in skip and getattr(settings, f.name) != defaults[f.name]]


def family_before_loading(settings: ModelSettings | None) -> str | None:
    """The family of the model ``settings`` names, where it is known without loading it (``registry.family_named``);
    ``None`` without settings."""
    from ..models.registry import family_named

    return None if settings is None else family_named(settings.name)


def family_defaults(model: VideoFamily, read: ReadSettings | None = None,
                    invert_settings: InvertSettings | None = None, config: EditConfig | None = None,
                    notes: list[str] | None = None, *, inverting: bool = True) -> tuple:
    """``(read, invert_settings, config)`` with what was left to the model filled in from its family adapter: the
    temporal windows the model recommends (``model.recommended_invert``), the frames read (``max_frames`` ``None``
    -> ``model.default_frames``; a job in temporal windows reads every frame), the negative prompt (``None`` ->
    ``model.default_negative_prompt``) and the edit settings the model recommends for the edit's method
    (``settings.with_model_edit_defaults``). What a job runs with and records; ``None`` arguments stay ``None``.
    The recommendations taken are named in one note (to ``notes``); ``inverting`` False: the job edits a saved
    inversion, which brings its own windows."""
    taken = []
    recommended_window = model.recommended_invert.get("window")
    if inverting and invert_settings is not None and invert_settings.window is None and recommended_window is not None:
        invert_settings = dataclasses.replace(invert_settings, window=recommended_window)
        taken.append(f"window {recommended_window} (a clip longer than its trained {model.trained_frames} frames "
                     "runs in temporal windows; --window off for one)")
    windowed_job = invert_settings is not None and invert_settings.window not in (None, WINDOW_OFF)
    if read is not None and read.max_frames is None and not windowed_job:  # a windowed job reads every frame
        read = dataclasses.replace(read, max_frames=model.default_frames)
    if invert_settings is not None and invert_settings.negative_prompt is None:
        invert_settings = dataclasses.replace(invert_settings,
                                              negative_prompt=negative_prompt_for(model, None))
    if config is not None:
        config = with_model_guidance(config, model.default_guidance)
    if config is not None and config.negative_prompt is None:
        config = dataclasses.replace(config, negative_prompt=negative_prompt_for(model, None))
    if config is not None:
        filled = with_model_edit_defaults(config, model.recommended_edit)
        if config.method == "inversion":
            taken += [f"{key.replace('_', ' ')} {_shown(value)}" for key, value in model.recommended_edit.items()
                      if _edit_value(filled, key) != _edit_value(config, key)]
        config = filled
    if taken and notes is not None:
        notes.append(f"this model's recommended settings are used where none are given: {', '.join(taken)} (from "
                     f"its {MODEL_SETTINGS_FILE}; any value you set wins)")
    return read, invert_settings, config


def _edit_value(config: EditConfig, key: str):
    """A recommendable edit setting's value (``settings.MODEL_EDIT_DEFAULTS`` key) in ``config``."""
    return config.blend.enabled if key == "blend" else getattr(config.injection, key)


def _shown(value) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}"


def check_edit_request(video: str, prompts: list[str], read: ReadSettings, invert_settings: InvertSettings,
                       config: EditConfig, use_inversion: str | None = None, *, save_inversion: str | None = None,
                       reconstruct: bool = False, steps_given: bool = True,
                       model_settings: ModelSettings | None = None) -> Inversion | None:
    """One-line errors for an edit that cannot work or would ignore a setting, found before any model work: the
    request check of every front end's edit (``run_edit``, hence the CLI and the batch; the page), for both edit
    methods. Settings that need the model (injection blocks, a ``--window auto`` against a saved inversion) are
    checked once it is loaded, before the video is inverted (``check_model_fits``, ``check_saved_windows``).

    Args:
        use_inversion: a saved inversion of ``video`` to edit (as a ``video`` ending in ``.inv`` is one).
        steps_given: whether ``invert_settings.steps`` was asked for (a saved inversion brings its own otherwise).
        model_settings: the model the job will open, for what its family rules out (``None``: not checked here).

    Returns:
        The saved inversion the job edits, loaded and checked against the request (``None`` when the job inverts
        the video or runs FlowEdit); pass it on to ``load_saved``.
    """
    check_prompts(prompts)
    if invert_settings.window in (None, WINDOW_OFF) and invert_settings.overlap != DEFAULT_OVERLAP:
        raise SettingsError("--overlap-fraction applies to temporal windows, and no --window is given",
                            "give --window too, or drop --overlap-fraction")
    family = family_before_loading(model_settings)
    if config.method == "flowedit":
        check_flowedit_request(video, config, use_inversion, save_inversion, reconstruct)
        shaping = changed_fields(invert_settings, FLOWEDIT_READS + RUN_ONLY)
        if shaping:
            names = [flag(name) for name in shaping]
            raise SettingsError(f"{_listed(names)} {'does' if len(names) == 1 else 'do'} not apply to FlowEdit, which "
                                "makes no inversion", "drop them, or use --method inversion")
        config.flowedit.editing_steps(invert_settings.steps)  # n_max/n_min against the steps
        if family is not None and family not in FLOW_FAMILIES:
            raise VidinvertError("FlowEdit needs a flow-matching model (Wan)",
                                 "use --method inversion with this model, or a Wan model")
        return None
    if is_saved_inversion(video) and use_inversion is not None:
        raise VidinvertError("the video is itself a saved inversion (.inv) and --use-inversion names another",
                             "give the video with --use-inversion, or the .inv file alone")
    saved = video if is_saved_inversion(video) else use_inversion
    if config.injection.reuse_kv and saved:
        raise VidinvertError("--reuse-kv needs an inversion made in this run (recorded keys/values are not saved)",
                             "edit the video itself, or drop --reuse-kv")
    if config.krnr is not None and family is not None:
        refuse_on_flow(family in FLOW_FAMILIES)
    if saved is None:
        check_solver_options(invert_settings)
        return None
    inversion = Inversion.load(saved)
    check_saved_request(inversion, read, invert_settings, config, steps_given)
    return inversion


def check_solver_options(invert_settings: InvertSettings) -> None:
    """The fixed-point solver's options with another inversion method would be silently ignored: refused."""
    if invert_settings.method == "fixed-point":
        return
    given = [flag(name) for name in changed_fields(invert_settings) if name in FIXED_POINT_ONLY]
    if given:
        raise SettingsError(f"{_listed(given)} only {'applies' if len(given) == 1 else 'apply'} to --inversion "
                            f"fixed-point, and the inversion is {invert_settings.method}",
                            f"add --inversion fixed-point, or drop {'it' if len(given) == 1 else 'them'}")


def check_flowedit_request(video: str, config: EditConfig, use_inversion: str | None, save_inversion: str | None,
                           reconstruct: bool) -> None:
    """One-line errors for a FlowEdit job that cannot work, found without loading anything (part of
    ``check_edit_request``, which also checks the settings)."""
    if reconstruct:
        raise VidinvertError("reconstruct checks an inversion; FlowEdit makes none", "use --method inversion")
    if is_saved_inversion(video) or use_inversion is not None or save_inversion is not None:
        raise VidinvertError("FlowEdit edits the video itself and neither reads nor writes a saved inversion (.inv)",
                             "give the video file and drop --use-inversion/--save-inversion, or use --method inversion")


def _recorded(meta: InversionMeta, group: str, name: str):
    """What a saved inversion's header records for the field ``name`` of ``ReadSettings`` (``group == "read"``) or
    ``InvertSettings``; ``_UNRECORDED`` where it records nothing."""
    if group == "read":
        if name in ("height", "width"):
            return getattr(meta, name)  # the size read, asked for or the model's
        return _UNRECORDED if meta.read is None else getattr(meta.read, name)
    value = getattr(meta, name, _UNRECORDED)
    return _UNRECORDED if value is None and meta.method != "ddim" else value  # None: DDIM's, or an older file's


def check_saved_request(inversion: Inversion, read: ReadSettings, invert_settings: InvertSettings,
                        config: EditConfig, steps_given: bool = True) -> None:
    """Refuse, in one line naming the flags, what a saved inversion's edit cannot apply: a frame or inversion setting
    (any ``ReadSettings``/``InvertSettings`` field but ``RUN_ONLY``) set to something other than its default and than
    what the inversion's header records; another step count, windows or an edit strength deeper than the inversion.
    Settings equal to the recorded ones are fine (a batch passes a reused inversion's own settings)."""
    meta = inversion.meta
    if steps_given:
        inversion.check_matches(num_steps=invert_settings.steps)
    asked_size = {name: getattr(meta.read, name) for name in ("height", "width")} if meta.read else {}
    conflicts = [("read", name) for name in changed_fields(read)  # a size: as asked, or as read (rounded)
                 if getattr(read, name) not in (_recorded(meta, "read", name), asked_size.get(name, _UNRECORDED))]
    conflicts += [("invert", name) for name in changed_fields(invert_settings, SAVED_OWN_CHECKS + RUN_ONLY)
                  if _recorded(meta, "invert", name) != getattr(invert_settings, name)]
    if conflicts:
        names = [flag(name) for _, name in conflicts]
        made, unknown = [], []
        for group, name in conflicts:
            value = _recorded(meta, group, name)
            if value is _UNRECORDED:
                unknown.append(flag(name))
            elif value is None:  # a fixed-point setting of a DDIM inversion
                made.append(f"--inversion {meta.method}")
            else:
                made.append(f"{flag(name)} {_flag_value(name, value)}")
        said = [f"it was made with {_listed(list(dict.fromkeys(made)))}"] if made else []
        said += [f"its header records no {_listed(unknown)}"] if unknown else []
        them = "it" if len(names) == 1 else "them"
        hint = (" (--blend-source sets the text --blend compares the edit with)"
                if config.blend.enabled and ("invert", "prompt") in conflicts else "")
        raise SettingsError(f"{_listed(names)} {'does' if len(names) == 1 else 'do'} not apply to a saved inversion "
                            f"({'; '.join(said)})", f"drop {them}, or invert the video again with {them}{hint}")
    window = invert_settings.window
    frames = meta.latent_shape[1]
    if window not in (None, "auto") and spread(frames, frames if window == WINDOW_OFF else window,
                                               invert_settings.overlap) != inversion.windows():  # auto: the model's
        raise _windows_refusal(inversion, invert_settings)
    edit_offset(inversion, config.strength)  # an edit strength deeper than the inversion


def _windows_refusal(inversion: Inversion, settings: InvertSettings) -> VidinvertError:
    meta = inversion.meta
    asked = f"--window {settings.window}" + (f" --overlap-fraction {settings.overlap:g}" if settings.overlap != DEFAULT_OVERLAP
                                             else "")
    made = (f"windows of {meta.window} latent frames overlapping by {meta.window_overlap}" if meta.window
            else "one window, the whole clip")
    return SettingsError(f"{asked} does not match the saved inversion's windows ({made})",
                         "drop --window (edits use the inversion's), or invert the video again")


def check_saved_windows(model: VideoFamily, inversion: Inversion, settings: InvertSettings) -> None:
    """A window asked for with a saved inversion must be the one it was inverted in (its edits use that one)."""
    if settings.window is None:
        return
    wanted = resolve_windows(model, inversion.meta.latent_shape[1], settings.window, settings.overlap)
    if wanted != inversion.windows():
        raise _windows_refusal(inversion, settings)


def check_model_fits(model: VideoFamily, config: EditConfig) -> None:
    """Settings that depend on the model, checked before inverting (what ``check_edit_request`` could not tell from
    the model's name)."""
    refuse_on_flow(config.krnr is not None and model.schedule(1).is_flow)
    blocks = config.injection.blocks
    if config.injection.enabled and blocks is not None and blocks[-1] >= model.num_blocks:
        raise VidinvertError(f"injection blocks must be in 0..{model.num_blocks - 1} for this model, got "
                             f"{blocks[-1]}", f"use blocks between 0 and {model.num_blocks - 1}")


def plan_edit_outputs(stem: str, count: int, output: OutputSettings, kind: str, inputs: list[Path],
                      extra: list[Path] = ()) -> tuple[list[Path], list[Path]]:
    """``(videos, comparisons)`` for ``count`` prompts, every path (and its settings JSON) checked."""
    main = Path(output.output) if output.output else Path(output.output_dir) / f"{stem}_{kind}.mp4"
    videos = numbered(main, count)
    for path in videos:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise VidinvertError(f"cannot write {path.name}", f"use an output ending in {', '.join(VIDEO_SUFFIXES)}")
    comparisons = [comparison_path(v) for v in videos] if output.comparison else []
    plan_outputs(videos + comparisons + [settings_path(v) for v in videos] + list(extra), output.force, inputs)
    return videos, comparisons
