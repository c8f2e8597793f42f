"""The command line end to end on the embedded tiny model and generated videos."""

import json
import math

import av
import pytest
import torch

from vidinvert.cli import main
from vidinvert.export import write_video
from vidinvert.metrics import temporal_metrics
from vidinvert.video import read_video


@pytest.fixture
def video(tmp_path, frames):
    """A 17-frame 64x64 mp4 at 12 fps (the conftest clip, played forwards then backwards)."""
    clip = torch.cat([frames, frames.flip(0)[1:], frames[1:1]])[:17]  # [17, 3, 64, 64]
    return write_video(clip, tmp_path / "clip.mp4", fps=12)


def _probe(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.codec_context.height, stream.codec_context.width, float(stream.average_rate)


def test_edit_end_to_end(video, tmp_path, capsys):
    out = tmp_path / "out" / "edited.mp4"
    code = main(["edit", str(video), "--prompt", "a blue box", "--steps", "3", "-o", str(out), "--quiet"])
    assert code == 0
    assert _probe(out) == (17, 64, 64, 12.0)
    comparison = out.with_name("edited_comparison.mp4")
    count, height, width, _ = _probe(comparison)
    assert (count, height) == (17, 64) and width > 128
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["edit"]["guidance"] == 6.0 and settings["inversion"]["num_steps"] == 3
    assert settings["result"]["batch_rows"] == [3]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["edit_steps"] == 3 and summary["transformer_calls"] == 3 and "peak_rss_mib" in summary
    split = tmp_path / "split.mp4"
    assert main(["edit", str(video), "--prompt", "a blue box", "--steps", "3", "-o", str(split), "--quiet",
                 "--rows-per-call", "2", "--no-comparison"]) == 0
    result = json.loads(split.with_suffix(".json").read_text())["result"]
    assert result["batch_rows"] == [1, 2] and result["transformer_calls"] == 6  # reference row, then uncond + cond
    with pytest.raises(SystemExit) as refused:  # argparse: usage line plus a one-line reason
        main(["edit", str(video), "--prompt", "x", "--rows-per-call", "0"])
    assert refused.value.code == 2 and "count >= 1" in capsys.readouterr().err


def test_invert_then_edit_from_the_saved_inversion(video, tmp_path):
    inv = tmp_path / "clip.inv"
    assert main(["invert", str(video), "-o", str(inv), "--steps", "3", "--quiet"]) == 0
    assert inv.is_file() and inv.with_suffix(".json").is_file()
    out = tmp_path / "multi.mp4"
    code = main(["edit", str(inv), "--prompt", "a blue box", "--prompt", "a red disc", "--steps", "3",
                 "-o", str(out), "--quiet", "--no-comparison"])
    assert code == 0
    for name in ("multi_1.mp4", "multi_2.mp4"):
        assert _probe(tmp_path / name)[:3] == (17, 64, 64)
    assert not (tmp_path / "multi_1_comparison.mp4").exists()


def test_reconstruct_reports_fidelity(video, tmp_path, capsys):
    out = tmp_path / "recon.mp4"
    assert main(["reconstruct", str(video), "--steps", "25", "--inversion", "fixed-point", "--max-iter", "20", "-o", str(out), "--quiet"]) == 0
    fidelity = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fidelity"]
    assert fidelity["latent_relative_error"] < 1e-4
    assert fidelity["psnr_vs_vae_round_trip"] == "inf" or fidelity["psnr_vs_vae_round_trip"] > 60
    assert set(fidelity) >= {"ssim_vs_input", "psnr_vs_input", "ssim_vs_vae_round_trip"}
    metrics = json.loads(out.with_suffix(".json").read_text())["result"]["metrics"]  # without --metrics: always
    assert len(metrics) == 1 and metrics[0]["pairs"] == 16 and metrics[0]["seam_score"] is None


def test_edit_with_metrics_prints_and_saves_them(video, tmp_path, capsys):
    out = tmp_path / "m.mp4"
    assert main(["edit", str(video), "--prompt", "a blue box", "--prompt", "a red disc", "--steps", "2",
                 "-o", str(out), "--no-comparison", "--metrics"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    lines = [line for line in captured.err.splitlines() if line.startswith("vidinvert: metrics:")]
    assert [line.split(":")[2].strip() for line in lines] == ["m_1.mp4", "m_2.mp4"]
    assert all("warp error" in line and "motion error" in line and "seam score n/a" in line for line in lines)
    assert len(summary["metrics"]) == 2
    source = read_video(video, 64, 64, max_frames=17, multiple=8).frames
    source_only = temporal_metrics(source, source).as_dict()
    for name in ("m_1.json", "m_2.json"):
        record = json.loads((tmp_path / name).read_text())
        assert record["output"]["metrics"] is True and record["result"]["metrics"] == summary["metrics"]
        for metrics in record["result"]["metrics"]:
            assert metrics["pairs"] == 16 and 0 < metrics["warp_error"] <= 1  # [0, 1] units; an edit moves pixels
            assert 0 <= metrics["motion_fidelity_px"] < math.hypot(64, 64)  # an end-point error within the frame
            # the share of pixels whose flow is consistent depends on the source alone: the source's own figure
            assert metrics["consistent_fraction"] == source_only["consistent_fraction"]
    assert main(["edit", str(video), "--prompt", "a blue box", "--steps", "2", "-o", str(tmp_path / "n.mp4"),
                 "--no-comparison", "--quiet"]) == 0
    assert "metrics" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_existing_output_needs_force_and_errors_are_one_line(video, tmp_path, capsys):
    out = tmp_path / "edited.mp4"
    out.write_bytes(b"keep me")
    code = main(["edit", str(video), "--prompt", "x", "--steps", "2", "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and out.read_bytes() == b"keep me"
    assert err[-1].startswith("vidinvert: error:") and "--force" in err[-1]
    assert main(["edit", str(video), "--prompt", "x", "--steps", "2", "-o", str(out), "--quiet", "--force"]) == 0
    assert _probe(out)[0] == 17

    assert main(["edit", str(tmp_path / "missing.mp4"), "--prompt", "x", "-o", str(tmp_path / "m.mp4")]) == 2
    assert "not found" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["edit", str(video), "--prompt", "x", "--model", str(tmp_path / "nomodel"), "-o", str(tmp_path / "n.mp4")]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["invert", str(video), "--steps", "0", "-o", str(tmp_path / "z.inv")]) == 2
    assert "steps must be" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "edited.json", "edited.mp4", "edited_comparison.mp4"]


def test_info_prints_versions_and_model(capsys):
    assert main(["info", "--model", "tiny-2b"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] and info["diffusers"].startswith("0.42")
    assert info["model"]["scheduler"]["snr_shift_scale"] == 3.0
    assert info["model"]["transformer"]["use_rotary_positional_embeddings"] is False


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    text = capsys.readouterr().out
    for option in ("--skip-frames-start", "--frame-sample-step", "--max-num-frames", "--injection-fraction",
                   "--reference-text", "--cpu-offload", "--dtype", "--seed", "--fps", "--force"):
        assert option in text


def test_saved_inversion_is_validated_before_use(video, tmp_path, frames, capsys):
    inv = tmp_path / "clip.inv"
    assert main(["invert", str(video), "-o", str(inv), "--steps", "3", "--quiet"]) == 0
    out = tmp_path / "a.mp4"
    assert main(["edit", str(video), "--use-inversion", str(inv), "--prompt", "x", "-o", str(out), "--quiet"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["result"]["edit_steps"] == 3
    other = write_video(frames.flip(0), tmp_path / "other.mp4", fps=12)
    code = main(["edit", str(other), "--use-inversion", str(inv), "--prompt", "x", "-o", str(tmp_path / "b.mp4")])
    assert code == 2 and "another video" in capsys.readouterr().err
    code = main(["edit", str(inv), "--steps", "7", "--prompt", "x", "-o", str(tmp_path / "c.mp4")])
    assert code == 2 and "3 steps, 7 were asked for" in capsys.readouterr().err
    code = main(["edit", str(inv), "--model", "tiny-2b", "--prompt", "x", "-o", str(tmp_path / "d.mp4")])
    assert code == 2 and "another model" in capsys.readouterr().err


def test_reference_compatible_flag_reproduces_the_public_layout(video, tmp_path):
    out = tmp_path / "ref.mp4"
    assert main(["edit", str(video), "--prompt", "x", "--steps", "2", "--reference-compatible", "-o", str(out),
                 "--quiet", "--no-comparison"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["edit"]["start"] == "random" and record["edit"]["injection"]["reference_text"] == "edit"
    assert record["result"]["batch_rows"] == [4]


def test_krnr_edit_inverts_in_full_and_resamples_the_strength(video, tmp_path, capsys):
    out, inv = tmp_path / "krnr.mp4", tmp_path / "krnr.inv"
    code = main(["edit", str(video), "--prompt", "a blue box", "--steps", "20", "--krnr", "2", "--save-inversion",
                 str(inv), "-o", str(out), "--quiet", "--no-comparison"])
    assert code == 0 and _probe(out)[:3] == (17, 64, 64)
    settings = json.loads(out.with_suffix(".json").read_text())
    assert len(settings["inversion"]["timesteps"]) == 20  # K-RNR needs the fully inverted noise
    assert settings["edit"]["strength"] == 0.95 and settings["edit"]["krnr"] == 2
    calls = [json.loads(line)["edit_steps"] for line in capsys.readouterr().out.strip().splitlines()]
    assert calls == [19]  # the edit re-samples round(0.95 * 20) steps
    out2 = tmp_path / "half.mp4"
    assert main(["edit", str(inv), "--prompt", "a blue box", "--steps", "20", "--edit-fraction", "0.5", "-o", str(out2),
                 "--quiet", "--no-comparison"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["edit_steps"] == 10


def test_blend_edit_reports_its_mask_and_its_source_description(video, tmp_path, capsys):
    """--blend with no description of the source (inverted with the empty prompt) takes its mask against the empty
    text (DiffEdit's reference when no caption is at hand); --blend-source is recorded as given."""
    out = tmp_path / "blend.mp4"
    args = ["edit", str(video), "--prompt", "a blue box", "--steps", "6", "--blend", "-o", str(out), "--quiet",
            "--no-comparison"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["blend_coverage"]) == 1 and 0.0 < summary["blend_coverage"][0] < 1.0
    assert main(args + ["--blend-source", "a red box", "--force"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["blend_coverage"]) == 1 and 0.0 < summary["blend_coverage"][0] <= 1.0
    assert summary["transformer_calls"] == 6 + 3  # 6 steps and 3 mask levels (30-70% of 6 steps)
    assert json.loads(out.with_suffix(".json").read_text())["edit"]["blend"]["source_prompt"] == "a red box"
