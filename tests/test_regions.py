"""Edit regions (``regions.py``): masks and boxes read and brought to the latent grid, the edit equal to the source
outside them bit for bit (inversion and FlowEdit, CogVideoX and Wan, windows and local blend), and the front ends'
one-line refusals."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, moving_square
from vidinvert.blend import BlendConfig
from vidinvert.cli import main
from vidinvert.editing import EditConfig, edit
from vidinvert.errors import SettingsError
from vidinvert.export import write_video
from vidinvert.flowedit import flowedit
from vidinvert.inversion import invert
from vidinvert.models import load_pipeline, wrap
from vidinvert.regions import box_mask, build_region, latent_frames_of, read_mask, to_latent_grid
from vidinvert.settings import FlowEditConfig, RegionConfig, parse_box
from vidinvert.video import read_video


def _png(path, array: np.ndarray):
    """Write uint8 ``[H, W]`` (grey) as a PNG."""
    assert cv2.imwrite(str(path), array)
    return path


def _right_half(height=64, width=64, value=255) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2 :] = value
    return mask


# ---- the latent grid --------------------------------------------------------------------------------------------
def test_latent_grid_is_the_union_of_the_frames_and_pixels_each_cell_covers():
    pixels = torch.zeros(9, 1, 16, 16, dtype=torch.bool)  # 9 frames -> latent frames 0 | 1-4 | 5-8
    pixels[3, 0, 9, 2] = True  # one pixel of frame 3: latent frame 1, cell (1, 0)
    pixels[0, 0, 0, 15] = True  # frame 0 alone makes latent frame 0: cell (0, 1)
    latent = to_latent_grid(pixels, spatial_factor=8, temporal_factor=4, grow=0)
    assert latent.shape == (1, 3, 1, 2, 2) and latent.dtype == torch.float32
    expected = torch.zeros(3, 2, 2)
    expected[1, 1, 0] = 1.0
    expected[0, 0, 1] = 1.0
    assert torch.equal(latent[0, :, 0], expected)
    grown = to_latent_grid(pixels, 8, 4, grow=1)
    assert torch.equal(grown[0, 1, 0], torch.ones(2, 2)) and grown[0, 2].sum() == 0  # spatial only
    assert latent_frames_of(9, 4) == [0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_mask_image_white_means_may_change_for_0_255_and_0_1_masks(tmp_path):
    for value in (255, 1):
        path = _png(tmp_path / f"mask{value}.png", _right_half(value=value))
        mask = read_mask(str(path), (0, 1, 2), 64, 64, "stretch")
        assert mask.shape == (3, 1, 64, 64) and mask.dtype == torch.bool
        assert mask[:, :, :, 32:].all() and not mask[:, :, :, :32].any()


def test_mask_image_is_fitted_like_the_clip(tmp_path):
    """A 64x128 mask white from column 80, read for a 64x64 clip: stretched, from column 40; cropped (cover, then
    the middle columns 32-95 kept), from column 48."""
    wide = np.zeros((64, 128), np.uint8)
    wide[:, 80:] = 255
    path = _png(tmp_path / "wide.png", wide)
    stretched = read_mask(str(path), (0,), 64, 64, "stretch")[0, 0]
    cropped = read_mask(str(path), (0,), 64, 64, "crop")[0, 0]
    assert stretched[:, 41:].all() and not stretched[:, :39].any()
    assert cropped[:, 48:].all() and not cropped[:, :48].any()


def test_mask_video_is_taken_at_the_clip_frames(tmp_path):
    """Mask frame i is white in column block i % 4: a clip read with stride 2 takes mask frames 0, 2, 4, ..."""
    frames = np.zeros((17, 32, 32, 3), np.uint8)
    for i in range(17):
        frames[i, :, (i % 4) * 8 : (i % 4 + 1) * 8] = 255
    path = write_video(frames, tmp_path / "mask.mp4", fps=8)
    indices = tuple(range(0, 17, 2))
    mask = read_mask(str(path), indices, 32, 32, "stretch")
    assert mask.shape == (9, 1, 32, 32)
    for k, i in enumerate(indices):
        block = (i % 4) * 8
        assert mask[k, 0, :, block + 1 : block + 7].all(), i  # inside the white block (codec edges aside)
        assert not mask[k, 0, :, (block + 12) % 32 : (block + 12) % 32 + 4].any(), i


def test_mask_video_with_too_few_frames_names_both_counts(tmp_path):
    path = write_video(np.full((5, 32, 32, 3), 255, np.uint8), tmp_path / "short.mp4", fps=8)
    message = assert_one_line_error(lambda: read_mask(str(path), tuple(range(9)), 32, 32, "stretch"),
                                    "5 frames", "9 frames")
    assert "short.mp4" in message


def test_box_is_in_source_pixels_and_fitted_like_the_frames():
    stretched = box_mask((64, 0, 128, 64), (64, 128), 2, 32, 32, "stretch")  # right half of a 64x128 source
    assert stretched.shape == (2, 1, 32, 32) and stretched[:, :, :, 16:].all() and not stretched[:, :, :, :16].any()
    cropped = box_mask((64, 0, 128, 64), (64, 128), 1, 32, 32, "crop")  # middle 64 columns kept: its right half
    assert cropped[0, 0, :, 16:].all() and not cropped[0, 0, :, :16].any()
    assert_one_line_error(lambda: box_mask((0, 0, 129, 64), (64, 128), 1, 32, 32, "stretch"),
                          "outside the source frame", "128 wide")


@pytest.mark.parametrize("text,words", [("1,2,3", ["four whole pixel numbers"]), ("a,b,c,d", ["four"]),
                                        ("0,0,1.5,4", ["whole"])])
def test_bad_box_text_is_refused(text, words):
    with pytest.raises(SettingsError) as info:
        parse_box(text)
    assert all(w in str(info.value) for w in words)


def test_empty_box_and_mask_with_box_are_refused():
    with pytest.raises(SettingsError, match="X0 < X1"):
        RegionConfig(box=(10, 0, 10, 5))
    with pytest.raises(SettingsError, match="both given"):
        RegionConfig(mask="m.png", box=(0, 0, 4, 4))
    assert parse_box([0, 0, 4, 4]) == (0, 0, 4, 4) and parse_box(None) is None


def test_a_region_that_selects_nothing_is_refused_and_everything_noted(tmp_path):
    black = _png(tmp_path / "black.png", np.zeros((64, 64), np.uint8))
    assert_one_line_error(lambda: build_region(RegionConfig(mask=str(black)), (0,), (64, 64), 64, 64, "stretch",
                                               8, 4), "selects nothing", "white")
    white = _png(tmp_path / "white.png", np.full((64, 64), 255, np.uint8))
    notes = []
    region = build_region(RegionConfig(mask=str(white)), (0,), (64, 64), 64, 64, "stretch", 8, 4, notes)
    assert region.coverage == 1.0 and "whole clip" in notes[0]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_one_line_error(lambda: build_region(RegionConfig(mask=str(text)), (0,), (64, 64), 64, 64, "stretch",
                                               8, 4), "mask", "notes.png")


# ---- the edit outside the region is the source ------------------------------------------------------------------
def _half_region(latents: torch.Tensor) -> torch.Tensor:
    """``[1, T, 1, h, w]``: the right half of every latent frame."""
    _, frames, _, height, width = latents.shape
    region = torch.zeros(1, frames, 1, height, width)
    region[..., width // 2 :] = 1.0
    return region


def _assert_source_outside(out: torch.Tensor, source: torch.Tensor, region: torch.Tensor) -> None:
    outside = (region == 0).expand_as(out)
    source = source.float().expand_as(out)
    assert torch.equal(out[outside], source[outside])  # bit for bit
    assert not torch.equal(out[~outside], source[~outside])  # the edit did change the inside


@pytest.mark.parametrize("blend", [False, True])
def test_inversion_edit_outside_the_region_is_the_source_bit_for_bit(tiny_model, frames, blend):
    inversion = invert(tiny_model, tiny_model.encode(frames), steps=5, prompt="a red box")
    region = _half_region(inversion.clean)
    config = EditConfig(guidance=6.0, blend=BlendConfig(enabled=blend, threshold=0.2))
    out = edit(tiny_model, inversion, ["a blue ball", "a green disc"], config, region=region)
    _assert_source_outside(out, inversion.clean, region)


def test_windowed_edit_outside_the_region_is_the_source(tiny_model):
    frames = moving_square(count=17)  # 5 latent frames: windows of 3 sharing 1
    inversion = invert(tiny_model, tiny_model.encode(frames), steps=4, window=3, overlap=0.34)
    assert inversion.windows().count == 2
    region = _half_region(inversion.clean)
    _assert_source_outside(edit(tiny_model, inversion, "a blue ball", EditConfig(guidance=6.0), region=region),
                           inversion.clean, region)


@pytest.fixture(scope="module")
def wan():
    return wrap(load_pipeline("tiny-wan", device="cpu", dtype=torch.float32), name="tiny-wan")


@pytest.mark.parametrize("n_min", [0, 2])
def test_flowedit_outside_the_region_is_the_source_bit_for_bit(wan, n_min):
    x_src = wan.encode(moving_square(48, 64, 9))
    region = _half_region(x_src)
    config = EditConfig(method="flowedit", guidance=5.0, seed=3, flowedit=FlowEditConfig(n_max=4, n_min=n_min))
    out = flowedit(wan, x_src, "a red square", ["a blue disc", "a green ball"], config, steps=6, region=region)
    _assert_source_outside(out, x_src, region)


def test_wan_inversion_edit_outside_the_region_is_the_source(wan):
    inversion = invert(wan, wan.encode(moving_square(48, 64, 9)), steps=4)
    region = _half_region(inversion.clean)
    _assert_source_outside(edit(wan, inversion, "a blue ball", EditConfig(guidance=5.0), region=region),
                           inversion.clean, region)


def test_a_region_of_another_grid_is_refused(tiny_model, frames):
    inversion = invert(tiny_model, tiny_model.encode(frames), steps=3)
    wrong = torch.ones(1, 1, 1, 2, 2)
    assert_one_line_error(lambda: edit(tiny_model, inversion, "x", EditConfig(), region=wrong), "latent grid")


# ---- the command line ---------------------------------------------------------------------------------------------
@pytest.fixture
def clip(tmp_path, frames):
    return write_video(frames, tmp_path / "clip.mp4", fps=8)  # 9 frames 64x64


def test_cli_box_records_the_region_and_saves_the_mask_video(clip, tmp_path, capsys):
    out, saved = tmp_path / "out.mp4", tmp_path / "mask.mp4"
    assert main(["edit", str(clip), "--prompt", "a blue ball", "--steps", "2", "--box", "32,0,64,64",
                 "--save-mask", str(saved), "-o", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["region"] == {"box": [32, 0, 64, 64], "grow": 0, "coverage": 0.5, "source_pasted": True}
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["edit"]["region"]["box"] == [32, 0, 64, 64]
    mask = read_video(saved, max_frames=100, multiple=1, temporal_multiple=1, min_frames=1).frames
    assert mask.shape == (9, 3, 64, 64)  # one frame per frame of the clip
    assert (mask[:, :, :, 36:] > 0.5).all() and (mask[:, :, :, :28] < -0.5).all()


def test_cli_refuses_an_existing_mask_video_without_force(clip, tmp_path, capsys):
    saved = tmp_path / "mask.mp4"
    saved.write_bytes(b"keep")
    code = main(["edit", str(clip), "--prompt", "x", "--steps", "2", "--box", "0,0,32,64", "--save-mask",
                 str(saved), "-o", str(tmp_path / "o.mp4"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert saved.read_bytes() == b"keep" and not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("args,words", [
    (["--save-mask", "m.mp4"], ["--save-mask", "--mask or --box"]),
    (["--mask", "missing.png"], ["mask not found"]),
    (["--box", "0,0,0,10"], ["box", "X0 < X1"]),
    (["--box", "0,0,100,10"], ["outside the source frame"]),
    (["--mask", "m.png", "--box", "0,0,4,4"], ["both given"]),
])
def test_cli_region_mistakes_are_one_line_and_write_nothing(clip, tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.mp4"
    code = main(["edit", str(clip), "--prompt", "x", "--steps", "2", "-o", str(out), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert not out.exists() and not (tmp_path / "m.mp4").exists()


def test_cli_box_that_is_not_four_numbers_is_a_usage_error(clip, capsys):
    with pytest.raises(SystemExit) as info:
        main(["edit", str(clip), "--prompt", "x", "--box", "1,2"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "argument --box" in last and "four whole pixel numbers" in last


def test_cli_mask_video_with_a_saved_inversion_takes_its_frames(clip, tmp_path, capsys):
    """A saved inversion records its source frames: a per-frame mask is taken at them, and a mask video shorter
    than them is refused."""
    inv = tmp_path / "clip.inv"
    assert main(["invert", str(clip), "--steps", "2", "-o", str(inv), "--quiet"]) == 0
    capsys.readouterr()
    frames = np.zeros((9, 64, 64, 3), np.uint8)
    frames[:, :, 32:] = 255
    mask = write_video(frames, tmp_path / "mask.mp4", fps=8)
    out = tmp_path / "o.mp4"
    assert main(["edit", str(inv), "--prompt", "x", "--mask", str(mask), "-o", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["region"]["coverage"] == 0.5
    short = write_video(frames[:5], tmp_path / "short.mp4", fps=8)
    code = main(["edit", str(inv), "--prompt", "x", "--mask", str(short), "-o", str(tmp_path / "p.mp4"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "5 frames" in err and "9 frames" in err


# ---- batch rows ---------------------------------------------------------------------------------------------------
def test_batch_rows_take_a_mask_beside_the_job_file_and_a_box_as_a_list(clip, tmp_path, capsys):
    from vidinvert.batch import run_batch
    from vidinvert.batch.jobfile import BadRow, clip_defaults, read_jobs

    (tmp_path / "masks").mkdir()
    _png(tmp_path / "masks" / "right.png", _right_half())
    rows = [{"video": "clip.mp4", "prompt": "a blue ball", "mask": "masks/right.png", "id": "masked"},
            {"video": "clip.mp4", "prompt": "a blue ball", "box": [0, 0, 32, 64], "mask-grow": 1, "id": "boxed"},
            {"video": "clip.mp4", "prompt": "x", "box": [0, 0, 32], "id": "bad"}]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    masked, boxed, bad = read_jobs(jobs_file)
    assert masked.edit.region.mask == str(tmp_path / "masks" / "right.png") and masked.mask_stamp
    assert boxed.edit.region == RegionConfig(box=(0, 0, 32, 64), grow=1)
    assert isinstance(bad, BadRow) and "row 3" in bad.error and "four whole pixel numbers" in bad.error
    summary = run_batch(jobs_file, tmp_path / "out", clip_defaults(steps=2, model="tiny"), progress=False)
    assert (summary.done, summary.failed) == (2, 1)
    records = {name: json.loads((tmp_path / "out" / name / "clip_edit.json").read_text()) for name in ("masked",
                                                                                                    "boxed")}
    assert records["masked"]["result"]["region"]["coverage"] == 0.5
    assert records["boxed"]["result"]["region"]["box"] == [0, 0, 32, 64]
    before = masked.job_hash
    _png(tmp_path / "masks" / "right.png", 255 - _right_half())  # another mask at the same path: another job
    assert read_jobs(jobs_file)[0].job_hash != before


# ---- the source's pixels put back outside the region ------------------------------------------------------------
def test_source_alpha_is_one_in_kept_cells_and_ramps_to_zero_at_the_region():
    from vidinvert.regions import Region, source_alpha

    latent = torch.zeros(1, 2, 1, 4, 4)
    latent[..., 2:] = 1.0  # the right half may change
    region = Region(latent=latent, pixels=torch.zeros(5, 1, 32, 32, dtype=torch.bool), record={})
    alpha = source_alpha(region, spatial_factor=8, temporal_factor=4, feather=8)
    assert alpha.shape == (5, 1, 32, 32)
    row = alpha[0, 0, 0]
    assert (row[16:] == 0).all() and (row[:8] == 1).all()  # nothing in the region; the source far from it
    assert (row[8:16].diff() < 0).all() and row[15] == pytest.approx(1 / 17)  # a ramp over the cell at the border
    hard = source_alpha(region, 8, 4, feather=0)
    assert torch.equal(hard[0, 0, 0], (torch.arange(32) < 16).float())


def test_run_edit_pastes_the_source_pixels_outside_the_region(clip, tmp_path):
    from vidinvert.engine import run_edit
    from vidinvert.settings import InvertSettings, ModelSettings, OutputSettings

    jobs = {}
    for paste in (True, False):
        config = EditConfig(region=RegionConfig(box=(32, 0, 64, 64), paste_source=paste))
        jobs[paste] = run_edit(str(clip), ["a blue ball"], ModelSettings(name="tiny"), invert_settings=InvertSettings(steps=2),
                               config=config, output=OutputSettings(output=str(tmp_path / f"{paste}.mp4"), progress=False))
    pasted, plain = jobs[True], jobs[False]
    source = pasted.prepared.source.clip.frames  # [F, 3, 64, 64]
    assert torch.equal(pasted.latents, plain.latents)  # the edit itself is the same
    far = slice(0, 32 - 8)  # kept columns more than one latent cell from the region
    assert torch.equal(pasted.videos[0][..., far], source[..., far])
    assert not torch.equal(plain.videos[0][..., far], source[..., far])  # the VAE's round trip there
    assert torch.equal(pasted.videos[0][..., 32:], plain.videos[0][..., 32:])  # the region: the edit, untouched
    assert pasted.summary["region"]["source_pasted"] and not plain.summary["region"]["source_pasted"]
