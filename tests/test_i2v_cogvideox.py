"""First-frame edits with CogVideoX image-to-video models: the conditioning equals diffusers' pipeline, exact inversion
round-trips with it, saved inversions keep it, and every front end refuses what cannot work in one line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidinvert.editing import EditConfig, edit
from vidinvert.settings import InjectionConfig
from vidinvert.errors import VidinvertError
from vidinvert.inversion import Inversion, invert, text_model_fn
from vidinvert.metrics import relative_error
from vidinvert.models import load_pipeline, wrap
from vidinvert.sampling import sample_ddim
from vidinvert.tiny import TinyConfig, build_tiny_pipeline


@pytest.fixture(scope="module")
def i2v():
    return wrap(load_pipeline("tiny-i2v"), name="tiny-i2v")


def _image(seed: int = 0, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def _frame(pil: Image.Image) -> torch.Tensor:
    """As the pipeline's image processor reads it: [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.array(pil).astype(np.float32) / 255.0).permute(2, 0, 1) * 2 - 1


@pytest.mark.parametrize("style,frames", [("5b", 9), ("1.5", 5)])
def test_sampler_with_a_first_frame_equals_the_diffusers_i2v_pipeline(style, frames):
    """CogVideoXImageToVideoPipeline.__call__ from the same noise, its condition drawn from the same generator
    (1.5: ofs embedding, image latents divided by the scaling factor; a frame count needing no temporal padding)."""
    pipe = build_tiny_pipeline(TinyConfig(style=style, image_to_video=True))
    model = wrap(pipe, name="tiny-i2v")
    pil, latent_frames = _image(), (frames - 1) // 4 + 1
    noise = torch.randn(1, latent_frames, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    prompt = "a red disc moving right"
    expected = pipe(image=pil, prompt=prompt, num_frames=frames, height=64, width=64, num_inference_steps=6,
                    guidance_scale=4.0, latents=noise.clone(), output_type="latent",
                    max_sequence_length=model.text_length, generator=torch.Generator().manual_seed(5)).frames
    image = model.encode_image(_frame(pil), latent_frames, generator=torch.Generator().manual_seed(5), sample=True)
    ours = sample_ddim(text_model_fn(model, prompt, "", 4.0, image=image), noise, model.schedule(6))
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)


def test_exact_inversion_round_trips_with_the_image_condition_and_is_saved(i2v, frames, tmp_path):
    latents = i2v.encode(frames)
    image = i2v.encode_image(frames[0], latents.shape[1])
    inversion = invert(i2v, latents, steps=20, method="fixed-point", image=image, image_hash="h", tol=1e-6,
                       max_iter=12)
    back = sample_ddim(text_model_fn(i2v, "", "", 1.0, image=image), inversion.noise, inversion.schedule(i2v))
    assert relative_error(back, latents) <= 1e-5
    inversion.save(tmp_path / "a.inv")
    loaded = Inversion.load(tmp_path / "a.inv")
    assert loaded.meta.condition_hash == "h" and loaded.condition.equal(inversion.condition)
    # the unedited first frame reconstructs; another frame changes the result
    same = edit(i2v, loaded, [""], EditConfig(guidance=1.0))
    assert relative_error(same, latents) <= 1e-5
    other = edit(i2v, loaded, [""], EditConfig(guidance=1.0), first_frames=i2v.encode_image(-frames[0], latents.shape[1]))
    assert relative_error(other, latents) > 1e-2


def test_attention_map_injection_reconstructs_and_splits_like_the_joint_batch(i2v, frames):
    """First-frame edits inject attention maps by default. With the unedited frame the main row is the reference row
    at every step: the edit equals the one without injection, the inversion's round trip; the reference row evaluated alone (its queries recorded
    with its keys/values) gives the joint batch's edit."""
    latents = i2v.encode(frames)
    image = i2v.encode_image(frames[0], latents.shape[1])
    inversion = invert(i2v, latents, steps=12, method="fixed-point", image=image, tol=1e-6, max_iter=12)
    same = edit(i2v, inversion, [""], EditConfig(guidance=1.0), first_frames=image)
    plain = edit(i2v, inversion, [""], EditConfig(guidance=1.0, injection=InjectionConfig(enabled=False)),
                 first_frames=image)
    assert relative_error(same, plain) <= 1e-6 and relative_error(same, latents) <= 1e-4
    other = i2v.encode_image(-frames[0], latents.shape[1])
    joint, split, values = (edit(i2v, inversion, ["x"], EditConfig(guidance=3.0, rows_per_call=rows, injection=kind),
                                 first_frames=other)
                            for rows, kind in ((None, InjectionConfig()), (1, InjectionConfig()),
                                               (None, InjectionConfig(kind="keys-values"))))
    assert relative_error(split, joint) <= 1e-5
    assert relative_error(values, joint) > 1e-3  # the kinds differ: auto chose attention maps


def test_several_first_frames_run_in_one_batch_as_prompts_do(i2v, frames):
    """Two edited frames and one shared reference row: 2 guided pairs + 1 = 5 rows per injecting step (the first 3
    of 4: a first-frame edit injects for 0.8 of the steps by default), 4 after; each row equals its own edit run
    alone."""
    from vidinvert.counting import counting
    from vidinvert.models.condition import ImageRows

    latents = i2v.encode(frames)
    inversion = invert(i2v, latents, steps=4, image=i2v.encode_image(frames[0], latents.shape[1]))
    a, b = (i2v.encode_image(f, latents.shape[1]) for f in (-frames[0], frames[0].flip(-1)))
    config = EditConfig(guidance=3.0, rows_per_call=None)
    with counting(i2v.transformer) as calls:
        both = edit(i2v, inversion, ["x", "y"], config, first_frames=ImageRows.cat([a, b]))
    assert calls.batches == [5, 5, 5, 4]
    alone = edit(i2v, inversion, ["y"], config, first_frames=b)
    assert torch.allclose(both[1:], alone, atol=1e-5)


def test_a_text_to_video_model_or_a_windowed_clip_refuses_a_first_frame(i2v, frames):
    t2v = wrap(load_pipeline("tiny"), name="tiny")
    latents = t2v.encode(frames)
    with pytest.raises(VidinvertError, match="text-to-video.*image-to-video model"):
        edit(t2v, invert(t2v, latents, steps=2), ["x"], first_frames=i2v.encode_image(frames[0], 3))
    with pytest.raises(VidinvertError, match="conditioned on a frame"):
        invert(i2v, i2v.encode(frames), steps=2)  # an I2V model needs its condition


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    _image(1, 96).save(folder / "edited.png")
    _image(2, 1).save(folder / "onepx.png")
    (folder / "text.png").write_text("not an image")
    return folder


@pytest.mark.parametrize("args,message", [
    (["--model", "tiny", "--first-frame", "edited.png"], "is text-to-video: it cannot follow a first frame"),
    (["--model", "tiny-i2v", "--first-frame", "text.png"], "is not a readable image"),
    (["--model", "tiny-i2v", "--first-frame", "onepx.png"], "1x1 pixels, too small"),
    (["--model", "tiny-i2v", "--first-frame", "missing.png"], "first frame not found"),
    (["--model", "tiny-i2v", "--first-frame", "edited.png", "--method", "flowedit"], "edits by inversion"),
    (["--model", "tiny-i2v", "--first-frame", "edited.png", "--first-frame", "edited.png", "--prompt", "a",
      "--prompt", "b", "--prompt", "c"], "2 first frames for 3 prompts"),
])
def test_cli_refuses_bad_first_frames_in_one_line_and_writes_nothing(images, args, message, capsys, monkeypatch):
    from vidinvert.cli import main

    monkeypatch.chdir(images)
    assert main(["edit", *args, "--steps", "2", "-o", "out.mp4"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not list(images.glob("out*"))


def test_cli_first_frame_edit_writes_the_video_and_records_the_frame(images, capsys, monkeypatch):
    from vidinvert.cli import main
    from vidinvert.provenance import file_sha256

    monkeypatch.chdir(images)
    assert main(["edit", "--model", "tiny-i2v", "--first-frame", "edited.png", "--steps", "2", "-o", "ok.mp4"]) == 0
    captured = capsys.readouterr()
    assert "fitted to the clip's 64x64" in captured.err  # the 96x96 frame, resized by the clip's rule
    record = json.loads((images / "ok.json").read_text())
    frames = record["result"]["first_frames"]
    assert frames[0]["sha256"] == file_sha256(images / "edited.png") and frames[0]["size"] == [96, 96]
    assert record["result"]["prompts"] == [""]  # no prompt: the source prompt (empty here)
    assert (images / "ok.mp4").is_file()


def test_batch_row_first_frame_is_relative_to_the_job_file_and_in_the_hash(images):
    from vidinvert.batch.jobfile import read_jobs

    jobs = images / "jobs.jsonl"
    rows = [{"video": "clip.mp4", "first-frame": "edited.png", "model": "tiny-i2v"},
            {"video": "clip.mp4", "prompt": "x", "model": "tiny-i2v", "id": "b"}]
    jobs.write_text("\n".join(json.dumps(r) for r in rows))
    first, second = read_jobs(jobs)
    assert first.first_frames == (str(images / "edited.png"),) and first.prompts == ()
    assert second.first_frames == () and first.job_hash != second.job_hash
