"""Inversion: batch accounting, exact round trips, save/load, mismatch refusals."""

import warnings

import pytest
import torch

from vidinvert.counting import counting
from vidinvert.errors import VidinvertError
from vidinvert.exact import NotConvergedWarning
from vidinvert.inversion import Inversion, SourceInfo, invert, text_model_fn
from vidinvert.metrics import relative_error
from vidinvert.sampling import sample_ddim

from conftest import assert_one_line_error


@pytest.mark.parametrize("guidance", [1.0, 6.0])
def test_inversion_with_identical_branches_runs_one_row_per_step(tiny_model, frames, guidance):
    """Empty prompt + empty negative prompt: guidance changes nothing, so no second branch is evaluated."""
    latents = tiny_model.encode(frames)
    with counting(tiny_model.transformer) as calls:
        inversion = invert(tiny_model, latents, steps=8, prompt="", guidance=guidance)
    assert calls.batches == [1] * 8
    assert inversion.trajectory.shape == (8, *latents.shape)


def test_inversion_with_a_source_prompt_and_guidance_uses_two_rows(tiny_model, frames):
    latents = tiny_model.encode(frames)
    with counting(tiny_model.transformer) as calls:
        invert(tiny_model, latents, steps=4, prompt="a red square", guidance=3.0)
    assert calls.batches == [2] * 4


def test_forward_sampler_equals_the_diffusers_pipeline(tiny_model):
    """Our DDIM sampler + guidance reproduces CogVideoXPipeline.__call__ on the same starting noise."""
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 3, 4, 8, 8, generator=generator)
    prompt = "a red disc moving right"
    expected = tiny_model.pipe(
        prompt=prompt, num_frames=9, height=64, width=64, num_inference_steps=6, guidance_scale=4.0,
        latents=noise.clone(), output_type="latent", max_sequence_length=tiny_model.text_length,
    ).frames
    fn = text_model_fn(tiny_model, prompt, "", 4.0)
    ours = sample_ddim(fn, noise, tiny_model.schedule(6))
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prompt,guidance,bound", [("", 1.0, 1e-5), ("a red square moving right", 3.0, 2e-5)])
def test_fixed_point_inversion_round_trips_to_float_precision(tiny_model, frames, prompt, guidance, bound):
    """50 steps, float32: the issue's goal is <= 1e-5 at guidance 1 within 3 evaluations per step (measured
    5.5e-6 to 5.6e-6 at 2.4-2.9); with guidance the same holds for the guided model (measured up to 9.5e-6)."""
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=50, prompt=prompt, guidance=guidance, method="fixed-point",
                       tol=1e-6, max_iter=12)
    back = sample_ddim(text_model_fn(tiny_model, prompt, "", guidance), inversion.noise, inversion.schedule(tiny_model))
    assert relative_error(back, latents) <= bound
    plain = invert(tiny_model, latents, steps=50, prompt=prompt, guidance=guidance)
    plain_back = sample_ddim(text_model_fn(tiny_model, prompt, "", guidance), plain.noise, plain.schedule(tiny_model))
    assert relative_error(plain_back, latents) > 1e-2  # plain DDIM is far from exact here
    assert sum(inversion.meta.iterations) / 50 <= 3.0


def test_fixed_point_warns_at_its_cap(tiny_model, frames):
    latents = tiny_model.encode(frames)
    with pytest.warns(NotConvergedWarning, match="did not converge at step"):
        inversion = invert(tiny_model, latents, steps=5, method="fixed-point", tol=1e-12, max_iter=2)
    assert max(inversion.meta.iterations) == 2
    assert torch.isfinite(inversion.trajectory).all()


def test_partial_inversion_covers_the_tail_of_the_schedule(tiny_model, frames):
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=20, strength=0.4, method="fixed-point", max_iter=12)
    full = tiny_model.schedule(20, split_clean_end=True)  # fixed-point cuts the last step in two by default
    assert inversion.meta.split_clean_end and len(full) == 21 and full.timesteps[-2:] == (49, 24)
    assert inversion.meta.timesteps == full.timesteps[12:] and inversion.meta.steps_stored == 8
    plain = invert(tiny_model, latents, steps=20, strength=0.4, method="fixed-point", max_iter=12, split_clean_end=False)
    assert plain.meta.timesteps == tiny_model.schedule(20).timesteps[12:]
    back = sample_ddim(text_model_fn(tiny_model, "", "", 1.0), inversion.noise, inversion.schedule(tiny_model))
    assert relative_error(back, latents) < 1e-4


def test_save_load_round_trip_and_checks(tiny_model, tiny_pipes, frames, tmp_path):
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=4, provenance=SourceInfo(hash="abc", fps=8.0))
    path = inversion.save(tmp_path / "clip.inv")
    loaded = Inversion.load(path)
    assert torch.equal(loaded.trajectory, inversion.trajectory) and torch.equal(loaded.clean, inversion.clean)
    assert loaded.meta == inversion.meta
    loaded.check_matches(tiny_model, source_hash="abc", num_steps=4)
    with pytest.raises(VidinvertError, match="another video"):
        loaded.check_matches(tiny_model, source_hash="xyz")
    with pytest.raises(VidinvertError, match="4 steps"):
        loaded.check_matches(tiny_model, num_steps=50)
    from vidinvert.models import VideoModel

    other = VideoModel(tiny_pipes["2b" if "5b" in tiny_model.name else "5b"])
    with pytest.raises(VidinvertError, match="another model"):
        loaded.check_matches(other)
    with pytest.raises(VidinvertError, match="already exists"):
        inversion.save(path)
    inversion.save(path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.inv"]  # no temp files left


def test_load_refuses_damaged_files(tmp_path, tiny_model, frames):
    inversion = invert(tiny_model, tiny_model.encode(frames), steps=3)
    good = inversion.save(tmp_path / "good.inv").read_bytes()
    cases = {"truncated.inv": good[: len(good) // 2], "garbage.inv": b"not a tensor file" * 10, "empty.inv": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_one_line_error(lambda: Inversion.load(tmp_path / name), name)
    assert_one_line_error(lambda: Inversion.load(tmp_path / "missing.inv"), "not found", "missing.inv")


def test_invert_refuses_bad_arguments(tiny_model, frames):
    latents = tiny_model.encode(frames)
    for kwargs, pattern in [
        (dict(steps=0), "steps must be"),
        (dict(guidance=0.5), "guidance must be"),
        (dict(strength=1.5), r"depth \(fraction\) must be"),
        (dict(method="magic"), "unknown inversion method"),
    ]:
        with pytest.raises(VidinvertError, match=pattern):
            invert(tiny_model, latents, **kwargs)
    with pytest.raises(VidinvertError, match="NaN"):
        invert(tiny_model, latents * float("nan"), steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        invert(tiny_model, latents, steps=2)  # no warnings on the normal path


def test_trajectory_device_option(tiny_model, frames):
    latents = tiny_model.encode(frames)
    inversion = invert(tiny_model, latents, steps=3, trajectory_device="cpu")
    assert inversion.trajectory.device.type == "cpu"
    assert torch.equal(inversion.trajectory, invert(tiny_model, latents, steps=3).trajectory)
    with pytest.raises(VidinvertError, match="unknown device"):
        invert(tiny_model, latents, steps=3, trajectory_device="warp-drive")


def test_predicted_acceptance_matches_verified_acceptance(tiny_model, frames):
    """Stopping one evaluation early on a measured contraction keeps the round trip as exact as verifying."""
    latents = tiny_model.encode(frames)
    fast = invert(tiny_model, latents, steps=20, method="fixed-point", max_iter=20)
    slow = invert(tiny_model, latents, steps=20, method="fixed-point", max_iter=20, verify=True)
    assert sum(fast.meta.iterations) < sum(slow.meta.iterations)
    fn = text_model_fn(tiny_model, "", "", 1.0)
    for inversion in (fast, slow):
        assert relative_error(sample_ddim(fn, inversion.noise, inversion.schedule(tiny_model)), latents) < 2e-5


def test_format_1_files_still_load(tiny_model, frames, tmp_path):
    """A file written by the format-1 writer (untyped ``extra`` dict) loads into the typed fields."""
    import json

    from safetensors.torch import save_file

    from vidinvert.settings import ReadSettings

    inversion = invert(tiny_model, tiny_model.encode(frames), steps=3)
    old = {k: v for k, v in inversion.meta.to_json().items()
           if k not in ("fps", "indices", "read", "resumed_steps", "residuals")}
    old.update(format_version=1, extra={"fps": 12.5, "indices": [0, 2, 4], "read": {"max_frames": 9}, "resumed_steps": 1})
    path = tmp_path / "old.inv"
    save_file({"trajectory": inversion.trajectory.contiguous(), "clean": inversion.clean.contiguous()}, str(path),
              metadata={"vidinvert": json.dumps(old)})
    meta = Inversion.load(path).meta
    assert (meta.fps, meta.indices, meta.read, meta.resumed_steps) == (12.5, (0, 2, 4), ReadSettings(max_frames=9), 1)
    assert meta.timesteps == inversion.meta.timesteps and meta.format_version == 2


def test_loaded_latents_are_float32_and_integer_tensors_are_refused(tiny_model, frames, tmp_path):
    """Another writer's float16 trajectory loads as float32 (latents stay float32); integer tensors are refused."""
    import json

    from safetensors.torch import save_file

    inversion = invert(tiny_model, tiny_model.encode(frames), steps=2)
    header = {"vidinvert": json.dumps(inversion.meta.to_json())}
    half = tmp_path / "half.inv"
    save_file({"trajectory": inversion.trajectory.half().contiguous(), "clean": inversion.clean.half().contiguous()},
              str(half), metadata=header)
    loaded = Inversion.load(half)
    assert loaded.trajectory.dtype == torch.float32 and loaded.clean.dtype == torch.float32
    ints = tmp_path / "ints.inv"
    save_file({"trajectory": inversion.trajectory.int().contiguous(), "clean": inversion.clean.int().contiguous()},
              str(ints), metadata=header)
    with pytest.raises(VidinvertError, match="non-float tensors"):
        Inversion.load(ints)


def test_the_header_records_the_clean_end_cap_resolved(tiny_model, frames):
    """``clean_max_iter`` ``None`` in a header means only "not fixed-point": unset, it is recorded as ``max_iter``."""
    latents = tiny_model.encode(frames)
    assert invert(tiny_model, latents, steps=2).meta.clean_max_iter is None
    for given, recorded in (({}, 3), ({"clean_max_iter": 5}, 5)):
        with pytest.warns((NotConvergedWarning, UserWarning)):
            meta = invert(tiny_model, latents, steps=2, method="fixed-point", tol=1e-12, max_iter=3, **given).meta
        assert (meta.max_iter, meta.clean_max_iter) == (3, recorded)
