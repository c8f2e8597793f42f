"""``vidinvert batch`` never deletes or changes what it did not write, gives every row its own id, records every row
exactly once, and refuses hostile job files in one line (the reproductions of an adversarial run, then a property
test over random folder trees)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_batch import STEPS, make_clips, results, write_jobs
from vidinvert.batch import run_batch
from vidinvert.batch import clip as clip_module
from vidinvert.batch.folders import MANIFEST, read_manifest
from vidinvert.batch.jobfile import BadRow, clip_defaults, read_jobs
from vidinvert.batch.table import ResultsTable
from vidinvert.cli import main
from vidinvert.errors import VidinvertError


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` -> its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def one_error_line(stderr: str, fragment: str) -> None:
    """What the CLI printed is one ``vidinvert: error:`` line holding ``fragment``."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidinvert: error: ") and fragment in lines[0], lines


def kept(before: dict[str, str], root: Path) -> None:
    """Every file of ``before`` is still there, unchanged."""
    after = snapshot(root)
    assert {k: after.get(k) for k in before} == before


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clips(tmp_path_factory.mktemp("clip"), 1)[0]


def user_folder(root: Path, clip: Path, name: str, video: str) -> Path:
    """``root/name/`` holding the user's ``video`` (a copy of ``clip``) and notes."""
    (root / name).mkdir(parents=True)
    (root / name / video).write_bytes(clip.read_bytes())
    (root / name / "notes.txt").write_text("mine\n")
    return root / name


# ---- the reproductions ------------------------------------------------------------------------------------------
def test_a_default_id_naming_the_inputs_folder_is_refused_and_nothing_is_deleted(clip, tmp_path, capsys):
    user_folder(tmp_path, clip, "car", "car.mp4")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": "car/car.mp4", "prompt": "a"}])
    before = snapshot(tmp_path)
    assert main(["batch", str(jobs), "--output-dir", str(tmp_path), *STEPS, "--quiet"]) == 1
    kept(before, tmp_path)
    err = capsys.readouterr().err
    assert "vidinvert: failed: car: row 1: id 'car': its output folder" in err
    assert "holds files vidinvert did not write (car.mp4, notes.txt)" in err
    assert "give the row another 'id' or use another --output-dir" in err
    assert [(r["clip"], r["status"]) for r in results(tmp_path)] == [("car", "failed")]


def test_an_explicit_id_naming_a_folder_of_inputs_is_refused_and_the_other_rows_run(clip, tmp_path):
    user_folder(tmp_path, clip, "clips", "a.mp4")
    (tmp_path / "clips" / "b.mp4").write_bytes(clip.read_bytes())
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "clips", "video": "clips/a.mp4", "prompt": "a"},
                                                {"id": "fine", "video": "clips/b.mp4", "prompt": "a"}])
    before = snapshot(tmp_path)
    summary = run_batch(jobs, tmp_path, clip_defaults(steps=2, model="tiny"), progress=False)
    kept(before, tmp_path)
    assert (summary.done, summary.failed) == (1, 1)
    assert summary.errors[0].startswith("clips: row 1: id 'clips': its output folder")
    assert read_manifest(tmp_path / "fine") == {p.name for p in (tmp_path / "fine").iterdir()} - {MANIFEST}


def test_generated_ids_never_take_an_explicit_one_and_every_row_is_recorded_once(clip, tmp_path):
    (tmp_path / "d").mkdir()
    for path in (tmp_path / "clip.mp4", tmp_path / "d" / "clip.mp4"):
        path.write_bytes(clip.read_bytes())
    rows = [{"video": "clip.mp4", "prompt": "a"}, {"id": "clip-3", "video": "clip.mp4", "prompt": "b"},
            {"video": "d/clip.mp4", "prompt": "c"}]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    assert [j.id for j in read_jobs(jobs, clip_defaults(model="tiny"))] == ["clip", "clip-3", "clip-3-2"]
    out = tmp_path / "out"
    summary = run_batch(jobs, out, clip_defaults(steps=2, model="tiny"), progress=False)
    assert (summary.done, summary.failed, summary.skipped) == (3, 0, 0)
    assert [(r["line"], r["clip"]) for r in results(out)] == [(1, "clip"), (2, "clip-3"), (3, "clip-3-2")]
    again = run_batch(jobs, out, clip_defaults(steps=2, model="tiny"), progress=False)
    assert (again.done, again.failed, again.skipped, again.model_work) == (0, 0, 3, False)  # nothing redone


def test_a_bad_rows_fallback_id_never_takes_a_good_rows_id(tmp_path, capsys):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "row-2", "video": "x.mp4", "prompt": "a"},
                                                {"prompt": "b"}])
    parsed = read_jobs(jobs, clip_defaults(model="tiny"))
    assert [j.id for j in parsed] == ["row-2", "row-2-2"] and isinstance(parsed[1], BadRow)
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--output-dir", str(out), *STEPS, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "vidinvert: failed: row-2-2: row 2: no video given" in err and ", 2 failed, " in err
    assert sorted((r["line"], r["status"]) for r in results(out)) == [(1, "failed"), (2, "failed")]


@pytest.mark.parametrize("given_id", ["results.jsonl", "RESULTS.JSONL"])
def test_reserved_ids_are_refused_and_the_table_stays_a_file(tmp_path, given_id):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": given_id, "video": "x.mp4", "prompt": "a"}])
    (job,) = read_jobs(jobs, clip_defaults(model="tiny"))
    assert isinstance(job, BadRow) and job.id == "row-1"
    assert job.error == f"row 1: id '{given_id}' is a name the batch keeps for itself; give the row another 'id'"
    run_batch(jobs, tmp_path / "out", clip_defaults(model="tiny"), progress=False)
    assert (tmp_path / "out" / "results.jsonl").is_file()
    run_batch(jobs, tmp_path / "out", clip_defaults(model="tiny"), progress=False)  # a rerun is not refused


@pytest.mark.parametrize("given_id,why", [(5, "id 5 is not a folder name"), ("../up", 'id "../up" is not a folder'),
                                          ("a/b", 'id "a/b" is not a folder name')])
def test_ids_that_are_not_folder_names_are_refused(tmp_path, given_id, why):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": given_id, "video": "x.mp4", "prompt": "a"}])
    (job,) = read_jobs(jobs, clip_defaults(model="tiny"))
    assert isinstance(job, BadRow) and why in job.error


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path):
    table = ResultsTable(tmp_path)
    first = {"clip": "a", "record": "r1", "status": "done", "outputs": [], "job_hash": "h", "line": 1}
    table.add([first])
    with open(tmp_path / "results.jsonl", "a") as handle:
        handle.write('{"clip": "b", "rec')  # a crash mid-line
    table = ResultsTable(tmp_path)
    second = {**first, "clip": "c", "record": "r2", "line": 3}
    table.add([second])
    reread = ResultsTable(tmp_path)
    assert set(reread.latest) == {"a", "c"} and reread.latest["c"] == [second]


def test_a_results_table_that_is_not_ours_is_refused_untouched(tmp_path):
    (tmp_path / "results.jsonl").write_text("my own notes\n")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": "x.mp4", "prompt": "a"}])
    before = snapshot(tmp_path)
    with pytest.raises(VidinvertError, match="results.jsonl is not a results table vidinvert wrote"):
        run_batch(jobs, tmp_path, clip_defaults(model="tiny"), progress=False)
    kept(before, tmp_path)
    (tmp_path / "results.jsonl").unlink()
    (tmp_path / "results.jsonl").mkdir()
    with pytest.raises(VidinvertError, match="not a regular file"):
        run_batch(jobs, tmp_path, clip_defaults(model="tiny"), progress=False)


# ---- hostile job files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", [5, True, None, {"a": 1}, [1, 2]])
def test_a_prompt_that_is_not_text_fails_its_row_only(tmp_path, prompt):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": "x.mp4", "prompt": prompt}])
    (job,) = read_jobs(jobs, clip_defaults(model="tiny"))
    assert isinstance(job, BadRow)
    assert job.error == ("row 1: no edit prompt given; give 'prompts' (a list of texts) or 'prompt', or "
                         "'first-frame'")


def test_undecodable_lines_fail_their_row_and_a_binary_file_is_refused(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(b'{"video": "x.mp4", "prompt": "caf\xe9"}\n{"video": "y.mp4", "prompt": "b"}\n')
    first, second = read_jobs(jobs, clip_defaults(model="tiny"))
    assert isinstance(first, BadRow) and first.error == "row 1: not UTF-8 text"
    assert not isinstance(second, BadRow) and second.prompts == ("b",)
    jobs.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(VidinvertError, match="is not text"):
        read_jobs(jobs)
    csv = tmp_path / "jobs.csv"
    csv.write_bytes(b"video,prompt\nx.mp4,caf\xe9\n")
    with pytest.raises(VidinvertError, match="line 2 is not UTF-8 text"):
        read_jobs(csv)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path, suffix):
    jobs = tmp_path / f"jobs{suffix}"
    text = '{"video": "x.mp4", "prompt": "a"}\n' if suffix == ".jsonl" else "video,prompt\nx.mp4,a\n"
    jobs.write_bytes(b"\xef\xbb\xbf" + text.encode())
    (job,) = read_jobs(jobs, clip_defaults(model="tiny"))
    assert not isinstance(job, BadRow) and job.prompts == ("a",)


def test_values_starting_with_a_dash_are_values(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": "x.mp4", "prompt": "a", "negative-prompt": "-blurry"},
                                                {"video": "y.mp4", "prompt": "a", "source_prompt": "--steps 3"}])
    first, second = read_jobs(jobs, clip_defaults(model="tiny"))
    assert first.edit.negative_prompt == "-blurry"
    assert second.invert.prompt == "--steps 3" and second.invert.steps == first.invert.steps


def test_a_job_file_that_is_a_fifo_or_a_folder_is_refused_without_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "jobs.jsonl")
    (tmp_path / "jobs.csv").mkdir()
    for name in ("jobs.jsonl", "jobs.csv"):
        assert main(["batch", str(tmp_path / name), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
        one_error_line(capsys.readouterr().err, f"job file {tmp_path / name} is not a regular file")


@pytest.mark.parametrize("option,value,message", [
    ("--gpus-per-worker", "-1", "--gpus-per-worker must be a number >= 0, got -1.0"),
    ("--gpus-per-worker", "nan", "--gpus-per-worker must be a number >= 0, got nan"),
    ("--address", "ray://127.0.0.1:1", "uses Ray Client, which needs Ray's client extra; pip install 'ray[client]'"),
    ("--address", "127.0.0.1:1", "nothing answers at --address 127.0.0.1:1"),
    ("--address", "bogus", "cannot join the Ray cluster at --address bogus")])
def test_bad_cluster_options_are_one_line(tmp_path, capsys, option, value, message):
    pytest.importorskip("ray")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": str(tmp_path / "x.mp4"), "prompt": "a"}])
    (tmp_path / "x.mp4").write_bytes(b"")
    code = main(["batch", str(jobs), "--output-dir", str(tmp_path / "out"), "--quiet", option, value])
    assert code == 2
    one_error_line(capsys.readouterr().err, message)


# ---- the property: nothing the user had is lost, every row is recorded once ----------------------------------------
class FakeResult(SimpleNamespace):
    pass


def fake_run_edit(video, prompts, model_settings, read, invert, edit, output, *, use_inversion=None,
                  save_inversion=None, model=None):
    """``run_edit``'s effect on disk, fast: refuses a missing video, writes each prompt's video, comparison and
    settings JSON, and the inversion; never overwrites (as the real one without --force)."""
    if not Path(video).is_file():
        raise VidinvertError(f"video not found: {video}")
    folder = Path(output.output_dir)
    stem = Path(video).stem
    names = [f"{stem}_edit.mp4"] if len(prompts) == 1 else [f"{stem}_edit_{k + 1}.mp4" for k in range(len(prompts))]
    outputs = [folder / n for n in names]
    comparisons = [p.with_name(p.stem + "_comparison.mp4") for p in outputs]
    settings_files = [p.with_suffix(".json") for p in outputs]
    for path in outputs + comparisons + settings_files + ([Path(save_inversion)] if save_inversion else []):
        with open(path, "x") as handle:  # "x": fails if it exists
            handle.write("made by vidinvert\n")
    return FakeResult(outputs=outputs, comparisons=comparisons, settings_files=settings_files, summary={},
                      warnings=[])


NAMES = ["car", "clips", "a", "Car", "clip", "clip-3", "row-2", "results.jsonl", "d"]


@st.composite
def trees(draw):
    folders = draw(st.lists(st.sampled_from(["car", "clips", "a", "a/c", "d", "out"]), unique=True, max_size=4))
    files = draw(st.lists(st.tuples(st.sampled_from([""] + folders),
                                    st.sampled_from(["car.mp4", "a.mp4", "clip.mp4", "notes.txt", "results.jsonl",
                                                     MANIFEST])), unique=True, min_size=1, max_size=6))
    videos = [f"{d}/{n}" if d else n for d, n in files if n.endswith(".mp4")] + ["missing.mp4"]
    rows = draw(st.lists(st.fixed_dictionaries({"video": st.sampled_from(videos), "prompt": st.just("p")},
                                               optional={"id": st.sampled_from(NAMES)}), min_size=1, max_size=5))
    out = draw(st.sampled_from(["", "out", "new"] + folders))
    return folders, files, rows, out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trees())
def test_property_no_file_of_the_user_is_lost_and_every_row_is_recorded_once(tmp_path_factory, monkeypatch, tree):
    folders, files, rows, out_name = tree
    root = tmp_path_factory.mktemp("tree")
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder, name in files:
        (root / folder / name).write_text(f"the user's {folder}/{name}\n")
    jobs = write_jobs(root / "jobs.jsonl", rows)
    before = snapshot(root)
    monkeypatch.setattr(clip_module, "run_edit", fake_run_edit)
    monkeypatch.setattr(clip_module, "load_model", lambda settings, notes: object())
    out = root / out_name
    for _ in range(2):  # a rerun must hold too
        try:
            run_batch(jobs, out, clip_defaults(model="tiny"), progress=False)
        except VidinvertError as err:  # the whole batch refused: only for a results table that is not ours
            assert "results.jsonl is not a results table vidinvert wrote" in str(err)
            kept(before, root)
            return
        kept(before, root)
        table = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert sorted(r["line"] for r in table) == list(range(1, len(rows) + 1))  # each row once (one prompt)
        assert len({r["clip"].lower() for r in table}) == len(rows)  # every row its own folder
        for r in table:
            assert (r["status"] == "done") == (r["error"] is None)
            assert all((out / f).is_file() for f in r["outputs"])


def test_an_empty_folder_the_user_made_stays_after_a_failed_clip(tmp_path):
    (tmp_path / "out" / "x").mkdir(parents=True)  # the user's, empty
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"video": "missing.mp4", "prompt": "a", "id": "x"},
                                                {"video": "missing.mp4", "prompt": "a", "id": "y"}])
    summary = run_batch(jobs, tmp_path / "out", clip_defaults(steps=2, model="tiny"), progress=False)
    assert summary.failed == 2
    assert (tmp_path / "out" / "x").is_dir() and not list((tmp_path / "out" / "x").iterdir())  # kept, as it was
    assert not (tmp_path / "out" / "y").exists()  # made for the run, removed with nothing in it
