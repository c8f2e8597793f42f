"""Fine-tune the shipped CogVideoX demo into an image-to-video model (``--model demo-i2v``), on the CPU.

Run ``python -m training.train_i2v`` (about an hour on 2 cores). The result is a ``CogVideoXImageToVideoPipeline``
folder (``save_pretrained``), loaded like the published CogVideoX-5b-I2V:

1. The shipped demo's VAE, text encoder, tokenizer and scheduler, unchanged.
2. Its transformer with ``in_channels`` doubled, as CogVideoX-5b-I2V is laid out: the patch embedding's new input
   channels (the image latents, concatenated on channels by the pipeline) start at zero, so before fine-tuning the
   model is exactly the text-to-video demo.
3. Fine-tuned with the demo's own objective (v-prediction, ``add_noise`` / ``get_velocity``) on training-split clips,
   conditioned as ``CogVideoXImageToVideoPipeline.prepare_latents`` conditions: the first frame encoded alone by the
   VAE (a posterior sample), times ``scaling_factor``, followed by zero latent frames. As in CogVideoX's own I2V
   training the condition frame gets Gaussian noise first, its sigma drawn log-normally (mean -3, std 0.5); here one
   draw per clip of the dataset, encoded once. So that the frame, not the caption, decides how the object looks, the
   caption is dropped to "" ``caption_dropout`` of the time and its colour word swapped for another
   ``colour_swap`` of the time (the clip keeps its colours).

Resumable like ``train.py`` (``OUT.checkpoints/``, ``--fresh``); ``--max-minutes`` stops the fine-tuning early.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import judges
from .checkpoint import Checkpoints
from .train import Log, VObjective, caption_table, encode_clips, folder_size, train_transformer
from .world import BACKGROUNDS, COLOURS, HELDOUT, caption, make_batch, parse_caption, random_spec, sample_specs

from vidinvert.demo import I2V_MODEL_DIR, MODEL_DIR


@dataclass(frozen=True)
class I2VConfig:
    """Fine-tuning settings (the names ``train.train_transformer`` reads, plus the conditioning's)."""

    seed: int = 0
    threads: int = 2
    text_len: int = 16
    dataset_clips: int = 3000
    steps: int = 3000
    batch: int = 32
    lr: float = 2e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.998
    caption_dropout: float = 0.3
    colour_swap: float = 0.2  # share of clips whose caption names another colour than the frames show
    noise_log_mean: float = -3.0  # condition-frame noise: sigma = exp(N(mean, std)), CogVideoX's I2V training
    noise_log_std: float = 0.5
    log_every: int = 100


def widen(transformer):
    """A ``CogVideoXTransformer3DModel`` taking ``[latents | image latents]`` on channels: the same weights, the
    patch embedding's new input channels zero (so it predicts exactly what ``transformer`` does)."""
    from diffusers import CogVideoXTransformer3DModel

    config = dict(transformer.config)
    config["in_channels"] = 2 * transformer.config.in_channels
    wide = CogVideoXTransformer3DModel.from_config(config)
    state = transformer.state_dict()
    weight = state["patch_embed.proj.weight"]  # [D, C, p, p]
    state["patch_embed.proj.weight"] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    wide.load_state_dict(state)
    return wide


class I2VObjective(VObjective):
    """v-prediction on ``[clip latents | image latents]`` rows: only the clip half is noised and predicted."""

    def loss(self, model, x0, text, t, noise):
        channels = x0.shape[2] // 2
        clip, image = x0[:, :, :channels], x0[:, :, channels:]
        noise = noise[:, :, :channels]
        noisy = self.scheduler.add_noise(clip, noise, t)
        target = self.scheduler.get_velocity(clip, noise, t)
        pred = model(hidden_states=torch.cat([noisy, image], dim=2), encoder_hidden_states=text, timestep=t,
                     image_rotary_emb=self.rotary, return_dict=False)[0]
        return torch.mean((pred.float() - target) ** 2)


@torch.no_grad()
def condition_latents(vae, frames: torch.Tensor, config: I2VConfig, generator: torch.Generator):
    """Each clip's first frame, noised, encoded alone: posterior mean and std ``[N, T, C, h, w]`` (unscaled), the
    frames after the first zero (``CogVideoXImageToVideoPipeline.prepare_latents``'s padding)."""
    first = frames[:, 0]  # [N, 3, H, W]
    sigma = torch.exp(config.noise_log_mean + config.noise_log_std * torch.randn(first.shape[0], generator=generator))
    noisy = first + sigma[:, None, None, None] * torch.randn(first.shape, generator=generator)
    mean, std = encode_clips(vae, noisy[:, None])  # [N, 1, C, h, w]
    latent_frames = (frames.shape[1] - 1) // 4 + 1
    pad = (0, 0, 0, 0, 0, 0, 0, latent_frames - 1)
    return torch.nn.functional.pad(mean, pad), torch.nn.functional.pad(std, pad)


def dataset(vae, specs, config: I2VConfig, seed: int):
    """``(means, stds, captions)``: clip and condition latents concatenated on channels, ``[N, T, 2C, h, w]``."""
    generator = torch.Generator().manual_seed(seed)
    means, stds, captions = [], [], []
    for i in range(0, len(specs), 64):
        frames, _, texts = make_batch(specs[i : i + 64])
        clip_mean, clip_std = encode_clips(vae, frames)
        cond_mean, cond_std = condition_latents(vae, frames, config, generator)
        means.append(torch.cat([clip_mean, cond_mean], dim=2))
        stds.append(torch.cat([clip_std, cond_std], dim=2))
        captions += texts
    return torch.cat(means), torch.cat(stds), captions


def swap_colours(captions: list[str], share: float, seed: int) -> list[str]:
    """``captions`` with the colour word of a seeded ``share`` of them replaced by another colour."""
    rng = np.random.default_rng(seed)
    out = []
    for text in captions:
        if rng.random() < share:
            colour, shape, motion, background = parse_caption(text)
            other = [c for c in COLOURS if c != colour]
            text = caption(other[rng.integers(len(other))], shape, motion, background)
        out.append(text)
    return out


def make_pipeline(vae, transformer, text_encoder, tokenizer, scheduler):
    from diffusers import CogVideoXImageToVideoPipeline

    return CogVideoXImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                         transformer=transformer, scheduler=scheduler)


@torch.no_grad()
def first_frame_check(pipe, log: Log, seed: int, steps: int, text_len: int) -> dict:
    """Generate from the first frame of one clip per held-out combination (its caption as the prompt) and judge the
    colour and motion of the clip the pipeline makes."""
    from PIL import Image

    colour_ok = motion_ok = 0
    dists = []
    rng = np.random.default_rng(seed)
    for k, combo in enumerate(HELDOUT):
        spec = random_spec(rng, combo, list(BACKGROUNDS)[k % len(BACKGROUNDS)])
        frames, _, (text,) = make_batch([spec])
        first = ((frames[0, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        video = pipe(image=Image.fromarray(first), prompt=text, height=64, width=64, num_frames=9,
                     num_inference_steps=steps, guidance_scale=6.0, generator=torch.Generator().manual_seed(seed + k),
                     output_type="pt", max_sequence_length=text_len).frames[0] * 2 - 1  # [F, 3, H, W]
        colour_ok += judges.object_colour(video[1:]) == combo[0]
        motion_ok += judges.motion(video) == combo[2]
        dists.append(judges.centroid_distance(video, frames[0]))
    result = dict(colour=colour_ok / len(HELDOUT), motion=motion_ok / len(HELDOUT), centroid_px=float(np.median(dists)))
    log(f"\nImage to video from the first frame of {len(HELDOUT)} held-out clips ({steps} steps, guidance 6): colour "
        f"{colour_ok}/{len(HELDOUT)}, motion {motion_ok}/{len(HELDOUT)}, median centroid distance to the source "
        f"{result['centroid_px']:.2f} px")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_i2v", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(I2V_MODEL_DIR), help="folder for the pipeline (default: the shipped one)")
    parser.add_argument("--base", default=str(MODEL_DIR), help="the CogVideoX text-to-video folder to start from")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--dataset-clips", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--max-minutes", type=float, default=80.0, help="stop the fine-tuning past this much time")
    parser.add_argument("--eval-steps", type=int, default=50, help="sampling steps of the final check (0 = skip)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    settings = {k: getattr(args, k) for k in ("steps", "dataset_clips", "threads") if getattr(args, k) is not None}
    config = replace(I2VConfig(), **settings)
    torch.set_num_threads(config.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    checkpoints = Checkpoints(out.with_name(out.name + ".checkpoints"), asdict(config), args.checkpoint_minutes,
                              fresh=args.fresh)
    command = f"`python -m training.train_i2v {' '.join(argv if argv is not None else sys.argv[1:])}`"
    log = Log()
    latest = checkpoints.latest()
    if latest is not None:
        log.lines = list(latest["log"])
        log.start = time.time() - latest["elapsed"]
        log(f"\n(Resumed {time.strftime('%Y-%m-%d %H:%M:%S')} by {command}, after {latest['elapsed'] / 60:.1f} min.)\n")
    else:
        log("# Training log of the vidinvert image-to-video demo model (CogVideoX-I2V layout)\n")
        log(f"Command: {command}  ")
        log(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (torch threads {config.threads}), torch "
            f"{torch.__version__}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log(f"Started from `{Path(args.base).name}/` (the shipped CogVideoX demo). Config:\n\n```json\n"
            + json.dumps(asdict(config), indent=1) + "\n```\n")
    from diffusers import CogVideoXPipeline

    base = CogVideoXPipeline.from_pretrained(args.base)
    vae = base.vae.requires_grad_(False).eval()
    base.text_encoder.requires_grad_(False).eval()
    transformer = widen(base.transformer)
    pipe = make_pipeline(vae, transformer, base.text_encoder, base.tokenizer, base.scheduler)

    saved = checkpoints.load("latents")
    if saved is None:
        t0 = time.time()
        specs = sample_specs(config.dataset_clips, config.seed + 150, "train")
        means, stds, captions = dataset(vae, specs, config, config.seed + 151)
        captions = swap_colours(captions, config.colour_swap, config.seed + 152)
        log(f"{len(specs)} training clips and their first frames encoded in {time.time() - t0:.0f} s: rows "
            f"{tuple(means.shape)} ([clip | condition] latents)\n")
        checkpoints.save("latents", dict(mean=means, std=stds, captions=captions, log=log.lines, elapsed=log.elapsed()))
    else:
        means, stds, captions = saved["mean"], saved["std"], saved["captions"]

    objective = I2VObjective(pipe, tuple(means[:, :, : means.shape[2] // 2].shape))
    val_specs = sample_specs(48, config.seed + 130, "heldout")
    val_mean, _, val_captions = dataset(vae, val_specs, config, config.seed + 131)
    texts = caption_table(pipe, val_captions, config.text_len)
    val_t = objective.fixed_t(len(val_specs))
    val_noise = torch.randn(val_mean.shape, generator=torch.Generator().manual_seed(config.seed + 132))
    val = (objective.normalize(val_mean), torch.stack([texts[c] for c in val_captions]), val_t, val_noise)
    deadline = log.start + 60 * args.max_minutes
    ema, summary = train_transformer(pipe, means, stds, captions, config, log, deadline, val, objective, checkpoints)
    pipe = make_pipeline(vae, ema, base.text_encoder, base.tokenizer, base.scheduler)

    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    for path in out.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    log(f"\nSaved to `{out.name}/` ({folder_size(out) / 2**20:.1f} MiB) after {log.elapsed() / 60:.1f} min "
        f"(fine-tuning {summary['seconds'] / 60:.1f} min, {summary['steps']} steps). Final loss {summary['loss']:.4f} "
        f"(train), {summary['val']:.4f} (held-out, EMA).")
    check = None
    if args.eval_steps > 0:
        from diffusers import CogVideoXImageToVideoPipeline

        loaded = CogVideoXImageToVideoPipeline.from_pretrained(out)
        loaded.set_progress_bar_config(disable=True)
        check = first_frame_check(loaded, log, config.seed + 160, args.eval_steps, config.text_len)
    log(f"\nTotal wall time {log.elapsed() / 60:.1f} min.")
    (out / "TRAINING.md").write_text("\n".join(log.lines) + "\n")
    (out / "training_summary.json").write_text(json.dumps(dict(
        config=asdict(config), transformer=summary, first_frame_check=check, minutes=log.elapsed() / 60,
        size_mib=folder_size(out) / 2**20), indent=1) + "\n")
    checkpoints.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
