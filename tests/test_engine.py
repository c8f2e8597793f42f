"""The engine (``engine/``): checks before model work, the warnings every front end must see, and the layering of the
package."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import av
import pytest
import torch

from conftest import moving_square
from vidinvert.cli import main
from vidinvert.errors import VidinvertError
from vidinvert.export import write_video

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vidinvert"


@pytest.fixture
def video(tmp_path, frames):
    return write_video(frames, tmp_path / "clip.mp4", fps=8)


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


@pytest.mark.parametrize("count", [5, 9])
def test_result_has_exactly_the_frames_read(video, tmp_path, count):
    """5 frames -> 2 latent frames, which CogVideoX's VAE decodes to 8: the result must still have 5."""
    out = tmp_path / "edit.mp4"
    assert main(["edit", str(video), "--prompt", "a blue box", "--steps", "2", "--max-num-frames", str(count),
                 "-o", str(out), "--quiet"]) == 0
    assert _frames(out) == count and _frames(out.with_name("edit_comparison.mp4")) == count


def test_decode_keeps_the_frames_that_match_on_the_trained_vae():
    """On the demo model's trained VAE, the kept tail of an even latent count is the encoded clip."""
    from vidinvert.demo import SAMPLE_CLIP, model_available
    from vidinvert.metrics import psnr
    from vidinvert.models import load_pipeline, wrap
    from vidinvert.video import read_video

    if not model_available():
        pytest.skip("the demo model is not installed")
    model = wrap(load_pipeline("demo"), "demo")
    frames = read_video(str(SAMPLE_CLIP), 64, 64, max_frames=5).frames  # [5, 3, 64, 64]
    decoded = model.decode(model.encode(frames))[0]
    assert decoded.shape == frames.shape
    whole = model.vae.decode(model.encode(frames).permute(0, 2, 1, 3, 4) / model.vae.config.scaling_factor).sample
    head = whole[0, :, :5].permute(1, 0, 2, 3).clamp(-1, 1)  # the other alignment: the first 5 of 8
    assert psnr(decoded, frames) > psnr(head, frames) + 2


@pytest.mark.parametrize("flags, words", [
    (["--steps", "1001"], "steps must be between 1 and 1000"),
    (["--fps", "inf"], "fps must be a finite number"),
    (["--fps", "0"], "fps must be"),
    (["--start", "random", "--seed", "1180591620717411303424"], "seed must be"),
    (["--inversion", "fixed-point", "--max-iter", "0"], "fixed-point iterations must be"),
    (["--reuse-kv", "--kv-budget-gb", "nan"], "key/value budget"),
    (["--injection-blocks", "0-1000000000"], "is not a range of block indices"),
    (["--injection-blocks", "5-1"], "is not a range of block indices"),
    (["--injection-blocks", ""], "names no block"),
    (["--injection-blocks", "99"], "injection blocks must be in 0..1"),
    (["--tol", "nan"], "tolerance must be a finite number"),
    (["--tol", "-1"], "tolerance must be"),
    (["--anderson", "-1"], "Anderson history must be"),
    (["--guidance", "1e308"], "guidance must be between 1 and 100"),
])
def test_bad_options_are_one_line_errors_before_any_model_work(video, tmp_path, capsys, monkeypatch, flags, words):
    import vidinvert.inversion

    def no_inversion(*args, **kwargs):
        raise AssertionError("the inversion ran before the options were checked")

    monkeypatch.setattr(vidinvert.inversion, "invert_ddim", no_inversion)
    out = tmp_path / "out.mp4"
    assert main(["edit", str(video), "--prompt", "x", "-o", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidinvert: error: ") and words in err[0], err
    assert not out.exists()


def test_frame_options_with_a_saved_inversion_are_refused(video, tmp_path, capsys):
    inv = tmp_path / "clip.inv"
    assert main(["invert", str(video), "--steps", "2", "-o", str(inv), "--quiet"]) == 0
    assert main(["edit", str(inv), "--prompt", "x", "--height", "32", "--width", "32", "-o",
                 str(tmp_path / "e.mp4"), "--quiet"]) == 2
    assert "do not apply to a saved inversion" in capsys.readouterr().err


# ---- a saved inversion: what shaped it cannot be asked for again ---------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``(clip, ddim.inv, fixed.inv)``: a 17-frame clip inverted by ``vidinvert invert`` with the tiny model in 2
    steps, with the source prompt "a red box" (DDIM), and with fixed-point at most 3 evaluations per step."""
    folder = tmp_path_factory.mktemp("saved")
    clip = write_video(torch.cat([moving_square(), moving_square().flip(0)[1:]]), folder / "clip.mp4", fps=8)
    ddim, fixed = folder / "ddim.inv", folder / "fixed.inv"
    common = ["invert", str(clip), "--model", "tiny", "--steps", "2", "--quiet"]
    assert main(common + ["--source-prompt", "a red box", "-o", str(ddim)]) == 0
    assert main(common + ["--inversion", "fixed-point", "--max-iter", "3", "-o", str(fixed)]) == 0
    return clip, ddim, fixed


def _refused(capsys, args: list[str], out: Path, *fragments: str) -> str:
    """``main(args)`` exits 2 with one ``vidinvert: error:`` line holding every fragment, and writes nothing."""
    assert main(args + ["-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidinvert: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert not list(out.parent.glob(f"{out.stem}*"))
    return err[0]


@pytest.mark.parametrize("kind, flags, fragments", [
    ("inv", ["--source-prompt", "a cat", "--inversion", "fixed-point", "--blend"],
     ["--source-prompt and --inversion do not apply to a saved inversion (it was made with --source-prompt 'a red box' "
      "and --inversion ddim); drop them, or invert the video again with them", "--blend-source"]),
    ("inv", ["--tol", "1e-3", "--max-iter", "3", "--anderson", "2", "--clean-max-iter", "9"],
     ["--tol, --max-iter, --clean-max-iter and --anderson do not apply to a saved inversion (it was made with "
      "--inversion ddim)"]),
    ("inv", ["--split-clean-end", "on", "--inversion-guidance", "2"],
     ["--inversion-guidance and --split-clean-end do not apply", "--inversion-guidance 1 and --split-clean-end off"]),
    ("inv", ["--skip-frames-start", "2", "--max-num-frames", "9", "--resize", "crop"],
     ["--skip-frames-start, --max-num-frames and --resize do not apply to a saved inversion (it was made with "
      "--skip-frames-start 0, --max-num-frames 49 and --resize stretch)"]),
    ("video", ["--height", "32", "--source-prompt", "a cat"],
     ["--height and --source-prompt do not apply to a saved inversion (it was made with --height 64 and "
      "--source-prompt 'a red box')"]),
    ("fixed", ["--inversion", "fixed-point", "--max-iter", "4"],
     ["--max-iter does not apply to a saved inversion (it was made with --max-iter 3); drop it"]),
    ("inv", ["--window", "2"],
     ["--window 2 does not match the saved inversion's windows (one window, the whole clip)"]),
    ("inv", ["--steps", "7"], ["the inversion has 2 steps, 7 were asked for; use --steps 2"]),
    ("inv", ["--use-inversion", "SAVED"], ["--use-inversion names another"]),
])
def test_settings_a_saved_inversion_cannot_apply_are_refused_before_the_model_loads(saved, tmp_path, capsys,
                                                                                    no_model, kind, flags,
                                                                                    fragments):
    clip, ddim, fixed = saved
    head = {"inv": [str(ddim)], "fixed": [str(fixed)], "video": [str(clip), "--use-inversion", str(ddim)]}[kind]
    flags = [str(ddim) if f == "SAVED" else f for f in flags]
    for command in ("edit", "reconstruct"):
        prompt = ["--prompt", "a blue box"] if command == "edit" else []
        _refused(capsys, [command, *head, *prompt, *flags], tmp_path / "out.mp4", *fragments)


def test_settings_a_saved_inversion_recorded_apply_and_the_record_says_what_ran(saved, tmp_path, capsys):
    """The inversion's own settings may be given again (a batch passes them); --blend compares with the recorded
    source prompt; the JSON's ``invert`` is what made the inversion."""
    clip, ddim, fixed = saved
    out = tmp_path / "e.mp4"
    assert main(["edit", str(clip), "--use-inversion", str(ddim), "--prompt", "a blue box", "--source-prompt",
                 "a red box", "--height", "64", "--max-num-frames", "49", "--blend", "-o", str(out), "--quiet",
                 "--no-comparison"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    inversion, invert = record["inversion"], record["invert"]
    assert (invert["prompt"], invert["method"], invert["steps"]) == (inversion["prompt"], inversion["method"], 2)
    assert (invert["prompt"], invert["method"], invert["tol"]) == ("a red box", "ddim", 1e-6)
    assert record["edit"]["blend"]["source_prompt"] == "a red box" and record["read"] == inversion["read"]
    assert main(["edit", str(fixed), "--prompt", "x", "--inversion", "fixed-point", "--max-iter", "3", "-o",
                 str(tmp_path / "f.mp4"), "--quiet", "--no-comparison"]) == 0
    invert = json.loads((tmp_path / "f.json").read_text())["invert"]
    assert (invert["method"], invert["max_iter"], invert["split_clean_end"]) == ("fixed-point", 3, True)
    capsys.readouterr()
    assert main(["reconstruct", str(ddim), "-o", str(tmp_path / "r.mp4"), "--quiet", "--no-comparison"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["prompts"] == ["a red box"]  # its own text


def test_the_request_check_is_one_function_for_every_front_end(saved):
    """``check_edit_request`` (run_edit's, the batch's and the page's) refuses, and hands over the loaded inversion."""
    from vidinvert.errors import SettingsError
    from vidinvert.engine import check_edit_request
    from vidinvert.settings import EditConfig, InvertSettings, ModelSettings, ReadSettings

    clip, ddim, fixed = saved
    loaded = check_edit_request(str(clip), ["x"], ReadSettings(), InvertSettings(steps=2, method="fixed-point",
                                                                                 max_iter=3), EditConfig(), str(fixed))
    assert loaded.meta.max_iter == 3 and loaded.meta.method == "fixed-point"
    with pytest.raises(SettingsError, match="--inversion does not apply to a saved inversion"):
        check_edit_request(str(ddim), ["x"], ReadSettings(), InvertSettings(method="fixed-point"), EditConfig(),
                           steps_given=False)
    with pytest.raises(VidinvertError, match="FlowEdit needs a flow-matching model"):
        check_edit_request(str(clip), ["x"], ReadSettings(), InvertSettings(), EditConfig(method="flowedit"),
                           model_settings=ModelSettings(name="tiny-2b"))


def test_an_output_is_never_the_input(video, tmp_path, capsys):
    before = video.read_bytes()
    assert main(["edit", str(video), "--prompt", "x", "--steps", "2", "-o", str(video), "--force", "--quiet"]) == 2
    assert main(["edit", str(video), "--prompt", "x", "--steps", "2", "--save-inversion", str(video), "--force",
                 "-o", str(tmp_path / "e.mp4"), "--quiet"]) == 2
    assert "is an input of this job" in capsys.readouterr().err and video.read_bytes() == before


def test_warnings_reach_the_user_and_the_settings_json(video, tmp_path, capsys):
    """A fixed-point inversion capped at one evaluation per step warns: on stderr and in the JSON."""
    out = tmp_path / "edit.mp4"
    assert main(["edit", str(video), "--prompt", "x", "--steps", "3", "--inversion", "fixed-point", "--max-iter",
                 "1", "-o", str(out), "--quiet", "--no-comparison"]) == 0
    err = capsys.readouterr().err
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["warnings"] and all(f"vidinvert: warning: {w}" in err for w in record["warnings"])
    assert any("exact inversion" in w for w in record["warnings"])
    assert record["result"]["inversion"]["stopped_at_cap"] >= 1


def test_reconstruct_reports_how_the_inversion_was_solved(video, tmp_path, capsys):
    out = tmp_path / "rec.mp4"
    assert main(["reconstruct", str(video), "--steps", "4", "--inversion", "fixed-point", "--max-iter", "20",
                 "-o", str(out), "--quiet", "--no-comparison"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    solved = summary["inversion"]
    assert solved["method"] == "fixed-point" and solved["steps"] == 5  # 4, the clean-end step cut in two
    assert solved["evaluations"] == sum(json.loads(out.with_suffix(".json").read_text())["inversion"]["iterations"])
    assert solved["solved"].startswith("exact inversion")
    # the round trip's error is bounded by the clean-end step's residual (the other steps are solved below it)
    assert summary["fidelity"]["latent_relative_error"] <= 2 * solved["clean_end_residual"] + 1e-5


# ---- layering -------------------------------------------------------------------------------------------------
LAYERS = [  # lower first; a module may import only from its own layer or lower ones
    {"errors", "settings", "options", "atomic", "counting"},
    {"video", "regions", "progress", "metrics", "schedule", "provenance", "tiny", "tiny_wan", "demo"},
    {"attention", "models"},
    {"sampling", "exact", "guidance", "krnr", "checkpoint", "windows"},
    {"inversion"},
    {"blend", "editing", "flowedit", "compat"},
    {"export", "outputs"},
    {"engine"},
    {"cli", "web", "batch", "__init__"},
]


def _top(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path) -> set[str]:
    """Top-level vidinvert modules ``path`` imports (relative imports resolved), anywhere in the file."""
    package_parts = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                names = [target[0]] if target else [alias.name for alias in node.names]
                found.update(names)
            elif node.module and node.module.startswith("vidinvert."):
                found.add(node.module.split(".")[1])
    return found


def test_no_import_goes_up_a_layer():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        me = rel.parts[0].removesuffix(".py")
        if me == "demo" and rel.name != "__init__.py":
            me = "cli"  # the demo's training and judging scripts are programs on top of the package
        if me not in rank:
            bad.append(f"{rel}: not in LAYERS")
            continue
        for name in _imports(path) - {me}:
            if name in rank and rank[name] > rank[me]:
                bad.append(f"{rel} imports {name}")
    assert not bad, bad


FRONT_ENDS = ("cli", "web", "batch")


def test_front_ends_import_no_other_front_end_but_the_cli_dispatching():
    """The page and the batch each map their inputs onto the one options table and the engine: neither imports the
    CLI or the other (no import circle can form through them); the CLI only dispatches its ``batch`` and ``serve``
    commands to them, and nothing else imports a front end."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        me = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        allowed = {"batch", "web"} if me == "cli" else set()
        for name in _imports(path) & set(FRONT_ENDS) - {me} - allowed:
            bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, bad


def test_collect_warnings_keeps_ours_and_passes_the_others_on():
    import warnings

    from vidinvert.engine import collect_warnings
    from vidinvert.models.cogvideox import VideoModel  # noqa: F401  (a module of ours that warns, below)

    seen: list[str] = []
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with collect_warnings(seen):
            warnings.warn("from a library we use", DeprecationWarning)  # raised from this test file: not ours
            exec(compile("import warnings\nwarnings.warn('ours, spread over\\n two lines')",
                         str(PACKAGE / "engine" / "run.py"), "exec"))
    assert seen == ["ours, spread over two lines"]
    assert [str(w.message) for w in outer] == ["from a library we use"]
