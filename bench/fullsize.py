"""Published-size CogVideoX and Wan architectures (random weights) edited end to end on the CPU by ``vidinvert edit``.

Builds, once, a diffusers folder per model with ``vidinvert.models.published.write_folder`` (random weights at the
published sizes in the authors' dtype, the text encoder cut to 2 layers of the published width; cached under
``--cache``), then runs ``vidinvert edit`` on it in a fresh process per run, at small sizes, and records per run the
wall seconds, the job's own peak resident memory (``result.peak_rss_mib`` of the settings JSON written next to the
output), the peak RSS the operating system reports for that process (``ru_maxrss`` of ``RUSAGE_CHILDREN``, read in a
wrapper process that runs only this one child), and, where ``vidinvert plan`` exists, its prediction of the job's peak
(``plan --json`` ``peak_bytes``) and the ratio predicted / measured. The pictures are noise (random weights); the
memory and time are those of the published architectures.

Models: ``cogvideox-2b`` and ``wan2.1-t2v-1.3b`` run in fp32; with ``--big`` also ``cogvideox-5b`` and
``wan2.2-ti2v-5b`` in bf16, each skipped with a recorded reason where its weights do not fit this machine's memory or
disk. One heavy job runs at a time; before each, the run waits (up to ``--wait`` seconds) until the memory the
system has available covers the job's need (the plan's prediction, else the weights' size plus a margin).

    python bench/fullsize.py                  # 2b and Wan 2.1 1.3B -> bench/results/fullsize.{json,md}
    python bench/fullsize.py --big            # also CogVideoX-5b and Wan 2.2 TI2V-5B in bf16 -> fullsize_big.*
    python bench/fullsize.py --quick          # one model, 9 frames at 64x64, 1 step, writes nothing
    python bench/fullsize.py --build-only cogvideox-2b   # build (or reuse) one folder and exit
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
import common as bc  # noqa: E402

DEFAULT_CACHE = Path("/tmp/vidinvert-fullsize")
BUILD_RECORD = "fullsize_build.json"  # written into a folder once its build finished: the folder is complete
TEXT_LAYERS = 2
GIB = 2**30


# Short name -> (published hub id, run dtype, --big only). fp32 where the weights fit twice over in 23 GB; bf16 for
# the 5B models (their fp32 weights alone would be 20-22 GB).
MODELS = {
    "cogvideox-2b": ("THUDM/CogVideoX-2b", "fp32", False),
    "wan2.1-t2v-1.3b": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "fp32", False),
    "cogvideox-5b": ("THUDM/CogVideoX-5b", "bf16", True),
    "wan2.2-ti2v-5b": ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "bf16", True),
}
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "float32": 4, "bfloat16": 2, "float16": 2}
ASSET_CLIP = bc.REPO_ROOT / "src" / "vidinvert" / "assets" / "sample.mp4"  # 33 frames at 128x128


def runs_for(name: str, quick: bool = False) -> list[dict]:
    """The edits run on model ``name``: 9 frames at 64x64 with plain (DDIM / Euler) inversion, for Wan the same size
    with FlowEdit, and (fp32 models) 17 frames at 128x128; ``quick``: one 1-step run at 9 x 64 x 64."""
    small = dict(frames=9, height=64, width=64, steps=2, method="inversion", inversion="ddim")
    if quick:
        return [dict(small, steps=1)]
    hub_id, dtype, big = MODELS[name]
    runs = [small]
    if "wan" in name:
        runs.append(dict(small, method="flowedit", inversion=None))
    if not big:
        runs.append(dict(small, frames=17, height=128, width=128))
    return runs


# ---- building the folders ---------------------------------------------------------------------------------------
def folder_of(name: str, cache: Path) -> Path:
    return Path(cache) / MODELS[name][0].replace("/", "--")


def weight_sizes(name: str, text_layers: int = TEXT_LAYERS) -> dict:
    """Parameters per model component of ``name``'s folder (text encoder at ``text_layers`` layers), counted on the
    meta device, and its weights' bytes in the folder's dtype and in the run dtype."""
    import torch
    import transformers

    from vidinvert.models.published import LAYER_KEY, PUBLISHED, meta_model, parameter_count

    record = PUBLISHED[MODELS[name][0]]
    counts = {}
    for component in record.models:
        library, class_name = record.model_index[component]
        if library == "transformers":  # shrunk in depth as write_folder writes it
            config = dict(record.configs[component])
            config[LAYER_KEY[config["architectures"][0]]] = text_layers
            cls = getattr(transformers, class_name)
            with torch.device("meta"):
                counts[component] = parameter_count(cls(cls.config_class.from_dict(config)))
        else:
            counts[component] = parameter_count(meta_model(record, component))
    total = sum(counts.values())
    return {"parameters": counts, "total_parameters": total, "folder_dtype": record.dtype,
            "folder_bytes": total * BYTES[record.dtype], "run_dtype": MODELS[name][1],
            "run_weight_bytes": total * BYTES[MODELS[name][1]]}


def mem_available() -> int | None:
    """Bytes the system has available now (``MemAvailable``), None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mem_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def wait_for_memory(need: int, wait_s: float, poll_s: float = 15.0) -> tuple[bool, int | None, float]:
    """Wait until ``need`` bytes are available (at most ``wait_s`` seconds). Returns (ok, available, waited s)."""
    started = time.perf_counter()
    while True:
        available = mem_available()
        waited = time.perf_counter() - started
        if available is None or available >= need:
            return True, available, round(waited, 1)
        if waited >= wait_s:
            return False, available, round(waited, 1)
        time.sleep(poll_s)


def build_folder(name: str, cache: Path) -> dict:
    """Build ``name``'s folder in this process (or reuse a complete one); returns its build record."""
    from vidinvert.models.published import PUBLISHED, write_folder

    folder = folder_of(name, cache)
    record_path = folder / BUILD_RECORD
    if record_path.is_file():
        return dict(json.loads(record_path.read_text()), reused=True)
    started = time.perf_counter()
    write_folder(PUBLISHED[MODELS[name][0]], folder, text_layers=TEXT_LAYERS, weights="random")
    record = {"hub_id": MODELS[name][0], "dtype": PUBLISHED[MODELS[name][0]].dtype, "text_layers": TEXT_LAYERS,
              "weights": "random", "seconds": round(time.perf_counter() - started, 1),
              "peak_rss_mib": bc.peak_rss_mib()}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return dict(record, reused=False)


def ensure_folder(name: str, cache: Path, sizes: dict, wait_s: float) -> dict:
    """The folder's build record, building it in a fresh process if needed; ``{"skipped": reason}`` where it does not
    fit (disk, or memory: building holds the weights once in the folder's dtype)."""
    folder = folder_of(name, cache)
    if (folder / BUILD_RECORD).is_file():
        return dict(json.loads((folder / BUILD_RECORD).read_text()), reused=True)
    Path(cache).mkdir(parents=True, exist_ok=True)
    free_disk = shutil.disk_usage(cache).free
    if free_disk < sizes["folder_bytes"] + 4 * GIB:
        return {"skipped": f"disk: the folder needs {sizes['folder_bytes'] / GIB:.1f} GiB, {free_disk / GIB:.1f} GiB "
                           f"free under {cache} (kept 4 GiB spare)"}
    need = int(sizes["folder_bytes"] * 1.2) + GIB
    ok, available, waited = wait_for_memory(need, wait_s)
    if not ok:
        return {"skipped": f"memory: building needs ~{need / GIB:.1f} GiB, {available / GIB:.1f} GiB available after "
                           f"waiting {waited:.0f} s"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--build-only", name, "--cache", str(cache)],
                          capture_output=True, text=True, env=job_env(), cwd=str(bc.REPO_ROOT))
    if proc.returncode != 0:
        return {"skipped": f"build failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    return dict(json.loads((folder / BUILD_RECORD).read_text()), reused=False)


# ---- running one edit -------------------------------------------------------------------------------------------
# Runs one command as its only child, then writes what the OS recorded of it: RUSAGE_CHILDREN's ru_maxrss is the
# largest peak RSS over the waited-for children (and their own waited-for children), so with one child it is that
# child's peak, untouched by the bench or by earlier runs.
WRAPPER = r"""
import json, resource, subprocess, sys, time
out, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
started = time.perf_counter()
try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or None)
    code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
except subprocess.TimeoutExpired as err:
    code, stdout, stderr = "timeout", str(err.stdout or ""), str(err.stderr or "")
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    json.dump(dict(returncode=code, wall_s=round(wall, 2), ru_maxrss_kib=usage.ru_maxrss,
                   user_s=round(usage.ru_utime, 2), sys_s=round(usage.ru_stime, 2),
                   stdout=stdout[-20000:], stderr=stderr[-4000:]), f)
"""


def job_env() -> dict:
    """The environment of the jobs: this one, offline (``OMP_NUM_THREADS`` left as it is)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def vidinvert_cmd() -> list[str]:
    """How this Python runs the CLI: the ``vidinvert`` script beside it, else ``python -m vidinvert``."""
    script = Path(sys.executable).with_name("vidinvert")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vidinvert"]


def edit_args(folder: Path, dtype: str, run: dict, video: Path, output: Path) -> list[str]:
    """``vidinvert edit`` arguments of one run (the same for ``vidinvert plan``)."""
    args = [str(video), "--model", str(folder), "--dtype", dtype, "--device", "cpu",
            "--height", str(run["height"]), "--width", str(run["width"]), "--max-num-frames", str(run["frames"]),
            "--steps", str(run["steps"]), "--prompt", bc.EDIT_PROMPT]
    if run["method"] == "flowedit":
        args += ["--method", "flowedit"]
    elif run.get("inversion"):
        args += ["--inversion", run["inversion"]]
    return args + ["-o", str(output), "--force", "--quiet"]


def clip_frames(path: Path) -> int:
    from vidinvert.video import read_video

    return read_video(str(path), 32, 32, max_frames=10_000, stride=1, temporal_multiple=1, multiple=8).frames.shape[0]


def pick_video(frames: int) -> Path:
    """The bundled sample (``registry.sample_video()``), or the tiny model's 33-frame clip where it is too short."""
    from vidinvert.models.registry import sample_video

    sample = Path(sample_video())
    return sample if clip_frames(sample) >= frames else ASSET_CLIP


def has_plan() -> bool:
    proc = subprocess.run([*vidinvert_cmd(), "plan", "--help"], capture_output=True, text=True, env=job_env())
    return proc.returncode == 0


def run_plan(args: list[str], timeout: float) -> dict:
    """``vidinvert plan ARGS --json``: ``{"peak_bytes": ..., "plan": {...}}`` or ``{"error": ...}``."""
    proc = subprocess.run([*vidinvert_cmd(), "plan", *args, "--json"], capture_output=True, text=True,
                          env=job_env(), timeout=timeout, cwd=str(bc.REPO_ROOT))
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"plan exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:300]}"}
    plan = json.loads(lines[-1])
    keep = ("peak_bytes", "required_bytes", "peak_phase", "baseline_bytes", "device_weights_bytes", "fits", "seconds", "flops", "notes")
    return {**{k: plan[k] for k in keep if k in plan},
            "phases_peak_bytes": {k: v.get("peak_bytes") for k, v in (plan.get("phases") or {}).items()}}


def measure(args: list[str], output: Path, timeout: float) -> dict:
    """Run ``vidinvert edit ARGS`` as the only child of a wrapper process; wall seconds, the OS's peak RSS of the
    job, and the job's own summary (its settings JSON ``result``, else the summary line it printed)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        report = Path(f.name)
    try:
        subprocess.run([sys.executable, "-c", WRAPPER, str(report), str(timeout), *vidinvert_cmd(), "edit", *args],
                       env=job_env(), cwd=str(bc.REPO_ROOT), check=True)
        wrapped = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    out = {"returncode": wrapped["returncode"], "wall_s": wrapped["wall_s"],
           "ru_maxrss_mib": round(wrapped["ru_maxrss_kib"] / 1024, 1), "cpu_user_s": wrapped["user_s"],
           "cpu_sys_s": wrapped["sys_s"]}
    settings = output.with_suffix(".json")  # vidinvert.outputs.settings_path
    summary = None
    if wrapped["returncode"] == 0 and settings.is_file():
        summary, out["summary_from"] = json.loads(settings.read_text()).get("result"), "settings JSON"
    elif wrapped["returncode"] == 0:
        lines = [line for line in wrapped["stdout"].splitlines() if line.strip().startswith("{")]
        summary, out["summary_from"] = (json.loads(lines[-1]), "stdout") if lines else (None, None)
    if wrapped["returncode"] != 0:
        out["error"] = (wrapped["stderr"].strip().splitlines() or [str(wrapped["returncode"])])[-1][:400]
    summary = summary or {}
    out["peak_rss_mib"] = summary.get("peak_rss_mib")
    out["job_seconds"] = summary.get("seconds")
    out["edit_seconds"] = summary.get("edit_seconds")
    out["transformer_calls"] = summary.get("transformer_calls")
    out["batch_rows"] = summary.get("batch_rows")
    out["inversion_summary"] = summary.get("inversion")
    return out


def run_need(sizes: dict, plan: dict | None) -> int:
    """Bytes a run needs available: the plan's peak + 10% where there is one, else the weights in the run dtype + 30%
    + 2 GiB (activations at these sizes are small beside the weights)."""
    if plan and plan.get("peak_bytes"):
        return int(plan["peak_bytes"] * 1.1)
    return int(sizes["run_weight_bytes"] * 1.3) + 2 * GIB


def command_text(args: list[str], cache: Path) -> str:
    """The edit command as one types it, the cache folder written as ``$CACHE`` and the output as ``OUT.mp4``."""
    import shlex

    words = ["vidinvert", "edit", *args]
    words = [w.replace(str(cache), "$CACHE") for w in words]
    if "-o" in words:
        words[words.index("-o") + 1] = "OUT.mp4"
    words[2] = words[2].replace(str(bc.REPO_ROOT) + "/", "")  # the video, relative to the repository
    return " ".join(shlex.quote(w) if not w.startswith("$CACHE") else w for w in words)


def run_model(name: str, cache: Path, quick: bool, wait_s: float, timeout: float, plan_ok: bool,
              log=lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    """Build (or reuse) ``name``'s folder and run its edits one at a time."""
    hub_id, dtype, _ = MODELS[name]
    sizes = weight_sizes(name)
    entry = {"model": name, "hub_id": hub_id, "dtype": dtype, "sizes": sizes, "runs": []}
    total = mem_total()
    need_min = run_need(sizes, None)
    if total is not None and need_min > 0.9 * total:
        entry["skipped"] = (f"memory: {sizes['total_parameters'] / 1e9:.2f} B parameters in {dtype} need "
                            f"~{need_min / GIB:.1f} GiB, this machine has {total / GIB:.1f} GiB")
        return entry
    log(f"{name}: building / reusing {folder_of(name, cache)}")
    entry["build"] = ensure_folder(name, cache, sizes, wait_s)
    if "skipped" in entry["build"]:
        entry["skipped"] = entry["build"]["skipped"]
        return entry
    folder = folder_of(name, cache)
    with tempfile.TemporaryDirectory(prefix="vidinvert-fullsize-") as tmp:
        for i, run in enumerate(runs_for(name, quick)):
            video = pick_video(run["frames"])
            output = Path(tmp) / f"{name}_{i}.mp4"
            args = edit_args(folder, dtype, run, video, output)
            record = dict(model=name, hub_id=hub_id, dtype=dtype, **run, video=str(video.relative_to(bc.REPO_ROOT)),
                          command=command_text(args, cache))
            plan = run_plan(args, timeout) if plan_ok else None
            record["plan_peak_bytes"] = plan.get("peak_bytes") if plan else None
            record["plan"] = plan
            need = run_need(sizes, plan if plan and "error" not in plan else None)
            ok, available, waited = wait_for_memory(need, wait_s)
            record.update(need_bytes=need, available_bytes_before=available, waited_s=waited)
            if not ok:
                record["skipped"] = (f"memory: needs ~{need / GIB:.1f} GiB, {available / GIB:.1f} GiB available "
                                     f"after waiting {waited:.0f} s")
                entry["runs"].append(record)
                continue
            log(f"{name}: {record['command']}")
            record["load_before"] = bc.load_average()
            record.update(measure(args, output, timeout))
            record["load_after"] = bc.load_average()
            peak = record.get("peak_rss_mib")
            record["plan_over_measured"] = (round(record["plan_peak_bytes"] / (peak * 2**20), 3)
                                            if record["plan_peak_bytes"] and peak else None)
            log(f"{name}: {json.dumps({k: record.get(k) for k in ('wall_s', 'peak_rss_mib', 'ru_maxrss_mib', 'plan_over_measured', 'error')})}")
            entry["runs"].append(record)
    return entry


# ---- output -----------------------------------------------------------------------------------------------------
HEADERS = ["model", "dtype", "frames x HxW", "steps", "method", "wall s", "job s", "peak RSS MiB (job)",
           "ru_maxrss MiB (OS)", "plan MiB (required-peak)", "plan / measured", "plan s", "command"]


def table_rows(data: dict) -> list[list]:
    rows = []
    for entry in data["models"]:
        for r in entry["runs"]:
            method = r["method"] + (f" ({r['inversion']})" if r.get("inversion") else "")
            size = f"{r['frames']} x {r['height']}x{r['width']}"
            plan = round(r["plan_peak_bytes"] / 2**20) if r.get("plan_peak_bytes") else None
            required = (r.get("plan") or {}).get("required_bytes")
            plan = f"{round(required / 2**20)}-{plan}" if required and plan and required < plan * 2**20 else plan
            plan_s = (r.get("plan") or {}).get("seconds")
            if r.get("skipped") or r.get("error"):
                rows.append([r["model"], r["dtype"], size, r["steps"], method,
                             "skipped: " + r["skipped"] if r.get("skipped") else "failed: " + r["error"],
                             None, None, r.get("ru_maxrss_mib"), plan, None, plan_s, f"`{r['command']}`"])
                continue
            rows.append([r["model"], r["dtype"], size, r["steps"], method, r["wall_s"], r.get("job_seconds"),
                         r.get("peak_rss_mib"), r.get("ru_maxrss_mib"), plan, r.get("plan_over_measured"),
                         plan_s, f"`{r['command']}`"])
    return rows


def to_markdown(data: dict) -> str:
    cfg, machine = data["config"], data["machine"]
    lines = [
        f"# Published-size architectures end to end on the CPU (`{cfg['bench_command']}`)", "",
        data["note"], "",
        bc.markdown_table(HEADERS, table_rows(data)), "",
        "`$CACHE` = " + f"`{cfg['cache']}`" + ", the folders `python bench/fullsize.py` built there "
        "(`vidinvert.models.published.write_folder(PUBLISHED[hub_id], folder, text_layers=2, weights=\"random\")`).",
        "",
        "| model | parameters (text encoder at 2 layers) | folder dtype / GiB | build |",
        "|---|---|---|---|",
    ]
    for e in data["models"]:
        s, b = e["sizes"], e.get("build") or {}
        build = (e.get("skipped") or ("reused" if b.get("reused") else f"{b.get('seconds')} s, peak RSS "
                                       f"{b.get('peak_rss_mib')} MiB"))
        lines.append(f"| {e['model']} (`{e['hub_id']}`) | {s['total_parameters'] / 1e9:.3f} B: "
                     + ", ".join(f"{k} {v / 1e6:.0f} M" for k, v in s["parameters"].items())
                     + f" | {s['folder_dtype']} / {s['folder_bytes'] / GIB:.2f} | {build} |")
    skipped = [e for e in data["models"] if e.get("skipped")]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{e['model']}: {e['skipped']}" for e in skipped) + "."]
    if not cfg["plan_available"]:
        lines += ["", "`vidinvert plan` was not available when this ran: plan columns are empty."]
    lines += ["", f"Machine: {machine['cpu_count']} CPUs, {cfg['mem_total_gib']} GiB memory; git {data['git']['commit']}"
              + (f" with uncommitted changes in {', '.join(data['git']['dirty'][:12])}" if data["git"]["dirty"] else "")
              + "."]
    return "\n".join(lines)


def git_state() -> dict:
    def git(*args):
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=str(bc.REPO_ROOT))
        return proc.stdout.strip() if proc.returncode == 0 else None

    proc = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True,
                          cwd=str(bc.REPO_ROOT))
    status = proc.stdout if proc.returncode == 0 else ""
    return {"commit": git("rev-parse", "--short=12", "HEAD"), "dirty": [line[3:] for line in status.splitlines()]}


def assemble(models: list[dict], names: list[str], args, cache: Path, plan_ok: bool, command: str,
             load_at_start, started: float, complete: bool) -> dict:
    """The results of the models run so far (``complete``: all of ``names``)."""
    machine = bc.machine_info("cpu", load_at_start)
    return {
        "note": ("Random weights at the published sizes (text encoder: 2 layers of the published width); each edit "
                 "in a fresh process started by a wrapper that runs only it. peak RSS (job) = the job's own "
                 "`result.peak_rss_mib` (its settings JSON); ru_maxrss (OS) = RUSAGE_CHILDREN of the wrapper; plan = "
                 "`vidinvert plan ... --json` `required_bytes`-`peak_bytes` (without and with the weight files' pages mapped while loading, which the kernel may reclaim: a measured peak falls between) with the same arguments, run before the edit; plan / "
                 "measured = plan peak / job peak RSS; plan s = the plan's predicted seconds. wall s = the edit "
                 "process from start to exit (imports, loading, encode, inversion, edit, decode, writing); job s = "
                 "the job's own `result.seconds`. torch threads: each job's default (OMP_NUM_THREADS "
                 f"{os.environ.get('OMP_NUM_THREADS', 'unset')}). "
                 + bc.cpu_note(machine, 1).replace("each configuration ran 1 time(s) and the fastest is reported",
                                                   "each run once")
                 + ("" if complete else f" PARTIAL: {len(models)} of {len(names)} models measured so far.")),
        "config": {"models": names, "quick": args.quick, "big": args.big, "cache": str(cache),
                   "plan_available": plan_ok, "bench_command": command, "text_layers": TEXT_LAYERS,
                   "mem_total_gib": round((mem_total() or 0) / GIB, 1), "edit_prompt": bc.EDIT_PROMPT},
        "complete": complete,
        "models": models,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine,
        "git": git_state(),
    }


def main(argv: list[str] | None = None, *, run_model_fn=None, plan_available=None) -> dict:
    """Run the bench; ``run_model_fn`` (same signature as ``run_model``) and ``plan_available`` replace the real
    jobs in tests."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ", ".join(MODELS)
                        + " (default: the fp32 pair; --big adds the 5B pair; --quick: cogvideox-2b)")
    parser.add_argument("--big", action="store_true", help="also CogVideoX-5b and Wan 2.2 TI2V-5B in bf16")
    parser.add_argument("--quick", action="store_true", help="one model, 9 frames at 64x64, 1 step; writes nothing")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder of the built model folders")
    parser.add_argument("--wait", type=float, default=900, help="seconds to wait for free memory before skipping")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per edit")
    parser.add_argument("--out", default=None, help="results folder (default bench/results; --quick: nothing)")
    parser.add_argument("--name", default=None, help="results name (default fullsize, fullsize_big with --big)")
    parser.add_argument("--build-only", metavar="MODEL", help="build (or reuse) MODEL's folder in this process, exit")
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    if args.build_only:
        bc.setup(None)
        print(json.dumps(build_folder(args.build_only, cache)))
        return {}
    bc.setup(None)  # the jobs run with torch's default threads; this process only starts them
    if args.models:
        names = [m.strip() for m in args.models.split(",") if m.strip()]
    elif args.quick:
        names = ["cogvideox-2b"]
    else:
        names = [m for m, (_, _, big) in MODELS.items() if args.big or not big]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; use {', '.join(MODELS)}")
    load_at_start = bc.load_average()
    plan_ok = has_plan() if plan_available is None else plan_available
    started = time.perf_counter()
    name = args.name or ("fullsize_big" if args.big and not args.models else "fullsize")
    command = "python bench/fullsize.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    out = None if args.quick and args.out is None else (args.out or str(bc.RESULTS_DIR))
    models: list[dict] = []
    for i, model in enumerate(names):  # results rewritten after each model: a long run leaves what it measured
        models.append((run_model_fn or run_model)(model, cache, args.quick, args.wait, args.timeout, plan_ok))
        data = assemble(models, names, args, cache, plan_ok, command, load_at_start, started,
                        complete=i == len(names) - 1)
        markdown = to_markdown(data)
        for path in bc.write_results(name, data, markdown, out):
            print(f"wrote {path}", file=sys.stderr)
    print(markdown)
    return data


if __name__ == "__main__":
    main()
