"""Edit regions (``--mask`` / ``--box`` / ``--mask-grow``) measured on both demo models over held-out clips.

Every clip is a held-out (colour, shape, motion) combination of the synthetic world (``training.world.HELDOUT``),
drawn by the world (no video codec in between), judged by ``training.judges``' pixel statistics. Each edit is what
``vidinvert edit clip --prompt <caption with the new colour> --mask ...`` runs: the model's defaults
(``engine.plan.family_defaults``: plain inversion with the empty source prompt, the model's recommended edit
settings, local blend included), the region read from a real file by ``regions.build_region`` (the CLI's reader), then
``editing.edit(..., region=...)``; for ``demo-wan`` also FlowEdit (``--method flowedit``, its defaults, the source
caption as ``--source-prompt``). Colour edits: red -> green, green -> blue, ... (``bench/first_frame.py``'s ``TARGET``).

(1) static right-half mask (a PNG, right half white): the kept (left) half's PSNR against the source and against the
    VAE round trip of the source (the round trip's own PSNR against the source is the ceiling: the kept latents are
    the source's, so the kept pixels can only be as good as the VAE); whether the object is in the target colour
    where it is in the right half (per frame and half, the object pixels of that half judged apart), and still in the
    source colour where it is in the left half; the same with no mask. The seam: PSNR against the round trip of the
    kept pixels within ``--band`` px of the edited region, against the rest of the kept half.
(2) an object crossing from a kept into an edited half (``--box`` of the half it moves into; held-out combinations
    with a horizontal motion, started so the centroid crosses the middle at the middle frame): the share of frames
    recoloured where the object is wholly in the edited half / wholly in the kept half, and per half for the frames
    it straddles.
(3) a per-frame mask video that follows the object (the world's own object coverage, dilated by ``--dilate`` px,
    written as H.264 mp4 with ``vidinvert.export.write_video`` and read back by the CLI's reader): share of frames in
    the target colour (goal >= 90%), centroid distance to the source (px) and object-mask IoU (the path kept), PSNR
    outside the region (kept latent cells) against the source and the round trip, the seam, and the judges'
    background PSNR (outside both object masks, as ``bench/quality.py``); with no mask for comparison.
(4) ``--mask-grow`` 0 / 1 / 2 on (3).
(5) ``demo-wan``: FlowEdit with the region, for (1), (2) and (3)/(4).

Every result is judged as ``vidinvert edit`` writes it: decoded, then the source's own pixels put back outside the
region (``engine.run.with_source_pasted``, ``--paste-source on``, the default), and again as decoded
(``--paste-source off``). Each inversion setting runs with the model's defaults (local blend on for both demo models)
and with ``--no-blend``. "The decoder alone" decodes hand-made latents (the no-mask edit's inside the region, the
source's outside; or only latent frame 0 changed) to separate what the VAE decoder does from what the edit does.

A CLI check per model runs the real command once on one clip (source as a folder of PNGs, the follow mask video,
``--save-mask``) and compares its output with the API's (same frames, same region, source pasted).

    python bench/masks.py                   # 8 clips (7 crossing) per model -> bench/results/masks.{json,md}
    python bench/masks.py --quick           # both models, 3 clips (3 crossing) each, writes nothing
    python bench/masks.py --models demo-wan # re-measure one model; the other's results stay (each with its command)
    python bench/masks.py --render bench/results/masks.json   # re-render masks.md from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the repository's training/ (world, judges)

GOALS = {"kept_half_psnr_vs_source": 30.0, "follow_frames_in_target": 0.90}
MIN_PX = 12  # object pixels a half must hold (in the source) for its colour to be judged there


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- clips and masks ------------------------------------------------------------------------------------------------
def main_specs(count: int, seed: int):
    """``count`` held-out clips spread over the held-out combinations (8: every colour twice), backgrounds cycling,
    size, speed and start drawn by the world from ``seed``."""
    from training.world import BACKGROUNDS, HELDOUT, random_spec

    rng = np.random.default_rng(seed)
    backgrounds = list(BACKGROUNDS)
    return [random_spec(rng, HELDOUT[(k * len(HELDOUT)) // count % len(HELDOUT)] if count <= len(HELDOUT)
                        else HELDOUT[k % len(HELDOUT)], background=backgrounds[k % 3]) for k in range(count)]


def crossing_specs(count: int, seed: int):
    """Held-out combinations with a horizontal motion, placed so the centroid crosses x = 31.5 at the middle frame;
    each with the box of the half it moves into (``(x0, y0, x1, y1)``, pixels)."""
    from training.world import BACKGROUNDS, HELDOUT, MOTIONS, random_spec

    rng = np.random.default_rng(seed)
    combos = [c for c in HELDOUT if MOTIONS[c[2]][1][0] != 0]
    backgrounds = list(BACKGROUNDS)
    out = []
    for k in range(count):
        combo = combos[k % len(combos)]
        spec = random_spec(rng, combo, background=backgrounds[k % 3])
        (dx, dy), middle = MOTIONS[combo[2]][1], (spec.frames - 1) / 2
        jitter = float(rng.uniform(-4, 4)) if dy == 0 else 0.0
        spec = dataclasses.replace(spec, x0=31.5 - dx * spec.speed * middle,
                                   y0=31.5 - dy * spec.speed * middle + jitter)
        box = (32, 0, spec.size, spec.size) if dx > 0 else (0, 0, 32, spec.size)
        out.append((spec, box))
    return out


def follow_mask(alpha: torch.Tensor, dilate: int) -> torch.Tensor:
    """The world's object coverage ``[F, H, W]`` -> bool mask ``[F, H, W]``: covered pixels grown by ``dilate`` px."""
    mask = (alpha > 0).float()[:, None]
    if dilate:
        mask = F.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate)
    return mask[:, 0] > 0.5


def as_frames(mask: torch.Tensor) -> torch.Tensor:
    """bool ``[F, H, W]`` -> float frames ``[F, 3, H, W]`` in [-1, 1], white where True."""
    return (mask.float() * 2 - 1)[:, None].expand(-1, 3, -1, -1).contiguous()


def editable_pixels(latent: torch.Tensor, spatial: int, temporal: int, frames: int) -> torch.Tensor:
    """The region on the latent grid ``[1, T, 1, h, w]`` as pixels: bool ``[F, H, W]``, True where a pixel is decoded
    from an editable cell of its own latent frame (``regions.latent_frames_of``)."""
    from vidinvert.regions import latent_frames_of

    cells = latent[0, latent_frames_of(frames, temporal), 0]  # [F, h, w]
    return cells.repeat_interleave(spatial, 1).repeat_interleave(spatial, 2) > 0.5


def grow(mask: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(mask.float()[:, None], 2 * px + 1, stride=1, padding=px)[:, 0] > 0.5


# ---- judging --------------------------------------------------------------------------------------------------------
def psnr_on(a: torch.Tensor, b: torch.Tensor, select: torch.Tensor | None = None) -> float:
    """PSNR (dB, data range of [-1, 1]) of clips ``[F, 3, H, W]`` over the pixels ``select`` ``[F, H, W]``."""
    diff = (a.double() - b.double()).permute(0, 2, 3, 1)  # [F, H, W, 3]
    if select is not None:
        if not bool(select.any()):
            return float("nan")
        diff = diff[select]
    mse = float((diff**2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def colour_in(frame: torch.Tensor, select: torch.Tensor) -> str | None:
    """Palette colour of the object pixels of one frame ``[1, 3, H, W]`` inside ``select`` ``[H, W]`` (eroded core,
    as ``judges.object_rgb``); ``None`` when fewer than ``MIN_PX`` object pixels are there."""
    from training import judges
    from training.world import COLOURS

    mask = judges.object_masks(frame)[0] & select  # [H, W]
    if int(mask.sum()) < MIN_PX:
        return None
    core = -F.max_pool2d(-mask.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5
    use = core if core.sum() >= 8 else mask
    unit = (frame[0].clamp(-1, 1) + 1) / 2  # [3, H, W]
    rgb = unit.permute(1, 2, 0)[use].mean(dim=0)
    names = list(COLOURS)
    table = torch.tensor([COLOURS[n] for n in names])
    return names[int((table - rgb[None]).norm(dim=1).argmin())]


def halves_judged(video: torch.Tensor, alpha: torch.Tensor, edited_cols: slice, kept_cols: slice, target: str,
                  source: str) -> dict:
    """Per frame and half where the source's object holds >= ``MIN_PX`` pixels: is the result's object there in the
    target colour (edited half) / still in the source colour (kept half)? Also frames wholly in one half."""
    from training import judges

    frames, _, height, width = video.shape
    inside = alpha > 0.5  # [F, H, W] the source's object
    cols = torch.zeros(width, dtype=torch.bool)
    edited_sel, kept_sel = cols.clone(), cols.clone()
    edited_sel[edited_cols], kept_sel[kept_cols] = True, True
    out = {"edited_half": [], "kept_half": [], "kept_half_changed": [], "whole_edited": [], "whole_kept": [],
           "straddling": 0}
    for f in range(frames):
        in_edited = int(inside[f][:, edited_sel].sum())
        in_kept = int(inside[f][:, kept_sel].sum())
        frame = video[f : f + 1]
        whole = judges.object_colour(frame)
        if in_edited >= MIN_PX:
            out["edited_half"].append(colour_in(frame, edited_sel[None].expand(height, -1)) == target)
        if in_kept >= MIN_PX:
            colour = colour_in(frame, kept_sel[None].expand(height, -1))
            out["kept_half"].append(colour == source)
            out["kept_half_changed"].append(colour == target)
        if in_kept == 0 and in_edited > 0:
            out["whole_edited"].append(whole == target)
        elif in_edited == 0 and in_kept > 0:
            out["whole_kept"].append(whole == target)
        else:
            out["straddling"] += 1
    return out


def seam(video: torch.Tensor, round_trip: torch.Tensor, source: torch.Tensor, editable: torch.Tensor,
         band: int) -> dict:
    """PSNR of the kept pixels within ``band`` px of the editable ones vs the kept pixels further away, against the
    round trip (what the kept latents decode to alone) and the source."""
    kept = ~editable
    near = kept & grow(editable, band)
    far = kept & ~near
    return {"band_vs_round_trip": psnr_on(video, round_trip, near),
            "rest_vs_round_trip": psnr_on(video, round_trip, far),
            "band_vs_source": psnr_on(video, source, near), "rest_vs_source": psnr_on(video, source, far)}


def pasted(model, video: torch.Tensor, source: torch.Tensor, region) -> torch.Tensor:
    """``video`` ``[F, C, H, W]`` as ``vidinvert edit`` writes it: the source's own pixels put back outside the region
    (``engine.run.with_source_pasted``, the default ``--paste-source on``); unchanged without a region."""
    from vidinvert.engine.run import with_source_pasted
    from vidinvert.settings import EditConfig, RegionConfig

    if region is None:
        return video
    config = EditConfig(region=RegionConfig(box=(0, 0, 1, 1), paste_source=True))  # only its paste_source is read
    return with_source_pasted(model, video[None], source, region, config)[0]


def judge_clip(video: torch.Tensor, source: torch.Tensor, round_trip: torch.Tensor, alpha: torch.Tensor, target: str,
               colour: str, protect: torch.Tensor, editable: torch.Tensor | None, band: int) -> dict:
    """Every judge of one result ``[F, 3, H, W]``: (1) the left half against the source and the round trip, each
    half's object colour; (3) colour per frame, centroid, shape IoU, background, the pixels outside the grow-0 follow
    region (``protect``); with a region, its kept pixels and the seam."""
    from training import judges

    row = {"left_half_vs_source": psnr_on(video[..., :32], source[..., :32]),
           "left_half_vs_round_trip": psnr_on(video[..., :32], round_trip[..., :32]),
           "halves": halves_judged(video, alpha, slice(32, None), slice(0, 32), target, colour)}
    colours = [judges.object_colour(video[i : i + 1]) for i in range(video.shape[0])]
    row["frames_in_target"] = float(np.mean([c == target for c in colours]))
    row["centroid_px"] = judges.centroid_distance(video, source)
    row["shape_iou"] = judges.shape_iou(video, source)
    row["background_psnr"] = judges.background_psnr(video, source)
    row["protected_vs_source"] = psnr_on(video, source, protect)
    row["protected_vs_round_trip"] = psnr_on(video, round_trip, protect)
    if editable is not None:
        row["kept_vs_source"] = psnr_on(video, source, ~editable)
        row["kept_vs_round_trip"] = psnr_on(video, round_trip, ~editable)
        row["seam"] = seam(video, round_trip, source, editable, band)
    return row


def mean_db(values: list[float]) -> dict:
    """Mean over clips of finite dB values, the smallest, and how many came out identical (``inf``)."""
    finite = [v for v in values if math.isfinite(v)]
    return {"mean": float(np.mean(finite)) if finite else float("inf"), "min": min(finite) if finite else float("inf"),
            "identical": sum(v == math.inf for v in values)}


def share(items: list[bool]) -> dict:
    return {"share": float(np.mean(items)) if items else float("nan"), "n": len(items)}


# ---- the run -------------------------------------------------------------------------------------------------------
def model_run(name: str, clips: int, crossing: int, seed: int, grows: tuple[int, ...], dilate: int, band: int,
              workdir: Path, cli: bool) -> dict:
    from training.world import caption, render
    from vidinvert.editing import edit
    from vidinvert.engine.plan import family_defaults
    from vidinvert.export import write_video
    from vidinvert.flowedit import flowedit
    from vidinvert.inversion import invert
    from vidinvert.models import load_pipeline, wrap
    from vidinvert.regions import build_region
    from vidinvert.settings import EditConfig, FlowEditConfig, ReadSettings, RegionConfig

    ff, quality = _load("first_frame"), _load("quality")
    started, cpu0 = time.perf_counter(), cpu_seconds()
    model = wrap(load_pipeline(name), name=name)
    model.pipe.set_progress_bar_config(disable=True)
    flow = model.schedule(1).is_flow
    inv_settings, config = ff.defaults(model)
    resize = ReadSettings().resize
    sf, tf = model.spatial_factor, model.temporal_factor

    def region_of(cfg: RegionConfig, frames: int, size: int):
        return build_region(cfg, tuple(range(frames)), (size, size), size, size, resize, sf, tf)

    def flow_config(source_caption: str) -> EditConfig:
        return family_defaults(model, None, None, EditConfig(method="flowedit",
                                                             flowedit=FlowEditConfig(source_prompt=source_caption)))[2]

    right_png = workdir / "right_half.png"
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    quality.write_png(right_png, image)

    no_blend = dataclasses.replace(config, blend=dataclasses.replace(config.blend, enabled=False))
    methods = ["inversion", "inversion_no_blend"] + (["flowedit"] if flow else [])
    jobs = ["none", "right"] + [f"follow_g{g}" for g in grows]
    per_clip = {m: {j: [] for j in jobs} for m in methods}
    vae, mask_read, latents_outside = [], [], {m: [] for m in methods}
    decoder_rows = {m: [] for m in methods if m != "inversion_no_blend"}
    specs = main_specs(clips, seed)
    for k, spec in enumerate(specs):
        source, alpha = render(spec)
        frames, size = source.shape[0], source.shape[-1]
        latents = model.encode(source)
        round_trip = model.decode(latents)[0]
        inversion = invert(model, latents, steps=inv_settings.steps, method=inv_settings.method,
                           prompt=inv_settings.prompt)
        target = ff.TARGET[spec.colour]
        prompt = caption(target, spec.shape, spec.motion, spec.background)
        drawn = follow_mask(alpha, dilate)
        follow_path = workdir / f"{name}_follow_{k}.mp4"
        write_video(as_frames(drawn), follow_path, fps=8.0, force=True)
        regions = {"none": None, "right": region_of(RegionConfig(mask=str(right_png)), frames, size)}
        for g in grows:
            regions[f"follow_g{g}"] = region_of(RegionConfig(mask=str(follow_path), grow=g), frames, size)
        read = regions[f"follow_g{grows[0]}"].pixels[:, 0]
        mask_read.append({"iou": float((read & drawn).sum() / (read | drawn).sum()),
                          "pixels_differing": int((read ^ drawn).sum()), "pixels": int(drawn.sum())})
        vae.append({"psnr": psnr_on(round_trip, source),
                    "left_half": psnr_on(round_trip[..., :32], source[..., :32])})
        protect = ~editable_pixels(regions[f"follow_g{grows[0]}"].latent, sf, tf, frames)  # kept by the grow-0 mask
        for method in methods:
            cfg = {"inversion": config, "inversion_no_blend": no_blend}.get(method) or flow_config(spec.caption)
            edited = {}
            for job, region in regions.items():
                t0, c0 = time.perf_counter(), cpu_seconds()
                lat = region.latent if region is not None else None
                if method != "flowedit":
                    z = edit(model, inversion, [prompt], cfg, region=lat)
                else:
                    z = flowedit(model, latents, cfg.flowedit.source_prompt, [prompt], cfg, steps=inv_settings.steps,
                                 region=lat)
                seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                edited[job] = z
                if region is not None:
                    outside = (region.latent < 0.5).expand_as(z)
                    clean = inversion.clean if method != "flowedit" else latents
                    latents_outside[method].append(float((z - clean.to(z.dtype)).abs()[outside].max()))
                raw = model.decode(z)[0]
                video = pasted(model, raw, source, region)  # what the CLI writes (--paste-source on, the default)
                editable = (editable_pixels(region.latent, sf, tf, frames) if region is not None
                            else torch.ones(frames, size, size, dtype=torch.bool))
                row = {"clip": spec.caption, "to": prompt, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
                       "coverage": region.coverage if region is not None else 1.0}
                judge = dict(source=source, round_trip=round_trip, alpha=alpha, target=target, colour=spec.colour,
                             protect=protect, editable=editable if region is not None else None, band=band)
                row.update(judge_clip(video, **judge))
                if region is not None:
                    row["paste_off"] = judge_clip(raw, **judge)  # --paste-source off: the decoder's pixels
                per_clip[method][job].append(row)
            if method != "inversion_no_blend":  # the decoder alone: the no-mask edit's latents pasted by hand
                clean = inversion.clean if method != "flowedit" else latents
                decoder_rows[method].append(decoder_carry(model, clean, edited["none"], regions["right"].latent,
                                                          round_trip, spec.caption))
        print(f"[{name} {k + 1}/{clips}] {spec.caption} -> {target}: right-half mask left "
              f"{per_clip['inversion']['right'][-1]['left_half_vs_source']:.1f} dB (VAE {vae[-1]['left_half']:.1f}); "
              f"follow g{grows[0]} {per_clip['inversion'][f'follow_g{grows[0]}'][-1]['frames_in_target']:.0%} frames",
              flush=True)

    # (2) crossing from a kept half into an edited one (--box)
    crossing_rows = {m: [] for m in methods}
    for k, (spec, box) in enumerate(crossing_specs(crossing, seed + 1)):
        source, alpha = render(spec)
        frames, size = source.shape[0], source.shape[-1]
        latents = model.encode(source)
        inversion = invert(model, latents, steps=inv_settings.steps, method=inv_settings.method,
                           prompt=inv_settings.prompt)
        target = ff.TARGET[spec.colour]
        prompt = caption(target, spec.shape, spec.motion, spec.background)
        region = region_of(RegionConfig(box=box), frames, size)
        edited_cols, kept_cols = (slice(32, None), slice(0, 32)) if box[0] == 32 else (slice(0, 32), slice(32, None))
        for method in methods:
            if method != "flowedit":
                cfg = config if method == "inversion" else no_blend
                z = edit(model, inversion, [prompt], cfg, region=region.latent)
            else:
                cfg = flow_config(spec.caption)
                z = flowedit(model, latents, spec.caption, [prompt], cfg, steps=inv_settings.steps,
                             region=region.latent)
            video = pasted(model, model.decode(z)[0], source, region)
            row = {"clip": spec.caption, "box": list(box), "to": prompt,
                   **halves_judged(video, alpha, edited_cols, kept_cols, target, spec.colour)}
            if method != "inversion_no_blend":
                # the decoder alone: the no-mask edit's latents inside the region, the source's outside, decoded
                if method == "flowedit":
                    free = flowedit(model, latents, spec.caption, [prompt], cfg, steps=inv_settings.steps)
                else:
                    free = edit(model, inversion, [prompt], cfg)
                clean = inversion.clean if method != "flowedit" else latents
                composite = model.decode(clean * (1 - region.latent) + free * region.latent)[0]
                row["pasted"] = halves_judged(composite, alpha, edited_cols, kept_cols, target, spec.colour)
                row["unmasked"] = halves_judged(model.decode(free)[0], alpha, edited_cols, kept_cols, target,
                                                spec.colour)
            crossing_rows[method].append(row)
    result = {"model": name, "family": model.family, "spatial_factor": sf, "temporal_factor": tf,
              "steps": inv_settings.steps, "inversion": inv_settings.method, "settings": {
                  "inversion_edit (inversion_no_blend: the same with blend off)": {
                      "injection": dataclasses.asdict(config.injection), "blend": config.blend.enabled,
                      "guidance": config.guidance},
                  **({"flowedit": dataclasses.asdict(flow_config("").flowedit)} if flow else {})},
              "clips": clips, "crossing_clips": crossing, "vae_round_trip": vae, "mask_read": mask_read,
              "latents_outside_max_abs_diff": {m: max(v) if v else None for m, v in latents_outside.items()},
              "per_clip": per_clip, "crossing": crossing_rows, "decoder_carry": decoder_rows}
    if cli:
        result["cli_check"] = cli_check(model, name, specs[0], config, flow_config, resize, workdir, dilate, flow)
    result["summary"] = summarise(result, grows)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    return result


def decoder_carry(model, clean: torch.Tensor, free: torch.Tensor, right: torch.Tensor, round_trip: torch.Tensor,
                  clip: str) -> dict:
    """What the VAE decoder alone does to kept latents: the source's latents with the right half of latent frame 0
    only (or of every latent frame) replaced by the no-mask edit's, decoded. Pixel frames 1.. are decoded from latent
    frames left untouched in the first case, so their PSNR against the round trip is the decoder's carry from frame
    0; the second is the masked edit's decoder share (its left half against the round trip)."""
    first = torch.zeros_like(right)
    first[:, 0] = right[:, 0]
    only_first = model.decode(clean * (1 - first) + free * first)[0]
    composite = model.decode(clean * (1 - right) + free * right)[0]
    return {"clip": clip,
            "frame0_edit_later_frames_vs_round_trip": psnr_on(only_first[1:], round_trip[1:]),
            "frame0_edit_later_left_half_vs_round_trip": psnr_on(only_first[1:, ..., :32], round_trip[1:, ..., :32]),
            "pasted_left_half_vs_round_trip": psnr_on(composite[..., :32], round_trip[..., :32])}


def cli_check(model, name, spec, config, flow_config, resize, workdir: Path, dilate: int, flow: bool) -> dict:
    """The real command on one clip (a folder of PNG frames, the follow mask video, ``--save-mask``) against the API
    on the same frames and region: PSNR of the two results (the CLI's went through H.264 at crf 18), the region's
    coverage as recorded, the saved mask against the region."""
    from training.world import caption, render
    from vidinvert.editing import edit
    from vidinvert.export import write_video
    from vidinvert.flowedit import flowedit
    from vidinvert.inversion import invert
    from vidinvert.regions import build_region, mask_frames
    from vidinvert.settings import RegionConfig
    from vidinvert.video import read_video, to_uint8

    ff, quality = _load("first_frame"), _load("quality")
    source, alpha = render(spec)
    folder = workdir / f"{name}_cli_source"
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(to_uint8(source)):
        quality.write_png(folder / f"{i:03d}.png", frame)
    mask_path = workdir / f"{name}_cli_mask.mp4"
    write_video(as_frames(follow_mask(alpha, dilate)), mask_path, fps=8.0, force=True)
    frames = read_video(folder, max_frames=1000).frames  # what the CLI reads: the PNG-quantised clip
    target = ff.TARGET[spec.colour]
    prompt = caption(target, spec.shape, spec.motion, spec.background)
    region = build_region(RegionConfig(mask=str(mask_path)), tuple(range(frames.shape[0])), tuple(frames.shape[-2:]),
                          frames.shape[2], frames.shape[3], resize, model.spatial_factor, model.temporal_factor)
    latents = model.encode(frames)
    exe = shutil.which("vidinvert", path=str(Path(sys.executable).parent)) or shutil.which("vidinvert")
    prefix = [exe] if exe else [sys.executable, "-c", "import sys; from vidinvert.cli import main; sys.exit(main())"]
    out = {}
    for method in ["inversion"] + (["flowedit"] if flow else []):
        if method == "inversion":
            inv_settings, _ = ff.defaults(model)
            inversion = invert(model, latents, steps=inv_settings.steps, method=inv_settings.method,
                               prompt=inv_settings.prompt)
            api = pasted(model, model.decode(edit(model, inversion, [prompt], config, region=region.latent))[0],
                         frames, region)
            extra = []
        else:
            cfg = flow_config(spec.caption)
            api = pasted(model, model.decode(flowedit(model, latents, spec.caption, [prompt], cfg, steps=50,
                                                      region=region.latent))[0], frames, region)
            extra = ["--method", "flowedit", "--source-prompt", spec.caption]
        result_path, saved_mask = workdir / f"{name}_{method}_cli.mp4", workdir / f"{name}_{method}_cli_mask.mp4"
        command = prefix + ["edit", str(folder), "--model", name, "--prompt", prompt, "--mask", str(mask_path),
                            "--save-mask", str(saved_mask), "-o", str(result_path), "--quiet", "--force"] + extra
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode:
            out[method] = {"error": (run.stderr or run.stdout).strip()[-2000:]}
            continue
        cli_video = read_video(result_path, max_frames=1000).frames
        settings = json.loads(result_path.with_suffix(".json").read_text())
        recorded = (settings.get("result") or {}).get("region")
        saved = read_video(saved_mask, max_frames=1000).frames.amax(dim=1) > 0  # [F, H, W]
        expected = mask_frames(region, model.spatial_factor, model.temporal_factor).amax(dim=1) > 0
        out[method] = {"command": "vidinvert " + " ".join(f'"{a}"' if " " in a else a for a in command[len(prefix):]),
                       "psnr_cli_vs_api": psnr_on(cli_video, api),
                       "psnr_api_vs_its_h264": psnr_on(read_back(api, workdir / f"{name}_{method}_api.mp4"), api),
                       "coverage_recorded": (recorded or {}).get("coverage"),
                       "source_pasted_recorded": (recorded or {}).get("source_pasted"),
                       "coverage_api": round(region.coverage, 4),
                       "saved_mask_pixels_differing": int((saved ^ expected).sum())}
    return out


def read_back(video: torch.Tensor, path: Path) -> torch.Tensor:
    """``video`` through the CLI's own writer and reader (H.264, crf 18): the codec's share of a CLI/API gap."""
    from vidinvert.export import write_video
    from vidinvert.video import read_video

    write_video(video, path, fps=8.0, force=True)
    return read_video(path, max_frames=1000).frames


# ---- summary and tables ---------------------------------------------------------------------------------------------
def judged_summary(rows: list[dict]) -> dict:
    """Means over clips of ``judge_clip``'s figures (shares over frames)."""
    s = {"left_half_vs_source": mean_db([x["left_half_vs_source"] for x in rows]),
         "left_half_vs_round_trip": mean_db([x["left_half_vs_round_trip"] for x in rows]),
         "right_half_in_target": share(sum((x["halves"]["edited_half"] for x in rows), [])),
         "left_half_in_source": share(sum((x["halves"]["kept_half"] for x in rows), [])),
         "wholly_right_in_target": share(sum((x["halves"]["whole_edited"] for x in rows), [])),
         "frames_in_target": float(np.mean([x["frames_in_target"] for x in rows])),
         "clips_90pct_in_target": float(np.mean([x["frames_in_target"] >= 0.9 for x in rows])),
         "centroid_px": float(np.mean([x["centroid_px"] for x in rows if math.isfinite(x["centroid_px"])])),
         "shape_iou_median": float(np.nanmedian([x["shape_iou"] for x in rows])),
         "background_psnr": mean_db([x["background_psnr"] for x in rows]),
         "protected_vs_source": mean_db([x["protected_vs_source"] for x in rows]),
         "protected_vs_round_trip": mean_db([x["protected_vs_round_trip"] for x in rows])}
    if "seam" in rows[0]:
        s["kept_vs_source"] = mean_db([x["kept_vs_source"] for x in rows])
        s["kept_vs_round_trip"] = mean_db([x["kept_vs_round_trip"] for x in rows])
        s["seam"] = {k: mean_db([x["seam"][k] for x in rows]) for k in rows[0]["seam"]}
    return s


def summarise(r: dict, grows: tuple[int, ...]) -> dict:
    out = {"vae_round_trip": {"psnr": mean_db([v["psnr"] for v in r["vae_round_trip"]]),
                              "left_half": mean_db([v["left_half"] for v in r["vae_round_trip"]])},
           "mask_read": {"iou_mean": float(np.mean([m["iou"] for m in r["mask_read"]])),
                         "iou_min": min(m["iou"] for m in r["mask_read"]),
                         "pixels_differing_max": max(m["pixels_differing"] for m in r["mask_read"])}}
    for method, jobs in r["per_clip"].items():
        out[method] = {}
        for job, rows in jobs.items():
            s = {"coverage": float(np.mean([x["coverage"] for x in rows])),
                 "cpu_s_per_edit": float(np.mean([x["cpu_s"] for x in rows])), **judged_summary(rows)}
            if "paste_off" in rows[0]:
                s["paste_off"] = judged_summary([x["paste_off"] for x in rows])
            out[method][job] = s
        c = r["crossing"][method]
        out[method]["crossing"] = {
            "whole_in_edited_changed": share(sum((x["whole_edited"] for x in c), [])),
            "whole_in_kept_changed": share(sum((x["whole_kept"] for x in c), [])),
            "edited_half_in_target": share(sum((x["edited_half"] for x in c), [])),
            "kept_half_in_source": share(sum((x["kept_half"] for x in c), [])),
            "kept_half_in_target": share(sum((x["kept_half_changed"] for x in c), [])),
            "straddling_frames": sum(x["straddling"] for x in c)}
        for how in ("pasted", "unmasked"):
            if c and how in c[0]:
                out[method]["crossing"][how] = {
                    "whole_in_edited_changed": share(sum((x[how]["whole_edited"] for x in c), [])),
                    "edited_half_in_target": share(sum((x[how]["edited_half"] for x in c), [])),
                    "kept_half_in_source": share(sum((x[how]["kept_half"] for x in c), []))}
    for method, rows in r["decoder_carry"].items():
        out.setdefault(method, {})["decoder_carry"] = {k: mean_db([x[k] for x in rows]) for k in rows[0] if k != "clip"}
    return out


def restore(tree):
    """JSON's ``"inf"`` / ``"nan"`` strings (``common.json_safe``) back to floats."""
    if isinstance(tree, dict):
        return {k: restore(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [restore(v) for v in tree]
    return float(tree) if tree in ("inf", "-inf", "nan") else tree


def db(d: dict) -> str:
    if not math.isfinite(d["mean"]):
        return "identical"
    extra = f", {d['identical']} identical" if d["identical"] else ""
    return f"{d['mean']:.1f} (min {d['min']:.1f}{extra})"


def pct(d: dict) -> str:
    return "-" if not d["n"] else f"{d['share']:.0%} ({d['n']})"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


METHOD_LABEL = {"inversion": "inversion + injection (defaults)", "inversion_no_blend": "inversion + injection, "
                "`--no-blend`", "flowedit": "FlowEdit (`--method flowedit`)"}


def to_markdown(results: dict) -> str:
    lines = ["# Edit regions (`--mask`, `--box`, `--mask-grow`) on the demo models", "",
             "Every number of a model's section comes from the command named at its top (CPU; seconds are context "
             "only, the machine was shared). Held-out clips of the synthetic world, judged by `training/judges.py`; "
             "each edit is `vidinvert edit CLIP --prompt <caption in the new colour>` with the model's defaults plus "
             "the region named (FlowEdit: `--method flowedit --source-prompt <source caption>`); the results are "
             "judged as the CLI writes them, the source's pixels pasted back outside the region (`--paste-source on`, "
             "the default), and again without (`--paste-source off`) where a row says so. PSNR in dB over [-1, 1]; "
             "means over clips (min = worst clip; \"identical\": every pixel equal); shares count frames (or frame "
             "halves), their number in brackets. Per-clip values: `bench/results/masks.json`.", ""]
    for r in results["models"]:
        s, name = r["summary"], r["model"]
        vae = s["vae_round_trip"]
        run = r.get("run") or results
        m = run["machine"]
        lines += [f"## `{name}` ({r['clips']} clips; crossing: {r['crossing_clips']}; latent cell {r['spatial_factor']} "
                  f"px, {r['temporal_factor']} frames per latent frame; {r['steps']} steps of "
                  f"{'Euler (flow-matching)' if r.get('family') == 'wan' else r['inversion'].upper()} inversion)", "",
                  f"Command: `{run['command']}` ({run['date']}; {m['torch_threads']} torch thread(s), {m['cpu_count']} "
                  f"CPUs, load average {m['load_at_start']} at the start, {m['load_at_end']} at the end).", "",
                  f"VAE round trip of the sources (the ceiling of anything kept): {db(vae['psnr'])} dB whole frame, "
                  f"{db(vae['left_half'])} dB on the left half. Latents outside the region after the edit, largest "
                  "|difference| from the source's over all masked edits: " +
                  ", ".join(f"{METHOD_LABEL[k]} {v:g}" for k, v in r["latents_outside_max_abs_diff"].items()) + ".", "",
                  f"### (1) static right-half mask (`--mask right_half.png`)", "",
                  "Seam: the kept pixels within "
                  f"{run['band']} px of the region (\"band\") against the rest of the kept half (\"rest\"). With "
                  "`--paste-source on` (the default) the kept side is the source's own pixels, feathered towards the "
                  "region over one latent cell; `off`: the decoder's pixels.", "",
                  "| job | left half vs source | left half vs VAE round trip | band / rest vs source | band / rest vs "
                  "round trip | right half: object in the target colour | frames with the object wholly in the right "
                  "half: in the target colour | left half: object still in the source colour |",
                  "|---|---|---|---|---|---|---|---|"]
        for method in [k for k in METHOD_LABEL if k in s]:
            for job, label, x in (("none", "no mask", s[method]["none"]),
                                  ("right", "`--mask right_half.png`", s[method]["right"]),
                                  ("right", "`--mask right_half.png --paste-source off`",
                                   s[method]["right"].get("paste_off"))):
                if x is None:
                    continue
                seam_cells = (f"{db(x['seam']['band_vs_source'])} / {db(x['seam']['rest_vs_source'])} | "
                              f"{db(x['seam']['band_vs_round_trip'])} / {db(x['seam']['rest_vs_round_trip'])}"
                              if "seam" in x else "- | -")
                lines.append(f"| {METHOD_LABEL[method]}, {label} | {db(x['left_half_vs_source'])} | "
                             f"{db(x['left_half_vs_round_trip'])} | {seam_cells} | {pct(x['right_half_in_target'])} | "
                             f"{pct(x['wholly_right_in_target'])} | {pct(x['left_half_in_source'])} |")
        x, off = s["inversion"]["right"], s["inversion"]["right"].get("paste_off")
        goal = GOALS["kept_half_psnr_vs_source"]
        lines += ["", f"Goal: left half >= {goal:.0f} dB against the source (inversion + injection, the defaults): "
                  f"{met(x['left_half_vs_source']['min'] >= goal)} on every clip, mean "
                  f"{x['left_half_vs_source']['mean']:.1f} dB, worst clip {x['left_half_vs_source']['min']:.1f} dB" +
                  (f"; with `--paste-source off` {met(off['left_half_vs_source']['min'] >= goal)} on every clip, "
                   f"mean {off['left_half_vs_source']['mean']:.1f} dB, worst {off['left_half_vs_source']['min']:.1f} dB "
                   f"(the VAE round trip alone: mean {vae['left_half']['mean']:.1f}, worst "
                   f"{vae['left_half']['min']:.1f})" if off else "") +
                  f". Edited on the right: {pct(x['right_half_in_target'])} of frame halves with the object there "
                  f"(no mask: {pct(s['inversion']['none']['right_half_in_target'])}).", "",
                  "### (2) object crossing from a kept half into an edited half (`--box` of the half it enters)", "",
                  "| job | frames wholly in the edited half: recoloured | frames wholly in the kept half: recoloured | "
                  "edited-half part in the target colour | kept-half part still in the source colour | kept-half part "
                  "in the target colour | frames straddling |", "|---|---|---|---|---|---|---|"]
        for method in [k for k in METHOD_LABEL if k in s]:
            c = s[method]["crossing"]
            lines.append(f"| {METHOD_LABEL[method]} | {pct(c['whole_in_edited_changed'])} | "
                         f"{pct(c['whole_in_kept_changed'])} | {pct(c['edited_half_in_target'])} | "
                         f"{pct(c['kept_half_in_source'])} | {pct(c['kept_half_in_target'])} | {c['straddling_frames']} |")
        for method in [k for k in METHOD_LABEL if k in s]:
            c = s[method]["crossing"]
            for how, label in (("unmasked", "the same edit with no mask"),
                               ("pasted", "the decoder alone: the no-mask edit's latents inside the box, the source's "
                                          "outside, decoded")):
                if how in c:
                    lines.append(f"| {METHOD_LABEL[method]}: {label} | {pct(c[how]['whole_in_edited_changed'])} | | "
                                 f"{pct(c[how]['edited_half_in_target'])} | {pct(c[how]['kept_half_in_source'])} | | |")
        carry = {k: s[k]["decoder_carry"] for k in METHOD_LABEL if k in s and "decoder_carry" in s[k]}
        if carry:
            lines += ["", "### The VAE decoder alone", "", "No edit run with a mask: the source's latents with the no-mask "
                      "edit's pasted into the right half of latent frame 0 only, decoded; pixel frames 1-8 come from "
                      "latent frames left untouched, so any difference from the round trip there is carried by the "
                      "decoder from frame 0. And the no-mask edit's latents pasted into the whole right half (what a "
                      "perfect masked edit would hold), its left half against the round trip:", "",
                      "| edit | frames 1-8 (untouched latents) vs round trip | their left half | whole right half pasted: "
                      "left half vs round trip |", "|---|---|---|---|"]
            for method, d in carry.items():
                lines.append(f"| {METHOD_LABEL[method]} | {db(d['frame0_edit_later_frames_vs_round_trip'])} | "
                             f"{db(d['frame0_edit_later_left_half_vs_round_trip'])} | "
                             f"{db(d['pasted_left_half_vs_round_trip'])} |")
        mr = s["mask_read"]
        lines += ["", f"### (3) per-frame mask video following the object, and (4) `--mask-grow`", "",
                  f"Mask: the world's object coverage dilated by {run['dilate']} px, written as H.264 mp4; read "
                  f"back by the CLI's reader: IoU with the drawn mask {mr['iou_mean']:.4f} mean, {mr['iou_min']:.4f} "
                  f"worst clip, at most {mr['pixels_differing_max']} pixels differing. \"kept\" = pixels of "
                  "kept latent cells; \"outside the grow-0 region\" = the same pixel set for every row (also the no-mask "
                  "rows); background = the judges' PSNR outside both object masks (as `bench/quality.py`).", "",
                  "| job | latent coverage | frames in target colour (goal >= 90%) | clips with >= 90% | centroid px "
                  "| shape IoU (median) | outside the grow-0 region vs source | kept vs source | band / rest vs source "
                  "| band / rest vs round trip | background vs source (judges) | CPU s / edit |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method in [k for k in METHOD_LABEL if k in s]:
            for job, x in s[method].items():
                if job in ("right", "crossing", "decoder_carry"):
                    continue
                variants = [("", x)]
                if job == f"follow_g{run['grows'][0]}" and "paste_off" in x:
                    variants.append((" --paste-source off", {**x, **x["paste_off"]}))
                for suffix, y in variants:
                    label = ("no mask" if job == "none"
                             else f"`--mask follow.mp4 --mask-grow {job.split('_g')[1]}{suffix}`")
                    kept = (f"{db(y['kept_vs_source'])} | {db(y['seam']['band_vs_source'])} / "
                            f"{db(y['seam']['rest_vs_source'])} | {db(y['seam']['band_vs_round_trip'])} / "
                            f"{db(y['seam']['rest_vs_round_trip'])}" if "seam" in y else "- | - | -")
                    lines.append(f"| {METHOD_LABEL[method]}, {label} | {y['coverage']:.3f} | "
                                 f"{y['frames_in_target']:.0%} | {y['clips_90pct_in_target']:.0%} | "
                                 f"{y['centroid_px']:.2f} | {y['shape_iou_median']:.2f} | "
                                 f"{db(y['protected_vs_source'])} | {kept} | {db(y['background_psnr'])} | "
                                 f"{y['cpu_s_per_edit']:.1f} |")
        cli = r.get("cli_check")
        if cli:
            lines += ["", "### CLI check (one clip; the real command against the API on the same PNG frames and mask)",
                      "", "| method | command | result PSNR CLI vs API | the API's result through H.264 vs itself | "
                      "coverage recorded / API | source pasted (recorded) | `--save-mask` pixels differing from the region |",
                      "|---|---|---|---|---|---|---|"]
            for method, c in cli.items():
                if "error" in c:
                    lines.append(f"| {method} | failed: {c['error'][-300:]} | | | | | |")
                    continue
                lines.append(f"| {method} | `{c['command']}` | {c['psnr_cli_vs_api']:.1f} | "
                             f"{c['psnr_api_vs_its_h264']:.1f} | {c['coverage_recorded']} / {c['coverage_api']} | "
                             f"{c.get('source_pasted_recorded')} | "
                             f"{c['saved_mask_pixels_differing']} |")
        lines += ["", f"Time for `{name}`: {r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,demo-wan")
    parser.add_argument("--clips", type=int, default=8, help="held-out clips for (1), (3), (4) (8: every colour "
                        "twice)")
    parser.add_argument("--crossing", type=int, default=7, help="crossing clips for (2) (7: each held-out "
                        "combination with a horizontal motion once)")
    parser.add_argument("--grows", default="0,1,2")
    parser.add_argument("--dilate", type=int, default=2, help="px the follow mask is grown beyond the object")
    parser.add_argument("--band", type=int, default=4, help="px of kept pixels next to the region counted as seam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI check")
    parser.add_argument("--out", default=str(BENCH / "results"), help="folder for masks.json and masks.md")
    parser.add_argument("--quick", action="store_true", help="3 clips (3 crossing) per model, writes nothing")
    parser.add_argument("--render", default=None, help="only re-render the markdown of this masks.json")
    parser.add_argument("--fresh", action="store_true", help="drop the other models' results from --out's masks.json "
                        "(default: keep them, each with its own command)")
    args = parser.parse_args(argv)
    common = _load("common")
    if args.render:
        results = json.loads(Path(args.render).read_text())
        markdown = to_markdown(restore(results))
        print(markdown)
        (Path(args.render).with_suffix(".md")).write_text(markdown.rstrip() + "\n")
        return results
    common.setup(threads=args.threads)
    load = common.load_average()
    if args.quick:
        args.clips, args.crossing = 3, 3
    grows = tuple(int(g) for g in args.grows.split(","))
    command = ("python bench/masks.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    results = {"goals": GOALS, "min_px": MIN_PX, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            load = common.load_average()
            record = model_run(name, args.clips, args.crossing, args.seed, grows, args.dilate, args.band, Path(tmp),
                               not args.no_cli)
            record["run"] = {"command": command, "date": time.strftime("%Y-%m-%d"), "dilate": args.dilate,
                             "band": args.band, "grows": list(grows), "seed": args.seed,
                             "machine": common.machine_info(load_at_start=load)}
            results["models"].append(record)
            raw = Path(tempfile.gettempdir()) / f"masks_raw_{name}.json"
            raw.write_text(json.dumps(common.json_safe(record), indent=1) + "\n")  # kept should anything fail later
            print("raw results:", raw, flush=True)
            if not args.quick:
                write_merged(common, results, Path(args.out), args.fresh)
    print(to_markdown(results))
    return results


def write_merged(common, results: dict, out: Path, fresh: bool) -> None:
    """Write ``masks.json`` / ``masks.md`` in ``out``: the models just measured, and (unless ``fresh``) the other
    models of the file already there, each keeping its own command."""
    path = out / "masks.json"
    models = {r["model"]: r for r in results["models"]}
    if path.is_file() and not fresh:
        old = restore(json.loads(path.read_text()))
        for r in old.get("models", []):
            if r["model"] not in models and "run" in r:  # older records without their own command are dropped
                models[r["model"]] = r
    order = ["demo", "demo-wan"]
    merged = {**results, "models": sorted(models.values(), key=lambda r: (order.index(r["model"])
                                                                          if r["model"] in order else 9, r["model"]))}
    for written in common.write_results("masks", merged, to_markdown(merged), out):
        print("wrote", written, flush=True)


if __name__ == "__main__":
    main()
