"""Wan (flow matching) as a second family: tiny Wan 2.1 / 2.2 pipelines built in code, checked against diffusers.

Mathematics first: the flow schedule is the scheduler's own sigmas, our Euler sampler reproduces
``WanPipeline.__call__``, inversion round trips, the injection processor keeps diffusers' attention backend and
computes the attention written out by hand, Wan 2.2's experts switch at the pipeline's boundary and TI2V's per-token
timesteps match the pipeline. What Wan shares with every family (VAE scaling, equality with ``WanAttnProcessor`` with
injection off, restoring the processors) is in test_families.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import moving_square

from vidinvert.inversion import invert, text_model_fn
from vidinvert.metrics import relative_error
from vidinvert.models.wan import WanModel
from vidinvert.sampling import sample_ddim, split_prediction, step_coefficients
from vidinvert.schedule import flow_schedule_from_scheduler
from vidinvert.tiny_wan import TinyWanConfig, build_tiny_wan_pipeline, native_size


@pytest.fixture(scope="module")
def wan_pipes():
    """``{style: pipe}`` for the three tiny Wan layouts, float32 on the CPU."""
    return {style: build_tiny_wan_pipeline(TinyWanConfig(style=style)) for style in ("2.1", "2.2", "2.2-5b")}


@pytest.fixture
def wan(wan_pipes) -> WanModel:
    return WanModel(wan_pipes["2.1"], name="tiny-wan", native_size=native_size("2.1"))


def wan_frames(height: int = 48, width: int = 64, count: int = 9) -> torch.Tensor:
    """The moving-square clip at Wan's tiny size ``[F, 3, H, W]``."""
    return moving_square(height, width, count)


# ---- step 1: schedule and sampler ------------------------------------------------------------------------------
def test_flow_schedule_is_the_schedulers_own_sigmas(wan_pipes):
    """Euler: sigmas after shift 7 and the appended final 0; UniPC flow config: its sigmas and int timesteps."""
    for style in ("2.1", "2.2"):
        scheduler = wan_pipes[style].scheduler
        schedule = flow_schedule_from_scheduler(scheduler, 10)
        reference = type(scheduler).from_config(scheduler.config)
        reference.set_timesteps(10)
        assert schedule.prediction_type == "flow" and len(schedule) == 10
        assert torch.equal(schedule.sigma_from, reference.sigmas[:-1].double())
        assert torch.equal(schedule.sigma_to, reference.sigmas[1:].double())
        assert list(schedule.timesteps) == reference.timesteps.tolist()
        assert float(schedule.sigma_to[-1]) == 0.0
    # the shift formula, independently of diffusers' code: the Euler scheduler's sigma_min is itself the shifted
    # 1/1000 (its __init__ shifts the training sigmas), and set_timesteps spaces evenly between 1 and it, then shifts
    shift = 7.0
    shifted = lambda s: shift * s / (1 + (shift - 1) * s)  # noqa: E731
    sigma = torch.linspace(1.0, shifted(1 / 1000), 10, dtype=torch.float64)[3]
    before = wan_pipes["2.1"].scheduler.timesteps.clone()
    ours = flow_schedule_from_scheduler(wan_pipes["2.1"].scheduler, 10).sigma_from[3]
    assert abs(float(ours) - shifted(float(sigma))) < 1e-6
    assert torch.equal(wan_pipes["2.1"].scheduler.timesteps, before)  # the pipeline's scheduler is untouched


def test_flow_step_algebra():
    """x0 = x - s v and eps = x + (1 - s) v recombine to x; the Euler step is linear with A = 1, B = s_to - s_from."""
    x, v = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    s, s_to = 0.7, 0.4
    x0, eps = split_prediction(x, v, s, "flow")
    assert torch.allclose((1 - s) * x0 + s * eps, x) and torch.allclose(eps - x0, v)
    a, b = step_coefficients(s, s_to, "flow")
    assert (a, b) == (1.0, s_to - s)
    assert torch.allclose((1 - s_to) * x0 + s_to * eps, a * x + b * v)  # moving along the same (x0, eps) line


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_euler_sampler_equals_wan_pipeline(wan, guidance):
    """Our Euler sampler + guidance reproduces WanPipeline.__call__ (same noise, prompt, negative prompt, steps)."""
    noise = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(3))  # [B, C, T, h, w], pipeline layout
    prompt, negative = "a red disc moving right", "gray"
    expected = wan.pipe(prompt=prompt, negative_prompt=negative, num_frames=9, height=48, width=64,
                        num_inference_steps=6, guidance_scale=guidance, latents=noise.clone(), output_type="latent",
                        max_sequence_length=wan.text_length).frames  # [1, C, T, h, w]
    fn = text_model_fn(wan, prompt, negative, guidance)
    ours = sample_ddim(fn, noise.permute(0, 2, 1, 3, 4), wan.schedule(6))  # [1, T, C, h, w]
    assert torch.allclose(ours.permute(0, 2, 1, 3, 4), expected, atol=1e-5, rtol=1e-5)
    assert relative_error(ours.permute(0, 2, 1, 3, 4), expected) < 1e-6


def test_wan_size_rules(wan):
    """Frames of 16-pixel multiples; Wan's 480x832 when no native size is given (the frame rule and the frame checks
    of every family are in test_families.py)."""
    assert wan.size_multiple == 16 and WanModel(wan.pipe).native_size() == (480, 832)


# ---- step 2: inversion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,prompt,guidance", [(25, "", 1.0), (50, "", 1.0), (25, "a red square", 5.0)])
def test_fixed_point_inversion_round_trips(wan, steps, prompt, guidance):
    """fp32: the Euler step is linear in v, so the fixed-point solver inverts it exactly (<= 1e-5 relative latent
    error; measured 2.1e-6 to 3.5e-6 on random weights); plain inversion (1 evaluation per step) stays far off."""
    latents = wan.encode(wan_frames())
    exact = invert(wan, latents, steps=steps, prompt=prompt, guidance=guidance, method="fixed-point", tol=1e-6,
                   max_iter=12)
    fn = text_model_fn(wan, prompt, "", guidance)
    exact_error = relative_error(sample_ddim(fn, exact.noise, exact.schedule(wan)), latents)
    plain = invert(wan, latents, steps=steps, prompt=prompt, guidance=guidance)
    plain_error = relative_error(sample_ddim(fn, plain.noise, plain.schedule(wan)), latents)
    print(f"steps {steps} guidance {guidance}: fixed-point {exact_error:.2e} "
          f"({sum(exact.meta.iterations) / (steps + 1):.2f} evaluations/step), plain {plain_error:.2e}")
    assert exact_error <= 1e-5
    assert plain_error > 100 * exact_error
    assert exact.trajectory.shape == (steps + 1, *latents.shape)  # the clean-end step cut in two
    assert float(exact.schedule(wan).sigma_from[0]) == 1.0  # inverted all the way to pure noise


def test_plain_inversion_is_the_backward_euler_step(wan):
    """Plain inversion step i moves x at sigma_to[i] to sigma_from[i] with v evaluated at x (and timestep t_i)."""
    latents = wan.encode(wan_frames())
    inversion = invert(wan, latents, steps=4)
    schedule = inversion.schedule(wan)
    x = latents
    for i in reversed(range(4)):
        v = wan.predict(x, schedule.timesteps[i], wan.encode_text([""]))
        x = x + (float(schedule.sigma_from[i]) - float(schedule.sigma_to[i])) * v
        assert torch.allclose(inversion.trajectory[i], x, atol=1e-6)


# ---- step 3: injection and edits ------------------------------------------------------------------------------
from vidinvert.attention import BatchLayout, InjectionConfig, InjectionState  # noqa: E402
from vidinvert.editing import EditConfig, EditStats, edit  # noqa: E402
from vidinvert.errors import VidinvertError  # noqa: E402
from vidinvert.inversion import Inversion  # noqa: E402
from vidinvert.models.wan_attention import WanInjectionProcessor  # noqa: E402


def _wan_inputs(model, batch=3, seed=0):
    x = torch.randn(batch, 3, model.transformer.config.in_channels, 6, 8, generator=torch.Generator().manual_seed(seed))
    return x, model.encode_text(["a red disc moving right", "", "a blue box"][:batch])


def test_processor_keeps_the_attention_backend(wan):
    """The processor carries diffusers' backend attributes, copied from the one it replaces and set by
    set_attention_backend while installed (so the backend dispatch reaches it)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    x, text = _wan_inputs(wan, batch=1)
    expected = wan.predict(x, 300.0, text)
    with wan.injected(InjectionConfig(), InjectionState()):
        processors = [p for p in wan.transformer.attn_processors.values() if isinstance(p, WanInjectionProcessor)]
        assert all(p._attention_backend is None and p._parallel_config is None for p in processors)
        wan.transformer.set_attention_backend("native")
        try:
            assert all(p._attention_backend == AttentionBackendName.NATIVE for p in processors)
            got = wan.predict(x, 300.0, text)
        finally:
            wan.transformer.reset_attention_backend()
    assert torch.allclose(got, expected, atol=1e-6)


def test_injection_equals_explicit_attention_over_own_and_reference_keys(wan):
    """Main row j: softmax(q_j [k_j; k_ref]^T / sqrt(d)) [v_j; v_ref]; the reference row sees only itself."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    attn = wan.transformer.blocks[0].attn1
    dim = attn.to_q.in_features
    hidden = torch.randn(3, 12, dim, generator=torch.Generator().manual_seed(2))  # [B, N, D]
    rope = wan.transformer.rope(torch.zeros(1, 16, 3, 4, 8))  # 3 x 2 x 4 = 24 positions; use the first 12
    rope = tuple(r[:, :12] for r in rope)
    # queries/keys/values by hand (the projections, RMS norm across heads, interleaved RoPE)
    q, k, v = attn.norm_q(attn.to_q(hidden)), attn.norm_k(attn.to_k(hidden)), attn.to_v(hidden)
    split = lambda t: t.view(3, 12, attn.heads, -1)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    cos, sin = rope

    def rotate(t):
        pairs = t.view(*t.shape[:-1], -1, 2)
        c, s = cos.view(1, 12, 1, -1, 2)[..., 0], sin.view(1, 12, 1, -1, 2)[..., 0]
        return torch.stack([pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 0] * s + pairs[..., 1] * c], -1).flatten(-2)

    q, k = rotate(q), rotate(k)
    state = InjectionState(layout=BatchLayout.build(2, shared_reference=True))
    out = WanInjectionProcessor(state, 0, inject=True)(attn, hidden, None, None, rope)
    for row in range(3):
        keys = torch.cat([k[row], k[2]]) if row < 2 else k[row]  # [N or 2N, heads, d]
        values = torch.cat([v[row], v[2]]) if row < 2 else v[row]
        logits = torch.einsum("nhd,mhd->hnm", q[row], keys) / q.shape[-1] ** 0.5
        expected = torch.einsum("hnm,mhd->nhd", logits.softmax(-1), values).flatten(1)
        assert (out[row] - attn.to_out[0](expected)).abs().max() < 1e-5
    plain = WanAttnProcessor()(attn, hidden, None, None, rope)
    assert torch.allclose(out[2], plain[2], atol=1e-6)  # the reference row is unchanged by injection


@pytest.fixture
def wan_inversion(wan):
    return invert(wan, wan.encode(wan_frames()), steps=6)


def test_edit_layouts_multi_prompt_and_save_load(wan, wan_inversion, tmp_path):
    stats = EditStats()
    prompts = ["a blue box", "a green disc"]
    config = EditConfig(guidance=5.0, rows_per_call=None)
    both = edit(wan, wan_inversion, prompts, config, stats=stats)
    assert stats.batch_rows == [5] * 6  # 2 prompts x (uncond, cond) + 1 shared reference row
    for k, prompt in enumerate(prompts):
        assert torch.allclose(both[k : k + 1], edit(wan, wan_inversion, prompt, config), atol=1e-5)
    split = edit(wan, wan_inversion, prompts, EditConfig(guidance=5.0, rows_per_call=2))
    assert relative_error(split, both) < 1e-5
    loaded = Inversion.load(wan_inversion.save(tmp_path / "x.inv"))
    assert loaded.meta.timesteps == wan_inversion.meta.timesteps and isinstance(loaded.meta.timesteps[0], float)
    assert torch.equal(edit(wan, loaded, prompts, config), both)
    off = edit(wan, wan_inversion, prompts[0], EditConfig(guidance=5.0, injection=InjectionConfig(enabled=False)))
    assert relative_error(off, both[:1]) > 1e-4  # injection changes the result


def test_exact_reconstruction_and_kv_reuse_after_fixed_point(wan):
    """Fixed-point inversion + the inversion prompt: the edit returns the source; recorded keys/values reproduce the
    recomputed reference branch (they are its own keys/values after a fixed-point inversion)."""
    latents = wan.encode(wan_frames())
    inversion = invert(wan, latents, steps=10, method="fixed-point", tol=1e-6, max_iter=12, record_kv=True)
    assert relative_error(edit(wan, inversion, "", EditConfig(guidance=1.0)), latents) < 2e-5
    stats = EditStats()
    reused = edit(wan, inversion, "a blue box", EditConfig(injection=InjectionConfig(reuse_kv=True)), stats=stats)
    recomputed = edit(wan, inversion, "a blue box", EditConfig(rows_per_call=None))
    assert stats.batch_rows == [2] * 11  # 10 steps + the split clean-end one; no reference row evaluated
    assert relative_error(reused, recomputed) < 1e-5


def test_strength_blend_and_krnr_refusal(wan, tmp_path):
    from conftest import assert_one_line
    from vidinvert.blend import BlendConfig, edit_mask

    latents = wan.encode(wan_frames())
    inversion = invert(wan, latents, steps=10, prompt="a red square", method="fixed-point", tol=1e-6, max_iter=12)
    half = edit(wan, inversion, "a red square", EditConfig(guidance=1.0, strength=0.5))
    assert relative_error(half, latents) < 2e-5  # exact from the middle of the trajectory too
    # random weights disagree almost uniformly over the frame, so a high threshold is needed for a partial mask
    blend = BlendConfig(enabled=True, threshold=0.9)
    mask = edit_mask(wan, inversion, "", ["a blue square"], blend)  # [1, T, 1, h, w]
    assert 0 < float(mask.mean()) < 1
    blended = edit(wan, inversion, "a blue square", EditConfig(blend=blend, guidance=5.0))
    outside = (mask == 0).expand_as(blended)
    assert torch.equal(blended[outside], latents.expand_as(blended)[outside])  # exactly the source outside
    assert not torch.equal(blended[~outside], latents.expand_as(blended)[~outside])
    with pytest.raises(VidinvertError) as err:
        edit(wan, inversion, "a blue square", EditConfig(krnr=2, strength=0.9))
    assert_one_line(err.value, "K-RNR", "flow")


# ---- step 4: registry and command line ------------------------------------------------------------------------
import json  # noqa: E402

from vidinvert.cli import main  # noqa: E402
from vidinvert.export import write_video  # noqa: E402
from vidinvert.models import load_pipeline, wrap  # noqa: E402


@pytest.fixture
def wan_video(tmp_path):
    """A 17-frame 48x64 mp4 at 16 fps (Wan's frame rate)."""
    clip = wan_frames(count=9)
    return write_video(torch.cat([clip, clip.flip(0)[1:]]), tmp_path / "clip.mp4", fps=16)


def test_folder_family_is_read_from_model_index(wan_pipes, tmp_path):
    """save_pretrained + load by path: the WanPipeline class is read from model_index.json, wrapped as Wan, and
    the loaded model predicts what the built one does."""
    folder = tmp_path / "wan"
    wan_pipes["2.1"].save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    loaded = wrap(load_pipeline(str(folder), device="cpu"), name=str(folder))
    assert isinstance(loaded, WanModel) and loaded.family == "wan" and loaded.native_size() == (480, 832)
    built = WanModel(wan_pipes["2.1"])
    assert loaded.fingerprint() == built.fingerprint()
    x, text = _wan_inputs(built, batch=1)
    assert torch.allclose(loaded.predict(x, 500.0, loaded.encode_text(["a red disc moving right"])),
                          built.predict(x, 500.0, text), atol=1e-5)


def test_bad_wan_folder_gives_a_one_line_error(tmp_path, capsys):
    from conftest import assert_one_line_error

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "_diffusers_version": "0.42.0", "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"]}))
    assert_one_line_error(lambda: load_pipeline(str(folder), device="cpu"), "could not load", str(folder))
    assert main(["info", "--model", str(folder)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "could not load" in line]
    assert len(lines) == 1  # (diffusers' own loading bar may precede it)


def test_cli_edit_invert_and_reconstruct_with_tiny_wan(wan_video, tmp_path, capsys):
    out = tmp_path / "edited.mp4"
    assert main(["edit", str(wan_video), "--model", "tiny-wan", "--prompt", "a blue box", "--steps", "3",
                 "-o", str(out), "--quiet"]) == 0
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["result"]["batch_rows"] == [3]  # uncond + cond + the shared reference row, every step
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["frames"], summary["size"], summary["fps"]) == (17, [48, 64], 16.0)  # the tiny model's size
    inv = tmp_path / "clip.inv"
    assert main(["invert", str(wan_video), "--model", "tiny-wan", "-o", str(inv), "--steps", "3", "--quiet"]) == 0
    multi = tmp_path / "multi.mp4"
    assert main(["edit", str(inv), "--model", "tiny-wan", "--prompt", "a blue box", "--prompt", "a red disc",
                 "--steps", "3", "-o", str(multi), "--quiet", "--no-comparison"]) == 0
    assert (tmp_path / "multi_1.mp4").is_file() and (tmp_path / "multi_2.mp4").is_file()
    code = main(["edit", str(inv), "--model", "tiny", "--prompt", "x", "-o", str(tmp_path / "d.mp4")])
    assert code == 2 and "another model" in capsys.readouterr().err  # a Wan inversion refused by CogVideoX
    recon = tmp_path / "recon.mp4"
    assert main(["reconstruct", str(wan_video), "--model", "tiny-wan", "--steps", "10", "--inversion", "fixed-point",
                 "--max-iter", "12", "-o", str(recon), "--quiet"]) == 0
    fidelity = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fidelity"]
    assert fidelity["latent_relative_error"] < 1e-4
    assert main(["info", "--model", "tiny-wan"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["family"] == "wan"
    code = main(["edit", str(wan_video), "--model", "tiny-wan", "--prompt", "x", "--steps", "10", "--krnr", "2",
                 "-o", str(tmp_path / "k.mp4")])
    assert code == 2 and "K-RNR" in capsys.readouterr().err


# ---- step 5: Wan 2.2 (two experts, per-token timesteps) -------------------------------------------------------
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline  # noqa: E402


def _with_euler(pipe, shift: float = 3.0):
    """The same components with FlowMatchEulerDiscreteScheduler, so WanPipeline.__call__ runs our Euler step."""
    return WanPipeline(**{**pipe.components, "scheduler": FlowMatchEulerDiscreteScheduler(shift=shift)},
                       boundary_ratio=pipe.config.boundary_ratio, expand_timesteps=pipe.config.expand_timesteps)


def _calls(transformer, into: list, tag: int):
    return transformer.register_forward_pre_hook(lambda module, args, kwargs: into.append(tag), with_kwargs=True)


def test_two_experts_switch_at_the_boundary_as_the_pipeline(wan_pipes):
    """A14B layout: transformer at t >= 875, transformer_2 below, with guidance_scale_2 there; our sampler equals
    WanPipeline.__call__, and inversion and editing run the same expert per step as sampling."""
    pipe = _with_euler(wan_pipes["2.2"])
    model = WanModel(pipe, name="tiny-wan22", native_size=native_size("2.2"))
    schedule = model.schedule(8)
    experts = [model.expert_for(t) for t in schedule.timesteps]
    assert experts == [0 if t >= 875 else 1 for t in schedule.timesteps] and 0 < sum(experts) < 8
    noise = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(5))
    prompt, negative = "a red disc", "gray"
    expected = pipe(prompt=prompt, negative_prompt=negative, num_frames=9, height=48, width=64,
                    num_inference_steps=8, guidance_scale=5.0, guidance_scale_2=2.0, latents=noise.clone(),
                    output_type="latent", max_sequence_length=model.text_length).frames
    ours = sample_ddim(text_model_fn(model, prompt, negative, 5.0, 2.0), noise.permute(0, 2, 1, 3, 4), schedule)
    assert relative_error(ours.permute(0, 2, 1, 3, 4), expected) < 1e-6
    single = sample_ddim(text_model_fn(model, prompt, negative, 5.0), noise.permute(0, 2, 1, 3, 4), schedule)
    assert relative_error(single, ours) > 1e-4  # the second scale is really used below the boundary

    seen: list = []
    hooks = [_calls(pipe.transformer, seen, 0), _calls(pipe.transformer_2, seen, 1)]
    try:
        latents = model.encode(wan_frames())
        inversion = invert(model, latents, steps=25, method="fixed-point", tol=1e-6, max_iter=12)
        assert sorted(set(seen)) == [0, 1]
        seen.clear()
        edit(model, inversion, "a blue box", EditConfig(guidance=5.0, guidance_2=2.0, rows_per_call=None))
        # one call per edit step, by the expert of its timestep
        assert seen == [model.expert_for(t) for t in inversion.schedule(model).timesteps]
    finally:
        for hook in hooks:
            hook.remove()
    back = sample_ddim(text_model_fn(model, "", "", 1.0), inversion.noise, inversion.schedule(model))
    assert relative_error(back, latents) <= 1e-5  # exact across the expert switch


def test_inversion_uses_each_steps_expert(wan_pipes):
    """Plain inversion: one evaluation per step, by the expert of that step's timestep (reversed order)."""
    model = WanModel(wan_pipes["2.2"], name="tiny-wan22", native_size=native_size("2.2"))
    schedule = model.schedule(8)
    seen: list = []
    hooks = [_calls(model.transformer, seen, 0), _calls(model.transformer_2, seen, 1)]
    try:
        invert(model, model.encode(wan_frames()), steps=8)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [model.expert_for(t) for t in reversed(schedule.timesteps)]


def test_guidance_2_refused_without_a_second_expert(wan, wan_inversion):
    from conftest import assert_one_line_error

    assert_one_line_error(lambda: edit(wan, wan_inversion, "x", EditConfig(guidance_2=2.0)), "second guidance")


def test_expand_timesteps_matches_the_pipeline_and_round_trips(wan_pipes):
    """TI2V-5B layout: per-token timesteps [B, T * h/2 * w/2]; our sampler equals WanPipeline.__call__ and the
    fixed-point inversion round trips (48-channel latents, 16 pixels per latent cell)."""
    pipe = _with_euler(wan_pipes["2.2-5b"], shift=5.0)
    model = WanModel(pipe, name="tiny-wan22-5b", native_size=native_size("2.2-5b"))
    assert model.expand_timesteps and model.size_multiple == 32 and model.spatial_factor == 16
    shapes = []
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["timestep"].shape)), with_kwargs=True)
    noise = torch.randn(1, 48, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    try:
        expected = pipe(prompt="a red disc", negative_prompt="", num_frames=9, height=64, width=64,
                        num_inference_steps=5, guidance_scale=4.0, latents=noise.clone(), output_type="latent",
                        max_sequence_length=model.text_length).frames
        shapes.clear()
        ours = sample_ddim(text_model_fn(model, "a red disc", "", 4.0), noise.permute(0, 2, 1, 3, 4), model.schedule(5))
    finally:
        hook.remove()
    assert shapes == [(2, 3 * 2 * 2)] * 5  # [uncond + cond rows, T * h/2 * w/2 tokens]
    assert relative_error(ours.permute(0, 2, 1, 3, 4), expected) < 1e-6
    latents = model.encode(wan_frames(64, 64))
    assert latents.shape == (1, 3, 48, 4, 4)
    inversion = invert(model, latents, steps=25, method="fixed-point", tol=1e-6, max_iter=12)
    back = sample_ddim(text_model_fn(model, "", "", 1.0), inversion.noise, inversion.schedule(model))
    assert relative_error(back, latents) <= 1e-5
    assert edit(model, inversion, ["a blue box", "a red disc"], EditConfig()).shape == (2, 3, 48, 4, 4)


def test_web_studio_with_tiny_wan(wan, wan_video, tmp_path):
    """The page's studio (form settings -> jobs) inverts once and edits several prompts with a Wan model."""
    from vidinvert.web import Studio, settings_from_form

    studio = Studio.from_model(wan)
    read, inv, config = settings_from_form({"max_num_frames": 9, "steps": 2})
    first = studio.prepared(str(wan_video), read, inv)
    assert not first.reused and first.inversion.trajectory.shape[1:] == (1, 3, 16, 6, 8)
    results, job = studio.edit(str(wan_video), read, inv, ["a red disc", "a blue disc"], config, tmp_path)
    assert job.summary["inversion_reused"] and job.summary["batch_rows"] == [5]
    assert all(r.video.is_file() and r.comparison.is_file() for r in results)
