"""Per-family defaults: the frames read and the negative prompt follow the model's family when the user leaves them
unset (``ReadSettings.max_frames`` / ``negative_prompt`` ``None``), on every front end, and are recorded as run."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import moving_square
from vidinvert.cli import main
from vidinvert.export import write_video
from vidinvert.jobs import family_defaults, run_edit
from vidinvert.models import load_pipeline, wrap
from vidinvert.models import wan as wan_module
from vidinvert.models.base import negative_prompt_for
from vidinvert.settings import EditConfig, InvertSettings, ModelSettings, OutputSettings, ReadSettings


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """A 90-frame 48x64 clip: longer than either family's default frame count."""
    clip = moving_square(48, 64, 9)
    frames = torch.cat([clip, clip.flip(0)] * 5)  # [90, 3, 48, 64]
    return write_video(frames, tmp_path_factory.mktemp("clip") / "long.mp4", fps=16)


@pytest.fixture(scope="module")
def wan():
    return wrap(load_pipeline("tiny-wan", device="cpu"), name="tiny-wan")


def test_unset_settings_wait_for_the_model():
    assert ReadSettings().max_frames is None
    assert EditConfig().negative_prompt is None and InvertSettings().negative_prompt is None


def test_family_defaults_fill_only_what_is_unset(wan, tiny_pipes):
    cog = wrap(tiny_pipes["5b"], name="tiny")
    assert (cog.default_frames, wan.default_frames) == (49, 81)
    assert cog.default_negative_prompt == "" and wan.default_negative_prompt == ""  # tiny vocabulary: cannot read it
    read, inv, config = family_defaults(wan, ReadSettings(), InvertSettings(), EditConfig())
    assert read.max_frames == 81 and inv.negative_prompt == "" and config.negative_prompt == ""
    read, inv, config = family_defaults(cog, ReadSettings(max_frames=9), InvertSettings(negative_prompt="blur"),
                                        EditConfig(negative_prompt=""))
    assert read.max_frames == 9 and inv.negative_prompt == "blur" and config.negative_prompt == ""
    assert negative_prompt_for(object(), None) == ""  # an adapter without a default has none


def test_wan_with_wans_tokenizer_gets_the_published_negative_prompt(monkeypatch):
    """A Wan model whose tokenizer is Wan's UMT5 (judged by its vocabulary) samples with the negative prompt of
    Wan's reference code; an explicit one, "" included, wins."""
    pipe = load_pipeline("tiny-wan", device="cpu")
    monkeypatch.setattr(wan_module, "UMT5_VOCABULARY", len(pipe.tokenizer))  # as if it were UMT5's 256k tokens
    model = wrap(pipe, name="tiny-wan")
    assert model.default_negative_prompt == wan_module.DEFAULT_NEGATIVE_PROMPT
    assert model.default_negative_prompt.startswith("色调艳丽，过曝")
    assert negative_prompt_for(model, None) == wan_module.DEFAULT_NEGATIVE_PROMPT
    assert negative_prompt_for(model, "") == ""


@pytest.mark.filterwarnings("ignore:prompt longer")
def test_wan_edit_reads_81_frames_and_records_the_defaults(long_clip, tmp_path, monkeypatch):
    """``vidinvert edit clip --model <wan>`` without frame flags reads Wan's 81 frames at the model's size (not
    CogVideoX's 49), and the settings JSON records the frame count and the negative prompt it ran with; the
    uncond branch reads that negative prompt."""
    pipe = load_pipeline("tiny-wan", device="cpu")
    monkeypatch.setattr(wan_module, "UMT5_VOCABULARY", len(pipe.tokenizer))
    model = wrap(pipe, name="tiny-wan")
    texts: list[str] = []
    real = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda prompts: texts.extend(prompts) or real(prompts))
    result = run_edit(str(long_clip), ["a blue disc"], ModelSettings(name="tiny-wan"),
                      invert_settings=InvertSettings(steps=1), config=EditConfig(guidance=2.0),
                      output=OutputSettings(output_dir=str(tmp_path), comparison=False, progress=False), model=model)
    assert (result.summary["frames"], result.summary["size"]) == (81, [48, 64])
    record = json.loads(result.settings_files[0].read_text())
    assert record["read"]["max_frames"] == 81
    assert record["edit"]["negative_prompt"] == wan_module.DEFAULT_NEGATIVE_PROMPT
    assert record["invert"]["negative_prompt"] == wan_module.DEFAULT_NEGATIVE_PROMPT
    assert record["inversion"]["read"]["max_frames"] == 81
    assert wan_module.DEFAULT_NEGATIVE_PROMPT in texts  # the edit's uncond row


def test_cli_frames_follow_the_family(long_clip, tmp_path, capsys):
    """The CLI without --max-num-frames: 81 frames for tiny Wan, 49 for tiny CogVideoX; a flag still wins; the
    tiny models record an empty negative prompt."""
    counts = {}
    for model, extra in (("tiny-wan", []), ("tiny", []), ("tiny-wan", ["--max-num-frames", "20"])):
        out = tmp_path / f"{model}{len(extra)}.mp4"
        assert main(["edit", str(long_clip), "--model", model, "--prompt", "x", "--steps", "1", "-o", str(out),
                     "--no-comparison", "--quiet", *extra]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["edit"]["negative_prompt"] == ""
        counts[(model, len(extra))] = (summary["frames"], record["read"]["max_frames"], summary["size"])
    assert counts == {("tiny-wan", 0): (81, 81, [48, 64]), ("tiny", 0): (49, 49, [64, 64]),
                      ("tiny-wan", 2): (17, 20, [48, 64])}
