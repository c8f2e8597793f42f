"""``vidinvert batch`` flags -> ``run_batch``; the summary printed as the other commands print theirs."""

from __future__ import annotations

import json
import sys

from .runner import run_batch


def batch_command(args) -> int:
    """Run the batch the flags describe; exit status 0 when every edit is done, 1 when some failed, 130 on Ctrl-C."""
    try:
        summary = run_batch(args.jobs, args.output_dir, args, workers=args.workers, address=args.address,
                            gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                            retries=args.retries, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"vidinvert: interrupted; finished clips are recorded in {args.output_dir}/results.jsonl and nothing "
              "half-written was kept; rerun the same command to continue", file=sys.stderr)
        return 130
    for line in summary.notes:
        print(f"vidinvert: note: {line}", file=sys.stderr)
    for line in summary.errors:
        print(f"vidinvert: failed: {line}", file=sys.stderr)
    print(f"vidinvert: batch: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped "
          f"({summary.clips} clips, {summary.edits} edits) in {summary.seconds:.1f} s; results in {summary.results}",
          file=sys.stderr)
    print(json.dumps(summary.as_dict()))
    return 1 if summary.failed else 0
