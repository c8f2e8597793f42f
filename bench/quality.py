"""Quality of the demo model (``src/vidinvert/demo/model``) on held-out combinations of the synthetic world.

All clips are held-out (colour, shape, motion) combinations (``training.world.HELDOUT``), which the model never
saw in training; every number comes from the programmatic judges of ``training.judges`` (pixel statistics, no
learned metric):

(a) text to video with ``diffusers.CogVideoXPipeline.__call__``: fraction of clips whose object has the caption's
    colour (goal >= 90%) and moves in the caption's direction (goal >= 80%);
(b) reconstruction through the library: ``invert(method="fixed-point", prompt=<source caption>)`` then
    ``edit(..., <source caption>, EditConfig(guidance=1.0))``; PSNR of the decoded result against the VAE round trip
    of the source (goal >= 30 dB);
(c) colour edits (red -> green, ...; the rest of the caption kept) from the same inversions: fraction with the
    target colour (goal >= 80%), mean per-frame centroid distance to the source (goal <= 2 px), background PSNR
    against the source (goal >= 25 dB; mean over the clips whose background changed, identical ones counted), the
    median over clips of the object masks' IoU against the source's (``judges.shape_iou``: shape and place, whatever
    the colour), for injection on/off x start inverted/random x
    reference text inversion/edit (``inverted`` + ``inversion`` is the library default; ``random`` + ``edit`` is the
    public CogVideo script's layout), and for edits that re-sample only part of the schedule (``strength``) or start from
    K-RNR (``krnr``), or weight the reference tokens up (``reference_weight``), or blend into the source outside a
    mask of where the source and edit captions disagree (``blend``; the inversions carry the source caption); the
    first row is the defaults end to end, what ``vidinvert edit VIDEO --prompt ...`` runs: plain inversion (DDIM, or
    Euler for a flow model) with an empty source prompt, then the default edit with the edit settings the model's
    folder recommends (``vidinvert.json``: both demo models have one), the second the same without them;
(d) reconstruction from plain DDIM inversion, where the zero-terminal-SNR end loses the source: full strength,
    strength 0.95 from the stored latent, and K-RNR of order 1-3 (and the adaptive variant) at 0.95, the authors'
    setting (``vidinvert.krnr``).

    python bench/quality.py                      # writes docs/quality.md and docs/quality.png
    python bench/quality.py --quick              # fewer clips and steps, writes nothing
    python bench/quality.py --model DIR --json out.json
    python bench/quality.py --model demo-wan         # the Wan demo model: writes docs/quality_wan.md and .png

For a flow-matching (Wan) model, (a) uses ``WanPipeline.__call__``, section (d) is skipped (K-RNR and the stored-latent
restart are DDIM's remedies for the zero-terminal-SNR end), and (c) adds FlowEdit (``--method flowedit``, its default
settings, the source caption as source prompt) beside inversion + injection.

Source clips are rendered by the world (no video file in between); the judges' own ceiling, the VAE round trip of
the sources, is reported alongside.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
import warnings
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's training/ (world, judges)

ROOT = Path(__file__).resolve().parents[1]

# Target colour of each source colour in the colour edits.
EDIT_TARGET = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "purple", "purple": "white", "white": "red"}

GOALS = {"t2v_colour": 0.90, "t2v_motion": 0.80, "recon_psnr": 30.0, "edit_colour": 0.80, "edit_centroid_px": 2.0,
         "edit_background_psnr": 25.0}


def edit_configs(flow: bool = False):
    """Name -> (EditConfig factory args) of the compared edit settings (K-RNR: DDIM only; FlowEdit: flow only)."""
    configs = {
        "defaults end to end (`vidinvert edit VIDEO --prompt ...`): plain inversion, empty source prompt, the "
        "model's recommended edit settings": dict(enabled=True, start="inverted", ref="inversion", inversion="default",
                                                  left_to_model=True),
        "same without the model's recommendation (the library's own defaults)": dict(
            enabled=True, start="inverted", ref="inversion", inversion="default"),
        "injection on, start inverted, ref inversion (the default edit, after fixed-point inversion with the caption)": dict(enabled=True, start="inverted", ref="inversion"),
        "injection on, start inverted, ref edit": dict(enabled=True, start="inverted", ref="edit"),
        "injection on, start random, ref inversion": dict(enabled=True, start="random", ref="inversion"),
        "injection on, start random, ref edit (public script)": dict(enabled=True, start="random", ref="edit"),
        "injection off, start inverted": dict(enabled=False, start="inverted", ref="inversion"),
        "injection off, start random (plain text to video)": dict(enabled=False, start="random", ref="inversion"),
        "injection on, start inverted, strength 0.8": dict(enabled=True, start="inverted", ref="inversion", strength=0.8),
        "injection on, start inverted, strength 0.6": dict(enabled=True, start="inverted", ref="inversion", strength=0.6),
        "injection on, K-RNR order 2 at strength 0.95": dict(enabled=True, start="inverted", ref="inversion",
                                                             strength=0.95, krnr=2),
        "injection on, reference weight 8 on the first 60% of steps": dict(enabled=True, start="inverted",
                                                                           ref="inversion", weight=8.0, weight_steps=0.6),
        "injection on, local blend (mask: source vs edit caption)": dict(enabled=True, start="inverted",
                                                                         ref="inversion", blend=True),
        "injection on, local blend, reference weight 0.3": dict(enabled=True, start="inverted", ref="inversion",
                                                                blend=True, weight=0.3),
    }
    if flow:
        del configs["injection on, K-RNR order 2 at strength 0.95"]
        configs["FlowEdit (no inversion; its defaults, source caption as source prompt)"] = dict(flowedit=True)
    return configs


def krnr_settings():
    """Name -> EditConfig keyword arguments of the reconstructions from plain DDIM inversion (section d)."""
    return {
        "strength 1 (inverted noise)": dict(),
        "strength 0.95, stored latent": dict(strength=0.95),
        "strength 0.95, K-RNR order 1": dict(strength=0.95, krnr=1),
        "strength 0.95, K-RNR order 2": dict(strength=0.95, krnr=2),
        "strength 0.95, K-RNR order 3": dict(strength=0.95, krnr=3),
        "strength 0.95, adaptive K-RNR (order 3)": dict(strength=0.95, krnr=3, krnr_adaptive=True),
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def source_clips(count: int, seed: int):
    """``count`` held-out clips (one per held-out combination, cycling), backgrounds cycling too."""
    import numpy as np

    from training.world import BACKGROUNDS, HELDOUT, random_spec, render

    rng = np.random.default_rng(seed)
    backgrounds = list(BACKGROUNDS)
    specs = [random_spec(rng, HELDOUT[k % len(HELDOUT)], background=backgrounds[(k + k // len(HELDOUT)) % 3])
             for k in range(count)]
    return specs, [render(s)[0] for s in specs]


def text_to_video(model, prompts: list[str], steps: int, guidance: float, seed: int, chunk: int = 12) -> list[torch.Tensor]:
    """Clips ``[F, 3, H, W]`` in [-1, 1], one per prompt, from the pipeline's own ``__call__``."""
    out = []
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        extra = {"negative_prompt": [""] * len(part)} if model.family == "wan" else {}  # Wan's: one per prompt
        generator = torch.Generator().manual_seed(seed + start)
        video = model.pipe(prompt=part, height=64, width=64, num_frames=9, num_inference_steps=steps,
                           guidance_scale=guidance, generator=generator, output_type="pt",
                           max_sequence_length=model.text_length, **extra).frames  # [B, F, 3, H, W] in [0, 1]
        out.extend(v * 2 - 1 for v in video.float())
    return out


def run(model_name: str, clips: int, steps: int, guidance: float, edit_guidance: float, t2v_per_combo: int,
        seed: int, configs: list[str] | None = None) -> tuple[dict, dict]:
    """All measurements; returns (results, clips for the picture)."""
    from vidinvert import BlendConfig, EditConfig, InjectionConfig, InvertSettings, edit, invert
    from vidinvert.settings import with_model_edit_defaults
    from vidinvert.flowedit import flowedit
    from vidinvert.models import load_pipeline, wrap
    from training import judges
    from training.world import BACKGROUNDS, HELDOUT, caption, parse_caption
    from vidinvert.exact import NotConvergedWarning

    timings = {}
    t0 = time.time()
    pipe = load_pipeline(model_name, dtype="fp32", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    model = wrap(pipe, name=model_name)
    flow = model.schedule(steps).is_flow

    # (a) text to video
    t = time.time()
    backgrounds = list(BACKGROUNDS)
    prompts = [caption(c, s, m, backgrounds[(k + r) % 3]) for r in range(t2v_per_combo) for k, (c, s, m) in enumerate(HELDOUT)]
    videos = text_to_video(model, prompts, steps, guidance, seed)
    t2v_rows = []
    for prompt, clip in zip(prompts, videos):
        colour, shape, motion, _ = parse_caption(prompt)
        t2v_rows.append(dict(prompt=prompt, colour=judges.object_colour(clip), motion=judges.motion(clip),
                             colour_ok=judges.object_colour(clip) == colour, motion_ok=judges.motion(clip) == motion))
    t2v = dict(
        clips=len(prompts), steps=steps, guidance=guidance,
        colour=sum(r["colour_ok"] for r in t2v_rows) / len(t2v_rows),
        motion=sum(r["motion_ok"] for r in t2v_rows) / len(t2v_rows),
        both=sum(r["colour_ok"] and r["motion_ok"] for r in t2v_rows) / len(t2v_rows),
        rows=t2v_rows,
    )
    timings["text_to_video_s"] = time.time() - t

    # sources, VAE round trips, inversions
    t = time.time()
    specs, sources = source_clips(clips, seed + 100)
    latents = [model.encode(frames) for frames in sources]
    round_trips = [model.decode(z)[0] for z in latents]
    inversions, not_converged = [], 0
    for spec, z in zip(specs, latents):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotConvergedWarning)  # one per inversion; its steps are counted below
            inversions.append(invert(model, z, steps=steps, prompt=spec.caption, method="fixed-point",
                                     tol=1e-5, max_iter=10, anderson=2))
        not_converged += len(inversions[-1].report.unconverged)  # steps stopped at max_iter above tol and floor
    timings["inversion_s"] = time.time() - t
    evals_per_step = sum(sum(inv.meta.iterations) for inv in inversions) / sum(len(inv.meta.iterations) for inv in inversions)
    vae = dict(
        psnr=sum(psnr(r, s) for r, s in zip(round_trips, sources)) / clips,
        colour=sum(judges.object_colour(r) == sp.colour for r, sp in zip(round_trips, specs)) / clips,
        motion=sum(judges.motion(r) == sp.motion for r, sp in zip(round_trips, specs)) / clips,
        centroid_px=sum(judges.centroid_distance(r, s) for r, s in zip(round_trips, sources)) / clips,
        **background_mean([judges.background_psnr(r, s) for r, s in zip(round_trips, sources)]),
        shape_iou_median=median([judges.shape_iou(r, s) for r, s in zip(round_trips, sources)]),
    )

    # (b) reconstruction with the source caption, guidance 1
    t = time.time()
    recons, recon_psnr, recon_latent_err = [], [], []
    for spec, inv, rt in zip(specs, inversions, round_trips):
        z = edit(model, inv, spec.caption, EditConfig(guidance=1.0))
        recon_latent_err.append(float((z - inv.clean).norm() / inv.clean.norm()))
        clip = model.decode(z)[0]
        recons.append(clip)
        recon_psnr.append(psnr(clip, rt))
    recon = dict(
        psnr_vs_vae=sum(recon_psnr) / clips, min_psnr_vs_vae=min(recon_psnr),
        psnr_vs_source=sum(psnr(r, s) for r, s in zip(recons, sources)) / clips,
        latent_rel_error=sum(recon_latent_err) / clips, evals_per_step=evals_per_step,
        steps_not_converged=not_converged,
    )
    timings["reconstruction_s"] = time.time() - t

    # (c) colour edits
    edits, edit_clips, default_inversions = {}, {}, None
    for name, opts in edit_configs(flow).items():
        if configs is not None and name not in configs:
            continue
        t = time.time()
        if opts.get("flowedit"):
            config = EditConfig(method="flowedit", guidance=edit_guidance, seed=seed)
        else:
            left = opts.get("left_to_model", False)  # blend and reference weight unset, as `vidinvert edit` leaves them
            config = EditConfig(guidance=edit_guidance, start=opts["start"], seed=seed, strength=opts.get("strength"),
                                krnr=opts.get("krnr"),
                                blend=BlendConfig(enabled=None if left else opts.get("blend", False)),
                                injection=InjectionConfig(enabled=opts["enabled"], reference_text=opts["ref"],
                                                          reference_weight=None if left else opts.get("weight", 1.0),
                                                          reference_weight_fraction=opts.get("weight_steps", 1.0)))
            config = with_model_edit_defaults(config, model.recommended_edit)  # as a job fills what is unset
        if opts.get("inversion") == "default" and default_inversions is None:  # what `vidinvert edit` inverts with
            default_inversions = [invert(model, z, steps=steps, prompt=InvertSettings().prompt,
                                         method=InvertSettings().method) for z in latents]
        used = default_inversions if opts.get("inversion") == "default" else inversions
        rows = []
        for k, (spec, inv, src) in enumerate(zip(specs, used, sources)):
            target = EDIT_TARGET[spec.colour]
            prompt = caption(target, spec.shape, spec.motion, spec.background)
            if opts.get("flowedit"):
                z = flowedit(model, inv.clean, spec.caption, prompt, config, steps=steps)
            else:
                z = edit(model, inv, prompt, config)
            clip = model.decode(z)[0]
            edit_clips.setdefault(name, []).append(clip)
            rows.append(dict(
                colour_ok=judges.object_colour(clip) == target,
                motion_ok=judges.motion(clip) == spec.motion,
                centroid_px=judges.centroid_distance(clip, src),
                background_psnr=judges.background_psnr(clip, src),
                shape_iou=judges.shape_iou(clip, src),
            ))
        finite = [r["centroid_px"] for r in rows if math.isfinite(r["centroid_px"])]
        edits[name] = dict(
            colour=sum(r["colour_ok"] for r in rows) / len(rows),
            motion_kept=sum(r["motion_ok"] for r in rows) / len(rows),
            centroid_px=sum(finite) / len(finite) if finite else float("inf"),
            no_object=len(rows) - len(finite),
            **background_mean([r["background_psnr"] for r in rows]),
            shape_iou_median=median([r["shape_iou"] for r in rows]),
            seconds=time.time() - t,
        )
    # (d) reconstruction from plain DDIM inversion: strength and K-RNR (DDIM models only)
    t = time.time()
    ddim_inversions = [] if flow else [invert(model, z, steps=steps, prompt=spec.caption) for spec, z in zip(specs, latents)]
    krnr_rows = {}
    for name, opts in ({} if flow else krnr_settings()).items():
        values = []
        for spec, inv, rt in zip(specs, ddim_inversions, round_trips):
            clip = model.decode(edit(model, inv, spec.caption, EditConfig(guidance=1.0, **opts)))[0]
            values.append((psnr(clip, rt), judges.object_colour(clip) == spec.colour, judges.motion(clip) == spec.motion))
        krnr_rows[name] = dict(psnr_vs_vae=sum(v[0] for v in values) / len(values),
                               colour=sum(v[1] for v in values) / len(values),
                               motion=sum(v[2] for v in values) / len(values))
    timings["ddim_krnr_s"] = time.time() - t
    timings["total_s"] = time.time() - t0
    results = dict(
        model=model_name, family=model.family, held_out_combinations=[list(c) for c in HELDOUT], source_clips=clips, steps=steps,
        edit_guidance=edit_guidance, goals=GOALS, text_to_video=t2v, vae_round_trip=vae, reconstruction=recon,
        edits=edits, ddim_reconstruction=krnr_rows, timings=timings, threads=torch.get_num_threads(),
    )
    return results, dict(sources=sources, recons=recons, edits=edit_clips, specs=specs)


def background_mean(values: list[float]) -> dict:
    """Mean background PSNR over the clips whose background changed, and how many came back identical (``inf``:
    a clamped black background decodes exactly), so that one identical clip does not make the mean ``inf``."""
    changed = [v for v in values if math.isfinite(v)]
    identical = sum(v == math.inf for v in values)
    return dict(background_psnr=sum(changed) / len(changed) if changed else math.inf, background_identical=identical)


def _background(e: dict) -> str:
    identical = e.get("background_identical", 0)
    return f"{e['background_psnr']:.1f}" + (f" ({identical} identical)" if identical else "")


def median(values: list[float]) -> float:
    """Median of the finite values (``nan`` when none): a clip without an object has no shape to compare."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return float("nan")
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def verdict(value: float, goal: float, higher: bool = True) -> str:
    ok = value >= goal if higher else value <= goal
    return "met" if ok else "**missed**"


def to_markdown(r: dict) -> str:
    g = r["goals"]
    t2v, rec, vae = r["text_to_video"], r["reconstruction"], r["vae_round_trip"]
    lines = [
        f"Held-out combinations only ({len(r['held_out_combinations'])} (colour, shape, motion) never seen in training); "
        f"{r['steps']} {'Euler (flow-matching)' if r.get('family') == 'wan' else 'DDIM'} steps everywhere; model "
        f"`{r['model']}`.",
        "",
        "| measure | value | goal | |",
        "|---|---:|---:|---|",
        f"| (a) text to video: object has the caption's colour ({t2v['clips']} clips, guidance {t2v['guidance']}) | "
        f"{t2v['colour']:.0%} | >= {g['t2v_colour']:.0%} | {verdict(t2v['colour'], g['t2v_colour'])} |",
        f"| (a) text to video: object moves as captioned | {t2v['motion']:.0%} | >= {g['t2v_motion']:.0%} | "
        f"{verdict(t2v['motion'], g['t2v_motion'])} |",
        f"| (a) text to video: both right | {t2v['both']:.0%} | | |",
        f"| (b) reconstruction (fixed-point inversion + edit, guidance 1): PSNR vs VAE round trip, mean ({r['source_clips']} clips) | "
        f"{rec['psnr_vs_vae']:.1f} dB | >= {g['recon_psnr']:.0f} dB | {verdict(rec['psnr_vs_vae'], g['recon_psnr'])} |",
        f"| (b) same, worst clip | {rec['min_psnr_vs_vae']:.1f} dB | | |",
        f"| (b) same, PSNR vs the source itself | {rec['psnr_vs_source']:.1f} dB | | |",
        f"| (b) relative latent error; evaluations per step; steps above tol | {rec['latent_rel_error']:.1e}; "
        f"{rec['evals_per_step']:.1f}; {rec['steps_not_converged']} | | |",
        f"| VAE round trip of the sources (ceiling): PSNR / colour / motion / centroid / background PSNR / shape IoU "
        f"(median) | {vae['psnr']:.1f} dB / {vae['colour']:.0%} / {vae['motion']:.0%} / {vae['centroid_px']:.2f} px / "
        f"{_background(vae)} dB / {vae.get('shape_iou_median', float('nan')):.2f} | | |",
        "",
        f"(c) colour edits (red -> green, green -> blue, blue -> yellow, yellow -> purple, purple -> white, white -> red; "
        f"guidance {r['edit_guidance']}), {r['source_clips']} clips each; centroid distance and background PSNR "
        "against the source clip:",
        "",
        f"| edit setting | target colour (>= {g['edit_colour']:.0%}) | centroid distance (<= {g['edit_centroid_px']:.0f} px) "
        f"| background PSNR (>= {g['edit_background_psnr']:.0f} dB) | motion kept | shape IoU, median | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in r["edits"].items():
        missing = f" ({e['no_object']} without object)" if e["no_object"] else ""
        lines.append(
            f"| {name} | {e['colour']:.0%}{'' if e['colour'] >= g['edit_colour'] else ' (missed)'} | "
            f"{e['centroid_px']:.2f}{missing}{'' if e['centroid_px'] <= g['edit_centroid_px'] else ' (missed)'} | "
            f"{_background(e)}{'' if e['background_psnr'] >= g['edit_background_psnr'] else ' (missed)'} | "
            f"{e['motion_kept']:.0%} | {e.get('shape_iou_median', float('nan')):.2f} | {e['seconds']:.0f} |")
    if r.get("ddim_reconstruction"):
        lines += ["", "(d) reconstruction from plain DDIM inversion (one evaluation per step, source caption, "
                  f"guidance 1), {r['source_clips']} clips:", "",
                  "| start | PSNR vs VAE round trip | colour kept | motion kept |", "|---|---:|---:|---:|"]
    for name, d in r.get("ddim_reconstruction", {}).items():
        lines.append(f"| {name} | {d['psnr_vs_vae']:.1f} dB | {d['colour']:.0%} | {d['motion']:.0%} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items()) +
              f"; torch threads {r['threads']}."]
    return "\n".join(lines)


def write_png(path: Path, rgb) -> None:
    """Minimal PNG writer: uint8 ``[H, W, 3]`` numpy array -> 8-bit RGB PNG (zlib, no PIL)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def film_row(clip, scale: int):
    """A clip ``[F, 3, H, W]`` as one uint8 image row: its frames ``scale`` x enlarged, each followed by a 2-pixel
    white bar."""
    import numpy as np

    from vidinvert.video import to_uint8

    frames = to_uint8(clip).repeat(scale, axis=1).repeat(scale, axis=2)  # [F, H, W, 3]
    sep = np.full((frames.shape[1], 2, 3), 255, np.uint8)
    return np.concatenate([np.concatenate([f, sep], axis=1) for f in frames], axis=1)


def picture(clips: dict, edit_name: str, examples: int = 4, scale: int = 2, gap: int = 4):
    """Rows of 9 frames: for each example, source / reconstruction / edit, examples separated by a white band."""
    import numpy as np

    blocks = []
    for k in range(min(examples, len(clips["sources"]))):
        for clip in (clips["sources"][k], clips["recons"][k], clips["edits"][edit_name][k]):
            blocks.append(film_row(clip, scale))
        blocks.append(np.full((gap, blocks[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(blocks[:-1], axis=0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, demo-wan or a pipeline folder (default: the shipped "
                        "demo CogVideoX); demo-i2v runs section (e), first-frame edits (bench/first_frame.py)")
    parser.add_argument("--clips", type=int, default=12, help="source clips for (b) and (c)")
    parser.add_argument("--t2v-per-combo", type=int, default=3, help="text-to-video clips per held-out combination")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=6.0, help="text-to-video guidance")
    parser.add_argument("--edit-guidance", type=float, default=6.0, help="guidance of the colour edits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="also write the JSON here")
    parser.add_argument("--md", default=None, help="default: docs/quality.md (docs/quality_wan.md for demo-wan)")
    parser.add_argument("--png", default=None, help="default: docs/quality.png (docs/quality_wan.png for demo-wan)")
    parser.add_argument("--quick", action="store_true", help="4 clips, 10 steps, 1 text-to-video clip per combination, "
                        "writes nothing")
    args = parser.parse_args(argv)
    if args.model == "demo-i2v":  # section (e), first-frame edits: bench/first_frame.py, which writes its own files
        from bench.first_frame import main as first_frame

        return first_frame((["--quick"] if args.quick else ["--clips", str(args.clips)])
                           + ["--seed", str(args.seed), "--threads", str(args.threads)])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="There are modules in .* that should be kept in float32")
    from vidinvert.demo import MODEL_DIR, WAN_MODEL_DIR

    model_dir = {"demo": MODEL_DIR, "demo-wan": WAN_MODEL_DIR}.get(args.model, Path(args.model))
    if not (model_dir / "model_index.json").is_file():
        print(f"no pipeline at {model_dir}; train one with `python -m training.train`", file=sys.stderr)
        raise SystemExit(2)
    suffix = "_wan" if args.model == "demo-wan" else ""
    args.md = args.md or str(ROOT / "docs" / f"quality{suffix}.md")
    args.png = args.png or str(ROOT / "docs" / f"quality{suffix}.png")
    if args.quick:
        args.clips, args.steps, args.t2v_per_combo = 4, 10, 1
    results, clips = run(args.model, args.clips, args.steps, args.guidance, args.edit_guidance, args.t2v_per_combo,
                         args.seed)
    markdown = to_markdown(results)
    compact = {k: v for k, v in results.items() if k != "text_to_video"}
    compact["text_to_video"] = {k: v for k, v in results["text_to_video"].items() if k != "rows"}
    print(json.dumps(compact, indent=1))
    print()
    print(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if not args.quick:
        default = next(iter(results["edits"]))
        header = (
            f"# Demo model quality ({args.model})\n\n"
            f"Measured by `python bench/quality.py --model {args.model}` on the model in `{model_dir.name}/` (trained by "
            f"`python -m training.train{' --family wan' if results['family'] == 'wan' else ''}`, see its "
            "`TRAINING.md`). Judges: `training.judges` (object = pixels "
            "far from the background read off the frame borders; colour = nearest palette colour of the object's core "
            "pixels; motion = direction of the centroid track; background PSNR = PSNR outside both clips' dilated "
            "object masks).\n\n"
        )
        footer = (
            f"\n\n`quality.png`: four held-out source clips (9 frames each, 2x enlarged); for each, three rows: "
            f"source, reconstruction (b), colour edit with \"{default}\".\n"
        )
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(header + markdown + footer)
        write_png(Path(args.png), picture(clips, default))
        print(f"\nwrote {args.md} and {args.png}")
    return results


if __name__ == "__main__":
    main()
