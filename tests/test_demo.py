"""The demo world, its judges, and (when shipped) the trained demo model."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training import judges, world
from training.world import (
    BACKGROUNDS, COLOURS, HELDOUT, MOTIONS, SHAPES, ClipSpec, combos, make_batch, parse_caption, render, sample_specs,
)

from vidinvert.demo import MODEL_DIR  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread avoids oversubscription on a busy machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_same_seed_same_clips_other_seed_other_clips():
    a, _, caps_a = make_batch(sample_specs(6, seed=3))
    b, _, caps_b = make_batch(sample_specs(6, seed=3))
    c, _, _ = make_batch(sample_specs(6, seed=4))
    assert torch.equal(a, b) and caps_a == caps_b
    assert not torch.equal(a, c)
    assert a.shape == (6, world.FRAMES, 3, world.SIZE, world.SIZE)
    assert a.min() >= -1 and a.max() <= 1


def test_batch_rendering_equals_single_rendering():
    specs = sample_specs(5, seed=0, split="all")
    batch, masks, _ = make_batch(specs)
    for k, spec in enumerate(specs):
        frames, mask = render(spec)
        assert torch.equal(frames, batch[k]) and torch.equal(mask, masks[k])


def test_heldout_combinations_never_in_training_split():
    train = set(combos("train"))
    assert not train & set(HELDOUT)
    assert len(train) + len(HELDOUT) == len(COLOURS) * len(SHAPES) * len(MOTIONS)
    assert {s.combo for s in sample_specs(400, seed=1, split="train")} <= train
    assert {s.combo for s in sample_specs(40, seed=1, split="heldout")} == set(HELDOUT)
    for field, values in ((0, COLOURS), (1, SHAPES), (2, MOTIONS)):  # every word is known from training combos
        assert {c[field] for c in train} == set(values)


def test_captions_use_the_tokenizer_vocabulary_and_parse_back():
    from vidinvert.tiny import make_tokenizer

    tokenizer = make_tokenizer(16)
    unk = tokenizer.unk_token_id
    for spec in sample_specs(30, seed=2, split="all"):
        assert parse_caption(spec.caption) == (spec.colour, spec.shape, spec.motion, spec.background)
        ids = tokenizer(spec.caption).input_ids
        assert unk not in ids and len(ids) <= 16
    assert spec.caption.startswith(f"a {spec.colour} {spec.shape} ")


@pytest.mark.parametrize("colour", list(COLOURS))
def test_judges_read_the_drawn_colour_and_motion(colour):
    rng = np.random.default_rng(len(colour))
    for k, motion in enumerate(MOTIONS):
        spec = world.random_spec(rng, (colour, SHAPES[k % 3], motion), background=list(BACKGROUNDS)[k % 3])
        frames, _ = render(spec)
        assert judges.object_colour(frames) == colour, spec
        assert judges.motion(frames) == motion, spec
        true_track = torch.from_numpy(spec.track()).float()
        assert (judges.centroids(frames) - true_track).norm(dim=1).max() < 1.0


def test_caption_matches_the_drawing():
    spec = ClipSpec("yellow", "square", "right", "gray", radius=8, speed=3, x0=16, y0=30)
    assert spec.caption == "a yellow square moving right on a gray background"
    frames, masks = render(spec)
    x_first = judges.centroids(frames)[0, 0]
    x_last = judges.centroids(frames)[-1, 0]
    assert x_last - x_first == pytest.approx(24, abs=0.5)
    inside = frames[0, :, 30, 16]  # object centre in frame 0
    assert torch.allclose((inside + 1) / 2, torch.tensor(COLOURS["yellow"]), atol=1e-6)
    assert masks[0, 30, 16] == 1 and masks[0, 2, 2] == 0


def test_classify_track():
    f = np.arange(9, dtype=float)
    assert judges.classify_track(np.stack([10 + 3 * f, 0 * f + 30], 1)) == "right"
    assert judges.classify_track(np.stack([40 - 3 * f, 0 * f + 30], 1)) == "left"
    assert judges.classify_track(np.stack([0 * f + 30, 40 - 3 * f], 1)) == "up"
    assert judges.classify_track(np.stack([10 + 2 * f, 40 - 2 * f], 1)) == "up right"
    assert judges.classify_track(np.stack([40 - 2 * f, 10 + 2 * f], 1)) == "down left"
    assert judges.classify_track(np.stack([0 * f + 30, 20 + 3 * (4 - abs(f - 4))], 1)) == "bouncing"
    assert judges.classify_track(np.stack([30 + 0.5 * np.sin(f), 0 * f + 30], 1)) == "still"
    assert judges.classify_track(np.full((9, 2), np.nan)) == "none"


def test_background_psnr_ignores_the_object_and_sees_the_background():
    spec = ClipSpec("red", "disc", "right", "sky", x0=18, y0=30)
    source, _ = render(spec)
    recoloured, _ = render(replace(spec, colour="green"))
    assert judges.background_psnr(source, recoloured) == math.inf  # only the object differs
    assert judges.centroid_distance(source, recoloured) < 0.3
    noisy = source + 0.02 * torch.randn(source.shape, generator=torch.Generator().manual_seed(0))
    assert 30 < judges.background_psnr(source, noisy) < 45
    shifted, _ = render(replace(spec, x0=21))
    assert judges.centroid_distance(source, shifted) == pytest.approx(3.0, abs=0.3)


def test_shape_iou_ignores_colour_and_sees_place_and_shape():
    spec = ClipSpec("red", "disc", "still", "sky", x0=30, y0=30)
    source, _ = render(spec)
    assert judges.shape_iou(source, render(replace(spec, colour="green"))[0]) > 0.95  # colour does not matter
    r, d = spec.radius, 3.0
    overlap = 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)  # two discs d apart
    expected = overlap / (2 * math.pi * r * r - overlap)
    assert judges.shape_iou(source, render(replace(spec, x0=33))[0]) == pytest.approx(expected, abs=0.04)
    assert 0.6 < judges.shape_iou(source, render(replace(spec, shape="square"))[0]) < 0.9  # same place and area
    assert math.isnan(judges.shape_iou(source * 0 - 1, source * 0 - 1))  # no object in either


def test_shipped_model_loads_offline_and_samples(monkeypatch):
    from diffusers import CogVideoXPipeline

    from vidinvert.models import VideoModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = CogVideoXPipeline.from_pretrained(MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 30 * 2**20
    assert pipe.transformer.config.use_rotary_positional_embeddings
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.vae_scale_factor_spatial == 4 and pipe.transformer.config.patch_size == 2  # v2: 8x8-pixel tokens
    caption = world.caption(*HELDOUT[0], "black")
    out = pipe(prompt=caption, height=64, width=64, num_frames=9, num_inference_steps=2, guidance_scale=6.0,
               generator=torch.Generator().manual_seed(0), output_type="pt",
               max_sequence_length=pipe.transformer.config.max_text_seq_length).frames
    assert out.shape == (1, 9, 3, 64, 64) and torch.isfinite(out).all()
    model = VideoModel(pipe)
    frames, _ = render(ClipSpec("red", "disc", "right", "black"))
    latents = model.encode(frames)
    side = 64 // pipe.vae_scale_factor_spatial
    assert latents.shape == (1, 3, pipe.transformer.config.in_channels, side, side)
    assert model.decode(latents).shape == (1, 9, 3, 64, 64)
    a = model.encode_text([world.caption("red", "disc", "right", "black")])
    b = model.encode_text([world.caption("green", "disc", "right", "black")])
    assert not torch.allclose(a, b)  # captions get distinct embeddings


def test_sample_clip_is_the_heldout_combination_it_claims():
    from training.train import sample_spec
    from vidinvert.video import read_video

    spec = sample_spec()
    assert spec.combo in HELDOUT
    clip = read_video(MODEL_DIR.parent / "sample.mp4")
    assert clip.frames.shape == (9, 3, 64, 64)
    assert judges.object_colour(clip.frames) == spec.colour
    assert judges.motion(clip.frames) == spec.motion
    drawn, _ = render(spec)
    assert judges.centroid_distance(clip.frames, drawn) < 1.0


@pytest.mark.demo_default
def test_the_default_command_edits_the_sample_with_the_demo_model(tmp_path, capsys):
    import json

    from vidinvert.cli import main
    from vidinvert.models import default_model
    from vidinvert.video import read_video
    from vidinvert.models import sample_video
    from vidinvert.web import Studio

    assert default_model() == "demo" and Studio().label == "demo"
    assert sample_video() == MODEL_DIR.parent / "sample.mp4"
    out = tmp_path / "edit.mp4"
    assert main(["edit", "--prompt", "a green disc moving right in a dark sky", "--steps", "4", "-o", str(out)]) == 0
    assert "bundled demo model" in capsys.readouterr().err  # a note: shown unless --quiet
    assert read_video(out).frames.shape == (9, 3, 64, 64)
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["model"]["name"] == "demo" and settings["inversion"]["source"] == str(sample_video())


WAN_MODEL_DIR = MODEL_DIR.parent / "model_wan"


def test_shipped_wan_model_loads_offline_and_samples(monkeypatch):
    from diffusers import WanPipeline

    from vidinvert.models import DEMO_WAN, load_pipeline, wrap

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = WanPipeline.from_pretrained(WAN_MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    size = sum(p.stat().st_size for p in WAN_MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 30 * 2**20
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.vae_scale_factor_spatial == 4 and pipe.transformer.config.patch_size[1] == 2  # v2: 8x8-pixel tokens
    out = pipe(prompt=world.caption(*HELDOUT[0], "black"), negative_prompt="", height=64, width=64, num_frames=9,
               num_inference_steps=2, guidance_scale=6.0, generator=torch.Generator().manual_seed(0),
               output_type="pt", max_sequence_length=16).frames
    assert out.shape == (1, 9, 3, 64, 64) and torch.isfinite(out).all()
    model = wrap(load_pipeline(DEMO_WAN, device="cpu"), name=DEMO_WAN)
    assert model.family == "wan" and model.native_size() == (64, 64) and model.trained_frames == 9  # its window
    frames, _ = render(ClipSpec("red", "disc", "right", "black"))
    latents = model.encode(frames)  # normalised with the per-channel statistics the training stored
    assert latents.shape == (1, 3, pipe.transformer.config.in_channels, 16, 16)
    assert model.recommended_edit == {"blend": True}  # its vidinvert.json
    assert model.decode(latents).shape == (1, 9, 3, 64, 64)
    a = model.encode_text([world.caption("red", "disc", "right", "black")])
    b = model.encode_text([world.caption("green", "disc", "right", "black")])
    assert not torch.allclose(a, b)


@pytest.mark.slow
def test_wan_training_recipe_is_reproducible_and_normalises_its_latents(tmp_path):
    """A few steps of ``--family wan`` twice with one seed: the same weights; the stored per-channel statistics make
    the training latents zero-mean, unit-std per channel; the folder loads with WanPipeline."""
    import json

    from diffusers import WanPipeline

    from training import train

    args = ["--family", "wan", "--vae-crop-steps", "2", "--vae-full-steps", "1", "--steps", "2", "--dataset-clips", "16",
            "--batch", "4", "--eval-steps", "0"]
    for name in ("a", "b"):
        assert train.main(args + ["--out", str(tmp_path / name)]) == 0
    weights = "transformer/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()
    pipe = WanPipeline.from_pretrained(tmp_path / "a")
    config = pipe.vae.config
    assert pipe.vae_scale_factor_spatial == 2 ** (len(config.dim_mult) - 1) == 4  # WanPipeline sizes latents by it
    assert len(config.latents_mean) == len(config.latents_std) == config.z_dim
    specs = world.sample_specs(16, 0 + 50, "train")  # the recipe's training clips (seed + 50)
    frames, _, _ = make_batch(specs)
    means, _ = train.encode_clips(pipe.vae, frames)  # [N, T, C, h, w]
    normalised = train.recipe("wan").objective(pipe, tuple(means.shape)).normalize(means)
    per_channel = normalised.transpose(1, 2).reshape(normalised.shape[0], config.z_dim, -1)
    assert per_channel.mean(dim=(0, 2)).abs().max() < 1e-3
    assert (per_channel.std(dim=(0, 2)) - 1).abs().max() < 1e-3
    summary = json.loads((tmp_path / "a" / "training_summary.json").read_text())
    assert summary["config"]["family"] == "wan"


def _tiny_training(folder, name):
    return ["--vae-channels", "8,16,32", "--vae-crop-steps", "2", "--vae-full-steps", "2", "--steps", "3",
            "--dataset-clips", "16", "--batch", "2", "--eval-steps", "0", "--sample", "", "--threads", "1",
            "--checkpoint-minutes", "0", "--out", str(folder / name)]


@pytest.fixture(scope="module")
def straight_training(tmp_path_factory):
    """The tiny CogVideoX recipe trained once, never interrupted."""
    from training import train

    folder = tmp_path_factory.mktemp("straight")
    assert train.main(_tiny_training(folder, "model")) == 0
    return folder / "model"


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [2, 7])  # a save inside the VAE stage; one inside the transformer stage
def test_interrupted_training_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, stop_at, straight_training):
    """Killed after its ``stop_at``-th saved state, the same command resumes from the checkpoints and writes the
    weights a run that was never interrupted writes; the checkpoints are removed after success."""
    from training import checkpoint, train

    real_save, saves = checkpoint.Checkpoints.save, []

    def save_then_die(self, stage, state):
        real_save(self, stage, state)
        saves.append(stage)
        if len(saves) == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.main(_tiny_training(tmp_path, "resumed"))
    assert saves[-1] == ("vae" if stop_at == 2 else "transformer")
    monkeypatch.setattr(checkpoint.Checkpoints, "save", real_save)
    assert (tmp_path / "resumed.checkpoints").is_dir()
    assert train.main(_tiny_training(tmp_path, "resumed")) == 0
    for weights in ("vae/diffusion_pytorch_model.safetensors", "transformer/diffusion_pytorch_model.safetensors"):
        assert (straight_training / weights).read_bytes() == (tmp_path / "resumed" / weights).read_bytes()
    assert not (tmp_path / "resumed.checkpoints").exists()
    log = (tmp_path / "resumed" / "TRAINING.md").read_text()
    assert "Resumed" in log and log.count("## 1. VAE") == 1 and log.count("## 3. Transformer") == 1


def test_checkpoints_of_another_config_are_refused(tmp_path):
    from training.checkpoint import CheckpointMismatch, Checkpoints

    Checkpoints(tmp_path / "c", {"steps": 3})
    with pytest.raises(CheckpointMismatch, match="different training config; pass --fresh"):
        Checkpoints(tmp_path / "c", {"steps": 4})
    assert Checkpoints(tmp_path / "c", {"steps": 4}, fresh=True).load("vae") is None
