"""Train the demo CogVideoX on the synthetic world (``world.py``), on the CPU, in about 75 minutes on 2 cores.

``--family wan`` trains the Wan demo model instead, with the same stages and world and Wan's parts (the
recipe is ``train_wan.py``; ``Recipe`` holds what differs). What follows describes the CogVideoX recipe.

Run ``python -m training.train --out DIR``. Every part is the real diffusers/transformers class, saved with
``CogVideoXPipeline.save_pretrained`` so that ``CogVideoXPipeline.from_pretrained(DIR)`` (and ``vidinvert --model DIR``)
load it like published weights:

1. ``AutoencoderKLCogVideoX`` (v2: 3 down blocks of widths 16-32-64, 4x spatial compression, so a 64x64 frame is
   16x16 latents and the transformer's 2x2 patches cover 8x8 pixels; 4x temporal compression as CogVideoX; 8 latent
   channels. v1 had CogVideoX's 4 blocks, 8x spatial: 16x16-pixel tokens, a 25.9 dB round trip), trained first on
   32x32 crops around the object (a quarter of the pixels, and the object is a larger share of them, which is what
   the VAE is slow to learn), then on whole frames; loss: L1 (object pixels weighted up) + MSE + a small KL term. Its
   ``scaling_factor`` is then set to 1 / std of the latents, as CogVideoX's is.
2. ``T5EncoderModel``: small, randomly initialised from the seed and frozen (every caption gets its own embedding; the
   transformer learns to read them). The tokenizer is ``vidinvert.tiny.make_tokenizer`` (a WordLevel tokenizer over
   ``tiny.VOCABULARY``, which holds every caption word); prompts are 16 tokens (``max_text_seq_length``).
3. ``CogVideoXTransformer3DModel`` with rotary positions (the CogVideoX-5b layout) and patch size 2, trained on
   pre-encoded latents of training-split clips (never a ``world.HELDOUT`` combination) with the standard CogVideoX
   objective: noise added by ``CogVideoXDDIMScheduler.add_noise`` (CogVideoX-5b's config: v-prediction, zero-terminal
   SNR, trailing spacing, snr_shift_scale 1.0) at uniformly drawn timesteps, MSE against
   ``scheduler.get_velocity``. (The fine-tuning examples' form ``1 / (1 - alpha_bar) * |x0_pred - x0|^2`` is this same
   loss.) Captions are dropped to "" 10% of the time so classifier-free guidance works. The saved weights are an EMA.

Calling the saved pipeline directly: pass ``max_sequence_length=16`` to ``CogVideoXPipeline.__call__`` (its default,
226, pads the prompt far beyond what the model was trained on); vidinvert's ``VideoModel`` does this by itself.

Reproducible: everything is drawn from ``--seed`` and fixed step counts; bit-identical results need the same torch
build and thread count (``--threads``: 2 for both families' recipe v2; v1 used 1). ``--max-minutes`` is a safety net
for slow machines: a stage that would overrun stops early (logged as such).

Resumable: every stage saves its whole state (weights, optimizer, EMA, random generators, the log so far) every
``--checkpoint-minutes`` (5) under ``OUT.checkpoints/`` (``checkpoint.py``); running the same command again after an
interruption continues from there and ends with the weights an uninterrupted run writes. The folder is removed after
a successful run; ``--fresh`` discards it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import judges
from .checkpoint import Checkpoints, rng_state, set_rng_state
from .world import BACKGROUNDS, HELDOUT, ClipSpec, caption, combos, make_batch, random_spec, sample_specs

from vidinvert.demo import MODEL_DIR, SAMPLE_CLIP, WAN_MODEL_DIR

DEFAULT_OUT = MODEL_DIR  # the shipped folders, inside the package
DEFAULT_SAMPLE = SAMPLE_CLIP


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and training settings of the demo model."""

    seed: int = 0
    threads: int = 1
    family: str = "cogvideox"  # "cogvideox" or "wan" (train_wan.py): which diffusers classes are trained
    # VAE
    vae_channels: tuple[int, ...] = (8, 16, 32, 32)  # 4 blocks: 8x spatial compression, as CogVideoX
    latent_channels: int = 8
    vae_groups: int = 4
    vae_crop_steps: int = 900  # steps on 32x32 crops around the object
    vae_full_steps: int = 300  # then steps on whole 64x64 frames
    vae_crop: int = 32
    vae_crop_batch: int = 8
    vae_full_batch: int = 4
    vae_lr: float = 2e-3
    object_weight: float = 8.0  # L1 weight of object pixels is 1 + object_weight
    kl_weight: float = 1e-3
    # text encoder
    text_dim: int = 64
    text_len: int = 16
    # transformer
    heads: int = 4
    head_dim: int = 32
    layers: int = 6
    patch_size: int = 2
    dataset_clips: int = 4000
    steps: int = 5500
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 200
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    log_every: int = 100


# The demo models v2 (both families): a VAE of 3 wider blocks (4x spatial compression: 16x16 latents, so the
# transformer's 2x2 patches are 8x8 pixels), trained longer; both cores. DemoConfig's own defaults are the v1 recipe.
RECIPE_V2 = dict(vae_channels=(16, 32, 64), vae_full_steps=3500, steps=4500, threads=2)


def build_components(config: DemoConfig):
    """Fresh (seeded) VAE, transformer, text encoder, tokenizer and scheduler."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    from vidinvert.tiny import make_text_encoder, make_tokenizer, scheduler_config

    blocks = len(config.vae_channels)
    spatial = 2 ** (blocks - 1)
    latent_size = 64 // spatial
    torch.manual_seed(config.seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * blocks,
        up_block_types=("CogVideoXUpBlock3D",) * blocks,
        block_out_channels=tuple(config.vae_channels),
        latent_channels=config.latent_channels,
        layers_per_block=1,
        norm_num_groups=config.vae_groups,
        temporal_compression_ratio=4,
        sample_height=64,
        sample_width=64,
    )
    torch.manual_seed(config.seed + 1)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        time_embed_dim=4 * config.head_dim,
        text_embed_dim=config.text_dim,
        num_layers=config.layers,
        sample_width=latent_size,
        sample_height=latent_size,
        sample_frames=9,
        patch_size=config.patch_size,
        temporal_compression_ratio=4,
        max_text_seq_length=config.text_len,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    )
    torch.manual_seed(config.seed + 2)
    text_encoder = make_text_encoder(config.text_dim, head_dim=16)
    tokenizer = make_tokenizer(config.text_len)
    scheduler = CogVideoXDDIMScheduler(**scheduler_config("5b"))
    return vae, transformer, text_encoder, tokenizer, scheduler


class Log:
    """Prints and keeps lines for TRAINING.md."""

    def __init__(self, stream=sys.stdout):
        self.lines: list[str] = []
        self.stream = stream
        self.start = time.time()

    def __call__(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, file=self.stream, flush=True)

    def elapsed(self) -> float:
        return time.time() - self.start


def _lr(step: int, total: int, base: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _crop(frames: torch.Tensor, masks: torch.Tensor, specs: list[ClipSpec], size: int, rng: np.random.Generator):
    """Crop ``size`` x ``size`` windows around each clip's object track (random jitter)."""
    out_f, out_m = [], []
    full = frames.shape[-1]
    for i, spec in enumerate(specs):
        cx, cy = spec.track().mean(axis=0)
        ox = int(np.clip(round(cx - size / 2 + rng.integers(-6, 7)), 0, full - size))
        oy = int(np.clip(round(cy - size / 2 + rng.integers(-6, 7)), 0, full - size))
        out_f.append(frames[i, :, :, oy : oy + size, ox : ox + size])
        out_m.append(masks[i, :, oy : oy + size, ox : ox + size])
    return torch.stack(out_f), torch.stack(out_m)


def vae_loss(vae, frames: torch.Tensor, masks: torch.Tensor, config: DemoConfig, generator: torch.Generator):
    """``(loss, psnr, kl)`` of one batch; frames ``[B, F, 3, H, W]``, masks ``[B, F, H, W]``."""
    x = frames.permute(0, 2, 1, 3, 4)  # [B, 3, F, H, W]
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    rec = vae.decode(z).sample  # [B, 3, F, H, W]
    weight = 1 + config.object_weight * masks[:, None]  # [B, 1, F, H, W]
    l1 = ((rec - x).abs() * weight).mean()
    mse = ((rec - x) ** 2).mean()
    kl = posterior.kl().mean() / z[0].numel()
    loss = l1 + mse + config.kl_weight * kl
    return loss, 10 * math.log10(4.0 / max(mse.item(), 1e-12)), kl.item()


def train_vae(vae, config: DemoConfig, log: Log, deadline: float, checkpoints: Checkpoints | None = None) -> dict:
    """Crop stage then full-frame stage; returns timing and the last losses. With ``checkpoints``, the state is
    saved every few minutes and a saved state is resumed."""
    rng = np.random.default_rng(config.seed + 10)
    generator = torch.Generator().manual_seed(config.seed + 11)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    total = config.vae_crop_steps + config.vae_full_steps
    vae.train()
    start = time.time()
    window: list[tuple[float, float]] = []
    last = {}
    first = 0
    saved = checkpoints.load("vae") if checkpoints else None
    if saved is not None:
        vae.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(rng, saved["rng"])
        generator.set_state(saved["generator"])
        window, last, first = saved["window"], saved["last"], saved["step"]
        start = time.time() - saved["seconds"]
        if saved["done"]:
            vae.eval()
            return saved["summary"]
        log(f"(resumed from the checkpoint at step {first})")
    else:
        log("| step | stage | loss | PSNR dB (batch) | elapsed s |")
        log("|---:|---|---:|---:|---:|")

    def state(step: int, done: bool, summary=None) -> dict:
        return dict(model=vae.state_dict(), optimizer=optimizer.state_dict(), rng=rng_state(rng),
                    generator=generator.get_state(), window=window, last=last, step=step,
                    seconds=time.time() - start, done=done, summary=summary, log=log.lines, elapsed=log.elapsed())

    step = first - 1
    for step in range(first, total):
        crop = step < config.vae_crop_steps
        batch = config.vae_crop_batch if crop else config.vae_full_batch
        specs = [random_spec(rng, combo) for combo in _draw_combos(rng, batch)]
        frames, masks, _ = make_batch(specs)
        if crop:
            frames, masks = _crop(frames, masks, specs, config.vae_crop, rng)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, total, config.vae_lr, 50, config.min_lr_ratio)
        loss, psnr, kl = vae_loss(vae, frames, masks, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        window.append((loss.item(), psnr))
        if (step + 1) % config.log_every == 0 or step + 1 == total or step + 1 == config.vae_crop_steps:
            mean_loss = sum(w[0] for w in window) / len(window)
            mean_psnr = sum(w[1] for w in window) / len(window)
            last = dict(loss=mean_loss, psnr=mean_psnr, kl=kl)
            log(f"| {step + 1} | {'crop' if crop else 'full'} | {mean_loss:.4f} | {mean_psnr:.2f} | {time.time() - start:.0f} |")
            window = []
        if time.time() > deadline:
            log(f"\nVAE stage stopped early at step {step + 1} of {total} (time budget).")
            break
        if checkpoints and checkpoints.due() and step + 1 < total:
            checkpoints.save("vae", state(step + 1, False))
    vae.eval()
    summary = dict(steps=step + 1, seconds=time.time() - start, **last)
    if checkpoints:
        checkpoints.save("vae", state(step + 1, True, summary))
    return summary


_TRAIN_COMBOS = combos("train")


def _draw_combos(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    return [_TRAIN_COMBOS[i] for i in rng.integers(len(_TRAIN_COMBOS), size=n)]


@torch.no_grad()
def encode_clips(vae, frames: torch.Tensor, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std ``[N, T, C, h, w]`` (unscaled) of frames ``[N, F, 3, H, W]``."""
    means, stds = [], []
    for i in range(0, frames.shape[0], batch):
        posterior = vae.encode(frames[i : i + batch].permute(0, 2, 1, 3, 4)).latent_dist
        means.append(posterior.mean.permute(0, 2, 1, 3, 4))
        stds.append(posterior.std.permute(0, 2, 1, 3, 4))
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def evaluate_vae(vae, log: Log, seed: int) -> dict:
    """Round trip of held-out clips: PSNR and whether the judges still read the right colour and motion."""
    specs = sample_specs(24, seed, "heldout")
    frames, _, _ = make_batch(specs)
    means, _ = encode_clips(vae, frames)
    rec = torch.cat([vae.decode(means[i : i + 8].permute(0, 2, 1, 3, 4)).sample for i in range(0, len(specs), 8)])
    rec = rec.permute(0, 2, 1, 3, 4).clamp(-1, 1)  # [N, F, 3, H, W]
    psnrs, colour_ok, motion_ok, dist = [], 0, 0, []
    for i, spec in enumerate(specs):
        mse = float(((rec[i] - frames[i]) ** 2).mean())
        psnrs.append(10 * math.log10(4.0 / mse))
        colour_ok += judges.object_colour(rec[i]) == spec.colour
        motion_ok += judges.motion(rec[i]) == spec.motion
        dist.append(judges.centroid_distance(rec[i], frames[i]))
    result = dict(
        psnr=float(np.mean(psnrs)), colour=colour_ok / len(specs), motion=motion_ok / len(specs),
        centroid_px=float(np.median(dist)),
    )
    log(f"\nVAE round trip on {len(specs)} held-out clips: PSNR {result['psnr']:.2f} dB, judged colour "
        f"{result['colour']:.0%}, motion {result['motion']:.0%}, median centroid error {result['centroid_px']:.2f} px")
    return result


def make_pipeline(vae, transformer, text_encoder, tokenizer, scheduler):
    from diffusers import CogVideoXPipeline

    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=scheduler)


@torch.no_grad()
def caption_table(pipe, captions: list[str], text_len: int) -> dict[str, torch.Tensor]:
    """Prompt embeddings ``[L, D]`` per caption, exactly as the pipeline computes them (``encode_prompt``:
    ``CogVideoXPipeline``'s and ``WanPipeline``'s take the same arguments)."""
    table = {}
    for text in captions:
        embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=text_len,
                                       device=torch.device("cpu"), dtype=torch.float32)
        table[text] = embeds[0]
    return table


class VObjective:
    """CogVideoX's objective: v-prediction at integer DDIM timesteps (``add_noise`` / ``get_velocity``)."""

    def __init__(self, pipe, latent_shape: tuple[int, ...]):
        _, frames, _, height, width = latent_shape
        self.scheduler = pipe.scheduler
        self.scaling = pipe.vae.config.scaling_factor
        self.rotary = pipe._prepare_rotary_positional_embeddings(
            height * pipe.vae_scale_factor_spatial, width * pipe.vae_scale_factor_spatial, frames, torch.device("cpu"))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents ``[B, T, C, h, w]`` -> the transformer's latents (times ``scaling_factor``)."""
        return z * self.scaling

    def draw_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.scheduler.config.num_train_timesteps, (batch,), generator=generator)

    def fixed_t(self, count: int) -> torch.Tensor:
        return torch.linspace(20, 980, count).round().long()

    def loss(self, model, x0, text, t, noise):
        """x0, noise ``[B, T, C, h, w]`` (scaled latents); text ``[B, L, D]``; t ``[B]``."""
        noisy = self.scheduler.add_noise(x0, noise, t)
        target = self.scheduler.get_velocity(x0, noise, t)
        pred = model(hidden_states=noisy, encoder_hidden_states=text, timestep=t, image_rotary_emb=self.rotary,
                     return_dict=False)[0]
        return torch.mean((pred.float() - target) ** 2)


def train_transformer(pipe, latents_mean, latents_std, captions, config: DemoConfig, log: Log, deadline: float,
                      val, objective, checkpoints: Checkpoints | None = None) -> tuple[torch.nn.Module, dict]:
    """Train on pre-encoded latents ``[N, T, C, h, w]`` (each clip's posterior mean and std, unscaled) with
    ``objective`` (``VObjective``, or ``train_wan.FlowObjective``); returns (EMA transformer, summary). With
    ``checkpoints``, the state is saved every few minutes and a saved state is resumed."""
    transformer = pipe.transformer
    texts = caption_table(pipe, sorted(set(captions)) + [""], config.text_len)
    text_rows = torch.stack([texts[c] for c in captions])  # [N, L, D]
    empty = texts[""]
    generator = torch.Generator().manual_seed(config.seed + 20)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    transformer.train()
    count = latents_mean.shape[0]
    forward = objective.loss

    start = time.time()
    window: list[float] = []
    history = []
    first = 0
    saved = checkpoints.load("transformer") if checkpoints else None
    if saved is not None:
        transformer.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        window, history, first = saved["window"], saved["history"], saved["step"]
        start = time.time() - saved["seconds"]
        log(f"(resumed from the checkpoint at step {first})")
    else:
        log("| step | loss (train, mean) | val loss (held-out, EMA) | lr | elapsed s |")
        log("|---:|---:|---:|---:|---:|")
    step = first - 1
    for step in range(first, config.steps):
        index = torch.randint(count, (config.batch,), generator=generator)
        x0 = objective.normalize(
            latents_mean[index] + latents_std[index] * torch.randn(latents_mean[index].shape, generator=generator))
        drop = torch.rand(config.batch, generator=generator) < config.caption_dropout
        text = torch.where(drop[:, None, None], empty[None], text_rows[index])
        t = objective.draw_t(config.batch, generator)
        noise = torch.randn(x0.shape, generator=generator)
        lr = _lr(step, config.steps, config.lr, config.warmup, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = forward(transformer, x0, text, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), transformer.parameters()):
                p_ema.lerp_(p, 1 - decay)
        window.append(loss.item())
        last_step = step + 1 == config.steps or time.time() > deadline
        if (step + 1) % config.log_every == 0 or last_step:
            val_loss = ""
            if (step + 1) % (5 * config.log_every) == 0 or last_step:
                with torch.no_grad():
                    val_loss = forward(ema, *val).item()
            mean = sum(window) / len(window)
            history.append(dict(step=step + 1, loss=mean, val=val_loss, seconds=time.time() - start))
            log(f"| {step + 1} | {mean:.4f} | {val_loss if val_loss == '' else f'{val_loss:.4f}'} | {lr:.2e} | "
                f"{time.time() - start:.0f} |")
            window = []
        if time.time() > deadline:
            log(f"\nTransformer stage stopped early at step {step + 1} of {config.steps} (time budget).")
            break
        if checkpoints and checkpoints.due() and step + 1 < config.steps:
            checkpoints.save("transformer", dict(
                model=transformer.state_dict(), ema=ema.state_dict(), optimizer=optimizer.state_dict(),
                generator=generator.get_state(), window=window, history=history, step=step + 1,
                seconds=time.time() - start, log=log.lines, elapsed=log.elapsed()))
    ema.train(False)
    final_val = next((h["val"] for h in reversed(history) if h["val"] != ""), None)
    return ema, dict(steps=step + 1, seconds=time.time() - start, loss=history[-1]["loss"] if history else None,
                     val=final_val)


def validation_batch(pipe, vae, config: DemoConfig, objective, count: int = 48):
    """Fixed held-out latents, texts, timesteps and noise: a comparable validation loss throughout training."""
    specs = sample_specs(count, config.seed + 30, "heldout")
    frames, _, captions = make_batch(specs)
    means, _ = encode_clips(vae, frames)
    x0 = objective.normalize(means)
    texts = caption_table(pipe, captions, config.text_len)
    text = torch.stack([texts[c] for c in captions])
    generator = torch.Generator().manual_seed(config.seed + 31)
    t = objective.fixed_t(count)
    noise = torch.randn(x0.shape, generator=generator)
    return x0, text, t, noise


@torch.no_grad()
def generate(pipe, prompt: str, steps: int, guidance: float, generator: torch.Generator, text_len: int) -> torch.Tensor:
    """One 9-frame 64x64 text-to-video sample from ``CogVideoXPipeline.__call__``: ``[F, 3, H, W]`` in [0, 1]."""
    return pipe(prompt=prompt, height=64, width=64, num_frames=9, num_inference_steps=steps, guidance_scale=guidance,
                generator=generator, output_type="pt", max_sequence_length=text_len).frames[0]


@dataclass(frozen=True)
class Recipe:
    """What differs between the families' demo models; the stages, world and budget are shared."""

    build: Callable  # config -> (vae, transformer, text_encoder, tokenizer, scheduler)
    pipeline: Callable  # the same five -> a diffusers pipeline
    set_latent_stats: Callable  # (vae, raw latents [N, T, C, h, w]) -> a log line; stores the normalisation
    objective: type  # (pipe, latent shape) -> normalize / draw_t / fixed_t / loss
    generate: Callable  # (pipe, prompt, steps, guidance, generator, text_len) -> [F, 3, H, W] in [0, 1]
    pipeline_class: str  # the diffusers class that loads the saved folder
    out: Path  # where the shipped model lives
    defaults: dict  # DemoConfig fields this family's shipped model was trained with, where they differ
    max_minutes: float  # the default training-time budget


def _set_scaling_factor(vae, latents: torch.Tensor) -> str:
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    return f"std {latents.std():.3f} -> scaling_factor {scaling:.4f}"


def recipe(family: str) -> Recipe:
    if family == "wan":
        from . import train_wan

        return Recipe(train_wan.build_components, train_wan.make_pipeline, train_wan.set_latent_stats,
                      train_wan.FlowObjective, train_wan.generate, "WanPipeline",
                      WAN_MODEL_DIR, dict(RECIPE_V2, steps=7000), 200.0)
    if family != "cogvideox":
        raise SystemExit(f"error: unknown family {family!r}; use cogvideox or wan")
    return Recipe(build_components, make_pipeline, _set_scaling_factor, VObjective, generate,
                  "CogVideoXPipeline", DEFAULT_OUT, RECIPE_V2, 150.0)


def quick_text_to_video(pipe, log: Log, seed: int, steps: int = 50, guidance: float = 6.0, generate_fn=generate,
                        text_len: int = 16) -> dict:
    """Generate each held-out combination once (black background) and judge colour and motion."""
    colour_ok = motion_ok = 0
    rows = []
    for k, (colour, shape, motion) in enumerate(HELDOUT):
        prompt = caption(colour, shape, motion, list(BACKGROUNDS)[k % len(BACKGROUNDS)])
        video = generate_fn(pipe, prompt, steps, guidance, torch.Generator().manual_seed(seed + k), text_len)
        clip = video * 2 - 1  # [F, 3, H, W] in [-1, 1]
        got_colour, got_motion = judges.object_colour(clip), judges.motion(clip)
        colour_ok += got_colour == colour
        motion_ok += got_motion == motion
        rows.append(f"| {prompt} | {got_colour} | {got_motion} |")
    log(f"\nText to video, held-out combinations ({steps} steps, guidance {guidance}): colour "
        f"{colour_ok}/{len(HELDOUT)}, motion {motion_ok}/{len(HELDOUT)}\n")
    log("| prompt | judged colour | judged motion |")
    log("|---|---|---|")
    for row in rows:
        log(row)
    return dict(colour=colour_ok / len(HELDOUT), motion=motion_ok / len(HELDOUT))


def sample_spec() -> ClipSpec:
    """The bundled sample clip: a held-out combination (a red disc moving right), never seen in training."""
    assert ("red", "disc", "right") in HELDOUT
    return ClipSpec("red", "disc", "right", "sky", radius=8.5, speed=3.0, x0=18.0, y0=30.0)


def write_sample(path: str | os.PathLike = DEFAULT_SAMPLE, force: bool = True) -> Path:
    """Render ``sample_spec()`` and write it as H.264 with ``vidinvert.export.write_video``."""
    from vidinvert.export import write_video

    from .world import render

    frames, _ = render(sample_spec())
    return write_video(frames, path, fps=8.0, force=force, crf=10)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 16,32,64")
    if len(values) < 2 or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two positive widths, e.g. 16,32,64")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="cogvideox", choices=("cogvideox", "wan"),
                        help="which model family to train (the Wan recipe is in train_wan.py)")
    parser.add_argument("--out", default=None, help="folder for the pipeline (save_pretrained); default: the shipped "
                        "model's folder of the family")
    parser.add_argument("--sample", default=None,
                        help="where to write the held-out sample clip ('' = skip; default: the bundled one for "
                             "cogvideox, skipped for wan)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--vae-channels", type=_channels,
                        help="VAE block widths, comma-separated; n blocks compress 2^(n-1)x in space")
    parser.add_argument("--vae-crop-steps", type=int)
    parser.add_argument("--vae-full-steps", type=int)
    parser.add_argument("--steps", type=int, help="transformer steps")
    parser.add_argument("--dataset-clips", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--max-minutes", type=float, help="stop stages early past this much training time")
    parser.add_argument("--eval-steps", type=int, default=50, help="sampling steps of the final check (0 = skip)")
    parser.add_argument("--checkpoints", default=None,
                        help="folder of resumable training states (default: OUT.checkpoints; removed after success)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="save a state this often")
    parser.add_argument("--fresh", action="store_true", help="discard saved training states and start over")
    args = parser.parse_args(argv)

    family = recipe(args.family)
    settings = dict(family.defaults)
    for name in ("seed", "threads", "vae_channels", "vae_crop_steps", "vae_full_steps", "steps", "dataset_clips",
                 "batch"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    max_minutes = args.max_minutes if args.max_minutes is not None else family.max_minutes
    config = replace(DemoConfig(), family=args.family, **settings)
    torch.set_num_threads(config.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.out is None:
        args.out = str(family.out)
    if args.sample is None:
        args.sample = str(DEFAULT_SAMPLE) if args.family == "cogvideox" else ""
    out = Path(args.out)
    checkpoints = Checkpoints(args.checkpoints or out.with_name(out.name + ".checkpoints"), asdict(config),
                              args.checkpoint_minutes, fresh=args.fresh)
    command = f"`python -m training.train {' '.join(argv if argv is not None else sys.argv[1:])}`"
    log = Log()
    latest = checkpoints.latest()
    if latest is not None:
        log.lines = list(latest["log"])
        log.start = time.time() - latest["elapsed"]
        log(f"\n(Resumed {time.strftime('%Y-%m-%d %H:%M:%S')} from the checkpoints in `{checkpoints.folder.name}/` "
            f"by {command}, after {latest['elapsed'] / 60:.1f} min of training.)\n")
    budget_end = log.start + 60 * max_minutes
    if latest is None:
        log(f"# Training log of the vidinvert demo model ({args.family})\n")
        log(f"Command: {command}  ")
        log(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (torch threads {config.threads}), torch "
            f"{torch.__version__}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log("Config:\n\n```json\n" + json.dumps(asdict(config), indent=1) + "\n```\n")

    import diffusers
    import transformers

    vae, transformer, text_encoder, tokenizer, scheduler = family.build(config)
    if latest is None:
        log(f"diffusers {diffusers.__version__}, transformers {transformers.__version__}\n")
        sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in
                 (("vae", vae), ("transformer", transformer), ("text_encoder", text_encoder))}
        log(f"Parameters: {sizes}\n")
        log("## 1. VAE\n")

    saved_latents = checkpoints.load("latents")
    if saved_latents is None:
        # ---- 1. VAE
        vae_budget = log.start + 60 * max_minutes * 0.30
        vae_summary = train_vae(vae, config, log, min(vae_budget, budget_end), checkpoints)
        vae.requires_grad_(False)
        vae_eval = evaluate_vae(vae, log, config.seed + 40)

        # ---- 2. latents of the training set, scaling factor
        log("\n## 2. Latents\n")
        t0 = time.time()
        specs = sample_specs(config.dataset_clips, config.seed + 50, "train")
        means, stds = [], []
        for i in range(0, len(specs), 64):
            frames, _, _ = make_batch(specs[i : i + 64])
            m, s = encode_clips(vae, frames)
            means.append(m)
            stds.append(s)
        latents_mean, latents_std = torch.cat(means), torch.cat(stds)
        stats = family.set_latent_stats(vae, latents_mean)
        captions = [s.caption for s in specs]
        log(f"{len(specs)} training clips encoded in {time.time() - t0:.0f} s: latents {tuple(latents_mean.shape)}, "
            f"{stats}; mean posterior std {latents_std.mean():.4f}; "
            f"{len(set(captions))} distinct captions")
        log("\n## 3. Transformer\n")
        checkpoints.save("latents", dict(vae=vae.state_dict(), vae_summary=vae_summary, vae_eval=vae_eval,
                                         mean=latents_mean, std=latents_std, captions=captions, log=log.lines,
                                         elapsed=log.elapsed()))
    else:
        vae.load_state_dict(saved_latents["vae"])
        vae.requires_grad_(False).eval()
        vae_summary, vae_eval = saved_latents["vae_summary"], saved_latents["vae_eval"]
        latents_mean, latents_std = saved_latents["mean"], saved_latents["std"]
        captions = saved_latents["captions"]
        family.set_latent_stats(vae, latents_mean)

    # ---- 3. transformer
    text_encoder.requires_grad_(False).eval()
    pipe = family.pipeline(vae, transformer, text_encoder, tokenizer, scheduler)
    objective = family.objective(pipe, tuple(latents_mean.shape))
    val = validation_batch(pipe, vae, config, objective)
    ema, tr_summary = train_transformer(pipe, latents_mean, latents_std, captions, config, log, budget_end, val,
                                        objective, checkpoints)
    pipe = family.pipeline(vae, ema, text_encoder, tokenizer, scheduler)

    # ---- 4. save
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    for path in out.rglob("*"):
        if path.is_file():
            path.chmod(0o644)  # safetensors writes 0600
    train_seconds = log.elapsed()
    log(f"\n## 4. Result\n\nSaved to `{out.name}/` ({folder_size(out) / 2**20:.1f} MiB) after {train_seconds / 60:.1f} min "
        f"(VAE {vae_summary['seconds'] / 60:.1f} min, {vae_summary['steps']} steps; transformer "
        f"{tr_summary['seconds'] / 60:.1f} min, {tr_summary['steps']} steps).  ")
    log(f"Final VAE loss {vae_summary.get('loss', float('nan')):.4f} (batch PSNR {vae_summary.get('psnr', float('nan')):.2f} dB); "
        f"final transformer loss {tr_summary['loss']:.4f} (train), {tr_summary['val']:.4f} (held-out, EMA).")
    if args.eval_steps > 0:
        loaded = getattr(diffusers, family.pipeline_class).from_pretrained(out)
        loaded.set_progress_bar_config(disable=True)
        quick_text_to_video(loaded, log, config.seed + 60, steps=args.eval_steps, generate_fn=family.generate,
                            text_len=config.text_len)
    if args.sample:
        path = write_sample(args.sample)
        log(f"\nSample clip (held-out combination, \"{sample_spec().caption}\") written to `{Path(path).name}`.")
    log(f"\nTotal wall time {log.elapsed() / 60:.1f} min.")
    (out / "TRAINING.md").write_text("\n".join(log.lines) + "\n")
    (out / "training_summary.json").write_text(json.dumps(dict(
        config=asdict(config), vae=vae_summary, vae_eval=vae_eval, transformer=tr_summary,
        minutes=log.elapsed() / 60, size_mib=folder_size(out) / 2**20), indent=1) + "\n")
    checkpoints.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
