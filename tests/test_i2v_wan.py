"""Wan image-to-video: first-frame conditioning checked against diffusers' ``WanImageToVideoPipeline``.

Tiny random pipelines of each layout (``tiny_wan.py``): Wan 2.1 I2V (mask + condition latents on the channels and a
CLIP image embedding), Wan 2.2 I2V A14B (the same channels, two experts, no CLIP) and Wan 2.2 TI2V-5B given a first
frame (the first latent frame held clean, its tokens at timestep 0). Our sampler with the image condition equals the
pipeline from the same noise, exact inversion round trips under the condition, text-to-video models refuse a frame
and key/value injection installs over the I2V transformers as over the text-to-video ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import moving_square
from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from PIL import Image

from vidinvert.attention import BatchLayout, InjectionConfig, InjectionState
from vidinvert.errors import VidinvertError
from vidinvert.exact import invert_fixed_point
from vidinvert.inversion import text_model_fn
from vidinvert.metrics import relative_error
from vidinvert.models import adapter_for, load_pipeline
from vidinvert.models.condition import ImageRows
from vidinvert.models.wan import WanI2VModel, WanModel
from vidinvert.models.wan_attention import WanInjectionProcessor
from vidinvert.sampling import sample_ddim
from vidinvert.tiny_wan import TinyWanConfig, build_tiny_wan_pipeline, native_size

PROMPT, NEGATIVE = "a red disc moving right", "gray"




def _euler(pipe, shift: float, expand_timesteps: bool | None = None):
    """A ``WanImageToVideoPipeline`` of the same components stepping with ``FlowMatchEulerDiscreteScheduler``, so
    ``__call__`` runs our Euler step (Wan 2.2's folders ship UniPC, whose multistep solver we do not run)."""
    components = {**pipe.components, "scheduler": FlowMatchEulerDiscreteScheduler(shift=shift)}
    expand = pipe.config.get("expand_timesteps", False) if expand_timesteps is None else expand_timesteps
    return WanImageToVideoPipeline(**components, boundary_ratio=pipe.config.get("boundary_ratio"),
                                   expand_timesteps=expand)


def _image(height: int, width: int) -> tuple[Image.Image, torch.Tensor]:
    """An 8-bit image (the clip's first frame) and the same frame ``[3, H, W]`` in [-1, 1] as the samplers take."""
    pixels = ((moving_square(height, width, 1)[0] + 1) * 127.5).round().clamp(0, 255).byte()
    pil = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    frame = torch.from_numpy(np.array(pil).astype(np.float32) / 255).permute(2, 0, 1) * 2 - 1
    return pil, frame


def _pipeline_latents(pipe, model, pil, noise, steps, guidance, guidance_2=None):
    """``WanImageToVideoPipeline.__call__``'s latents ``[1, C', T, h, w]`` for the image, prompt and noise.

    The prompts go in as embeddings from ``WanPipeline``'s prompt code (``model.encode_text``): diffusers 0.42's
    I2V pipeline calls ftfy unguarded (a NameError without that optional package), its copy of the code otherwise
    the same; ``test_i2v_prompts_are_wan_pipelines`` checks ours against WanPipeline's."""
    height, width = model.native_size()
    return pipe(image=pil, prompt_embeds=model.encode_text([PROMPT]),
                negative_prompt_embeds=model.encode_text([NEGATIVE]), num_frames=9, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                guidance_scale_2=guidance_2, latents=noise.clone(), output_type="latent",
                max_sequence_length=model.text_length).frames


def test_i2v_prompts_are_wan_pipelines(pipes):
    """An I2V model's prompt embeddings are ``WanPipeline.encode_prompt``'s on the same text encoder."""
    model = adapter_for(pipes("tiny-wan-i2v"), "tiny-wan-i2v")
    text_pipe = WanPipeline(**{k: v for k, v in model.pipe.components.items() if not k.startswith("image_")})
    for prompt in (PROMPT, ""):
        with torch.no_grad():  # as encode_text runs (with grad the encoder takes another attention kernel)
            expected, _ = text_pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                                  max_sequence_length=model.text_length)
        assert torch.equal(model.encode_text([prompt]), expected) and expected.shape[1] == 512


# ---- (a) our sampler with the image condition equals the pipeline ---------------------------------------------
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_wan21_i2v_sampler_equals_the_pipeline(pipes, guidance):
    """Wan 2.1 I2V: mask + condition latents on the channels and the CLIP embedding (the pipeline's own
    ``encode_image``) on the cross-attention; the same noise gives the pipeline's latents."""
    pipe = pipes("tiny-wan-i2v")
    model = adapter_for(pipe, "tiny-wan-i2v")
    assert type(model) is WanI2VModel and model.takes_image and model.needs_image
    pil, frame = _image(*model.native_size())
    noise = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(3))  # [B, C', T, h, w]
    expected = _pipeline_latents(pipe, model, pil, noise, 6, guidance)
    image = model.encode_image(frame, 3)
    assert image["condition"].shape == (1, 3, 4 + 16, 6, 8) and image["clip"].shape == (1, 17, 8)
    assert torch.equal(image["condition"][0, :, :4].amax((1, 2, 3)), torch.tensor([1.0, 0.0, 0.0]))  # the mask
    assert torch.equal(image["clip"], pipe.encode_image(pil, model.device))
    ours = sample_ddim(text_model_fn(model, PROMPT, NEGATIVE, guidance, image=image), noise.permute(0, 2, 1, 3, 4),
                       model.schedule(6)).permute(0, 2, 1, 3, 4)
    diff = float((ours - expected).abs().max())
    print(f"Wan 2.1 I2V, guidance {guidance}: max |ours - pipeline| = {diff:.2e}")
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)
    without_clip = ImageRows(condition=image["condition"], clip=torch.zeros_like(image["clip"]))
    other = sample_ddim(text_model_fn(model, PROMPT, NEGATIVE, guidance, image=without_clip),
                        noise.permute(0, 2, 1, 3, 4), model.schedule(6)).permute(0, 2, 1, 3, 4)
    assert (other - expected).abs().max() > 1e-3  # the CLIP embedding is really read


def test_wan22_i2v_a14b_sampler_equals_the_pipeline(pipes):
    """Wan 2.2 I2V A14B: the same channels, no CLIP, two experts switching at boundary_ratio 0.9 with their own
    guidance scales."""
    pipe = _euler(pipes("tiny-wan22-i2v"), shift=3.0)
    model = adapter_for(pipe, "tiny-wan22-i2v")
    assert type(model) is WanI2VModel and model.boundary_timestep() == 900.0
    schedule = model.schedule(8)
    assert 0 < sum(model.expert_for(t) for t in schedule.timesteps) < 8  # both experts run
    pil, frame = _image(*model.native_size())
    noise = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(5))
    expected = _pipeline_latents(pipe, model, pil, noise, 8, 5.0, 2.0)
    image = model.encode_image(frame, 3)
    assert set(image.tensors) == {"condition"}
    ours = sample_ddim(text_model_fn(model, PROMPT, NEGATIVE, 5.0, 2.0, image=image), noise.permute(0, 2, 1, 3, 4),
                       schedule).permute(0, 2, 1, 3, 4)
    diff = float((ours - expected).abs().max())
    print(f"Wan 2.2 I2V A14B: max |ours - pipeline| = {diff:.2e}")
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5)


def _ti2v(pipes):
    """TI2V-5B's text-to-video pipeline with the Euler scheduler, its adapter, and the first-frame pipeline of the
    same components (``WanImageToVideoPipeline`` with ``expand_timesteps``, how diffusers gives TI2V a frame)."""
    text_pipe = pipes("tiny-wan22-5b")
    text_pipe = WanPipeline(**{**text_pipe.components, "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0)},
                            expand_timesteps=True)
    return WanModel(text_pipe, name="tiny-wan22-5b", native_size=native_size("2.2-5b")), _euler(text_pipe, 5.0, True)


def test_ti2v_first_frame_sampler_equals_the_pipeline(pipes):
    """TI2V-5B with a first frame: the frame's tokens at timestep 0 and its latent frame clean in every input; the
    first latent frame ends exactly on the condition, the others as the pipeline's. Without a frame the same model
    still generates from text alone."""
    model, pipe = _ti2v(pipes)
    assert model.takes_image and not model.needs_image
    assert type(adapter_for(pipe, "tiny-wan22-5b")) is WanModel  # the first-frame pipeline gets the same adapter
    pil, frame = _image(*model.native_size())
    noise = torch.randn(1, 48, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    timesteps = []
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: timesteps.append(kwargs["timestep"].clone()), with_kwargs=True)
    try:
        expected = _pipeline_latents(pipe, model, pil, noise, 5, 4.0)
        theirs, timesteps[:] = list(timesteps), []
        image = model.encode_image(frame, 3)
        ours = sample_ddim(text_model_fn(model, PROMPT, NEGATIVE, 4.0, image=image), noise.permute(0, 2, 1, 3, 4),
                           model.schedule(5)).permute(0, 2, 1, 3, 4)
    finally:
        hook.remove()
    assert image["first"].shape == (1, 1, 48, 4, 4)
    assert len(timesteps) == 5 and len(theirs) == 10  # one call of [uncond, cond] rows; theirs: cond, uncond
    assert all(torch.equal(ours_t, torch.cat(theirs[2 * k : 2 * k + 2])) for k, ours_t in enumerate(timesteps))
    assert all(float(t[:, :4].abs().max()) == 0 and float(t[:, 4:].min()) > 0 for t in timesteps)  # 2x2 tokens/frame
    diff = float((ours - expected).abs().max())
    first = float((ours[:, :, :1] - image["first"].permute(0, 2, 1, 3, 4)).abs().max())
    print(f"TI2V-5B with a first frame: max |ours - pipeline| = {diff:.2e}, first frame off the condition {first:.2e}")
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-5) and first < 1e-5
    text_only = sample_ddim(text_model_fn(model, PROMPT, NEGATIVE, 4.0), noise.permute(0, 2, 1, 3, 4),
                            model.schedule(5))
    assert relative_error(text_only.permute(0, 2, 1, 3, 4), expected) > 1e-3


def test_ti2v_first_frame_velocity_needs_the_steps_exact_sigma(pipes):
    """UniPC's integer timesteps lose the sigma a step starts from; the model reads it back from the schedules it
    handed out, so even the UniPC folder's sigmas land the first latent frame on the condition."""
    model = WanModel(pipes("tiny-wan22-5b"), name="tiny-wan22-5b", native_size=native_size("2.2-5b"))
    schedule = model.schedule(6, split_clean_end=True)
    assert all(isinstance(t, int) for t in schedule.timesteps)
    assert any(abs(t / 1000 - float(s)) > 1e-4 for t, s in zip(schedule.timesteps, schedule.sigma_from))
    assert [model.sigma_at(t) for t in schedule.timesteps] == [float(s) for s in schedule.sigma_from]
    image = model.encode_image(_image(*model.native_size())[1], 3)
    noise = torch.randn(1, 3, 48, 4, 4, generator=torch.Generator().manual_seed(1))
    out = sample_ddim(text_model_fn(model, PROMPT, "", 1.0, image=image), noise, schedule)
    assert float((out[:, :1] - image["first"]).abs().max()) < 1e-5


# ---- (b) exact inversion under the image condition ------------------------------------------------------------
def _round_trip(model, latents, image, prompt, guidance, steps=20):
    schedule = model.schedule(steps, split_clean_end=True)
    fn = text_model_fn(model, prompt, "", guidance, image=image)
    trajectory, evaluations = invert_fixed_point(fn, latents, schedule, tol=1e-6, max_iter=12,
                                                 precision=model.dtype)
    back = sample_ddim(fn, trajectory[0], schedule)
    return relative_error(back, latents), sum(evaluations) / len(schedule)


@pytest.mark.parametrize("name,prompt,guidance", [("tiny-wan-i2v", "", 1.0), ("tiny-wan-i2v", PROMPT, 5.0),
                                                  ("tiny-wan22-i2v", PROMPT, 5.0), ("tiny-wan22-5b", "", 1.0)])
def test_fixed_point_inversion_round_trips_with_the_image(pipes, name, prompt, guidance):
    """The clip's latents inverted under its own first frame's condition sample back to themselves (<= 1e-5
    relative; measured 1.0e-6 to 2.4e-6 for the I2V layouts, 4.8e-6 for TI2V, whose 48-channel tiny model is the
    least contracting at tol 1e-6: 8.3e-6 at guidance 5, with or without the frame). TI2V: the clip's first latent
    frame is the condition (the causal VAE encodes the first frame alone), held there through every step."""
    model = adapter_for(pipes(name), name)
    frames = moving_square(*model.native_size(), 9)
    latents = model.encode(frames)
    image = model.encode_image(frames[0], latents.shape[1])
    if name == "tiny-wan22-5b":
        assert float((latents[:, :1] - image["first"]).abs().max()) < 1e-5
    error, per_step = _round_trip(model, latents, image, prompt, guidance)
    print(f"{name} guidance {guidance}: round trip {error:.2e} ({per_step:.2f} evaluations/step)")
    assert error <= 1e-5


# ---- (c) text-to-video models refuse a frame ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-wan", "tiny-wan22"])
def test_text_to_video_wan_refuses_a_frame(pipes, name):
    from conftest import assert_one_line_error

    model = adapter_for(pipes(name), name)
    assert not model.takes_image and not model.needs_image
    frame = moving_square(*model.native_size(), 1)[0]
    assert_one_line_error(lambda: model.encode_image(frame, 3), "text-to-video")
    with pytest.raises(ValueError, match="takes no image"):  # a condition made by another model
        model.predict(torch.randn(1, 3, 16, 6, 8), 500, model.encode_text([""]), ImageRows(first=torch.zeros(1)))


def test_i2v_wan_needs_a_frame_and_a_fitting_one(pipes):
    model = adapter_for(pipes("tiny-wan22-i2v"), "tiny-wan22-i2v")
    x = torch.randn(1, 3, 16, 6, 8)
    text = model.encode_text([""])
    with pytest.raises(VidinvertError, match="needs a frame"):
        model.predict(x, 500, text)
    image = model.encode_image(moving_square(*model.native_size(), 1)[0], 2)  # two latent frames, not three
    with pytest.raises(ValueError, match="does not fit"):
        model.predict(x, 500, text, image)


# ---- (d) injection over the I2V transformers ------------------------------------------------------------------
def _i2v_inputs(model, batch: int, seed: int = 0):
    """Latents ``[batch, 3, C', h, w]``, prompt embeddings and one image condition per row."""
    height, width = model.native_size()
    channels = model.vae.config.z_dim
    x = torch.randn(batch, 3, channels, height // model.spatial_factor, width // model.spatial_factor,
                    generator=torch.Generator().manual_seed(seed))
    image = model.encode_image(moving_square(height, width, 1)[0], 3).repeat(batch)
    return x, model.encode_text(["a red disc moving right", "", "a blue box"][:batch]), image


@pytest.mark.parametrize("name", ["tiny-wan-i2v", "tiny-wan22-i2v", "tiny-wan22-5b"])
def test_injection_off_equals_plain_predict_with_the_image(pipes, name):
    """Installed with no layout: bit for bit the plain prediction in every expert, only the self-attention
    processors replaced (the I2V cross-attention, with its CLIP keys, is left alone); duplicated reference rows
    change nothing, and the processors come back on exit."""
    model = adapter_for(pipes(name), name)
    x, text, image = _i2v_inputs(model, 3)
    self_attention = {f"blocks.{i}.attn1.processor" for i in range(model.num_blocks)}
    before = [dict(e.attn_processors) for e in model.experts]
    for t in (950, 300):
        expected = model.predict(x, t, text, image)
        with model.injected(InjectionConfig(), InjectionState()):
            for expert in model.experts:
                kinds = {n: type(p) for n, p in expert.attn_processors.items()}
                assert {n for n, kind in kinds.items() if kind is WanInjectionProcessor} == self_attention
                assert all(kind is WanAttnProcessor for n, kind in kinds.items() if n not in self_attention)
            got = model.predict(x, t, text, image)
        assert torch.equal(got, expected)
        plain = model.predict(x[:1], t, text[:1], image.rows(slice(0, 1)))
        for blocks in (None, (0,)):
            state = InjectionState()
            with model.injected(InjectionConfig(blocks=blocks), state):
                state.layout = BatchLayout.build(1, shared_reference=True)
                both = model.predict(torch.cat([x[:1], x[:1]]), t, torch.cat([text[:1], text[:1]]), image.rows([0, 0]))
            assert torch.allclose(both[0], plain[0], atol=1e-5)
    for expert, procs in zip(model.experts, before):
        assert all(expert.attn_processors[k] is procs[k] for k in procs)


def test_tiny_i2v_builders_and_names():
    """The tiny I2V styles are the pipelines they mirror; the registry knows their names and family."""
    from vidinvert.models.registry import IMAGE_TO_VIDEO, TINY_MODELS, family_named, takes_image_named

    clip = build_tiny_wan_pipeline(TinyWanConfig(style="2.1-i2v"))
    assert type(clip).__name__ == "WanImageToVideoPipeline" and clip.image_encoder is not None
    assert clip.transformer.config.in_channels == 36 and clip.transformer.config.image_dim == 8
    assert clip.tokenizer.model_max_length == 512  # WanAttnProcessor's split of image and text tokens needs it
    a14b = build_tiny_wan_pipeline(TinyWanConfig(style="2.2-i2v"))
    assert a14b.image_encoder is None and a14b.transformer_2 is not None and a14b.config.boundary_ratio == 0.9
    assert "WanImageToVideoPipeline" in IMAGE_TO_VIDEO
    for name in ("tiny-wan-i2v", "tiny-wan22-i2v"):
        assert name in TINY_MODELS and family_named(name) == "wan" and takes_image_named(name) is True
    assert takes_image_named("tiny-wan22-5b") is True and takes_image_named("tiny-wan") is False
