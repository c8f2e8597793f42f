"""Helpers shared by the benchmarks in this folder (not part of the vidinvert package). Transformer calls are counted
with ``vidinvert.counting.CallCounter``, the same counter the tests use.

Each bench script loads this file by path (``load_common()`` in the script), so the benches run as plain scripts
(``python bench/speed.py``) and import cleanly in tests without ``bench`` being a package.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # vidinvert is imported after setup() (HF_HUB_OFFLINE must be set before diffusers loads)
    from vidinvert.counting import CallCounter

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
SAMPLE_VIDEO = REPO_ROOT / "src" / "vidinvert" / "assets" / "sample.mp4"



def setup(threads: int | None = 1) -> int:
    """Quiet, offline, deterministic torch settings for a bench process; returns the thread count in use."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message="There are modules in .* that should be kept in float32")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()  # e.g. "modules ... should be kept in float32" on dtype casts
    except ImportError:  # pragma: no cover
        pass
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    return torch.get_num_threads()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute system load averages now (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on Linux/macOS
        return None


def machine_info(device: str = "cpu", load_at_start: list[float] | None = None) -> dict:
    """Where the numbers come from, as measured by this run: versions, CPUs, torch threads, system load.

    Args:
        device: where the model ran.
        load_at_start: ``load_average()`` taken when the run started; the load now is added as ``load_at_end``.
    """
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "load_at_start": load_at_start,
        "load_at_end": load_average(),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def cpu_note(machine: dict, repeats: int) -> str:
    """One sentence on how CPU timings were taken, from what this run measured (``machine_info``), nothing assumed."""
    def load(values):
        return "unknown" if not values else "/".join(f"{v:g}" for v in values)

    return (
        f"CPU timings: {machine['torch_threads']} torch thread(s) on a machine with {machine['cpu_count']} CPU(s) "
        f"({machine['cpus_usable']} usable by this process); system load average (1/5/15 min) "
        f"{load(machine.get('load_at_start'))} at the start and {load(machine.get('load_at_end'))} at the end; "
        f"each configuration ran {repeats} time(s) and the fastest is reported."
    )


# ---- clips ------------------------------------------------------------------------------------------------------
def synthetic_clip(frames: int = 9, height: int = 64, width: int | None = None) -> torch.Tensor:
    """The tests' clip (tests/conftest.py ``frames``): a smooth background with a moving square, ``[F, 3, H, W]``.

    With 9 frames at 64x64 it is exactly the conftest fixture; other lengths keep the same overall motion.
    """
    width = height if width is None else width
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    speed = 0.12 * 8 / max(frames - 1, 1)
    clip = []
    for f in range(frames):
        background = torch.stack([0.6 * ys, 0.4 * xs, -0.3 + 0.2 * ys * xs])  # [3, H, W]
        square = ((xs - (-0.6 + speed * f)).abs() < 0.25) & (ys.abs() < 0.25)
        clip.append(torch.where(square, torch.tensor([0.9, -0.8, -0.8]).view(3, 1, 1), background))
    return torch.stack(clip).float()  # [F, 3, H, W]


def load_clip(frames: int, size: int, source: str = "sample") -> tuple[torch.Tensor, str]:
    """``frames`` frames at ``size`` x ``size`` in [-1, 1]: the bundled sample.mp4, or the synthetic test clip.

    Returns:
        ``(frames [F, 3, H, W], description)``.
    """
    if source == "sample" and SAMPLE_VIDEO.is_file():
        from vidinvert.video import read_video

        clip = read_video(str(SAMPLE_VIDEO), size, size, max_frames=frames, stride=1)
        if clip.frames.shape[0] == frames:
            return clip.frames.float(), f"src/vidinvert/assets/sample.mp4, first {frames} frames at {size}x{size}"
    return synthetic_clip(frames, size, size), f"synthetic moving-square clip, {frames} frames at {size}x{size}"


# ---- measuring --------------------------------------------------------------------------------------------------
def vm_hwm_mib() -> float | None:
    """Peak resident memory of this process since start or since the last ``reset_vm_hwm`` (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_vm_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``clear_refs`` 5, Linux >= 4.0); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Timer:
    """Wall and CPU seconds per phase; on CUDA it synchronises around each phase and, with ``cuda_memory``, records
    each phase's peak allocated GPU memory (reset when a phase starts). With ``rss_phases`` (Linux) it resets the
    kernel's peak-RSS mark at each phase start and records each phase's own peak RSS in ``rss_phase_peak``; the
    mark is then no longer a process-lifetime peak, so take that as ``max(peak before the first phase, phases)``."""

    def __init__(self, sync_cuda: bool = False, cuda_memory: bool = False, rss_phases: bool = False):
        self.rss_phases = rss_phases and vm_hwm_mib() is not None
        self.rss_phase_peak: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # process CPU time: immune to waiting for a shared core
        self.rss_peak_after: dict[str, float] = {}  # process peak RSS (MiB) when each phase ended
        self.peak_gpu_mib: dict[str, float] = {}
        self.sync_cuda = sync_cuda or cuda_memory
        self.cuda_memory = cuda_memory

    @contextmanager
    def phase(self, name: str):
        if self.sync_cuda:
            torch.cuda.synchronize()
        if self.cuda_memory:
            torch.cuda.reset_peak_memory_stats()
        if self.rss_phases:
            reset_vm_hwm()
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if self.sync_cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - start_cpu
            self.rss_peak_after[name] = peak_rss_mib()
            if self.rss_phases:
                self.rss_phase_peak[name] = max(vm_hwm_mib() or 0.0, self.rss_phase_peak.get(name, 0.0))
            if self.cuda_memory:
                peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                self.peak_gpu_mib[name] = max(peak, self.peak_gpu_mib.get(name, 0.0))


def peak_rss_mib() -> float:
    """Process-lifetime peak resident memory in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# glibc keeps freed heap memory and fragments it differently from run to run: identical runs of one mode peaked
# up to ~100 MiB apart. Serving every allocation of 128 KiB or more with mmap returns it to the system on free,
# so ru_maxrss then tracks the peak of live memory (identical across repeats), at a cost in speed (page faults):
# speed.py measures memory in a separate run with this setting and times runs without it.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_json_subprocess(args: list[str], timeout: float | None = None, env_extra: dict | None = None) -> dict:
    """Run ``python <args>`` in a fresh process and parse the last stdout line that is a JSON object."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO_ROOT)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"bench child printed no JSON: {' '.join(args)}\n{proc.stdout[-2000:]}")


# ---- output -----------------------------------------------------------------------------------------------------
def fmt(value, digits: int = 3) -> str:
    """A table cell: floats rounded, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def json_safe(value):
    """Floats that JSON cannot hold (inf, nan) as strings; everything else unchanged."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results(name: str, data: dict, markdown: str, out_dir: str | os.PathLike | None) -> list[str]:
    """Write ``<out_dir>/<name>.json`` and ``.md``; nothing when ``out_dir`` is None. Returns the paths written."""
    if out_dir is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return [str(json_path), str(md_path)]


# ---- the speed modes (shared by speed.py on the CPU and gpu_scale.py at full size) -------------------------------
MODES = ("reference_compatible", "default", "kv_reuse", "prompts_4")
EDIT_PROMPT = "a blue ball moving right"
FOUR_PROMPTS = (
    "a blue ball moving right",
    "a green box moving left",
    "a yellow star bouncing",
    "a white cat walking across the grass",
)
EXPECTED_BATCH = {  # transformer rows per call: (inversion, edit) for one prompt with guidance 6, one call per step
    "reference_compatible": (2, 4),  # the public script: two identical "" branches, then [neg, cond, ref, ref]
    "default": (1, 3),  # identical branches skipped; [neg, cond] + one shared reference row
    "kv_reuse": (1, 2),  # reference keys/values recorded while inverting: [neg, cond] only
    "prompts_4": (1, 9),  # 4 x [neg, cond] + one shared reference row
}
# Where the library splits calls (EditConfig rows_per_call "auto": on the CPU for large enough rows) the shared
# reference row runs alone and the main rows in calls of 2: the same rows per step, in smaller calls.
EXPECTED_EDIT_CALLS_SPLIT = {"reference_compatible": [4], "default": [1, 2], "kv_reuse": [2], "prompts_4": [1, 2]}


def expected_batches(mode: str, split: bool = False) -> tuple[int, list[int]]:
    """(inversion rows per call, sorted distinct edit rows per call) of ``mode``, with or without split calls."""
    inv, edit = EXPECTED_BATCH[mode]
    return inv, EXPECTED_EDIT_CALLS_SPLIT[mode] if split else [edit]


MODE_NOTES = {
    "reference_compatible": (
        "public CogVideo inference/ddim_inversion.py cost: inversion at guidance 6 on two identical empty-text "
        "branches (batch 2; reproduced with invert(prompt='', negative_prompt=' ', guidance=6), whose texts tokenize "
        "to the same ids, so both rows are identical, as in the script), then edit with reference_text='edit' "
        "and start='random' (batch 4)"
    ),
    "default": "invert(method='ddim') at batch 1, edit with the default EditConfig (3 rows per step)",
    "kv_reuse": "invert(record_kv=True) at batch 1, edit with InjectionConfig(reuse_kv=True) (2 rows per step)",
    "prompts_4": "default inversion, then one edit call with 4 prompts (9 rows per step); speedup is per edit",
}


def run_mode(model, latents, mode: str, steps: int, timer: Timer, counter: CallCounter, *, kv_budget_gb: float = 4.0,
             kv_method: str = "ddim", decode: str = "all") -> dict:
    """Invert ``latents`` and edit them as ``mode`` does, timing and counting each phase.

    Args:
        model: a ``VideoModel``.
        latents: ``[1, T, C, h, w]`` from ``model.encode``.
        mode: one of ``MODES``.
        steps: DDIM steps of inversion and edit.
        timer, counter: record the ``invert``, ``edit`` and ``decode`` phases.
        kv_budget_gb: memory budget of the recorded keys/values (kv_reuse).
        kv_method: inversion method of kv_reuse (``"ddim"``: approximate reuse; ``"fixed-point"``: exact reuse).
        decode: ``"all"`` decodes every edited video, ``"first"`` only the first, ``"none"`` nothing.

    Returns:
        ``{"available": bool, "num_prompts": K, "edit_batch_rows": [...], "decoded_videos": n, ...}``.
    """
    from vidinvert.attention import InjectionConfig
    from vidinvert.editing import EditConfig, EditStats, edit, resolve_rows_per_call
    from vidinvert.inversion import invert

    info: dict = {"available": True, "note": MODE_NOTES[mode],
                  "rows_per_call": resolve_rows_per_call("auto", model, latents.shape)}
    if mode == "reference_compatible":
        same = bool(torch.equal(model.encode_text([""]), model.encode_text([" "])))
        info["inversion_branches_identical"] = same
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with timer.phase("invert"), counter.phase("invert"):
            if mode == "reference_compatible":
                inversion = invert(model, latents, steps=steps, prompt="", negative_prompt=" ", guidance=6.0)
            elif mode == "kv_reuse":
                options = dict(tol=1e-6, max_iter=20, anderson=2) if kv_method == "fixed-point" else {}
                inversion = invert(model, latents, steps=steps, method=kv_method, record_kv=True,
                                   kv_budget_gb=kv_budget_gb, **options)
            else:
                inversion = invert(model, latents, steps=steps)
        caught += [str(r.message) for r in records if "kept in float32" not in str(r.message)]
    if mode == "kv_reuse":
        cache = getattr(inversion, "kv_cache", None)
        info["kv_method"] = kv_method
        info["kv_cache"] = {
            "recorded": cache is not None,
            "steps": len(cache.entries) if cache is not None else 0,
            "mib": round(cache.nbytes / 2**20, 1) if cache is not None else 0.0,
            "exact": bool(cache.exact) if cache is not None else None,
        }
        if cache is None:
            info.update(available=False, reason="keys/values not recorded: " + ("; ".join(caught) or "no cache"))
            return info
    if mode == "reference_compatible":
        config = EditConfig(start="random", injection=InjectionConfig(reference_text="edit"))
    elif mode == "kv_reuse":
        config = EditConfig(injection=InjectionConfig(reuse_kv=True))
    else:
        config = EditConfig()
    prompts = list(FOUR_PROMPTS) if mode == "prompts_4" else [EDIT_PROMPT]
    stats = EditStats()
    with timer.phase("edit"), counter.phase("edit"):
        edited = edit(model, inversion, prompts, config, stats=stats)
    count = {"all": edited.shape[0], "first": 1, "none": 0}[decode]
    with timer.phase("decode"), counter.phase("decode"):
        for k in range(count):
            model.decode(edited[k : k + 1])
    if not torch.isfinite(edited).all():
        caught.append("edited latents hold NaN/inf")
    info.update(num_prompts=len(prompts), edit_batch_rows=sorted(set(stats.batch_rows)), decoded_videos=count)
    if caught:
        info["warnings"] = caught
    return info


def batch_check(mode: str, calls: dict, split: bool = False) -> dict:
    """Compare the counted batch sizes of a mode with ``expected_batches``."""
    want_inv, want_edit = expected_batches(mode, split)
    got_inv = sorted(int(b) for b in calls.get("invert", {}).get("batch_sizes", {}))
    got_edit = sorted(int(b) for b in calls.get("edit", {}).get("batch_sizes", {}))
    return {
        "expected": {"invert": want_inv, "edit": want_edit},
        "ok": got_inv == [want_inv] and got_edit == want_edit,
    }
