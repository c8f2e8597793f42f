"""Per-family defaults: the frames read and the negative prompt follow the model's family when the user leaves them
unset (``ReadSettings.max_frames`` / ``negative_prompt`` ``None``), on every front end, and are recorded as run."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import moving_square
from vidinvert.settings import DEFAULT_GUIDANCE
from vidinvert.cli import main
from vidinvert.export import write_video
from vidinvert.engine import family_defaults, run_edit
from vidinvert.models import load_pipeline, wrap
from vidinvert.models import wan as wan_module
from vidinvert.models.base import negative_prompt_for
from vidinvert.editing import edit
from vidinvert.errors import SettingsError, VidinvertError
from vidinvert.inversion import invert
from vidinvert.settings import (MODEL_SETTINGS_FILE, BlendConfig, EditConfig, InjectionConfig, InvertSettings,
                                ModelSettings, OutputSettings, ReadSettings, with_model_edit_defaults)


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


# ---- edit settings a model folder recommends (settings.MODEL_SETTINGS_FILE) -------------------------------------
RECOMMENDED = {"blend": True, "reference_weight": 0.5}


@pytest.fixture(scope="module")
def recommending_folder(tiny_pipes, tmp_path_factory):
    """A saved tiny CogVideoX pipeline whose folder recommends local blend and reference weight 0.5."""
    folder = tmp_path_factory.mktemp("recommending") / "model"
    tiny_pipes["5b"].save_pretrained(folder)
    (folder / MODEL_SETTINGS_FILE).write_text(json.dumps({"about": "test", "edit": RECOMMENDED}))
    return folder


def test_settings_left_to_the_model_take_its_recommendation_and_explicit_ones_win():
    assert EditConfig().blend.enabled is None and EditConfig().injection.reference_weight is None
    filled = with_model_edit_defaults(EditConfig(), RECOMMENDED)
    assert filled.blend.enabled is True and filled.injection.reference_weight == 0.5
    plain = with_model_edit_defaults(EditConfig(), {})  # nothing recommended: the library's values
    assert (plain.blend.enabled, plain.injection.reference_weight) == (False, 1.0)
    assert plain.injection.reference_bias(0, 10) == 0.0 == EditConfig().injection.reference_bias(0, 10)
    given = EditConfig(blend=BlendConfig(enabled=False), injection=InjectionConfig(reference_weight=2.0))
    assert with_model_edit_defaults(given, RECOMMENDED) == given
    flow = with_model_edit_defaults(EditConfig(method="flowedit"), RECOMMENDED)  # FlowEdit uses neither
    assert (flow.blend.enabled, flow.injection.reference_weight) == (False, 1.0)


def test_bad_recommendations_are_refused_in_one_line(tiny_pipes, tmp_path):
    folder = tmp_path / "model"
    tiny_pipes["2b"].save_pretrained(folder)
    for text, words in (('{"edit": {"strength": 0.8}}', "unknown edit setting 'strength'"),
                        ('{"edit": {"blend": "yes"}}', "'blend' must be true or false"),
                        ('{"edit": {"reference_weight": -1}}', "reference weight must be"),
                        ('{"edit": [1]}', "'edit' must be an object"), ("{not json", "is not valid JSON"),
                        ('{"invert": {"window": "sometimes"}}', "window must be auto, off or a count"),
                        ('{"invert": {"steps": 3}}', "unknown inversion setting 'steps'"),
                        ('{"invert": "auto"}', "'invert' must be an object")):
        (folder / MODEL_SETTINGS_FILE).write_text(text)
        with pytest.raises(VidinvertError, match=words) as info:
            wrap(load_pipeline(str(folder), device="cpu"))
        assert "\n" not in str(info.value) and MODEL_SETTINGS_FILE in str(info.value)


def test_a_job_left_to_the_model_edits_with_its_settings_and_the_library_call_does_not(recommending_folder, tiny_pipes,
                                                                                        frames):
    """``family_defaults`` (every front end's job) fills the recommendation in: the edit is bit for bit the edit with
    those settings given. ``editing.edit`` itself takes the library's values for what is unset, so a Python caller's
    reconstruction is never blended back onto its source unasked."""
    recommending = wrap(load_pipeline(str(recommending_folder), device="cpu"))
    assert recommending.recommended_edit == RECOMMENDED
    plain = wrap(tiny_pipes["5b"])
    assert plain.recommended_edit == {}
    inversion = invert(plain, plain.encode(frames), steps=4)
    _, _, config = family_defaults(recommending, None, None, EditConfig())
    given = EditConfig(guidance=DEFAULT_GUIDANCE, negative_prompt="", blend=BlendConfig(enabled=True),
                       injection=InjectionConfig(reference_weight=0.5))
    assert config == given  # a tiny model has no published guidance: the default one
    assert torch.equal(edit(recommending, inversion, "a blue box", config), edit(plain, inversion, "a blue box", given))
    library = edit(recommending, inversion, "a blue box", EditConfig())
    assert torch.equal(library, edit(plain, inversion, "a blue box", EditConfig(blend=BlendConfig(enabled=False))))
    assert not torch.equal(library, edit(plain, inversion, "a blue box", given))


def test_cli_uses_the_recommendation_says_so_and_records_it_and_flags_win(recommending_folder, long_clip, tmp_path,
                                                                           capsys):
    records = {}
    for extra in ([], ["--no-blend", "--reference-weight", "1"]):
        out = tmp_path / f"edit{len(extra)}.mp4"
        assert main(["edit", str(long_clip), "--model", str(recommending_folder), "--prompt", "a blue box",
                     "--steps", "2", "--max-num-frames", "9", "-o", str(out), "--no-comparison", *extra]) == 0
        err = capsys.readouterr().err
        record = json.loads(out.with_suffix(".json").read_text())["edit"]
        records[len(extra)] = (record["blend"]["enabled"], record["injection"]["reference_weight"],
                               [line for line in err.splitlines() if "recommended" in line])
    note = ("vidinvert: note: this model's recommended settings are used where none are given: blend on, reference "
            "weight 0.5 (from its vidinvert.json; any value you set wins)")
    assert records == {0: (True, 0.5, [note]), 3: (False, 1.0, [])}  # only what it took is named


def test_page_form_leaves_blend_and_reference_weight_to_the_model():
    from vidinvert.web.form import settings_from_form

    _, _, config = settings_from_form({})
    assert config.blend.enabled is None and config.injection.reference_weight is None
    for choice, enabled in (("model's", None), ("on", True), ("off", False), (False, False)):
        assert settings_from_form({"blend": choice})[2].blend.enabled is enabled
    assert settings_from_form({"reference_weight": 0.5})[2].injection.reference_weight == 0.5
    assert settings_from_form({"reference_weight": 0})[2].injection.reference_weight is None  # 0: the model's
    with pytest.raises(SettingsError, match="^Local blend must be one of") as info:
        settings_from_form({"blend": "sometimes"})
    assert "\n" not in str(info.value)
    with pytest.raises(SettingsError, match="^Reference weight must be"):
        settings_from_form({"reference_weight": -2})


def test_reconstruct_ignores_the_edit_recommendation(recommending_folder, long_clip, tmp_path, capsys):
    """A reconstruction checks the inversion's fidelity: a blend mask of the source prompt against itself is empty
    and would put every step back to the source, so the model's edit settings must not apply."""
    out = tmp_path / "recon.mp4"
    assert main(["reconstruct", str(long_clip), "--model", str(recommending_folder), "--source-prompt", "a red box",
                 "--steps", "2", "--max-num-frames", "9", "-o", str(out), "--no-comparison", "--quiet"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())["edit"]
    assert (record["blend"]["enabled"], record["injection"]["reference_weight"]) == (False, 1.0)


def test_page_studio_edits_with_the_recommendation_and_says_so(recommending_folder, long_clip, tmp_path):
    from vidinvert.web.form import settings_from_form
    from vidinvert.web.studio import Studio

    studio = Studio(ModelSettings(name=str(recommending_folder)))
    read, inv, config = settings_from_form({"max_num_frames": 9, "steps": 2})
    results, job = studio.edit(str(long_clip), read, inv, ["a blue box"], config, tmp_path)
    record = json.loads(results[0].settings.read_text())["edit"]
    assert (record["blend"]["enabled"], record["injection"]["reference_weight"]) == (True, 0.5)
    assert "blend_coverage" in job.summary  # the edit itself blended, not only its record
    assert any("recommended settings" in note for note in job.notes)


@pytest.fixture(scope="module")
def windowed_folder(tiny_pipes, tmp_path_factory):
    """A saved tiny Wan pipeline whose folder recommends temporal windows of its trained length."""
    folder = tmp_path_factory.mktemp("windowed") / "model"
    load_pipeline("tiny-wan", device="cpu").save_pretrained(folder)
    (folder / MODEL_SETTINGS_FILE).write_text(json.dumps({"invert": {"window": "auto"}}))
    return folder


def test_a_recommended_window_fills_only_an_unset_window_of_a_job_that_inverts(windowed_folder):
    model = wrap(load_pipeline(str(windowed_folder), device="cpu"))
    assert model.recommended_invert == {"window": "auto"} and model.recommended_edit == {}
    notes: list[str] = []
    read, inv, _ = family_defaults(model, ReadSettings(), InvertSettings(), None, notes)
    assert inv.window == "auto" and read.max_frames is None  # a windowed job reads every frame
    assert notes == ["this model's recommended settings are used where none are given: window auto (a clip longer "
                     f"than its trained {model.trained_frames} frames runs in temporal windows; --window off for one) "
                     "(from its vidinvert.json; any value you set wins)"]
    for given in ("off", 2):
        notes = []
        read, inv, _ = family_defaults(model, ReadSettings(), InvertSettings(window=given), None, notes)
        assert inv.window == given and notes == []
    assert family_defaults(model, ReadSettings(), InvertSettings(window="off"))[0].max_frames == model.default_frames
    _, inv, _ = family_defaults(model, ReadSettings(), InvertSettings(), None, inverting=False)  # a saved inversion's
    assert inv.window is None


def test_a_long_clip_on_a_model_recommending_windows_runs_in_windows_unless_off(windowed_folder, long_clip, tmp_path):
    """The CLI's edit of a clip longer than the model's trained length: windows by the model's recommendation, one
    window with --window off (then the model's default frame count)."""
    got = {}
    for extra in ([], ["--window", "off"]):
        out = tmp_path / f"e{len(extra)}.mp4"
        assert main(["edit", str(long_clip), "--model", str(windowed_folder), "--prompt", "a blue box", "--steps", "2",
                     "--height", "32", "--width", "32", "-o", str(out), "--no-comparison", "--quiet", *extra]) == 0
        record = json.loads(out.with_suffix(".json").read_text())
        got[len(extra)] = (record["invert"]["window"], record["result"]["frames"], record["inversion"]["window"],
                           record["result"]["inversion"]["method"])
    assert got[0] == ("auto", 89, 21, "euler")  # every frame (90 -> 4k+1), in windows of the trained 21 latent frames
    assert got[2] == ("off", 81, 0, "euler")  # the model's 81 frames in one window (0: the whole clip)


@pytest.mark.parametrize("hub_id, expected", [("Wan-AI/Wan2.2-TI2V-5B-Diffusers", (5.0, None)),
                                               ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", (4.0, 3.0)),
                                               ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", (6.0, None)),
                                               ("THUDM/CogVideoX-5b", (6.0, None))])
def test_guidance_left_to_the_model_is_its_published_scale(hub_id, expected, tmp_path):
    """The published model cards' scales (Wan 2.2 TI2V-5B 5, A14B 4 and 3 for its low-noise expert), from the
    architecture alone: a folder of the published configs (no weights) and the model built from them agree."""
    from vidinvert.engine.plan import family_defaults
    from vidinvert.models.published import PUBLISHED, write_folder
    from vidinvert.models.registry import default_guidance
    from vidinvert.models.traced import fake_mode, traced_model
    from vidinvert.settings import EditConfig, ModelSettings

    assert (PUBLISHED[hub_id].guidance_scale, PUBLISHED[hub_id].guidance_scale_2) == expected
    folder = tmp_path / "model"
    write_folder(PUBLISHED[hub_id], folder, weights="none")
    assert default_guidance(str(folder)) == default_guidance(hub_id) == expected
    model = traced_model(ModelSettings(name=hub_id), fake_mode())
    _, _, config = family_defaults(model, config=EditConfig())
    assert (config.guidance, config.guidance_2) == expected
    _, _, given = family_defaults(model, config=EditConfig(guidance=7.5))
    assert (given.guidance, given.guidance_2) == (7.5, None)  # a scale the user sets wins, the second one with it


def test_guidance_of_models_without_a_published_scale_is_the_default():
    from vidinvert.models.registry import default_guidance
    from vidinvert.settings import DEFAULT_GUIDANCE

    assert DEFAULT_GUIDANCE == 6.0
    for name in ("demo", "demo-wan", "tiny", "tiny-wan22", "/no/such/folder", None):
        assert default_guidance(name) == (DEFAULT_GUIDANCE, None)
