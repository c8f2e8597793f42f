"""``vidinvert batch``: edit many clips, each with its prompts, from a job file; in this process or on Ray workers.

Every clip is one ``engine.run_edit`` call (the job ``vidinvert edit`` runs), so a clip's videos, comparisons and
settings JSON are what the CLI writes for it. Modules, in the order the work flows:

- ``jobfile``: the job file (.jsonl / .csv) -> ``ClipJob`` rows, each with validated settings and two hashes (the
  whole job; the inversion alone), or a ``BadRow`` with its one-line error;
- ``table``: the results table (``results.jsonl``: one line per clip and prompt), the folder lock, the plan of
  what is done, what is to run;
- ``clip``: one clip on one worker: clean its folder, reuse or make its ``.inv``, run the edit, one result row
  per prompt (a failure becomes rows with its one-line error);
- ``runner``: the batch: lock, plan, run (in-process, or ``ray_runner`` for several workers or a cluster), record,
  summarise;
- ``command``: the ``vidinvert batch`` flags -> ``run_batch``.
"""

from .runner import BatchSummary, run_batch  # noqa: F401
