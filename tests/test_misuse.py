"""Misuse across front ends: what a hostile or unlucky user can do (the page's security is in test_web_security.py).

Concurrent runs on one output, interruption or a full disk while a job's files are written, temps left by kill -9,
append-only checkpoints, memory estimates, VAE tiling, key/value budget, --quiet, unreadable inversions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from vidinvert import atomic
from vidinvert.atomic import atomic_write, clean_stale_temps, outputs_together, temp_prefix
from vidinvert.cli import main
from vidinvert.errors import VidinvertError
from vidinvert.export import write_video

from conftest import assert_one_line, assert_one_line_error


@pytest.fixture
def video(tmp_path, frames):
    return write_video(frames, tmp_path / "clip.mp4", fps=8)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- claiming outputs ------------------------------------------------------------------------------------------
def test_of_two_writers_racing_for_one_name_exactly_one_wins(tmp_path, monkeypatch):
    """Both pass the existence check before either claims the name (the old check-then-rename let both 'win')."""
    target = tmp_path / "out.json"
    both_checked = threading.Barrier(2)
    original = atomic.refuse_existing

    def checked_then_wait(path, force):
        original(path, force)
        both_checked.wait(timeout=10)

    monkeypatch.setattr(atomic, "refuse_existing", checked_then_wait)
    outcomes = {}

    def write(text):
        try:
            with atomic_write(target) as tmp:
                Path(tmp).write_text(text)
            outcomes[text] = "won"
        except VidinvertError as err:
            outcomes[text] = str(err)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [t for t, o in outcomes.items() if o == "won"]
    assert len(winners) == 1, outcomes
    loser = "B" if winners == ["A"] else "A"
    assert "already exists" in outcomes[loser]
    assert target.read_text() == winners[0]  # the winner's content under its name
    assert _names(tmp_path) == ["out.json"]  # no temps


def test_a_job_group_is_claimed_whole_or_not_at_all(tmp_path):
    (tmp_path / "b.txt").write_text("someone else's")
    with pytest.raises(VidinvertError, match="already exists"):
        with outputs_together():
            for name in ("a.txt", "b.txt", "c.txt"):
                with atomic_write(tmp_path / name, force=False, now=False) as tmp:
                    Path(tmp).write_text("mine")
            # b.txt was taken after planning (refuse_existing passed because the check is per write here)
    assert _names(tmp_path) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "someone else's"


def test_group_claim_conflict_found_at_commit_rolls_back(tmp_path):
    with pytest.raises(VidinvertError, match="another run wrote it"):
        with outputs_together():
            for name in ("a.txt", "b.txt"):
                with atomic_write(tmp_path / name) as tmp:
                    Path(tmp).write_text("mine")
            (tmp_path / "b.txt").write_text("the other run")  # appears between planning and commit
    assert _names(tmp_path) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "the other run"


def test_forced_group_puts_replaced_files_back_when_it_fails(tmp_path, monkeypatch):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old " + name)
    real = atomic._claim

    def fail_on_b(tmp, path, force):
        if path.name == "b.txt":
            raise KeyboardInterrupt
        return real(tmp, path, force)

    monkeypatch.setattr(atomic, "_claim", fail_on_b)
    with pytest.raises(KeyboardInterrupt):
        with outputs_together():
            for name in ("a.txt", "b.txt"):
                with atomic_write(tmp_path / name, force=True) as tmp:
                    Path(tmp).write_text("new")
    assert _names(tmp_path) == ["a.txt", "b.txt"]
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["old a.txt", "old b.txt"]


@pytest.mark.parametrize("fail_on", ["comparison", "json"])
def test_interrupt_or_full_disk_while_writing_leaves_no_output(video, tmp_path, monkeypatch, capsys, fail_on):
    """Ctrl-C while the comparison is written, or a full disk while the JSON is written: nothing appears, and the
    message saying so is true."""
    import vidinvert.export as export
    import vidinvert.outputs as outputs

    if fail_on == "comparison":
        real = export._encode_h264

        def encode(rgb, path, fps, crf):
            if "comparison" in str(path):
                raise KeyboardInterrupt
            return real(rgb, path, fps, crf)

        monkeypatch.setattr(export, "_encode_h264", encode)
        expected, words = 130, "no partial output was left"
    else:
        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(outputs.json, "dump", full)
        expected, words = 2, "No space left"
    args = ["edit", str(video), "--prompt", "x", "--steps", "2", "-o", str(tmp_path / "out.mp4"), "--quiet",
            "--save-inversion", str(tmp_path / "out.inv")]
    assert main(args) == expected
    assert words in capsys.readouterr().err
    assert _names(tmp_path) == ["clip.mp4"]


# ---- temps left by killed runs ---------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_runs_are_cleaned_at_the_next_run(video, tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".vidinvert-{dead}-{atomic.HOST_TAG}-out.abc123.mp4"
    stale.write_bytes(b"x" * 1000)
    alive = tmp_path / f"{temp_prefix('out')}live.mp4"  # this process: still writing
    alive.write_bytes(b"x")
    other_host = tmp_path / f".vidinvert-{dead}-ffffff-out.abc.mp4"  # another machine's pid means nothing here
    other_host.write_bytes(b"x")
    user_file = tmp_path / ".vidinvert-notes.txt"
    user_file.write_text("not ours by name")
    assert main(["invert", str(video), "--steps", "2", "-o", str(tmp_path / "clip.inv"), "--quiet"]) == 0
    assert not stale.exists() and alive.exists() and user_file.exists()
    assert other_host.exists() or atomic.HOST_TAG == "ffffff"
    assert clean_stale_temps(tmp_path / "missing") == []


def test_temp_names_carry_the_pid(tmp_path):
    with atomic_write(tmp_path / "x.txt") as tmp:
        assert Path(tmp).name.startswith(f".vidinvert-{os.getpid()}-")
        Path(tmp).write_text("1")


# ---- checkpoints -----------------------------------------------------------------------------------------------
def test_checkpoint_saves_append_and_resume_bit_identically(tiny_model, frames, tmp_path, monkeypatch):
    from vidinvert.checkpoint import InversionCheckpoint
    from vidinvert.inversion import invert

    latents = tiny_model.encode(frames)
    path = tmp_path / "clip.inv.partial"
    sizes = []
    real_step = InversionCheckpoint.step

    def step_then_stop(self, i, t, x):
        real_step(self, i, t, x)
        sizes.append(sorted(p.stat().st_size for p in path.glob("steps-*")))
        if len(self.done) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(InversionCheckpoint, "step", step_then_stop)
    with pytest.raises(KeyboardInterrupt):
        invert(tiny_model, latents, steps=6, checkpoint=path, checkpoint_every=1)
    monkeypatch.undo()
    chunks = sorted(p.name for p in path.glob("steps-*"))
    assert chunks == [f"steps-{k:06d}.safetensors" for k in range(4)]
    assert len(set(sizes[-1])) == 1  # each save is one step: no file grows with the steps done
    resumed = invert(tiny_model, latents, steps=6, checkpoint=path, checkpoint_every=1)
    fresh = invert(tiny_model, latents, steps=6)
    assert resumed.meta.resumed_steps == 4 and not path.exists()
    assert torch.equal(resumed.trajectory, fresh.trajectory)


def test_checkpoint_of_the_wrong_shape_is_ignored_with_a_warning(tiny_model, frames, tmp_path):
    from safetensors.torch import save_file

    from vidinvert.checkpoint import InversionCheckpoint
    from vidinvert.inversion import invert

    latents = tiny_model.encode(frames)
    path = tmp_path / "clip.inv.partial"
    with pytest.raises(KeyboardInterrupt):  # a real checkpoint of this inversion, then damaged by hand
        saver_step = InversionCheckpoint.step

        def stop(self, i, t, x):
            saver_step(self, i, t, x)
            raise KeyboardInterrupt

        InversionCheckpoint.step, original = stop, InversionCheckpoint.step
        try:
            invert(tiny_model, latents, steps=4, checkpoint=path, checkpoint_every=1)
        finally:
            InversionCheckpoint.step = original
    save_file({"steps": torch.zeros(1, 1, 2, 2, 2, 2)}, path / "steps-000000.safetensors")
    with pytest.warns(UserWarning, match="does not fit"):
        result = invert(tiny_model, latents, steps=4, checkpoint=path, checkpoint_every=1)
    assert result.meta.resumed_steps == 0 and not path.exists()
    assert torch.equal(result.trajectory, invert(tiny_model, latents, steps=4).trajectory)


@pytest.mark.parametrize("target", ["checkpoint", "inversion"])
def test_full_disk_while_saving_safetensors_is_one_line(video, tmp_path, monkeypatch, capsys, target):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    args = ["invert", str(video), "--steps", "2", "-o", str(tmp_path / "clip.inv"), "--quiet"]
    if target == "checkpoint":
        args += ["--checkpoint-every", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disk has space" in err and "Traceback" not in err
    assert _names(tmp_path) == ["clip.mp4"]  # no empty checkpoint, no temps


# ---- one-line errors -------------------------------------------------------------------------------------------
def test_output_folder_that_cannot_be_entered_is_one_line(video, tmp_path, monkeypatch, capsys):
    """Tests run as root, whom chmod does not stop: the denial is simulated where pathlib asks the OS."""
    locked = tmp_path / "locked"
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(locked)) and str(path) != str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    locked.mkdir()
    monkeypatch.setattr(os, "stat", stat)
    assert main(["edit", str(video), "--prompt", "x", "-o", str(locked / "out.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Permission denied" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_size_the_machine_cannot_hold_is_refused_with_numbers_before_encoding(video, tmp_path, monkeypatch,
                                                                                capsys):
    from vidinvert.models import device
    from vidinvert.models.cogvideox import VideoModel as CogVideoXModel

    encoded = []
    monkeypatch.setattr(CogVideoXModel, "encode", lambda self, frames: encoded.append(1))
    monkeypatch.setattr(device, "available_memory", lambda dev: 2**30)  # 1 GiB free
    assert main(["edit", str(video), "--prompt", "x", "--height", "2160", "--width", "3840",
                 "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "GiB" in err and "2160x3840" in err and "1.0 GiB is free" in err and "--vae-tiling" in err
    assert encoded == [] and _names(tmp_path) == ["clip.mp4"]


def test_memory_estimate_grows_with_size_and_tiling_bounds_the_vae(tiny_model):
    small = tiny_model.memory_need(9, 64, 64, 2)
    large = tiny_model.memory_need(9, 512, 512, 2)
    assert large["vae"] > 32 * small["vae"] and large["transformer"] > 32 * small["transformer"]
    vae = tiny_model.vae
    vae.enable_tiling()
    try:
        assert tiny_model.memory_need(9, 512, 512, 2)["vae"] < large["vae"] / 8
    finally:
        vae.disable_tiling()


# ---- behaviour that was wrong without a word ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("tiny", (64, 64)), ("tiny", (64, 96)), ("demo", (96, 160))])
def test_vae_tiling_works_on_the_models_we_ship(name, size, frames):
    from vidinvert.models import open_model
    from vidinvert.settings import ModelSettings

    plain = open_model(ModelSettings(name=name))
    tiled = open_model(ModelSettings(name=name, vae_tiling=True))
    clip = torch.nn.functional.interpolate(frames, size=size, mode="bilinear")  # [F, C, H, W]
    a, b = plain.encode(clip), tiled.encode(clip)
    assert a.shape == b.shape  # was a latent column short/long: "size of tensor a (9) must match (8)"
    assert tiled.decode(b).shape == plain.decode(a).shape


def test_tile_sizes_of_real_cogvideox_are_kept():
    from vidinvert.models.registry import _tiles_fit

    assert _tiles_fit(240, 30, 1 / 6, 8) and _tiles_fit(360, 45, 1 / 5, 8)  # diffusers' defaults at 480x720
    assert not _tiles_fit(32, 4, 1 / 6, 8)  # the tiny/demo defaults
    assert _tiles_fit(32, 4, 0.25, 8)


@pytest.mark.slow
def test_vae_tiling_edit_end_to_end(video, tmp_path, capsys):
    assert main(["edit", str(video), "--prompt", "x", "--steps", "2", "--vae-tiling", "--height", "64",
                 "--width", "96", "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 0


def test_reuse_kv_over_budget_recomputes_as_the_warning_says(video, tmp_path, capsys):
    args = ["edit", str(video), "--prompt", "x", "--steps", "2", "--reuse-kv", "--kv-budget-gb", "0.000001",
            "-o", str(tmp_path / "o.mp4"), "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "edits will recompute" in err and "error" not in err
    assert (tmp_path / "o.mp4").is_file()


def test_quiet_prints_only_warnings_and_errors(video, tmp_path, capsys):
    assert main(["invert", str(video), "--steps", "2", "-o", str(tmp_path / "a.inv"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)["steps"] == 2
    assert main(["invert", str(video), "--steps", "2", "-o", str(tmp_path / "b.inv")]) == 0
    assert "note:" in capsys.readouterr().err  # without --quiet the model note is shown


def test_unreadable_inversion_says_why(tmp_path, monkeypatch):
    from vidinvert.inversion import Inversion

    folder = tmp_path / "folder.inv"
    folder.mkdir()
    message = assert_one_line_error(lambda: Inversion.load(folder), "is a folder")
    assert "not found" not in message
    locked = tmp_path / "locked.inv"
    locked.write_bytes(b"x" * 100)
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    message = assert_one_line_error(lambda: Inversion.load(locked), "Permission denied")
    assert "not found" not in message and "FileNotFoundError" not in message
    assert_one_line_error(lambda: Inversion.load(tmp_path / "missing.inv"), "not found")


def test_symlink_loop_as_input_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    assert main(["edit", str(loop), "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "symlink loop" in err


def _bench_slice(monkeypatch, capsys, only: str) -> str:
    """Run bench/adversarial.py on the cases whose name holds ``only``; it must pass. Returns what it printed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("adversarial", Path(__file__).parents[1] / "bench" / "adversarial.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", ["adversarial.py", "--only", only])
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1] / "src"))
    assert bench.main() == 0, capsys.readouterr().out
    return capsys.readouterr().out


@pytest.mark.slow
def test_adversarial_bench_holds_for_hostile_inputs(monkeypatch, capsys):
    """A quick slice of bench/adversarial.py (playlists, refused before any model work; the whole set takes minutes)."""
    assert "ok   input hls.m3u8" in _bench_slice(monkeypatch, capsys, "input hls")


def test_adversarial_bench_holds_for_hostile_job_files(monkeypatch, capsys):
    """A quick slice of bench/adversarial.py's batch cases (rows refused before any model work)."""
    out = _bench_slice(monkeypatch, capsys, "batch prompt")
    assert "ok   batch prompt 5" in out and "ok   batch prompt true" in out
