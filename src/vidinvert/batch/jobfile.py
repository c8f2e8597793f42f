"""The job file: one row per clip -> a ``ClipJob`` with validated settings, or a ``BadRow`` with a one-line error.

A row names its ``video`` (relative paths are read from the job file's folder), its ``prompts`` (a JSON list, or
one ``prompt``; a CSV cell is split on ``|``), an optional ``id`` (its output folder under the batch's output
folder; default: the video's name) and any per-clip option of ``vidinvert batch``, keyed by its flag without the
dashes (``steps``, ``guidance``, ``inversion``, ``injection-blocks`` or ``injection_blocks``, ``blend``, ...). A
row's options override the command line's, which override the settings' defaults. Keys and values are read
through the options table (``options.py``) and mapped onto settings by its ``settings_from_values``, so a row
means what the same flags mean to ``vidinvert edit``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..options import BATCH, defaults as option_defaults, deprecation, row_options, settings_from_values
from ..errors import SettingsError, VidinvertError
from .folders import RESERVED_IDS
from ..settings import EditConfig, InvertSettings, ModelSettings, OutputSettings, ReadSettings, with_model_guidance

RESERVED = ("video", "prompts", "prompt", "id")  # row keys that are not options
PROMPT_SEPARATOR = "|"  # between a CSV row's prompts
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # an id is one folder name


def clip_defaults(**options) -> dict:
    """The per-clip option values (``{dest: value}``) of ``vidinvert batch`` with ``options`` (keys as in a row:
    flag names, dashes or underscores) applied: what a library caller passes to ``run_batch`` instead of the
    command line's."""
    return apply_options(batch_defaults(), options)


def batch_defaults(given: dict | None = None) -> dict:
    """The per-clip option values of ``vidinvert batch``: its defaults, with ``given`` (the command line's parsed
    values, or a library caller's) over them."""
    keys = {option.dest for option, _ in row_options().values()}
    return {**option_defaults(BATCH), **{k: v for k, v in (given or {}).items() if k in keys}}


@dataclass(frozen=True)
class ClipJob:
    """One clip of a batch: its video, prompts and fully resolved settings."""

    line: int  # row number in the job file (1 = first row)
    id: str  # output folder name under the batch's output folder
    video: str  # path of the input video
    prompts: tuple[str, ...]
    model: ModelSettings
    read: ReadSettings
    invert: InvertSettings
    edit: EditConfig
    fps: float | None = None  # frame rate of written videos (None = the source's)
    comparison: bool = True  # also write source|result videos
    metrics: bool = False  # temporal metrics of each output (OutputSettings.metrics)
    video_stamp: tuple = ()  # (size, mtime_ns) of the video when planned; part of the hashes
    first_frames: tuple[str, ...] = ()  # edited first frames (image-to-video models), paths
    first_frame_stamps: tuple = ()  # (size, mtime_ns) of each when planned; part of the job hash
    mask_stamp: tuple = ()  # (size, mtime_ns) of the edit's mask file when planned; part of the job hash

    def output(self, folder: Path) -> OutputSettings:
        """The output settings of this clip's ``run_edit`` in ``folder``."""
        return OutputSettings(output_dir=str(folder), fps=self.fps, comparison=self.comparison, progress=False,
                              metrics=self.metrics)

    def _digest(self, parts: dict) -> str:
        text = json.dumps({"vidinvert": __version__, "video": str(Path(self.video).resolve()),
                           "video_stamp": list(self.video_stamp), **parts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def inversion_hash(self) -> str:
        """What the inversion depends on: video, model, frames, inversion settings."""
        return self._digest({"model": dataclasses.asdict(self.model), "read": dataclasses.asdict(self.read),
                             "invert": dataclasses.asdict(self.invert)})

    @property
    def job_hash(self) -> str:
        """What the outputs depend on: the inversion's inputs, the prompts, the edit and output settings."""
        return self._digest({"inversion": self.inversion_hash, "prompts": list(self.prompts),
                             "edit": dataclasses.asdict(self.edit), "fps": self.fps, "comparison": self.comparison,
                             **({"metrics": True} if self.metrics else {}),  # earlier batches' hashes still hold
                             **({"first_frames": [[str(Path(p).resolve()), list(s)] for p, s in
                                                  zip(self.first_frames, self.first_frame_stamps)]}
                                if self.first_frames else {}),
                             **({"mask_stamp": list(self.mask_stamp)} if self.mask_stamp else {})})


@dataclass(frozen=True)
class BadRow:
    """A row that cannot run: recorded as failed with ``error``; the others go on."""

    line: int
    id: str
    error: str
    prompts: tuple[str, ...] = ()


# ---- reading ---------------------------------------------------------------------------------------------------
def _text_lines(path: Path) -> list[tuple[int, str | None]]:
    """``[(line number, text or None when the line is not UTF-8)]``; a leading byte-order mark is dropped."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise VidinvertError(f"job file {path.name} is not text (it holds binary bytes)",
                             "give a UTF-8 .jsonl or .csv file with one row per clip")
    lines = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            lines.append((number, None))
    return lines


def read_rows(path: Path) -> list[tuple[int, dict | str]]:
    """``[(row number, row dict or an error line)]`` from a .jsonl or .csv file (blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise VidinvertError(f"job file not found: {path}", "give a .jsonl or .csv file with one row per clip")
    if not path.is_file():  # a folder, a FIFO or a device: reading it could block or mean nothing
        raise VidinvertError(f"job file {path} is not a regular file", "give a .jsonl or .csv file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise VidinvertError(f"cannot read job file {path.name}", "use .jsonl (one JSON object per line) or .csv")
    lines = _text_lines(path)
    rows: list[tuple[int, dict | str]] = []
    if suffix == ".csv":
        bad = [number for number, text in lines if text is None]
        if bad:
            raise VidinvertError(f"job file {path.name}: line {bad[0]} is not UTF-8 text", "save the file as UTF-8")
        reader = csv.DictReader(io.StringIO("\n".join(text for _, text in lines)))
        for number, row in enumerate(reader, 1):
            if None in row:
                rows.append((number, "more cells than columns"))
                continue
            row = {k.strip(): v.strip() for k, v in row.items() if k and v is not None and v.strip()}
            if "prompts" in row:
                row["prompts"] = [p.strip() for p in row["prompts"].split(PROMPT_SEPARATOR) if p.strip()]
            if row:
                rows.append((number, row))
    else:
        number = 0
        for _, text in lines:
            if text is not None and not text.strip():
                continue
            number += 1
            if text is None:
                rows.append((number, "not UTF-8 text"))
                continue
            try:
                row = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as err:
                where = f" ({err.msg} at column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
                rows.append((number, f"not JSON{where}"))
                continue
            rows.append((number, row if isinstance(row, dict) else "not a JSON object"))
    if not rows:
        raise VidinvertError(f"job file {path.name} has no rows", "add one row per clip")
    return rows


def apply_options(values: dict, options: dict, notes: list[str] | None = None) -> dict:
    """``values`` with ``options`` (row key -> value, as JSON or CSV gives it) applied, each read as its option's
    kind; an empty value leaves the default. A deprecated key's note goes to ``notes`` (once)."""
    known = row_options()
    out = dict(values)
    for key, raw in options.items():
        name = str(key).strip()
        if name not in known:
            raise SettingsError(f"unknown per-clip option {key!r}",
                                "use a flag of vidinvert batch without its dashes, e.g. steps or guidance")
        option, negated = known[name]
        note = deprecation(name.removeprefix("no-").removeprefix("no_"), option, as_flag=False)
        if note is not None and notes is not None and f"job file: {note}" not in notes:
            notes.append(f"job file: {note}")
        value = option.value(raw, f"option {name}")
        if value is not None:
            out[option.dest] = (not value) if negated else value
    return out


def _explicit_id(row: dict | str) -> str | None:
    """A row's own ``id``, when it gave a valid one."""
    given = row.get("id") if isinstance(row, dict) else None
    return given if isinstance(given, str) and _ID.match(given) else None


def _clip_id(row: dict, video: str, taken: set[str], explicit: dict[str, int], line: int) -> str:
    """The row's id: its own, or one made from the video's name that no row of the file uses (case ignored, as
    some filesystems do)."""
    given = row.get("id")
    if given is not None:
        if not isinstance(given, str) or not _ID.match(given):
            raise SettingsError(f"id {json.dumps(given)} is not a folder name",
                                "use letters, digits, '.', '_' and '-' (starting with a letter or digit)")
        if given.lower() in RESERVED_IDS:
            raise SettingsError(f"id {given!r} is a name the batch keeps for itself", "give the row another 'id'")
        if explicit[given.lower()] != line:
            raise SettingsError(f"id {given!r} is used by row {explicit[given.lower()]} too",
                                "give each row its own 'id'")
        return given
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(video).stem).lstrip("._-")[:100] or "clip"
    if stem.lower() in RESERVED_IDS:
        stem = f"clip-{stem}"
    return _unused(stem, taken, explicit, line)


def _unused(stem: str, taken: set[str], explicit: dict[str, int], line: int) -> str:
    """``stem``, else ``stem-<line>``, else ``stem-<line>-2`` ...: the first that no row's id is (case ignored)."""
    candidates = [stem, f"{stem}-{line}"] + [f"{stem}-{line}-{k}" for k in range(2, len(taken) + len(explicit) + 3)]
    return next(c for c in candidates if c.lower() not in taken and c.lower() not in explicit)


def _prompts(row: dict, optional: bool = False) -> tuple[str, ...]:
    """The row's prompts; ``optional``: none given is allowed (a first-frame edit takes the source prompt)."""
    prompts = row.get("prompts", row.get("prompt"))
    if optional and prompts is None:
        return ()
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise SettingsError("no edit prompt given", "give 'prompts' (a list of texts) or 'prompt', or 'first-frame'")
    return tuple(prompts)


def _stamp(video: Path) -> tuple:
    try:
        stat = video.stat()
    except OSError:
        return ()
    return (stat.st_size, stat.st_mtime_ns)


def read_jobs(path: str | Path, defaults: dict | argparse.Namespace | None = None,
              notes: list[str] | None = None) -> list[ClipJob | BadRow]:
    """Every row of the job file as a ``ClipJob`` (settings validated) or a ``BadRow`` (its one-line error).

    Args:
        defaults: the per-clip option values of the command line (its parsed arguments, or ``clip_defaults()``;
            ``None``: the defaults).
        notes: where notes on the file go (a deprecated key).
    """
    path = Path(path)
    defaults = batch_defaults(vars(defaults) if isinstance(defaults, argparse.Namespace) else defaults)
    jobs: list[ClipJob | BadRow] = []
    rows = read_rows(path)
    explicit: dict[str, int] = {}  # every valid id a row gives (lower case) -> the first row that gives it
    for line, row in rows:
        given = _explicit_id(row)
        if given is not None:
            explicit.setdefault(given.lower(), line)
    taken: set[str] = set()  # ids in use (lower case), explicit and made
    for line, row in rows:
        try:
            if isinstance(row, str):
                raise SettingsError(row)
            video = row.get("video")
            if not isinstance(video, str) or not video.strip():
                raise SettingsError("no video given", "give each row a 'video' path")
            clip_id = _clip_id(row, video, taken, explicit, line)
            values = apply_options(defaults, {k: v for k, v in row.items() if k not in RESERVED}, notes)
            first_frames = tuple(p if Path(p).is_absolute() else str(path.parent / p)
                                 for p in values.get("first_frame") or ())  # relative to the job file, as videos
            prompts = _prompts(row, optional=bool(first_frames))
            asked = settings_from_values(values, BATCH)
            video_path = Path(video) if Path(video).is_absolute() else path.parent / video
            # guidance left to the model is resolved now, so the job's hash names the scale it runs with
            from ..models.registry import default_guidance, default_model

            edited = with_model_guidance(asked.edit, default_guidance(asked.model.name or default_model()))
            mask = edited.region.mask
            if mask is not None and not Path(mask).is_absolute():  # relative to the job file, as videos
                mask = str(path.parent / mask)
                edited = dataclasses.replace(edited, region=dataclasses.replace(edited.region, mask=mask))
            job = ClipJob(line=line, id=clip_id, video=str(video_path), prompts=prompts, model=asked.model,
                          read=asked.read, invert=asked.invert, edit=edited, fps=asked.output.fps,
                          comparison=asked.output.comparison, metrics=asked.output.metrics,
                          video_stamp=_stamp(video_path), first_frames=first_frames,
                          first_frame_stamps=tuple(_stamp(Path(p)) for p in first_frames),
                          mask_stamp=_stamp(Path(mask)) if mask is not None else ())
            job.output(path.parent)  # OutputSettings validates the fps
        except VidinvertError as err:
            prompts = row.get("prompts", row.get("prompt")) if isinstance(row, dict) else None
            prompts = [prompts] if isinstance(prompts, str) else prompts if isinstance(prompts, list) else []
            given = _explicit_id(row)
            clip_id = given if given is not None and explicit[given.lower()] == line \
                and given.lower() not in RESERVED_IDS else _unused(f"row-{line}", taken, explicit, line)
            jobs.append(BadRow(line, clip_id, f"row {line}: {err}", tuple(p for p in prompts if isinstance(p, str))))
            taken.add(clip_id.lower())
            continue
        taken.add(job.id.lower())
        jobs.append(job)
    return jobs
