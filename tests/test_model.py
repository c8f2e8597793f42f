"""Loading pipelines the way real weights load, and the model adapter's checks."""

import json
import warnings

import pytest
import torch

from vidinvert.errors import VidinvertError
from vidinvert.models import VideoModel, load_pipeline, resolve_device, resolve_dtype


def test_save_pretrained_then_load_pipeline_gives_the_same_model(tiny_pipes, tmp_path, frames):
    for style, pipe in tiny_pipes.items():
        folder = tmp_path / style
        pipe.save_pretrained(folder)
        loaded = VideoModel(load_pipeline(str(folder), dtype="fp32", device="cpu"))
        original = VideoModel(pipe)
        assert loaded.fingerprint() == original.fingerprint()
        x = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        text = original.encode_text(["a red disc"])
        assert torch.equal(loaded.encode_text(["a red disc"]), text)
        assert torch.allclose(loaded.predict(x, 400, text), original.predict(x, 400, text), atol=1e-6)
        assert loaded.pipe.scheduler.config.snr_shift_scale == (3.0 if style == "2b" else 1.0)


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(VidinvertError, match="model not found"):
        load_pipeline(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidinvertError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"))
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(VidinvertError, match="StableDiffusionPipeline pipeline, which vidinvert cannot edit"):
        load_pipeline(str(other))
    with pytest.raises(VidinvertError, match="unknown dtype"):
        resolve_dtype("fp8")
    with pytest.raises(VidinvertError, match="unknown device"):
        resolve_device("quantum")
    if not torch.cuda.is_available():
        with pytest.raises(VidinvertError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(VidinvertError, match="needs a CUDA device"):
            load_pipeline("tiny", cpu_offload="model", device="cpu")


def test_frames_are_checked_before_the_vae(tiny_model):
    with pytest.raises(VidinvertError, match="4k\\+1"):
        tiny_model.encode(torch.zeros(8, 3, 64, 64))
    with pytest.raises(VidinvertError, match="not divisible by 16"):
        tiny_model.encode(torch.zeros(9, 3, 60, 64))
    with pytest.raises(VidinvertError, match="must be \\[F, 3, H, W\\]"):
        tiny_model.encode(torch.zeros(9, 64, 64))


def test_encode_decode_shapes_and_scaling(tiny_model, frames):
    latents = tiny_model.encode(frames)
    assert latents.shape == (1, 3, 4, 8, 8) and latents.dtype == torch.float32
    video = tiny_model.decode(latents)
    assert video.shape == (1, 9, 3, 64, 64) and video.abs().max() <= 1
    raw = tiny_model.vae.encode(frames.unsqueeze(0).permute(0, 2, 1, 3, 4)).latent_dist.mode()
    assert torch.allclose(latents, raw.permute(0, 2, 1, 3, 4) * tiny_model.vae.config.scaling_factor, atol=1e-6)


def test_long_prompts_warn_with_what_was_cut(tiny_model):
    prompt = " ".join(["a red disc moving right"] * 6)
    with pytest.warns(UserWarning, match="this part was cut: .*moving right"):
        tiny_model.encode_text([prompt])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.encode_text(["a red disc"])


def test_not_a_cogvideox_pipeline_is_refused():
    class Fake:
        transformer = vae = text_encoder = tokenizer = scheduler = None

    with pytest.raises(VidinvertError, match="not a CogVideoX"):
        VideoModel(Fake())


def test_cogvideox_1_5_layout_pads_latent_frames_like_the_pipeline(frames):
    """Temporal patches (p_t = 2) with an odd latent frame count: padded at the front, stripped after."""
    from vidinvert.editing import EditConfig, edit
    from vidinvert.inversion import invert
    from vidinvert.tiny import TinyConfig, build_tiny_pipeline

    model = VideoModel(build_tiny_pipeline(TinyConfig(style="1.5")))
    assert model.config.patch_size_t == 2
    latents = model.encode(frames)  # [1, 3, 4, 8, 8]: 3 latent frames, not a multiple of 2
    text = model.encode_text(["a red disc"])
    pred = model.predict(latents, 500, text)
    assert pred.shape == latents.shape
    padded = torch.cat([latents[:, :1], latents], dim=1)  # what predict feeds the transformer
    direct = model.transformer(hidden_states=padded, encoder_hidden_states=text,
                               timestep=torch.tensor([500]), image_rotary_emb=model.rotary(4, 8, 8),
                               return_dict=False)[0]
    assert torch.allclose(pred, direct[:, 1:], atol=1e-6)
    inversion = invert(model, latents, steps=4)
    assert edit(model, inversion, "a blue box", EditConfig()).shape == latents.shape


def test_frame_counts_beyond_the_position_table_warn(tiny_model):
    frames = torch.zeros(53, 3, 64, 64)  # the tiny models' tables are made for 49 frames, as CogVideoX's
    with pytest.warns(UserWarning, match="more than the 49 this model's positions were made for"):
        tiny_model.check_frames(frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.check_frames(torch.zeros(9, 3, 64, 64))


def test_learned_position_tables_refuse_other_sizes(tiny_model, monkeypatch):
    from types import SimpleNamespace

    learned = SimpleNamespace(**{**dict(tiny_model.config), "use_learned_positional_embeddings": True})
    monkeypatch.setattr(tiny_model, "config", learned)
    with pytest.raises(VidinvertError, match="learned position table only takes 64x64"):
        tiny_model.check_frames(torch.zeros(9, 3, 64, 128))
