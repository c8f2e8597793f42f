"""``vidinvert batch`` without Ray: the job file, the results table, skipping, the lock, Ctrl-C, and outputs equal
bit for bit to ``vidinvert edit`` on each clip (the Ray runner's tests are in ``test_batch_ray.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error
from vidinvert.batch import run_batch
from vidinvert.batch.clip import torch_threads
from vidinvert.batch.jobfile import BadRow, ClipJob, clip_defaults, read_jobs
from vidinvert.batch.table import BatchLock
from vidinvert.cli import main
from vidinvert.export import write_video

STEPS = ["--steps", "2", "--model", "tiny"]  # every batch and reference edit in these tests


def make_clips(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 9-frame 32x32 clips (a square moving over a gradient, a different hue each)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    paths = []
    for c in range(count):
        frames = []
        for f in range(9):
            background = torch.stack([0.6 * ys, 0.4 * xs - 0.1 * c, -0.3 + 0.1 * c * ys * xs])  # [3, 32, 32]
            square = ((xs - (-0.6 + 0.12 * f)).abs() < 0.3) & (ys.abs() < 0.3)
            frames.append(torch.where(square, torch.tensor([0.9, -0.8, -0.8 + 0.2 * c]).view(3, 1, 1), background))
        paths.append(write_video(torch.stack(frames), folder / f"clip{c}.mp4", fps=8))
    return paths


def write_jobs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reference_edit(video: Path, prompts: list[str], folder: Path) -> Path:
    """``vidinvert edit`` on one clip, with the one torch thread a batch worker uses."""
    argv = ["edit", str(video), *sum((["--prompt", p] for p in prompts), []), *STEPS, "--output-dir", str(folder),
            "--quiet"]
    with torch_threads(1):
        assert main(argv) == 0
    return folder


def videos(folder: Path) -> dict[str, bytes]:
    """The edited videos of a folder, as bytes. Comparison videos are left out: ``vidinvert edit`` itself does not
    write them bit-identically from one process to the next (the edited videos it does), so they are checked by
    name and frame count instead."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.mp4")) if "_comparison" not in p.name}


def comparisons(folder: Path) -> dict[str, int]:
    import av

    counts = {}
    for path in sorted(Path(folder).glob("*_comparison.mp4")):
        with av.open(str(path)) as container:
            counts[path.name] = sum(1 for _ in container.decode(container.streams.video[0]))
    return counts


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# ---- the job file -------------------------------------------------------------------------------------------------
def test_rows_map_onto_the_clis_settings(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    rows = [
        {"video": "a.mp4", "prompts": ["x", "y"], "steps": 7, "inversion": "fixed-point", "injection_blocks": [0, 2],
         "blend": True, "blend-source": "a box", "no_comparison": "true", "max-num-frames": 17, "metrics": True},
        {"video": "a.mp4", "prompt": "z"},  # the command line's defaults
        {"video": "a.mp4", "prompts": ["x"], "steps": "many"},
        {"video": "a.mp4", "prompts": ["x"], "output_dir": "elsewhere"},
        {"video": "a.mp4", "id": "../up", "prompts": ["x"]},
        {"video": "a.mp4"},
        {"video": "a.mp4", "prompts": ["x"], "guidance": 0.5},
    ]
    path = write_jobs(tmp_path / "jobs.jsonl", rows)
    with path.open("a") as handle:
        handle.write("{not json\n")
    jobs = read_jobs(path, clip_defaults(guidance=5, steps=3))
    first, second = jobs[0], jobs[1]
    assert isinstance(first, ClipJob) and first.prompts == ("x", "y") and first.id == "a"
    assert first.invert.steps == 7 and first.invert.method == "fixed-point" and first.read.max_frames == 17
    assert first.edit.injection.blocks == (0, 2) and first.edit.blend.enabled and first.edit.blend.source_prompt == "a box"
    assert not first.comparison and first.edit.guidance == 5
    assert first.metrics and first.output(tmp_path).metrics and not second.metrics
    assert second.id == "a-2" and second.invert.steps == 3 and second.comparison and second.prompts == ("z",)
    assert first.inversion_hash != second.inversion_hash and first.job_hash != second.job_hash
    bad = jobs[2:]
    assert all(isinstance(b, BadRow) for b in bad), bad
    errors = [b.error for b in bad]
    assert errors[0] == "row 3: option steps must be a whole number, got 'many'"  # the row's key, not a flag
    assert "unknown per-clip option 'output_dir'" in errors[1]
    assert "not a folder name" in errors[2]
    assert "no edit prompt" in errors[3]
    assert "guidance must be between 1 and 100" in errors[4]
    assert "not JSON" in errors[5]
    assert all(e.startswith("row ") and "\n" not in e for e in errors)


def test_csv_rows_split_prompts_and_leave_empty_cells_to_the_defaults(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    path = tmp_path / "jobs.csv"
    path.write_text("id,video,prompts,guidance,reuse_kv\none,a.mp4,a red box | a blue box,,\ntwo,a.mp4,x,4.5,yes\n")
    one, two = read_jobs(path)
    assert one.prompts == ("a red box", "a blue box") and one.edit.guidance == 6.0 and not one.edit.injection.reuse_kv
    assert two.edit.guidance == 4.5 and two.edit.injection.reuse_kv and two.invert.record_kv
    assert_one_line_error(lambda: read_jobs(tmp_path / "jobs.txt"), "job file not found")
    (tmp_path / "jobs.tsv").write_text("x")
    assert_one_line_error(lambda: read_jobs(tmp_path / "jobs.tsv"), ".jsonl", ".csv")


# ---- runs in this process ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    return make_clips(tmp_path_factory.mktemp("clips"), 3)


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reference")
    return {clip.stem: reference_edit(clip, ["a blue box", "a red disc"], root / clip.stem) for clip in clips}


def test_in_process_batch_equals_the_edit_command_and_reruns_only_what_changed(clips, reference, tmp_path, capsys):
    rows = [{"video": str(c), "prompts": ["a blue box", "a red disc"]} for c in clips]
    rows.append({"video": str(tmp_path / "gone.mp4"), "prompts": ["x"]})  # a broken clip among them
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--output-dir", str(out), *STEPS, "--quiet"]) == 1  # 1: some edits failed
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["skipped"], summary["engine"]) == (6, 1, 0, "in-process")
    assert "failed: gone: video not found" in captured.err and "6 done, 1 failed, 0 skipped" in captured.err
    for clip in clips:
        assert videos(out / clip.stem) == videos(reference[clip.stem]), clip.stem  # bit for bit
        assert comparisons(out / clip.stem) == comparisons(reference[clip.stem]) == {
            f"{clip.stem}_edit_1_comparison.mp4": 9, f"{clip.stem}_edit_2_comparison.mp4": 9}
        record = json.loads((out / clip.stem / f"{clip.stem}_edit_1.json").read_text())
        expected = json.loads((reference[clip.stem] / f"{clip.stem}_edit_1.json").read_text())
        assert {k: record[k] for k in ("model", "read", "invert", "edit", "inversion")} == \
               {k: expected[k] for k in ("model", "read", "invert", "edit", "inversion")}
        assert len(list((out / clip.stem).glob("*.inv"))) == 1
    table = results(out)
    assert len(table) == 7 and [r["status"] for r in table].count("done") == 6
    failed = next(r for r in table if r["status"] == "failed")
    assert failed["clip"] == "gone" and failed["error"].startswith("video not found")
    done = table[0]
    assert done["outputs"] == ["clip0/clip0_edit_1.mp4", "clip0/clip0_edit_1_comparison.mp4", "clip0/clip0_edit_1.json"]
    assert done["seconds"] > 0 and done["peak_rss_mib"] > 0 and done["error"] is None

    # a rerun without the broken clip does no model work, and says so
    write_jobs(jobs, rows[:3])
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    assert main(["batch", str(jobs), "--output-dir", str(out), *STEPS, "--quiet"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["done"], summary["skipped"], summary["model_work"], summary["engine"]) == (0, 6, False, "none")
    assert "nothing to run" in captured.err and "no model was loaded" in captured.err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamps

    # a changed prompt redoes only that clip, from its saved inversion
    rows[1]["prompts"] = ["a blue box", "a green disc"]
    write_jobs(jobs, rows[:3])
    summary = run_batch(jobs, out, clip_defaults(steps=2, model="tiny"), progress=False)
    assert (summary.done, summary.skipped) == (2, 4)
    table = {(r["clip"], r["prompt_index"]): r for r in results(out)}
    assert len(table) == 7  # the failed clip's record stays; the table keeps one record per clip
    assert table[("clip1", 2)]["prompt"] == "a green disc" and table[("clip1", 1)]["inversion_reused"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4") if p.parent.name != "clip1"} == \
           {p: s for p, s in stamps.items() if p.parent.name != "clip1"}
    fresh = reference_edit(clips[1], ["a blue box", "a green disc"], tmp_path / "fresh")
    assert videos(out / "clip1") == videos(fresh)  # the reused inversion edits exactly like a fresh one


def test_interrupt_keeps_finished_clips_and_the_rerun_finishes(clips, tmp_path, monkeypatch, capsys):
    from vidinvert.batch import clip as clip_module

    real, calls = clip_module.run_edit, []

    def interrupted_on_the_second_clip(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_module, "run_edit", interrupted_on_the_second_clip)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": str(c), "prompt": "a blue box"} for c in clips])
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--output-dir", str(out), *STEPS, "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert [r["clip"] for r in results(out)] == ["clip0"]
    assert not (out / "clip1").exists()  # nothing half-written, not even an empty folder
    summary = run_batch(jobs, out, clip_defaults(steps=2, model="tiny"), progress=False)  # the lock was released
    assert (summary.done, summary.skipped, summary.failed) == (2, 1, 0)


def test_a_second_batch_on_the_same_folder_is_refused(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": "a.mp4", "prompt": "x"}])
    with BatchLock(tmp_path / "out"):
        err = assert_one_line_error(lambda: run_batch(jobs, tmp_path / "out", progress=False),
                                    "another vidinvert batch is writing to", "pid", "--output-dir")
    assert str(tmp_path / "out") in err
    summary = run_batch(jobs, tmp_path / "out", progress=False)  # free again: the row itself fails (no video)
    assert summary.failed == 1 and "video not found" in summary.errors[0]


# ---- FlowEdit clips ------------------------------------------------------------------------------------------------
FLOWEDIT_ROWS = [  # per-clip method and FlowEdit settings, keyed as their flags (dashes or underscores)
    {"prompts": ["a blue box", "a red disc"], "method": "flowedit", "model": "tiny-wan", "steps": 3, "n-max": 2,
     "source_prompt": "a red box", "source-guidance": 2.5},
    {"prompt": "a blue box", "method": "flowedit", "model": "tiny-wan", "steps": 3, "n_max": 3, "n_min": 1,
     "guidance": 4, "n-avg": 2, "no-comparison": True},
]


def _flags(row: dict) -> list[str]:
    """A job row's options as ``vidinvert edit`` flags."""
    flags = []
    for key, value in row.items():
        if key in ("prompt", "prompts"):
            continue
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def test_flowedit_rows_map_onto_its_settings(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    path = write_jobs(tmp_path / "jobs.jsonl", [{"video": "a.mp4", **row} for row in FLOWEDIT_ROWS] +
                      [{"video": "a.mp4", "prompt": "x", "method": "flowedit", "edit-fraction": 0.5},
                       {"video": "a.mp4", "prompt": "x", "method": "sdedit"}])
    first, second, *bad = read_jobs(path)
    assert first.edit.method == "flowedit" and first.edit.flowedit.n_max == 2
    assert first.edit.flowedit.source_prompt == "a red box" and first.edit.flowedit.source_guidance == 2.5
    assert (second.edit.flowedit.n_max, second.edit.flowedit.n_min, second.edit.flowedit.n_avg) == (3, 1, 2)
    assert second.edit.guidance == 4 and not second.comparison
    assert "FlowEdit does not use an edit fraction" in bad[0].error
    assert bad[1].error == "row 4: option method must be one of inversion, flowedit, got 'sdedit'"


def test_flowedit_batch_equals_the_edit_command_and_saves_no_inversion(clips, tmp_path, capsys):
    rows = [{"video": str(clip), **row} for clip, row in zip(clips, FLOWEDIT_ROWS)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--output-dir", str(out), "--quiet"]) == 0
    capsys.readouterr()
    for clip, row in zip(clips, FLOWEDIT_ROWS):
        prompts = row.get("prompts", [row.get("prompt")])
        folder = tmp_path / "reference" / clip.stem
        with torch_threads(1):
            assert main(["edit", str(clip), *sum((["--prompt", p] for p in prompts), []), *_flags(row),
                         "--output-dir", str(folder), "--quiet"]) == 0
        capsys.readouterr()
        assert videos(out / clip.stem) == videos(folder) and len(videos(folder)) == len(prompts)  # bit for bit
        assert comparisons(out / clip.stem) == comparisons(folder)
        name = f"{clip.stem}_edit_1.json" if len(prompts) > 1 else f"{clip.stem}_edit.json"
        record, expected = (json.loads((where / name).read_text()) for where in (out / clip.stem, folder))
        assert {k: record[k] for k in ("model", "read", "invert", "edit", "inversion")} == \
               {k: expected[k] for k in ("model", "read", "invert", "edit", "inversion")}
        assert record["edit"]["method"] == "flowedit" and record["inversion"] is None
        assert not list((out / clip.stem).glob("*.inv"))
    table = results(out)
    assert [r["status"] for r in table] == ["done"] * 3
    assert all(r["inversion"] is None and not r["inversion_reused"] for r in table)
    summary = run_batch(jobs, out, clip_defaults(), progress=False)  # a rerun skips every FlowEdit clip
    assert (summary.done, summary.skipped) == (0, 3)


def test_blend_switch_rows_leave_it_to_the_model_or_set_it(tmp_path):
    """A row without blend leaves it to the model (None); "blend": false and "no-blend": true both turn it off."""
    rows = [{"video": "a.mp4", "prompts": ["x"]}, {"video": "a.mp4", "prompts": ["x"], "blend": False},
            {"video": "a.mp4", "prompts": ["x"], "no-blend": True}, {"video": "a.mp4", "prompts": ["x"], "blend": True},
            {"video": "a.mp4", "prompts": ["x"], "no-blend": "false"}]
    jobs = read_jobs(write_jobs(tmp_path / "jobs.jsonl", rows), clip_defaults())
    assert [job.edit.blend.enabled for job in jobs] == [None, False, False, True, True]
