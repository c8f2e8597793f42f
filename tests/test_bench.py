"""The benchmarks in bench/ run end to end at their quick/tiny sizes and report what they measured: the counts they
configured, the rows each layout must evaluate, fidelity that separates the inversion methods, JSON and markdown
that agree, and a note built from the run's own machine figures. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    """Import bench/<name>.py under a private module name (bench/ is not a package)."""
    key = f"vidinvert_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def table(markdown: str, first_header: str) -> list[dict]:
    """The rows of the markdown table whose first column is ``first_header``, as ``{header: cell}``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    headers = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, (c.strip() for c in line.strip("|").split("|")))))
    return rows


LOADS = (1.234, 4.567, 7.891)  # what os.getloadavg says during these tests: the benches must record exactly it


@pytest.fixture(autouse=True)
def known_load(monkeypatch):
    if hasattr(os, "getloadavg"):
        monkeypatch.setattr(os, "getloadavg", lambda: LOADS)


def check_machine_note(data: dict, repeats: int) -> None:
    """The note and machine entry report this run's own figures, nothing assumed."""
    common, machine = load("common"), data["machine"]
    assert machine["cpu_count"] == os.cpu_count()
    assert machine["torch_threads"] == 1  # the benches' default --threads
    if hasattr(os, "getloadavg"):
        for key in ("load_at_start", "load_at_end"):
            assert machine[key] == [round(v, 2) for v in LOADS], machine  # read from the OS, not assumed
    assert common.cpu_note(machine, repeats) in data["note"]
    assert f"{os.cpu_count()} CPU(s)" in data["note"] and "1 torch thread(s)" in data["note"]


# ----------------------------------------------------------------------------- fidelity


def test_fidelity_separates_exact_from_ddim_inversion(tmp_path):
    """At 8 steps, solving each step returns to the clip orders of magnitude closer than plain DDIM inversion."""
    data = load("fidelity").main(["--quick", "--steps", "8", "--max-iter", "20", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"ddim", "fixed-point", "fixed-point+anderson2"}
    assert all(r["style"] == "tiny-5b" and r["weights"] == "random" and r["steps"] == 8 for r in rows.values())
    ddim, fixed, anderson = rows["ddim"], rows["fixed-point"], rows["fixed-point+anderson2"]
    # measured: ddim 0.56, fixed-point 4.6e-4, + Anderson 8.7e-6
    assert ddim["rel_latent_error"] > 0.1
    assert fixed["rel_latent_error"] < 1e-2 * ddim["rel_latent_error"]
    assert anderson["rel_latent_error"] < 1e-4
    assert fixed["psnr_db"] > ddim["psnr_db"] + 20  # measured 96 vs 32 dB
    # evaluations: exactly one per DDIM step; fixed-point within its cap, and more than one on average
    assert ddim["evals_per_step"] == 1 and ddim["max_evals_step"] == 1 and ddim["unconverged_steps"] == 0
    for row in (fixed, anderson):
        assert 1 < row["evals_per_step"] <= row["max_evals_step"] <= 20
        assert len(row["invert_s_runs"]) == 1  # --quick: one run
    # the files hold the same rows, and the table shows each of them
    saved = json.loads((tmp_path / "fidelity.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(data["rows"]))
    common = load("common")
    shown = table((tmp_path / "fidelity.md").read_text(), "model")
    assert [(r["inversion"], r["rel. latent error"], r["evals/step"]) for r in shown] == [
        (r["method"], common.fmt(r["rel_latent_error"]), common.fmt(r["evals_per_step"])) for r in data["rows"]]
    check_machine_note(saved, repeats=1)


def test_fidelity_counts_what_was_configured():
    """One evaluation allowed per step: one per step counted, the clean-end step reported at its cap; two timed runs."""
    data = load("fidelity").main(["--quick", "--steps", "3", "--methods", "fixed-point", "--max-iter", "1",
                                  "--repeats", "2"])
    (row,) = data["rows"]
    assert row["steps"] == 3 and row["method"] == "fixed-point"
    assert row["evals_per_step"] == 1 and row["max_evals_step"] == 1
    assert row["unconverged_steps"] == 1  # the clean-end step (solved first) hits the cap; the rest follow its residual
    assert len(row["invert_s_runs"]) == 2 and data["config"]["repeats"] == 2


# ----------------------------------------------------------------------------- speed modes

GUIDED = 2  # rows per prompt with guidance (uncond, cond); every mode edits at guidance 6


def edit_rows_per_step(mode: str, prompts: int) -> int:
    """Transformer rows per edit step of each layout (README, "Editing batch")."""
    main = GUIDED * prompts
    return {
        "reference_compatible": 2 * main,  # the public script: the reference duplicated beside each main row
        "default": main + 1,  # one reference row shared by all main rows
        "prompts_4": main + 1,
        "kv_reuse": main,  # reference keys/values recorded while inverting: no reference row
    }[mode]


def edit_calls_per_step(mode: str, prompts: int, rows_per_call: int | None) -> int:
    """Transformer calls per edit step: one, or (split) the shared reference row alone, then main rows in chunks."""
    if rows_per_call is None or mode == "reference_compatible":
        return 1
    chunks = math.ceil(GUIDED * prompts / rows_per_call)
    return chunks + (1 if mode in ("default", "prompts_4") else 0)


def check_speed_modes(data: dict, modes) -> None:
    """Every mode ran, with the rows and calls its layout implies, and totals that add up."""
    for mode in modes:
        record = data[mode]
        assert record["available"] is True, (mode, record.get("reason"))
        steps, prompts = record["steps"], record["num_prompts"]
        assert prompts == (4 if mode == "prompts_4" else 1)
        calls = record["transformer_calls"]
        inv_rows = 2 if mode == "reference_compatible" else 1  # two identical "" branches in the reference's cost
        assert calls["invert"] == {"calls": steps, "rows": inv_rows * steps, "batch_sizes": {str(inv_rows): steps}}
        assert calls["edit"]["rows"] == edit_rows_per_step(mode, prompts) * steps, mode
        assert calls["edit"]["calls"] == edit_calls_per_step(mode, prompts, record["rows_per_call"]) * steps, mode
        assert sum(int(size) * n for size, n in calls["edit"]["batch_sizes"].items()) == calls["edit"]["rows"]
        assert sorted(int(size) for size in calls["edit"]["batch_sizes"]) == record["edit_batch_rows"], mode
        for phase, counted in calls.items():  # encoding and decoding never run the transformer
            if phase not in ("invert", "edit"):
                assert counted["calls"] == 0, (mode, phase)
        assert record["batch_check"]["ok"], mode
        phases = record["phases_s"]
        assert record["total_s"] == pytest.approx(phases["invert"] + phases["edit"], abs=1e-3)
        assert record["per_edit_s"] == pytest.approx(record["total_s"] / prompts, abs=1e-3)
        if mode == "kv_reuse":
            assert record["kv_cache"]["recorded"] is True and record["kv_cache"]["steps"] == steps


def check_goals(data: dict) -> None:
    """Each goal entry is computed from the records it names."""
    speed = load("speed")
    ref = data["reference_compatible"]
    for mode, goal in data["goals"].items():
        record = data[mode]
        per = record["per_edit_s"] if mode == "prompts_4" else record["total_s"]
        assert goal["speedup"] == round(ref["total_s"] / per, 3)
        assert goal["memory_no_higher"] == (record["peak_rss_mib"] <= ref["peak_rss_mib"] + speed.MEMORY_TOLERANCE_MIB)
        if mode in speed.GOALS:
            assert goal["goal"] == speed.GOALS[mode] and goal["speed_met"] == (goal["speedup"] >= goal["goal"])


def test_speed_quick_inprocess():
    speed = load("speed")
    data = speed.main(["--quick", "--inprocess"])
    check_speed_modes(data, speed.bc.MODES)
    assert data["reference_compatible"]["inversion_branches_identical"] is True
    assert set(data["goals"]) == set(speed.bc.MODES) - {"reference_compatible"}
    check_goals(data)
    assert [data[m]["decoded_videos"] for m in speed.bc.MODES] == [1, 1, 1, 4]  # decode="all"
    check_machine_note(data, repeats=1)


@pytest.mark.slow
def test_speed_subprocess_mode(tmp_path):
    """The default path: each mode in a fresh process (honest peak RSS), results written where asked."""
    data = load("speed").main(["--quick", "--modes", "default", "--out", str(tmp_path)])
    check_speed_modes(data, ["default"])
    saved = json.loads((tmp_path / "speed_steps2.json").read_text())  # "speed.json" is kept for the 10-step run
    assert saved["default"] == json.loads(json.dumps(data["default"]))
    markdown = (tmp_path / "speed_steps2.md").read_text()
    (shown,) = table(markdown, "mode")
    common = load("common")
    record = data["default"]
    calls = record["transformer_calls"]
    assert (shown["mode"], shown["edit batch"], shown["transformer calls"], shown["total s (inv+edit)"]) == (
        "default", "/".join(calls["edit"]["batch_sizes"]), str(sum(c["calls"] for c in calls.values())),
        common.fmt(record["total_s"]))
    check_machine_note(saved, repeats=1)
    assert saved["note"] in markdown
    memory = record["memory_run"]  # memory measured in its own process, with mmap-backed allocations
    assert memory["malloc_mmap_threshold"] == "131072" and record["peak_rss_mib"] == memory["peak_rss_mib"]


# ----------------------------------------------------------------------------- full-size architecture


def test_gpu_scale_tiny():
    gpu = load("gpu_scale")
    data = gpu.main(["--tiny"])
    check_speed_modes(data, gpu.bc.MODES)
    assert data["config"]["transformer"]["attention_head_dim"] == 64
    assert data["config"]["transformer"]["text_embed_dim"] == 4096
    full = data["kv_cache_estimate_full_size"]
    assert full["tokens"] == 226 + 13 * 30 * 45
    assert full["gib_at_50_steps"] == pytest.approx(50 * 42 * 2 * 17776 * 3072 * 2 / 2**30, rel=1e-3)
    assert data["machine"]["device"] == "cpu"
    check_machine_note(data, repeats=1)


def test_gpu_scale_full_config_is_cogvideox_5b():
    """The full-size configs build the published 5.57 B-parameter transformer (on the meta device: no memory)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    gpu = load("gpu_scale")
    with torch.device("meta"):
        transformer = CogVideoXTransformer3DModel(**gpu.TRANSFORMER_5B)
        vae = AutoencoderKLCogVideoX(**gpu.VAE_5B)
    assert sum(p.numel() for p in transformer.parameters()) == gpu.FULL_PARAMS_5B
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 3072
    assert vae.config.scaling_factor == 0.7 and vae.config.latent_channels == 16


def test_speed_wan_quick_counts_rows_per_method():
    """bench/speed.py --family wan: rows per step of inversion + injection (1 and 4 prompts sharing one inversion)
    and of FlowEdit (source and target rows per editing step), as the formulas say."""
    speed = load("speed")
    data = speed.main(["--family", "wan", "--quick"])
    rows = {m: (data[m]["invert_rows_per_step"], data[m]["edit_rows_per_step"]) for m in data["config"]["modes"]}
    assert rows == {"inversion_1": (1, 3), "inversion_4": (1, 9), "flowedit_1": (0, 4), "flowedit_4": (0, 10)}
    assert data["flowedit_1"]["edit_steps"] == data["config"]["n_max"] == 1  # round(33/50 x 2)
    assert all(data[m]["per_edit_s"] == round(data[m]["total_s"] / data[m]["num_prompts"], 4) for m in rows)
    check_machine_note(data, repeats=1)


def test_long_bench_borders_and_motion_measures():
    """bench/long.py's helpers: the frame-change score uses metrics' border convention (b: frames b-1 and b), the
    pieces' borders fall where a piece's frames give way to the next's, the displacement error is 0 for the same
    track and the travel difference for another speed; --render rebuilds the markdown from the saved JSON."""
    long = load("long")
    clip = torch.zeros(9, 3, 16, 16)
    clip[5:] = 0.5  # a jump between frames 4 and 5
    clip += torch.linspace(0, 0.01, 9).view(9, 1, 1, 1)  # a small steady change elsewhere
    assert long.change_score(clip, [5]) > 10 and long.change_score(clip, [4]) == pytest.approx(1, abs=1e-3)
    assert [a + 1 for a, _ in long.pieces(33)[1:]] == [9, 17, 25]

    def disc(speed):
        frames = torch.full((9, 3, 32, 32), -1.0)
        for f in range(9):
            x = 8 + round(speed * f)
            frames[f, 0, 12:18, x:x + 6] = 1.0  # a red block moving right
        return frames

    assert long.displacement_error(disc(1), disc(1)) == pytest.approx(0, abs=1e-6)
    assert long.displacement_error(disc(2), disc(1)) == pytest.approx(8, abs=0.5)  # 2 vs 1 px/frame over 8 frames
    saved = json.loads((BENCH / "results" / "long.json").read_text())
    assert [q["frames"] for q in saved["quality"]] and all("one_window_seam" in q for q in saved["quality"])
    markdown = long.to_markdown(dict(saved, quality=[long.summarise(q) for q in saved["quality"]]))
    assert "windowed (this)" in markdown and "one window of the whole clip" in markdown


def test_main_command_bench_judges_a_recoloured_source_as_the_same_disc():
    """The README main command's judge: a perfect edit (the source redrawn green) is green in every frame, on the
    source's path (0 px, IoU 1); the source itself is not green; the strip is source row over edit row."""
    from dataclasses import replace

    from training.train import sample_spec
    from training.world import render

    bench = load("main_command")
    source = render(sample_spec())[0]
    green = render(replace(sample_spec(), colour="green"))[0]
    judged = bench.judge(green, source)
    assert judged["colour"] == "green" and judged["frames_green"] == 1.0 and judged["motion"] == "right"
    assert judged["centroid_px"] < 0.1 and judged["shape_iou_median"] > 0.95
    assert bench.judge(source, source)["frames_green"] == 0.0
    picture = bench.strip(source, green, scale=2)
    assert picture.shape == (2 * 128 + 4, 9 * (128 + 2), 3) and picture.dtype.name == "uint8"
    assert bench.command(Path("x.mp4"))[-6:] == ["--prompt", bench.PROMPT, "--quiet", "-o", "x.mp4", "--force"]


# ----------------------------------------------------------------------------- published sizes end to end


def test_fullsize_writes_every_run_with_its_command(tmp_path):
    """bench/fullsize.py with the jobs replaced: the models chosen by the flags, one table row per run carrying its
    numbers and its command, JSON and markdown that agree, plan columns empty where the plan is absent."""
    fullsize = load("fullsize")
    seen = []

    def fake_run_model(name, cache, quick, wait_s, timeout, plan_ok):
        seen.append((name, quick, plan_ok))
        runs = []
        for i, run in enumerate(fullsize.runs_for(name, quick)):
            args = fullsize.edit_args(fullsize.folder_of(name, cache), fullsize.MODELS[name][1], run,
                                      fullsize.ASSET_CLIP, Path(cache) / "out.mp4")
            runs.append(dict(model=name, dtype=fullsize.MODELS[name][1], **run, wall_s=10.0 + i, job_seconds=9.0,
                             peak_rss_mib=1000.0 + i, ru_maxrss_mib=1001.0 + i, plan_peak_bytes=None,
                             plan_over_measured=None, command=fullsize.command_text(args, Path(cache))))
        return {"model": name, "hub_id": fullsize.MODELS[name][0], "dtype": fullsize.MODELS[name][1], "runs": runs,
                "sizes": {"total_parameters": 2e9, "parameters": {"transformer": 2e9}, "folder_dtype": "float16",
                          "folder_bytes": 4 * 2**30}, "build": {"reused": True}}

    data = fullsize.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache")], run_model_fn=fake_run_model,
                         plan_available=False)
    assert seen == [("cogvideox-2b", False, False), ("wan2.1-t2v-1.3b", False, False)]  # the fp32 pair by default
    shown = table((tmp_path / "fullsize.md").read_text(), "model")
    runs = [r for e in data["models"] for r in e["runs"]]
    assert len(shown) == len(runs) == 5  # 2b: 9 and 17 frames; Wan: 9 frames twice (inversion, FlowEdit), 17
    assert [(s["model"], s["wall s"], s["peak RSS MiB (job)"], s["plan MiB (required-peak)"]) for s in shown] == [
        (r["model"], str(r["wall_s"]).rstrip("0").rstrip("."), "%g" % r["peak_rss_mib"], "-") for r in runs]
    flowedit = [s for s in shown if s["method"] == "flowedit"]
    assert len(flowedit) == 1 and "--method flowedit" in flowedit[0]["command"]
    assert all(s["command"].startswith("`vidinvert edit src/vidinvert/assets/sample.mp4 --model $CACHE/") for s in shown)
    assert json.loads((tmp_path / "fullsize.json").read_text())["config"]["plan_available"] is False
    assert "`vidinvert plan` was not available" in (tmp_path / "fullsize.md").read_text()
    seen.clear()
    fullsize.main(["--quick"], run_model_fn=fake_run_model, plan_available=True)  # writes nothing
    assert seen == [("cogvideox-2b", True, True)] and fullsize.runs_for("cogvideox-2b", True) == [
        dict(frames=9, height=64, width=64, steps=1, method="inversion", inversion="ddim")]


def test_fullsize_wrapper_reports_its_one_childs_peak(tmp_path):
    """The wrapper's RUSAGE_CHILDREN ru_maxrss is the peak of the one command it ran (here one touching 300 MiB)."""
    import subprocess

    fullsize = load("fullsize")
    report = tmp_path / "r.json"
    child = [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    subprocess.run([sys.executable, "-c", fullsize.WRAPPER, str(report), "60", *child], check=True)
    got = json.loads(report.read_text())
    assert got["returncode"] == 0 and 300 <= got["ru_maxrss_kib"] / 1024 < 400


def test_gpu_scale_wan_builds_the_published_sizes():
    """gpu_scale's Wan pipelines (built on the meta device: no memory) have the published transformers' parameters
    and write_folder's 2-layer text encoder."""
    from vidinvert.models.published import PUBLISHED

    gpu = load("gpu_scale")
    for name, (hub_id, frames, height, width) in gpu.WAN_MODELS.items():
        pipe = gpu.build_wan(hub_id, torch.device("meta"), torch.bfloat16)
        assert sum(p.numel() for p in pipe.transformer.parameters()) == PUBLISHED[hub_id].parameters["transformer"]
        assert pipe.text_encoder.config.num_layers == 2 and pipe.text_encoder.config.d_model == 4096
        assert (frames, height, width) == (PUBLISHED[hub_id].num_frames, PUBLISHED[hub_id].height,
                                          PUBLISHED[hub_id].width)
