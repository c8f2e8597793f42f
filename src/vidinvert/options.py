"""The options table: every user-facing option declared once, and the one mapping of option values onto settings.

Each ``Option`` names its key (a batch row's key, the flag without dashes, the page's form key with ``_``), its
kind, default, range of choices, help, group, the commands that take it and, when the page shows it, its label
there. The CLI's argparse (``cli.py``), the batch's row keys (``batch/jobfile.py``) and the page's labels
(``web/form.py``) are generated from this table; ``settings_from_values`` turns one set of option values (from
any front end) into the settings dataclasses of ``settings.py``, where the defaults and checks live.

Adding an option is one ``Option(...)`` line here plus the code that uses its value (usually one keyword in
``settings_from_values``). A default of ``None`` means "the settings' or the model's own" and the help says which.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import SettingsError
from .settings import (
    DEFAULT_GUIDANCE,
    DTYPE_CHOICES,
    EDIT_METHODS,
    GROUP_OFFLOAD_MODES,
    LAYERWISE_CASTING_MODES,
    METHODS,
    OFFLOAD_MODES,
    INJECTION_KINDS,
    REFERENCE_TEXT_MODES,
    RESIZE_MODES,
    STARTS,
    BlendConfig,
    EditConfig,
    FlowEditConfig,
    InjectionConfig,
    InvertSettings,
    ModelSettings,
    OutputSettings,
    ReadSettings,
    RegionConfig,
    parse_blocks,
    parse_box,
    resolve_strength,
)

# Commands. JOBS run a model on a clip; BATCH_ROW: a batch job file's row (and ``vidinvert batch``'s own defaults).
INVERT, EDIT, RECONSTRUCT, BATCH, INFO, SERVE = "invert", "edit", "reconstruct", "batch", "info", "serve"
PLAN = "plan"  # takes every option of edit (``for_command``), plus its own
JOBS = frozenset({INVERT, EDIT, RECONSTRUCT, BATCH})
EDITS = frozenset({EDIT, RECONSTRUCT, BATCH})
MODEL_COMMANDS = JOBS | {INFO, SERVE}
KINDS = ("int", "float", "text", "choice", "switch", "toggle", "list")  # switch: a flag; toggle: --x / --no-x
EDIT_GUIDANCE, RECONSTRUCT_GUIDANCE = DEFAULT_GUIDANCE, 1.0  # reconstruction checks fidelity, so no guidance
WHAT = {INVERT: "inversion (.inv)", EDIT: "edited video", RECONSTRUCT: "reconstructed video"}  # -o's help
ALL = "all"  # rows per call: every row in one call


@dataclass(frozen=True)
class Option:
    """One user-facing option.

    Args:
        key: its name in a batch row and, with dashes, its flag (``"injection-blocks"`` -> ``--injection-blocks``).
        kind: ``int``, ``float``, ``text``, ``choice`` (one of ``choices``), ``switch`` (a flag: on when given),
            ``toggle`` (``--x`` / ``--no-x``, unset by default) or ``list`` (repeatable).
        default: the value when not given (``None``: the settings' or the model's own, which the help names).
        help: one line for ``--help``; ``%(default)s`` shows the default.
        group: the titled group of ``--help`` (and the page's panel).
        commands: the commands that take it (``batch`` also means a job file's row may set it, unless ``row``
            is False).
        choices: the values a ``choice`` takes.
        label: the page's field label (``None``: not on the page).
        setting: how ``settings.py``'s messages name the setting (one name or several), so a front end can name
            its own field instead.
        aliases: further flags (older or the public script's spellings).
        parse: text -> value for kinds argparse cannot read alone (``rows-per-call``).
        metavar: the value's name in ``--help``.
        required: the command cannot run without it.
        positional: an argument, not a flag (``video``, ``jobs``).
        row: a batch row may set it (for ``batch`` options: False for the runner's own, such as ``workers``).
        command_defaults: ``((command, default), ...)`` where a command's default differs.
        deprecated: older keys still read for one release, each with a note naming the new one (``strength``).
    """

    key: str
    kind: str
    default: Any = None
    help: str = ""
    group: str = "editing"
    commands: frozenset = JOBS
    choices: tuple = ()
    label: str | None = None
    setting: str | tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    required: bool = False
    positional: bool = False
    row: bool = True
    command_defaults: tuple = ()
    deprecated: tuple[str, ...] = ()

    def __post_init__(self):
        assert self.kind in KINDS, self.kind
        assert not self.choices or self.kind == "choice", self.key

    @property
    def dest(self) -> str:
        """Its attribute name on the parsed arguments (and the page's form key)."""
        return self.key.replace("-", "_")

    @property
    def setting_names(self) -> tuple[str, ...]:
        return () if self.setting is None else (self.setting,) if isinstance(self.setting, str) else self.setting

    @property
    def flag(self) -> str:
        return self.key if self.positional else f"--{self.key}"

    def default_for(self, command: str) -> Any:
        return dict(self.command_defaults).get(command, self.default)

    def value(self, raw, where: str) -> Any:
        """A value as a batch row or a library caller gives it (JSON types or text) -> this option's value, checked
        for its kind; ``where`` names it in the error (``"option steps"``)."""
        if raw is None or raw == "":
            return None
        if self.kind in ("switch", "toggle"):
            if isinstance(raw, str) and raw.strip().lower() in TRUE + FALSE:
                return raw.strip().lower() in TRUE
            if not isinstance(raw, bool):
                raise SettingsError(f"{where} is a switch, got {json.dumps(raw)}", "use true or false")
            return raw
        if isinstance(raw, (dict, bool)):
            raise SettingsError(f"{where} takes a value, got {json.dumps(raw)}", "give a number or text")
        if self.kind == "list":
            return [str(v) for v in (raw if isinstance(raw, list) else [raw])]
        if isinstance(raw, list):  # [0, 2] -> "0,2" (injection blocks)
            raw = ",".join(str(v) for v in raw)
        text = str(raw).strip() if not isinstance(raw, str) else raw
        if self.parse is not None:
            return self.parse(text)
        if self.kind == "int":
            try:
                number = float(text)
            except ValueError:
                raise SettingsError(f"{where} must be a whole number, got {text!r}") from None
            if not math.isfinite(number) or number != int(number):
                raise SettingsError(f"{where} must be a whole number, got {text!r}")
            return int(number)
        if self.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise SettingsError(f"{where} must be a number, got {text!r}") from None
        if self.kind == "choice" and text not in self.choices:
            raise SettingsError(f"{where} must be one of {', '.join(self.choices)}, got {text!r}")
        return text


TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def memory_size(text: str) -> int:
    """``--device-memory``: ``24GB``, ``80GiB``, ``1TiB``, ``512MB`` or a number of bytes -> bytes (GB = 10^9,
    GiB = 2^30)."""
    units = {"tib": 2**40, "tb": 10**12, "gib": 2**30, "gb": 10**9, "mib": 2**20, "mb": 10**6, "b": 1, "": 1}
    text = str(text).strip()
    number = text.rstrip("BbGgMmTtIi ")
    unit = text[len(number):].strip().lower()
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise SettingsError(f"device memory must be a size such as 24GB or 80GiB, got {text!r}", "use e.g. 24GB") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"device memory must be positive, got {text!r}", "use e.g. 24GB")
    return int(value)


def rows_per_call(text: str):
    """``--rows-per-call``: a count >= 1, ``auto`` or ``all`` (``None``: one call of every row)."""
    text = str(text).strip()
    if text in ("auto", ALL):
        return None if text == ALL else text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"rows per call must be a count >= 1, 'all' or 'auto', got {text!r}", "use e.g. 2, or auto")
    return value


_R, _I, _E, _J, _B, _O, _M, _F, _G = (ReadSettings, InvertSettings, EditConfig, InjectionConfig, BlendConfig,
                                      OutputSettings, ModelSettings, FlowEditConfig, RegionConfig)
METRICS_HELP = ("measure each output against the source frames (optical flow): warp error along the source's motion "
                "(0-1 of full scale), motion error against the source's flow (px) and window-seam score; printed and "
                "saved in the settings JSON under result.metrics (reconstruct always measures them)")
O = Option
OPTIONS: tuple[Option, ...] = (
    # ---- what runs on what (per command) ----
    O("video", "text", None, "input video, or saved inversion (.inv) for edit and reconstruct (default: the bundled "
      "sample)", "input", JOBS - {BATCH}, positional=True),
    O("jobs", "text", None, "job file: .jsonl (one JSON object per line) or .csv; each row a 'video', its 'prompts' "
      "(a list, or one 'prompt'; in CSV split on '|'), an optional 'id' (its output folder) and any per-clip option "
      "below, named as its flag", "input", frozenset({BATCH}), positional=True, required=True, row=False),
    O("prompt", "list", None, "edit prompt; repeat for several edits from one inversion, run in one batch "
      "(optional with --first-frame: the source prompt)", "input", frozenset({EDIT}),
      label="Edit prompts (one per line)"),
    O("first-frame", "list", None, "an edited first frame (PNG/JPEG) for an image-to-video model (--model demo-i2v, "
      "CogVideoX-5b-I2V, Wan I2V): the clip is regenerated to follow it, keeping the source's motion; repeat for "
      "several (one per prompt, or one prompt for all); fitted to the clip's size by --resize", "input",
      frozenset({EDIT, BATCH}), metavar="IMAGE", setting="first frame", label="Edited first frame"),
    O("prompt", "text", None, "prompt to regenerate with (default: the --source-prompt; a saved inversion's own)",
      "input", frozenset({RECONSTRUCT})),
    O("save-inversion", "text", None, "also save the inversion made from the video (.inv)", "input",
      frozenset({EDIT, RECONSTRUCT})),
    O("use-inversion", "text", None, "start from this saved inversion (.inv) instead of inverting VIDEO again; "
      "refused if it was made from other frames, another model or another step count", "input",
      frozenset({EDIT, RECONSTRUCT})),
    # ---- model ----
    O("model", "text", _M.name, "pipeline folder or hub id (THUDM/CogVideoX-5b, Wan-AI/Wan2.1-T2V-1.3B-Diffusers); "
      "default: 'demo', the bundled demo CogVideoX ('demo-wan' = the bundled demo Wan; 'demo-i2v' = the bundled "
      "image-to-video demo, for --first-frame; 'tiny', 'tiny-2b', 'tiny-1.5', 'tiny-i2v', 'tiny-i2v-1.5', 'tiny-wan', "
      "'tiny-wan22', 'tiny-wan22-5b', 'tiny-wan-i2v', 'tiny-wan22-i2v' = tiny random models)", "model", MODEL_COMMANDS,
      aliases=("--model-path",), setting="model name"),
    O("dtype", "choice", _M.dtype, "model dtype; auto = bf16 on CUDA, fp32 on CPU (latents stay fp32 in the sampler)",
      "model", MODEL_COMMANDS, DTYPE_CHOICES, setting="dtype"),
    O("device", "text", _M.device, "cpu, cuda, cuda:N or auto (default)", "model", MODEL_COMMANDS, setting="device"),
    O("cpu-offload", "choice", _M.cpu_offload, "keep models on the CPU until used: model (small slowdown) or "
      "sequential (least memory)", "model", MODEL_COMMANDS, OFFLOAD_MODES, setting="cpu offload mode"),
    O("vae-tiling", "switch", False, "encode/decode in tiles (less memory for large frames)", "model",
      MODEL_COMMANDS),
    O("vae-slicing", "switch", False, "decode one video of a batch at a time", "model", MODEL_COMMANDS),
    O("group-offload", "choice", _M.group_offload, "keep the weights on the CPU and move them to the device a group "
      "at a time as they run (diffusers' group offloading, every model of the pipeline): block (groups of "
      "--group-offload-blocks blocks) or leaf (layer by layer, least memory); overlapped with CUDA streams on CUDA "
      "(leaf, or one block per group); not with --cpu-offload", "model", MODEL_COMMANDS, GROUP_OFFLOAD_MODES,
      setting="group offload mode"),
    O("group-offload-blocks", "int", _M.group_offload_blocks, "blocks per group with --group-offload block "
      "(%(default)s)", "model", MODEL_COMMANDS, metavar="N", setting="group offload blocks"),
    O("layerwise-casting", "choice", _M.layerwise_casting, "store the transformer's weights in fp8 (half of bf16's "
      "memory) and cast each layer to --dtype as it runs (diffusers' layerwise casting; norms and embeddings stay "
      "in --dtype); small quality cost", "model", MODEL_COMMANDS, LAYERWISE_CASTING_MODES,
      setting="layerwise casting"),
    O("attention-backend", "text", _M.attention_backend, "diffusers' attention backend, e.g. flash, sage, "
      "_native_cudnn (default: diffusers' own, native PyTorch SDPA); an unusable one is refused with the list of "
      "usable ones", "model", MODEL_COMMANDS, metavar="NAME", setting="attention backend"),
    O("lora", "list", None, "load a LoRA onto the transformer (Wan 2.2 A14B: the high-noise expert) at SCALE "
      "(default 1); repeatable", "model", MODEL_COMMANDS, metavar="PATH[:SCALE]", setting="LoRA"),
    O("lora-2", "list", None, "Wan 2.2 A14B: load a LoRA onto the second (low-noise) expert; repeatable", "model",
      MODEL_COMMANDS, metavar="PATH[:SCALE]", setting="LoRA 2 (second expert)"),
    # ---- frames ----
    O("skip-frames-start", "int", _R.skip_start, "frames dropped from the start", "frames", label="Skip start",
      setting="frames skipped at the start"),
    O("skip-frames-end", "int", _R.skip_end, "frames dropped from the end", "frames", label="Skip end",
      setting="frames skipped at the end"),
    O("frame-sample-step", "int", _R.stride, "take every n-th frame (default: only when the clip is longer than "
      "--max-num-frames)", "frames", label="Stride", setting="frame stride"),
    O("max-num-frames", "int", None, "most frames used, then trimmed to the model's rule (4k+1) (default: the "
      "model's published length: 49 for CogVideoX, 81 for CogVideoX 1.5 and Wan, 121 for Wan 2.2 TI2V-5B; with "
      "--window: every frame)", "frames", label="Max frames",
      setting="max frames"),
    O("height", "int", _R.height, "frame height, a multiple of the model's pixels per token (16 for published CogVideoX "
      "and Wan, 8 for the demo models) (default: the model's)", "frames", label="Height",
      setting="height"),
    O("width", "int", _R.width, "frame width, a multiple of the model's pixels per token (default: the model's)", "frames", label="Width",
      setting="width"),
    O("resize", "choice", _R.resize, "stretch straight to size (as the reference) or cover and centre-crop (keeps "
      "aspect)", "frames", choices=RESIZE_MODES, label="Resize", setting="resize mode"),
    # ---- inversion ----
    O("steps", "int", None, f"sampling steps ({_I.steps}; a saved inversion brings its own, and another value is "
      "refused)", "inversion", aliases=("--num-inference-steps",), label="Steps", setting="steps"),
    O("inversion", "choice", _I.method, "ddim: 1 evaluation/step, approximate (DDIM; on flow-matching models "
      "such as Wan the Euler step, and summaries say euler); fixed-point: each step solved (2.4-4.4 evaluations/step)", "inversion", choices=METHODS, label="Method", setting="inversion method"),
    O("source-prompt", "text", _I.prompt, "text the video is inverted with (default: empty)", "inversion",
      label="Source prompt"),
    O("inversion-guidance", "float", _I.guidance, "guidance while inverting (1 = none; only matters with a "
      "--source-prompt)", "inversion", label="Inversion guidance", setting="inversion guidance"),
    O("inversion-fraction", "float", None, "fraction of the schedule inverted, from the clean end (1 = down to pure "
      "noise; an edit from this inversion re-samples the same fraction) (default 1)", "inversion",
      frozenset({INVERT}), setting="inversion depth (fraction)", deprecated=("strength",)),
    O("edit-fraction", "float", None, "fraction of the schedule the edit re-samples, from the clean end (1 = from "
      "pure noise); the inversion goes as deep as the edit needs (default 1; 0.95 with --krnr, whose inversion runs "
      "in full)", "editing", EDITS, label="Edit fraction", setting=("inversion depth (fraction)", "edit fraction"),
      deprecated=("strength",)),
    O("tol", "float", _I.tol, "fixed-point: per-step relative residual (%(default)s)", "inversion",
      setting="fixed-point tolerance"),
    O("max-iter", "int", _I.max_iter, "fixed-point: evaluations allowed per step (%(default)s)", "inversion",
      setting="fixed-point iterations"),
    O("clean-max-iter", "int", _I.clean_max_iter, "fixed-point: evaluations allowed for the clean-end step, the one "
      "that bounds the round trip on trained weights (default: --max-iter; e.g. 16)", "inversion",
      setting="clean-end iterations"),
    O("split-clean-end", "choice", "auto", "cut the schedule's last step in two (one more step; edits follow): auto "
      "= for fixed-point, whose round trip on trained weights is bounded by that step", "inversion",
      choices=("auto", "on", "off")),
    O("anderson", "int", _I.anderson, "fixed-point: Anderson acceleration history (0 = off)", "inversion",
      setting="Anderson history"),
    O("trajectory-device", "text", _I.trajectory_device, "where the stored trajectory lives, e.g. cpu to spare GPU "
      "memory (default: the model's)", "inversion"),
    O("checkpoint-every", "int", _I.checkpoint_every, "save the inverted steps every N steps to <output>.partial; "
      "rerunning the same command after an interruption resumes from it (0 = off)", "inversion",
      setting="checkpoint interval"),
    O("window", "text", _I.window, "edit a long clip (also with FlowEdit) in temporal windows of this many latent "
      "frames, blended where they overlap: auto = the model's trained length (13 for CogVideoX, 21 for Wan, 31 "
      "for Wan 2.2 TI2V-5B; a multiple of its temporal patch: 20 for CogVideoX 1.5); off = the clip in one window; reads every frame "
      "unless --max-num-frames is given (default: the model's recommendation, auto for the demo models; else off)",
      "inversion", label="Window",
      setting=("window (latent frames)", "window")),
    O("overlap-fraction", "float", _I.overlap, "fraction of a window its neighbours overlap, below 1 (rounded down to "
      "whole latent frames, at least one) (%(default)s)", "inversion", label="Window overlap fraction",
      setting="window overlap", deprecated=("overlap",)),
    # ---- editing ----
    O("guidance", "float", None, "classifier-free guidance scale (default: the model's published scale: 5 for Wan "
      f"14B and TI2V-5B, 4 for A14B, {EDIT_GUIDANCE:g} for others)", "editing", EDITS,
      aliases=("--guidance-scale",), label="Guidance", setting="guidance",
      command_defaults=((RECONSTRUCT, RECONSTRUCT_GUIDANCE),)),
    O("guidance-2", "float", None, "Wan 2.2 A14B: guidance of the low-noise expert (default: --guidance)", "editing",
      EDITS, label="Guidance 2 (low-noise expert)", setting="second guidance"),
    O("negative-prompt", "text", _E.negative_prompt, "text of the unconditional branch (default: the model's: none "
      "for CogVideoX and small models, Wan's published negative prompt for Wan weights with Wan's tokenizer; '' for "
      "none)", "editing", EDITS, label="Negative prompt"),
    O("start", "choice", _E.start, "start from the inverted noise, or from fresh noise drawn from --seed (the "
      "reference)", "editing", EDITS, STARTS, label="Start from", setting="start"),
    O("seed", "int", _E.seed, "seed of the random start (%(default)s)", "editing", EDITS, label="Seed",
      setting="seed"),
    O("dynamic-guidance", "switch", False, "CogVideoX's dynamic guidance schedule", "editing", EDITS,
      label="Dynamic guidance"),
    O("method", "choice", _E.method, "inversion: invert, then re-sample with key/value injection (default); "
      "flowedit: FlowEdit (Kulikov et al. 2024), no inversion, flow-matching models (Wan) only; it edits from "
      "--source-prompt towards each --prompt with --guidance as the target scale", "editing", EDITS, EDIT_METHODS,
      label="Edit method", setting="edit method"),
    O("rows-per-call", "text", _E.rows_per_call, "main rows per transformer call after the shared reference row: a "
      "number, 'all' (one call of every row) or 'auto' (default: 2 on the CPU for large rows, where small calls are "
      "faster; all for small rows and on GPUs)", "advanced", EDITS, parse=rows_per_call),
    # ---- key/value injection ----
    O("injection", "choice", "on", "let the edit attend to the source's keys/values (keeps structure and motion)",
      "injection", EDITS, ("on", "off"), label="Key/value injection"),
    O("injection-kind", "choice", _J.kind, "what the source gives the edit: keys-values (the edit also attends to "
      "the source's keys/values: keeps layout and colours), attention-map (the edit takes the source's attention "
      "weights over its own values: keeps layout and motion, colours follow the edit; --reference-weight does not "
      "apply), auto (attention-map with --first-frame, else keys-values)", "injection", EDITS, INJECTION_KINDS,
      label="Injection kind", setting="injection kind"),
    O("injection-fraction", "float", _J.step_fraction, "fraction of steps, from the noisiest, that inject (1 = all) "
      "(default: 1; 0.8 with --first-frame, where the last steps follow the edited frame alone)",
      "injection", EDITS, label="Injection fraction", setting="injection step fraction",
      deprecated=("injection-steps",)),
    O("injection-blocks", "text", None, "comma-separated block indices that inject, e.g. 0-9,20 (default: all)",
      "injection", EDITS),
    O("reference-text", "choice", _J.reference_text, "what the reference branch reads: the inversion prompt "
      "(default, one shared row) or the edit prompt (the public script's layout, one row per guidance branch)",
      "injection", EDITS, REFERENCE_TEXT_MODES, setting="reference text"),
    O("reference-weight", "float", _J.reference_weight, "how much more the edit attends to the source's tokens than "
      "to its own (default: the model's recommendation, else 1 = plain; e.g. 8 keeps the layout closer and changes "
      "less, 0.3 lets the colour change more)", "injection", EDITS, label="Reference weight",
      setting="reference weight"),
    O("reference-weight-fraction", "float", _J.reference_weight_fraction, "fraction of steps, from the noisiest, "
      "that use --reference-weight (e.g. 0.6)", "injection", EDITS, setting="reference weight step fraction",
      deprecated=("reference-weight-steps",)),
    O("reference-compatible", "switch", False, "reproduce the public CogVideo script's edit: --reference-text edit "
      "and --start random", "injection", EDITS),
    O("reuse-kv", "switch", False, "record the reference keys/values while inverting and reuse them instead of "
      "evaluating the reference branch (exact with --inversion fixed-point; approximate with ddim)", "injection",
      EDITS),
    O("kv-budget-gb", "float", _I.kv_budget_gb, "memory allowed for recorded keys/values; over it, nothing is "
      "recorded (%(default)s)", "advanced", EDITS, setting="key/value budget (GB)"),
    # ---- K-RNR ----
    O("krnr", "int", _E.krnr, "start from the K-order recursive noise representation of the clean latent and the "
      "inverted noise at the --edit-fraction step (K-RNR, Yesiltepe & Yanardag 2025; e.g. 2)", "editing", EDITS,
      metavar="K", setting="K-RNR order"),
    O("krnr-adaptive", "switch", False, "the authors' adaptive K-RNR (moment-matched to order 2, which it equals)",
      "editing", EDITS),
    # ---- FlowEdit ----
    O("n-max", "int", _F.n_max, "FlowEdit: steps, from the clean end, that edit (default: 33/50 of --steps)",
      "flowedit", EDITS, label="FlowEdit n_max", setting="FlowEdit n_max"),
    O("n-min", "int", _F.n_min, "FlowEdit: last steps run as plain sampling of the target (%(default)s)",
      "flowedit", EDITS, label="FlowEdit n_min", setting="FlowEdit n_min"),
    O("source-guidance", "float", _F.source_guidance, "FlowEdit: guidance of the source prompt's velocity "
      "(%(default)s)", "flowedit", EDITS, label="Source guidance", setting="FlowEdit source guidance"),
    O("n-avg", "int", _F.n_avg, "FlowEdit: noise draws averaged per step (%(default)s)", "flowedit", EDITS,
      setting="FlowEdit noise draws per step"),
    # ---- local blend ----
    O("blend", "toggle", _B.enabled, "local blend: edit only where the edit prompt and a description of the source "
      "disagree (DiffEdit-style mask); everywhere else the latents are put back to the source's (default: the "
      "model's recommendation, else off)", "blend", EDITS, label="Local blend"),
    O("blend-source", "text", _B.source_prompt, "what the video shows, for --blend's mask (default: the "
      "--source-prompt it was inverted with, else the empty text)", "blend", EDITS,
      label="Blend: what the video shows"),
    O("blend-threshold-fraction", "float", _B.threshold, "fraction of a frame's largest disagreement above which it is "
      "edited (%(default)s)", "blend", EDITS, setting="blend threshold",
      deprecated=("blend-threshold",)),
    O("blend-grow", "int", _B.grow, "latent pixels the blend mask is dilated by (0)", "blend", EDITS,
      setting="blend grow"),
    O("blend-fraction", "float", _B.step_fraction, "fraction of steps, from the noisiest, that blend (1 = all)",
      "blend", EDITS, setting="blend step fraction", deprecated=("blend-steps",)),
    # ---- edit region ----
    O("mask", "text", _G.mask, "edit only inside this mask: an image (one mask for every frame), or a video or folder "
      "of images (one mask per frame of the source video, taken as the clip's frames are); white = may change, "
      "black = kept: outside it the result's latents are the source's", "region", frozenset({EDIT, BATCH}),
      metavar="PATH", setting="mask", label="Mask file"),
    O("box", "text", _G.box, "edit only inside this rectangle, in pixels of the source video's frames (a shorthand "
      "for a --mask)", "region", frozenset({EDIT, BATCH}), metavar="X0,Y0,X1,Y1", parse=parse_box, setting="box"),
    O("mask-grow", "int", _G.grow, "latent cells (the VAE's pixels per cell: 8 for published models, 4 for the demo "
      "models) the --mask or --box is dilated by, room for "
      "the edit at its edge (%(default)s: a cell already counts when any of its pixels is white)", "region",
      frozenset({EDIT, BATCH}), metavar="N", setting="mask grow", label="Mask grow"),
    O("paste-source", "choice", "on", "outside the --mask or --box, put the source video's own pixels back after "
      "decoding, feathered over one latent cell at the border (off: the VAE's decoding of the source's latents, "
      "which stay exact)", "region", frozenset({EDIT, BATCH}), ("on", "off"), setting="paste source",
      label="Paste the source outside the region"),
    O("save-mask", "text", _O.save_mask, "also write the --mask or --box as the model edits it (its latent grid, "
      "each cell as a block of pixels, one frame per frame of the clip) to this video", "region",
      frozenset({EDIT}), metavar="PATH", setting="mask video"),
    # ---- output ----
    O("output", "text", _O.output, "{what} path (default: <output-dir>/<video>_<kind>)", "output",
      JOBS - {BATCH}, aliases=("-o",), setting="output name"),
    O("output-dir", "text", _O.output_dir, "folder for outputs when -o is not given (%(default)s)", "output",
      JOBS - {BATCH}, aliases=("--output-path",)),
    O("fps", "float", _O.fps, "frame rate of written videos (default: the source's)", "output", JOBS,
      setting="fps"),
    O("no-comparison", "switch", False, "skip the side-by-side source|result video", "output", JOBS),
    O("force", "switch", False, "overwrite existing outputs", "output", JOBS - {BATCH}),
    O("metrics", "switch", False, METRICS_HELP, "output", EDITS, label="Temporal metrics"),
    O("quiet", "switch", False, "no progress bars or notes: only warnings and errors on stderr (the summary JSON "
      "still goes to stdout)", "output", JOBS, row=False),
    # ---- batch (the runner's own, not a row's) ----
    O("output-dir", "text", None, "folder for every clip's outputs (<output-dir>/<id>/), results.jsonl and the "
      "lock; on a cluster, a path every worker can write (a shared filesystem)", "batch", frozenset({BATCH}),
      required=True, row=False),
    O("workers", "int", 1, "workers, each holding a loaded model (1 = in this process, no Ray; more needs pip install "
      "'vidinvert[cluster]') (%(default)s)", "batch", frozenset({BATCH}), row=False),
    O("address", "text", None, "join a running Ray cluster: auto, or ray://host:10001 (default: start one here)",
      "batch", frozenset({BATCH}), row=False),
    O("gpus-per-worker", "float", None, "GPUs each worker holds (default: 1 when the cluster has GPUs, else 0: CPU "
      "workers)", "batch", frozenset({BATCH}), row=False),
    O("cpus-per-worker", "int", 1, "CPU cores (and torch threads) each worker holds (%(default)s)", "batch",
      frozenset({BATCH}), row=False),
    O("retries", "int", 2, "times a clip is retried on another worker when its worker dies (%(default)s)", "batch",
      frozenset({BATCH}), row=False),
    # ---- plan ----
    O("frames", "int", None, "plan for this many frames (trimmed to the model's rule) instead of reading VIDEO",
      "plan", frozenset({PLAN}), row=False),
    O("device-memory", "text", None, "memory the device has, e.g. 24GB or 80GiB (default: what this machine's device "
      "has free now)", "plan", frozenset({PLAN}), row=False, parse=memory_size, metavar="SIZE"),
    O("json", "switch", False, "print the plan as one JSON object (peak_bytes: the predicted peak of the whole job on "
      "its device)", "plan", frozenset({PLAN}), row=False),
    # ---- serve ----
    O("host", "text", "127.0.0.1", "address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it, no "
      "login)", "server", frozenset({SERVE})),
    O("port", "int", 7860, "port (%(default)s)", "server", frozenset({SERVE})),
    O("allowed-host", "list", [], "also accept requests that name this server NAME (a DNS name or an address; "
      "repeatable); loopback names, --host and, beyond loopback, this machine's names are accepted anyway", "server",
      frozenset({SERVE}), metavar="NAME"),
    O("max-upload-mb", "float", 2048.0, "largest upload accepted, in MiB (%(default)s)", "server",
      frozenset({SERVE})),
)
del O
COMMANDS = (INVERT, EDIT, RECONSTRUCT, BATCH, INFO, SERVE, PLAN)
GROUP_TITLES = {"input": None, "model": "model", "frames": "frames", "inversion": "inversion", "editing": "editing",
                "injection": "key/value injection", "flowedit": "FlowEdit", "blend": "local blend", "region": "edit region",
                "output": "output", "batch": "batch", "server": "server", "plan": "plan", "advanced": "advanced"}


def for_command(command: str) -> list[Option]:
    """The options ``command`` takes, in table order (a key names one option per command); ``plan`` takes edit's
    and its own."""
    taken = (EDIT, PLAN) if command == PLAN else (command,)
    return [option for option in OPTIONS if any(c in option.commands for c in taken)]


for _command in COMMANDS:
    _keys = [option.key for option in for_command(_command)]
    assert len(_keys) == len(set(_keys)), f"a key is declared twice for {_command}"


def row_options() -> dict[str, tuple[Option, bool]]:
    """The keys a batch job file's row may set -> ``(option, negated)``: each option's key, its ``_`` spelling, and
    ``no-<key>`` for a toggle (``"no-blend": true`` turns blend off); deprecated keys too (``deprecation`` names
    them)."""
    keys = {}
    for option in for_command(BATCH):
        if option.row and not option.positional:
            for key in (option.key, *option.deprecated):
                keys[key] = keys[key.replace("-", "_")] = (option, False)
                if option.kind == "toggle":
                    keys[f"no-{key}"] = keys[f"no_{key.replace('-', '_')}"] = (option, True)
    return keys


def deprecation(name: str, option: Option, as_flag: bool = True) -> str | None:
    """The note for an old spelling (``strength``) of ``option``, as a flag or a row key; ``None`` when ``name``
    is current."""
    old = name.lstrip("-").replace("_", "-")
    if old not in option.deprecated:
        return None
    new, old = (option.flag, f"--{old}") if as_flag else (option.key, old)
    return f"{old} is deprecated and goes in the next release: use {new}"


def defaults(command: str) -> dict[str, Any]:
    """``{dest: default}`` of ``command``'s options."""
    return {option.dest: option.default_for(command) for option in for_command(command)}




# ---- the table -> argparse (the CLI, and python -m vidinvert.web) --------------------------------------------
class _Deprecated(argparse.Action):
    """An old flag: stores its value like the new one and says once, on stderr, which flag to use instead."""

    def __init__(self, *args, option: Option, **kwargs):
        self.option = option
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {deprecation(option_string, self.option)}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _argument_type(option: Option):
    """argparse's ``type`` for an option the table parses (a one-line usage error on a bad value)."""
    def parse(text: str):
        try:
            return option.parse(text)
        except SettingsError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = option.key
    return parse


def add_options(parser: argparse.ArgumentParser, command: str, video_default: str | None = None) -> None:
    """``command``'s options from the table (``options.OPTIONS``), in titled groups, the advanced group last."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in sorted(for_command(command), key=lambda o: o.group == "advanced"):
        title = GROUP_TITLES[option.group]
        where = parser if title is None else groups.get(title) or groups.setdefault(
            title, parser.add_argument_group(title))
        help_text = option.help.replace("{what}", WHAT.get(command, "output"))
        if option.positional:
            extra = {} if option.required else dict(nargs="?", default=video_default)
            where.add_argument(option.key, help=help_text, **extra)
            continue
        kwargs = dict(dest=option.dest, help=help_text, default=option.default_for(command))
        if option.kind == "switch":
            kwargs["action"] = "store_true"
        elif option.kind == "toggle":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif option.kind == "list":
            kwargs["action"] = "append"
        elif option.parse is not None:
            kwargs["type"] = _argument_type(option)
        elif option.kind in ("int", "float"):
            kwargs["type"] = int if option.kind == "int" else float
        for name in ("choices", "required", "metavar"):
            if getattr(option, name):
                kwargs[name] = getattr(option, name)
        flags = sorted((option.flag, *option.aliases), key=lambda f: (f.startswith("--"), f != option.flag))
        where.add_argument(*flags, **kwargs)
        for old in option.deprecated:  # hidden from --help; takes a value (every deprecated option is a number)
            assert kwargs.get("type") in (int, float), option.key
            where.add_argument(f"--{old}", dest=option.dest, type=kwargs["type"], default=argparse.SUPPRESS,
                               help=argparse.SUPPRESS, action=_Deprecated, option=option)


# ---- values -> settings ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What one set of option values asks for, as the settings dataclasses."""

    model: ModelSettings
    read: ReadSettings
    invert: InvertSettings
    edit: EditConfig
    output: OutputSettings = field(default_factory=OutputSettings)


def model_settings(v: dict) -> ModelSettings:
    return ModelSettings(name=v["model"], dtype=v["dtype"], device=v["device"], cpu_offload=v["cpu_offload"],
                         vae_tiling=v["vae_tiling"], vae_slicing=v["vae_slicing"], group_offload=v["group_offload"],
                         group_offload_blocks=v["group_offload_blocks"], layerwise_casting=v["layerwise_casting"],
                         attention_backend=v["attention_backend"], lora=tuple(v["lora"] or ()),
                         lora_2=tuple(v["lora_2"] or ()))


def read_settings(v: dict) -> ReadSettings:
    return ReadSettings(height=v["height"], width=v["width"], skip_start=v["skip_frames_start"],
                        skip_end=v["skip_frames_end"], stride=v["frame_sample_step"], max_frames=v["max_num_frames"],
                        resize=v["resize"])


def _fraction(v: dict) -> float | None:
    """The schedule fraction asked for: ``--edit-fraction`` (edits) or ``--inversion-fraction`` (``invert``)."""
    return v.get("edit_fraction") if v.get("edit_fraction") is not None else v.get("inversion_fraction")


def invert_settings(v: dict) -> InvertSettings:
    depth, _ = resolve_strength(_fraction(v), v.get("krnr"))
    return InvertSettings(steps=_I.steps if v["steps"] is None else v["steps"], prompt=v["source_prompt"],
                          guidance=v["inversion_guidance"], method=v["inversion"], depth=depth, tol=v["tol"],
                          max_iter=v["max_iter"], clean_max_iter=v["clean_max_iter"], anderson=v["anderson"],
                          split_clean_end={"auto": None, "on": True, "off": False}[v["split_clean_end"]],
                          record_kv=v.get("reuse_kv", False), kv_budget_gb=v.get("kv_budget_gb", _I.kv_budget_gb),
                          checkpoint_every=v["checkpoint_every"], trajectory_device=v["trajectory_device"],
                          window=v["window"], overlap=v["overlap_fraction"])


def edit_config(v: dict) -> EditConfig:
    reference_text, start = v["reference_text"], v["start"]
    if v["reference_compatible"]:
        reference_text, start = "edit", "random"
    injection = InjectionConfig(enabled=v["injection"] == "on", step_fraction=v["injection_fraction"],
                                blocks=parse_blocks(v["injection_blocks"]) if v["injection"] == "on" else None,
                                reference_text=reference_text, reuse_kv=v["reuse_kv"],
                                reference_weight=v["reference_weight"],
                                reference_weight_fraction=v["reference_weight_fraction"],
                                kind=v["injection_kind"])
    blend = BlendConfig(enabled=v["blend"], source_prompt=v["blend_source"], threshold=v["blend_threshold_fraction"],
                        grow=v["blend_grow"], step_fraction=v["blend_fraction"])
    _, strength = resolve_strength(_fraction(v), v["krnr"])
    return EditConfig(guidance=v["guidance"], negative_prompt=v["negative_prompt"], start=start, seed=v["seed"],
                      dynamic_guidance=v["dynamic_guidance"], injection=injection, strength=strength, krnr=v["krnr"],
                      krnr_adaptive=v["krnr_adaptive"], blend=blend, rows_per_call=v["rows_per_call"],
                      guidance_2=v["guidance_2"], method=v["method"],
                      flowedit=FlowEditConfig(source_prompt=v["source_prompt"], n_max=v["n_max"], n_min=v["n_min"],
                                              source_guidance=v["source_guidance"], n_avg=v["n_avg"]),
                      region=RegionConfig(mask=v.get("mask"), box=v.get("box"), grow=v.get("mask_grow", _G.grow),
                                          paste_source=v.get("paste_source", "on") == "on"))


def output_settings(v: dict) -> OutputSettings:
    return OutputSettings(output=v.get("output"), output_dir=v.get("output_dir", _O.output_dir), fps=v["fps"],
                          comparison=not v["no_comparison"], force=v.get("force", False),
                          progress=not v.get("quiet", False), metrics=v.get("metrics", _O.metrics),
                          save_mask=v.get("save_mask"))


def settings_from_values(values: dict, command: str = EDIT) -> Settings:
    """Option values (``{dest: value}``; missing ones take ``command``'s defaults) -> ``Settings``. Invert takes no
    edit options: its ``edit`` is the defaults'."""
    v = {**defaults(EDIT), **defaults(command), **values}
    return Settings(model_settings(v), read_settings(v), invert_settings(v), edit_config(v), output_settings(v))
