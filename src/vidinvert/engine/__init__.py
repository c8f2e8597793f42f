"""The user's job, whole: open the model and the source, invert (or load a saved inversion), edit, decode, write.

Every front end (CLI, web page, benchmarks, batch) calls these functions and re-implements none of their steps:

- ``run_invert``: video -> saved ``.inv`` (+ settings JSON);
- ``run_edit``: video or ``.inv`` -> one edited video per prompt, comparisons, settings JSON; with
  ``reconstruct=True`` the "edit" uses the source prompt and the summary gains fidelity metrics; with
  ``OutputSettings.metrics`` (always for a reconstruction) it gains temporal metrics of each output;
- ``prepare`` / ``edit_prepared``: the two halves of ``run_edit``, for front ends that cache inversions (the page).

Each returns a ``JobResult``: the files written, a summary (what the CLI prints), the settings record (what the
JSON holds: the same keys whichever front end ran the job), timings, peak memory, warnings and notes. Warnings
raised by the library during a job are collected and returned, so every front end can show them. Outputs are
planned (names, overwrite and writability checks) before any model work.

One idea a module, in the order a job uses them:

- ``plan``: the request resolved and checked before any model work, the family's defaults, the output paths;
- ``memory``: a size refused before it runs, out-of-memory failures as one line, the peak used;
- ``warnings``: the library's warnings collected for the front ends;
- ``source``: a video opened and inverted, or a saved inversion loaded (``Source``, ``Prepared``);
- ``record``: the ``JobResult``, its summary and metrics, the settings JSON;
- ``run``: the whole jobs (``run_edit``, ``run_invert``) and the edit of a prepared source.
"""

from .memory import check_memory, guard_memory, peak_memory
from .plan import (
    check_edit_request,
    check_flowedit_request,
    check_model_fits,
    check_prompts,
    family_defaults,
    plan_edit_outputs,
)
from .record import JobResult, write_records
from .run import edit_prepared, flowedit_source, load_model, run_edit, run_invert
from .source import Prepared, Source, load_saved, open_source, prepare
from .warnings import collect_warnings

__all__ = [
    "JobResult",
    "Prepared",
    "Source",
    "check_edit_request",
    "check_flowedit_request",
    "check_memory",
    "check_model_fits",
    "check_prompts",
    "collect_warnings",
    "edit_prepared",
    "family_defaults",
    "flowedit_source",
    "guard_memory",
    "load_model",
    "load_saved",
    "open_source",
    "peak_memory",
    "plan_edit_outputs",
    "prepare",
    "run_edit",
    "run_invert",
    "write_records",
]
