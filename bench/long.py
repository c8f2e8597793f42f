"""Long clips edited in temporal windows (``vidinvert.windows``) on the demo model, against split-and-stitch.

The demo model is trained on 9-frame clips (3 latent frames), so its window is 3 latent frames; with the default
overlap (0.25, rounded down to whole frames, at least one) neighbouring windows share one latent frame. Source clips
are held-out (colour, shape, motion) combinations of the demo world rendered 33 and 65 frames long
(``training.world.long_spec``: the objects move across every window border and stay in the frame).

(a) Quality, per clip length: fixed-point inversion in windows with the source caption, then
    - reconstruction (edit with the source caption, guidance 1): PSNR of the whole decoded clip against the VAE
      round trip of the source (goal >= 30 dB);
    - colour edit (red -> green, ..., rest of the caption kept; library defaults, guidance 6): on every window's
      frames, the target colour (goal >= 80%) and the source's motion kept (goal >= 80%); the seam score;
    - split-and-stitch, run beside it: the clip cut into 9-frame pieces sharing their end frames, each inverted and
      edited alone, the pieces concatenated; the same judges and the same seam score.
    Seam score: ``vidinvert.metrics.seam_score``, the issue's definition: the warp error (the result carried along
    the source's optical flow) of the frame pairs straddling a border over that of the other pairs. About 1 = no
    seam (goal for windowed editing <= 1.2). Each method is scored at its own borders (windowed: where a window's
    contribution starts or stops, ``Windows.pixel_borders``; split-and-stitch: where one piece's frames give way to
    the next's), and both at the pieces' borders. The script's earlier score, mean frame-to-frame change at the
    borders over the median change elsewhere, is kept as an extra column ("frame change").
    Motion per window: besides the judge's direction, the mean distance (px) between the edit's object centroid
    and the source's on every window's frames.
(b) Cost against the clip length (9, 17, 33, 65 frames = 1, 2, 4, 8 windows): plain DDIM inversion and one edit,
    seconds and working memory (the phase's peak resident memory above the resident memory before it) per frame,
    and the transformer evaluations of single windows each made (the overlap's extra evaluations counted).

    python bench/long.py                  # -> bench/results/long.{json,md}
    python bench/long.py --quick          # 2 clips, 6 steps, 33 frames only, writes nothing
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's training/ (world, judges)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EDIT_TARGET = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "purple", "purple": "white", "white": "red"}
GOALS = {"recon_psnr": 30.0, "edit_colour": 0.80, "motion_kept": 0.80, "seam": 1.2}
PIECE = 9  # pixel frames of a split-and-stitch piece (the model's trained length)


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def change_score(clip: torch.Tensor, borders: list[int]) -> float:
    """Mean frame change across the borders / median frame change elsewhere (``clip`` ``[F, C, H, W]``; a border
    ``b`` lies between frames ``b - 1`` and ``b``, as in ``vidinvert.metrics.seam_score``)."""
    change = (clip[1:] - clip[:-1]).abs().mean(dim=(1, 2, 3))  # [F - 1]: change[j] from frame j to j + 1
    at = torch.tensor(sorted({b - 1 for b in borders}))
    rest = torch.ones(len(change), dtype=torch.bool)
    rest[at] = False
    return float(change[at].mean() / change[rest].median().clamp_min(1e-8))


def pixel_span(start: int, stop: int, temporal: int = 4) -> tuple[int, int]:
    """Pixel frames ``[a, b)`` that latent frames ``[start, stop)`` encode (latent 0 is pixel frame 0)."""
    return (0 if start == 0 else temporal * start - temporal + 1), temporal * (stop - 1) + 1


def pieces(frames: int) -> list[tuple[int, int]]:
    """Split-and-stitch pieces of ``PIECE`` frames sharing their end frames: [0, 9), [8, 17), ..."""
    return [(a, a + PIECE) for a in range(0, frames - 1, PIECE - 1)]


def source_specs(count: int, frames: int, seed: int):
    import numpy as np

    from training.world import BACKGROUNDS, HELDOUT, long_spec

    rng = np.random.default_rng(seed)
    backgrounds = list(BACKGROUNDS)
    return [long_spec(rng, HELDOUT[k % len(HELDOUT)], frames, background=backgrounds[(k + k // len(HELDOUT)) % 3])
            for k in range(count)]


def quality(model, frames: int, clips: int, steps: int, seed: int, overlap: float, baselines: bool = True,
            edit_options: dict | None = None) -> dict:
    """The quality part for clips of ``frames`` frames; without ``baselines``, the windowed edit only (the
    split-and-stitch and one-window rows then repeat it, for comparing window settings quickly). ``edit_options``:
    ``blend`` (bool) and ``reference_weight`` for every colour edit (default: the library's defaults)."""
    from vidinvert import BlendConfig, EditConfig, InjectionConfig, edit, invert

    options = edit_options or {}
    colour_edit = EditConfig(blend=BlendConfig(enabled=options.get("blend", False)),  # every method's colour edit
                             injection=InjectionConfig(reference_weight=options.get("reference_weight", 1.0)))
    from training import judges
    from training.world import caption, render
    from vidinvert.exact import NotConvergedWarning
    from vidinvert.metrics import optical_flow, seam_score, warp_errors

    def inverted(z, prompt, window):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotConvergedWarning)
            return invert(model, z, steps=steps, prompt=prompt, method="fixed-point", tol=1e-5, max_iter=10,
                          anderson=2, window=window, overlap=overlap)

    rows = []
    for spec in source_specs(clips, frames, seed):
        started = time.time()
        source = render(spec)[0]  # [F, 3, H, W]
        z = model.encode(source)
        round_trip = model.decode(z)[0]
        inversion = inverted(z, spec.caption, "auto")
        windows = inversion.windows()
        recon = model.decode(edit(model, inversion, spec.caption, EditConfig(guidance=1.0)))[0]
        target = EDIT_TARGET[spec.colour]
        prompt = caption(target, spec.shape, spec.motion, spec.background)
        windowed = model.decode(edit(model, inversion, prompt, colour_edit))[0]
        one_window = (model.decode(edit(model, inverted(z, spec.caption, None), prompt, colour_edit))[0]
                      if baselines else windowed)
        stitched_parts = []
        for a, b in pieces(frames) if baselines else []:
            part_inversion = inverted(model.encode(source[a:b]), spec.caption, None)
            part = model.decode(edit(model, part_inversion, prompt, colour_edit))[0]
            stitched_parts.append(part if a == 0 else part[1:])  # the shared end frame once
        stitched = torch.cat(stitched_parts) if baselines else windowed  # [F, 3, H, W]
        # metrics' convention, a border b between frames b - 1 and b: piece k's shared last frame a is piece k's,
        # frame a + 1 piece k + 1's
        piece_borders = [a + 1 for a, _ in pieces(frames)[1:]]
        window_borders = list(windows.pixel_borders(model.temporal_factor))
        spans = [pixel_span(s, e, model.temporal_factor) for s, e in windows.spans()]
        flow = optical_flow(source)

        def seams(clip):
            errors = warp_errors(clip, source, flow)
            return {name: seam_score(clip, source, at, flow, errors)
                    for name, at in (("at_windows", window_borders), ("at_pieces", piece_borders))}

        def judged(clip, own):
            seam = seams(clip)
            return dict(
                colour=[judges.object_colour(clip[a:b]) == target for a, b in spans],
                motion=[judges.motion(clip[a:b]) == judges.motion(source[a:b]) for a, b in spans],
                centroid_px=[judges.centroid_distance(clip[a:b], source[a:b]) for a, b in spans],
                motion_judged=[judges.motion(clip[a:b]) for a, b in spans],
                displacement_px=[displacement_error(clip[a:b], source[a:b]) for a, b in spans],
                whole_motion=judges.motion(clip) == judges.motion(source),
                seam=seam[own], seam_at_pieces=seam["at_pieces"], seam_at_windows=seam["at_windows"],
                frame_change=change_score(clip, window_borders if own == "at_windows" else piece_borders),
            )

        rows.append(dict(caption=spec.caption, speed=round(spec.speed, 3), windows=windows.count,
                         window_borders=window_borders, piece_borders=piece_borders,
                         recon_psnr=psnr(recon, round_trip), source_seam=seams(source),
                         round_trip_seam=seams(round_trip), one_window_seam=seams(one_window),
                         source_motion_matches_caption=[m == spec.motion for m in judged_source_motion(source, spans)],
                         source_motion=judged_source_motion(source, spans),
                         source_travel_px=[float((judges.centroids(source[b - 1:b]) - judges.centroids(source[a:a + 1]))
                                                 .norm()) for a, b in spans],
                         windowed=judged(windowed, "at_windows"), stitched=judged(stitched, "at_pieces"),
                         one_window=judged(one_window, "at_windows"),
                         seconds=time.time() - started))
        print(json.dumps({"frames": frames, **rows[-1]}), flush=True)  # progress: one line per clip

    return summarise(dict(frames=frames, clips=clips, windows=rows[0]["windows"], overlap=overlap, rows=rows))


def summarise(q: dict) -> dict:
    """``q`` (one clip length: ``frames``, ``clips``, ``windows``, ``overlap``, ``rows``) with the summaries over its
    rows added (also re-run by ``--render`` on a saved JSON)."""
    rows = q["rows"]

    def summary(kind):
        colour = [v for r in rows for v in r[kind]["colour"]]
        motion = [v for r in rows for v in r[kind]["motion"]]
        centroid = [v for r in rows for v in r[kind]["centroid_px"]]
        return dict(colour=sum(colour) / len(colour), motion_kept=sum(motion) / len(motion),
                    worst_window_colour=min(sum(r[kind]["colour"][w] for r in rows) / len(rows)
                                            for w in range(len(rows[0][kind]["colour"]))),
                    worst_window_motion=min(sum(r[kind]["motion"][w] for r in rows) / len(rows)
                                            for w in range(len(rows[0][kind]["motion"]))),
                    whole_motion_kept=sum(r[kind]["whole_motion"] for r in rows) / len(rows),
                    centroid_px=mean(centroid),  # over the windows where both clips show an object
                    windows_without_object=sum(not math.isfinite(v) for v in centroid),
                    worst_window_centroid_px=max(mean([r[kind]["centroid_px"][w] for r in rows])
                                                 for w in range(len(rows[0][kind]["centroid_px"]))),
                    displacement_px=mean([v for r in rows for v in r[kind]["displacement_px"]]),
                    seam=mean([r[kind]["seam"] for r in rows]), max_seam=max(r[kind]["seam"] for r in rows),
                    seam_at_pieces=mean([r[kind]["seam_at_pieces"] for r in rows]),
                    frame_change=mean([r[kind]["frame_change"] for r in rows]))

    matches = [v for r in rows for v in r["source_motion_matches_caption"]]
    return dict(q, recon_psnr=mean([r["recon_psnr"] for r in rows]),
                min_recon_psnr=min(r["recon_psnr"] for r in rows),
                source_seam={k: mean([r["source_seam"][k] for r in rows]) for k in ("at_windows", "at_pieces")},
                round_trip_seam={k: mean([r["round_trip_seam"][k] for r in rows]) for k in ("at_windows", "at_pieces")},
                one_window_seam={k: mean([r["one_window_seam"][k] for r in rows]) for k in ("at_windows", "at_pieces")},
                source_motion_matches_caption=sum(matches) / len(matches),
                source_travel_px=mean([v for r in rows for v in r["source_travel_px"]]),
                windowed=summary("windowed"), stitched=summary("stitched"), one_window=summary("one_window"))


def displacement_error(clip: torch.Tensor, source: torch.Tensor) -> float:
    """How far (px) the edit's object travels from where the source's does over the frames: the least-squares
    velocity of each centroid track (px per frame, frames without an object skipped), the difference's length times
    the frames spanned. Unlike the direction judge it has no "still"/"bouncing" threshold to cross."""
    from training import judges

    def velocity(track):
        keep = ~track.isnan().any(dim=1)
        t = torch.arange(len(track), dtype=torch.float64)[keep]
        points = track.double()[keep]  # [N, 2]
        if len(t) < 2:
            return None
        t = t - t.mean()
        return (t[:, None] * (points - points.mean(dim=0))).sum(dim=0) / (t * t).sum()  # [2] px per frame

    ours, theirs = velocity(judges.centroids(clip)), velocity(judges.centroids(source))
    if ours is None or theirs is None:
        return float("nan")
    return float((ours - theirs).norm() * (len(clip) - 1))


def mean(values: list[float]) -> float:
    """Mean of the finite values (a window without an object scores ``inf`` centroid distance; ``nan``: unmeasured)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


def judged_source_motion(source: torch.Tensor, spans: list[tuple[int, int]]) -> list[str]:
    """The motion judge on the source's own frames of every window (what an edit's per-window motion is held to)."""
    from training import judges

    return [judges.motion(source[a:b]) for a, b in spans]


def cost(model, lengths: list[int], steps: int, seed: int, common, size: int, overlap: float) -> list[dict]:
    from vidinvert import EditConfig, edit, invert
    from training.world import render

    calls = {"n": 0}
    original = model.predict

    def counted(x, t, text):
        calls["n"] += 1
        return original(x, t, text)

    model.predict = counted  # counts evaluations of single windows (a WindowedModel calls this once per window)
    out = []
    try:
        for frames in lengths:
            spec = source_specs(1, frames, seed)[0]
            clip = render(spec)[0]
            clip = torch.nn.functional.interpolate(clip, size=(size, size), mode="bilinear")  # [F, 3, S, S]
            z = model.encode(clip)
            row = dict(frames=frames, size=size)
            for phase in ("invert", "edit", "decode"):
                best = None
                for _ in range(2):  # fastest of two runs
                    calls["n"] = 0
                    release_freed_memory()  # else the phase reuses pages an earlier one left and RSS cannot see it
                    before = current_rss_mib()
                    common.reset_vm_hwm()
                    started = time.perf_counter()
                    if phase == "invert":
                        inversion = invert(model, z, steps=steps, window="auto", overlap=overlap)
                    elif phase == "edit":
                        edited = edit(model, inversion, "a green disc moving right on a black background", EditConfig())
                    else:
                        model.decode(edited)
                    seconds = time.perf_counter() - started
                    work = (common.vm_hwm_mib() or 0.0) - before
                    if best is None or seconds < best[0]:
                        best = (seconds, work, calls["n"])
                row[f"{phase}_seconds"], row[f"{phase}_work_mib"], row[f"{phase}_window_evaluations"] = best
            row["windows"] = inversion.windows().count
            out.append(row)
    finally:
        del model.predict
    return out


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so a phase's allocations show in its RSS."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _edit_words(options: dict | None) -> str:
    options = options or {}
    extra = [f"reference weight {options['reference_weight']:g}"] if options.get("reference_weight", 1.0) != 1.0 else []
    extra += ["local blend"] if options.get("blend") else []
    if not extra:
        return "the library defaults (guidance 6, injection on, inverted start)"
    return "guidance 6, injection on, inverted start, " + ", ".join(extra) + " (otherwise the library defaults)"


def to_markdown(r: dict) -> str:
    g = r["goals"]
    overlap = r["quality"][0]["overlap"] if r["quality"] else 0.25
    lines = [
        f"Model `{r['model']}` (window 3 latent frames, overlap {overlap:g} = {max(1, math.floor(overlap * 3))} latent "
        f"frame(s)), {r['steps']} steps, held-out combinations, "
        f"{r['clips']} clips per length; fixed-point inversion (tol 1e-5, max_iter 10, Anderson 2) with the source "
        f"caption; colour edits with {_edit_words(r.get('edit_options'))}. Seam score = "
        "`vidinvert.metrics.seam_score` (warp error at the borders / elsewhere), each method at its own borders.",
        "",
        f"| frames | windows | reconstruction PSNR vs VAE (>= {g['recon_psnr']:g} dB) | method | target colour, "
        f"all windows / worst window (>= {g['edit_colour']:.0%}) | motion kept, all windows / worst window "
        f"(>= {g['motion_kept']:.0%}) | centroid distance to the source px, all windows / worst window | "
        "displacement error per window px | "
        f"motion kept, whole clip | seam score at its own borders, mean / max (<= {g['seam']:g}) | "
        "seam score at the pieces' borders | frame-change score at its own borders |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for q in r["quality"]:
        for kind, name in (("windowed", "windowed (this)"), ("stitched", "split-and-stitch"),
                           ("one_window", "one window of the whole clip")):
            s = q[kind]
            lines.append(
                f"| {q['frames']} | {q['windows']} | {q['recon_psnr']:.1f} (min {q['min_recon_psnr']:.1f}) | {name} | "
                f"{s['colour']:.0%} / {s['worst_window_colour']:.0%} | {s['motion_kept']:.0%} / "
                f"{s['worst_window_motion']:.0%} | {s['centroid_px']:.2f} / {s['worst_window_centroid_px']:.2f}"
                f"{' (' + str(s['windows_without_object']) + ' windows without the object)' if s['windows_without_object'] else ''} | "
                f"{s['displacement_px']:.2f} | "
                f"{s['whole_motion_kept']:.0%} | {s['seam']:.2f} / {s['max_seam']:.2f} | "
                f"{s['seam_at_pieces']:.2f} | {s['frame_change']:.2f} |")
    lines += ["", "Seam score with no windows at the same borders (the windows' / the pieces'): the source itself, "
              "its VAE round trip, and the same edit run as one window of the whole clip (past the model's trained "
              "length; inverted the same way): "
              + "; ".join(f"{q['frames']} frames: source {q['source_seam']['at_windows']:.2f} / "
                          f"{q['source_seam']['at_pieces']:.2f}, round trip {q['round_trip_seam']['at_windows']:.2f} / "
                          f"{q['round_trip_seam']['at_pieces']:.2f}, one-window edit "
                          f"{q['one_window_seam']['at_windows']:.2f} / {q['one_window_seam']['at_pieces']:.2f}"
                          for q in r["quality"]) + ". "
              + "The source's own motion judged per window equals its caption's on "
              + ", ".join(f"{q['source_motion_matches_caption']:.0%} of the windows at {q['frames']} frames"
                          for q in r["quality"]) + ", where its object travels "
              + ", ".join(f"{q['source_travel_px']:.1f} px per window at {q['frames']} frames" for q in r["quality"])
              + " (displacement error: the least-squares velocity of the edit's centroid track against the "
              "source's, times the window's frames)."]
    if not r.get("cost"):
        return "\n".join(lines)
    lines += ["", f"Cost at {r['cost'][0]['size']}x{r['cost'][0]['size']} (plain DDIM inversion, one edit, decode; "
              "working MiB = the phase's peak resident memory above the resident memory before it):", "",
              "| frames | windows | invert s (per frame) | edit s (per frame) | window evaluations invert / edit | "
              "invert working MiB | edit working MiB | decode s / working MiB |", "|---|---|---|---|---|---|---|---|"]
    for c in r["cost"]:
        f = c["frames"]
        lines.append(
            f"| {f} | {c['windows']} | {c['invert_seconds']:.2f} ({c['invert_seconds'] / f:.3f}) | "
            f"{c['edit_seconds']:.2f} ({c['edit_seconds'] / f:.3f}) | {c['invert_window_evaluations']} / "
            f"{c['edit_window_evaluations']} | {c['invert_work_mib']:.1f} | {c['edit_work_mib']:.1f} | "
            f"{c['decode_seconds']:.2f} / {c['decode_work_mib']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo (default), demo-wan or a pipeline folder")
    parser.add_argument("--clips", type=int, default=6, help="held-out source clips per length")
    parser.add_argument("--lengths", default="33,65", help="clip lengths (frames) of the quality part")
    parser.add_argument("--cost-lengths", default="9,17,33,65", help="clip lengths of the cost part")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--overlap", type=float, default=None,
                        help="window overlap of the quality part (a share of the window; default: the library's)")
    parser.add_argument("--cost-size", type=int, default=192,
                        help="frame size of the cost part (larger than the demo's 64 so activations outweigh noise)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blend", action="store_true", help="colour edits with the local blend")
    parser.add_argument("--reference-weight", type=float, default=1.0, help="colour edits' reference weight")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(BENCH / "results" / "long"), help="writes OUT.json and OUT.md")
    parser.add_argument("--quick", action="store_true", help="2 clips, 6 steps, 33 frames, writes nothing")
    parser.add_argument("--render", metavar="JSON", help="rewrite OUT.md from a saved OUT.json (summaries recomputed)")
    args = parser.parse_args(argv)
    common = load_common()
    if args.render:
        results = json.loads(Path(args.render).read_text())
        results["quality"] = [summarise(q) for q in results["quality"]]
        write(results, Path(args.render).with_suffix(""), common)
        return results
    common.setup(args.threads)
    if args.quick:
        args.clips, args.steps, args.lengths, args.cost_lengths = 2, 6, "33", "9,17"
    load_at_start = common.load_average()
    from vidinvert.models import load_pipeline, wrap
    from vidinvert.settings import DEFAULT_OVERLAP

    model = wrap(load_pipeline(args.model, dtype="fp32", device="cpu"), name=args.model)  # demo, demo-wan or a folder
    model.pipe.set_progress_bar_config(disable=True)
    started = time.time()
    results = dict(model=str(args.model), steps=args.steps, clips=args.clips, goals=GOALS, seed=args.seed)
    overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    results["edit_options"] = dict(blend=args.blend, reference_weight=args.reference_weight)
    results["quality"] = [quality(model, int(f), args.clips, args.steps, args.seed + 100, overlap,
                                  edit_options=results["edit_options"]) for f in args.lengths.split(",") if f]
    results["cost"] = cost(model, [int(f) for f in args.cost_lengths.split(",") if f], args.steps, args.seed + 200,
                           common, args.cost_size, overlap)
    results["seconds"] = round(time.time() - started, 1)
    results["machine"] = common.machine_info("cpu", load_at_start)
    markdown = to_markdown(results)
    print(markdown)
    if not args.quick:
        write(results, Path(args.out), common)
    return results


def write(results: dict, out: Path, common) -> None:
    """``OUT.json`` and ``OUT.md``."""
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(
        "# Long clips in temporal windows\n\nMeasured by `python bench/long.py` "
        f"({results['seconds']:.0f} s). {common.cpu_note(results['machine'], 2)}\n\n{to_markdown(results)}\n")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
