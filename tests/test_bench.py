"""The benchmarks in bench/ run end to end at their quick/tiny sizes and report sane numbers."""

from __future__ import annotations

import importlib.util
import json
import math
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


def kv_available() -> bool:
    return load("common").kv_reuse_status()[0]


def test_fidelity_quick(tmp_path):
    data = load("fidelity").main(["--quick", "--max-iter", "4", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"ddim", "fixed-point", "fixed-point+anderson2"}
    for row in rows.values():
        assert row["style"] == "tiny-5b" and row["weights"] == "random" and row["steps"] == 4
        assert row["invert_s"] > 0 and row["sample_back_s"] > 0
        assert math.isfinite(row["rel_latent_error"]) and row["rel_latent_error"] >= 0
        assert row["psnr_db"] > 0
    assert rows["ddim"]["evals_per_step"] == 1
    assert 1 <= rows["fixed-point"]["evals_per_step"] <= 4
    # solving each step beats plain DDIM inversion, even with few evaluations
    assert rows["fixed-point+anderson2"]["rel_latent_error"] < rows["ddim"]["rel_latent_error"]
    saved = json.loads((tmp_path / "fidelity.json").read_text())
    assert len(saved["rows"]) == 3 and "| model |" in (tmp_path / "fidelity.md").read_text()


def check_speed_modes(data: dict, modes) -> None:
    one_call = {"reference_compatible": [4], "default": [3], "kv_reuse": [2], "prompts_4": [9]}
    split = {"reference_compatible": [4], "default": [1, 2], "kv_reuse": [2], "prompts_4": [1, 2]}  # reference row alone
    calls_per_step = {"reference_compatible": 1, "default": 2, "kv_reuse": 1, "prompts_4": 5}  # when split
    for mode in modes:
        record = data[mode]
        if mode == "kv_reuse" and not kv_available():
            assert record["available"] is False and "not available" in record["reason"]
            continue
        assert record["total_s"] > 0 and all(v >= 0 for v in record["phases_s"].values())
        calls = record["transformer_calls"]
        is_split = record["rows_per_call"] is not None
        assert set(calls["invert"]["batch_sizes"]) == {"2" if mode == "reference_compatible" else "1"}, mode
        assert set(calls["edit"]["batch_sizes"]) == {str(b) for b in (split if is_split else one_call)[mode]}, mode
        assert calls["invert"]["calls"] == record["steps"]
        assert calls["edit"]["calls"] == (calls_per_step[mode] if is_split else 1) * record["steps"], mode
        assert calls["edit"]["rows"] == record["steps"] * {"reference_compatible": 4, "default": 3, "kv_reuse": 2,
                                                           "prompts_4": 9}[mode], mode  # the same rows per step
        assert record["batch_check"]["ok"], mode
        assert record["peak_rss_mib"] > 0


def test_speed_quick_inprocess():
    speed = load("speed")
    data = speed.main(["--quick", "--inprocess"])
    check_speed_modes(data, speed.bc.MODES)
    assert data["reference_compatible"]["inversion_branches_identical"] is True
    assert data["prompts_4"]["per_edit_s"] == pytest.approx(data["prompts_4"]["total_s"] / 4, abs=2e-4)
    assert set(data["goals"]) >= {"default", "prompts_4"}
    for goal in data["goals"].values():
        assert goal["speedup"] > 0 and isinstance(goal["memory_no_higher"], bool)


def test_speed_subprocess_mode(tmp_path):
    """The default path: each mode in a fresh process (honest peak RSS), results written where asked."""
    data = load("speed").main(["--quick", "--modes", "default", "--out", str(tmp_path)])
    check_speed_modes(data, ["default"])
    saved = json.loads((tmp_path / "speed_steps2.json").read_text())  # "speed.json" is kept for the 10-step run
    assert saved["default"]["total_s"] == data["default"]["total_s"]
    assert "CPU timings are from a shared 2-core machine" in (tmp_path / "speed_steps2.md").read_text()
    memory = data["default"]["memory_run"]  # memory measured in its own process, with mmap-backed allocations
    assert memory["malloc_mmap_threshold"] == "131072" and data["default"]["peak_rss_mib"] == memory["peak_rss_mib"]


def test_gpu_scale_tiny():
    gpu = load("gpu_scale")
    data = gpu.main(["--tiny"])
    check_speed_modes(data, gpu.bc.MODES)
    assert data["config"]["transformer"]["attention_head_dim"] == 64
    assert data["config"]["transformer"]["text_embed_dim"] == 4096
    full = data["kv_cache_estimate_full_size"]
    assert full["tokens"] == 226 + 13 * 30 * 45
    assert full["gib_at_50_steps"] == pytest.approx(50 * 42 * 2 * 17776 * 3072 * 2 / 2**30, rel=1e-3)


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
