"""The published-checkpoint records (``models.published``): every component builds from its config with the real
diffusers/transformers class at the published size (on the meta device: no memory), the schedulers give the
timesteps the published pipelines run, written folders round-trip their configs and are recognised by the
registry, and random-weight folders load with ``from_pretrained``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vidinvert.errors import VidinvertError
from vidinvert.models import folder as folder_check
from vidinvert.models import registry
from vidinvert.models.published import PUBLISHED, meta_model, parameter_count, write_folder

MODELS = sorted(PUBLISHED)
# Pipelines the registry does not open (FAMILIES holds text-to-video classes only): their folders are refused.
IMAGE_TO_VIDEO = {"CogVideoXImageToVideoPipeline", "WanImageToVideoPipeline"}

# Sizes of the published weights, from the hub's file listings (bytes / bytes per parameter), to check the records
# against something other than themselves. GB as the hub prints them (1e9 bytes, 3 significant figures).
PUBLISHED_SIZES = {
    ("THUDM/CogVideoX-2b", "transformer"): 3.39e9 / 2,  # transformer/diffusion_pytorch_model.safetensors, fp16
    ("THUDM/CogVideoX-2b", "vae"): 431e6 / 2,  # vae/diffusion_pytorch_model.safetensors, 16-bit
    ("THUDM/CogVideoX-2b", "text_encoder"): (4.99e9 + 4.53e9) / 2,  # text_encoder 2 shards, bf16
    ("THUDM/CogVideoX-5b", "transformer"): (9.93e9 + 1.22e9) / 2,  # transformer 2 shards, bf16
    ("THUDM/CogVideoX1.5-5B", "transformer"): (4.98e9 + 4.95e9 + 1.22e9) / 2,  # transformer 3 shards, bf16
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "transformer"): (5e9 + 677e6) / 4,  # transformer 2 shards, fp32
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "text_encoder"): 22.7e9 / 4,  # text_encoder 5 shards, fp32
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "vae"): 508e6 / 4,  # the Wan2.1 VAE (StevenZhang/Wan2.1-VAE_Diff), fp32
    ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "transformer"): 28.6e9 / 2,  # original wan2.1_t2v_14B_bf16.safetensors
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "transformer"): 32.8e9 / 2,  # original wan2.1_i2v_480p_14B_bf16
    ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "text_encoder"): 11.4e9 / 2,  # text_encoder 3 shards, bf16
    ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "transformer"): 5e9,  # "TI2V-5B" (Wan2.2 README)
    ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "vae"): 2.82e9 / 4,  # the Wan2.2 VAE, fp32 safetensors copy
    # each A14B expert has the Wan2.1 T2V 14B shape (Wan2.2 wan/configs/wan_t2v_A14B.py: dim 5120, 40 layers)
    ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "transformer"): 28.6e9 / 2,
    ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "transformer_2"): 28.6e9 / 2,
}


@pytest.fixture(scope="module")
def config_folders(tmp_path_factory):
    """``{hub id: folder}`` written by ``write_folder(weights="none")`` for every record."""
    root = tmp_path_factory.mktemp("published")
    return {hub_id: write_folder(PUBLISHED[hub_id], root / hub_id.replace("/", "--"), weights="none")
            for hub_id in MODELS}


def _json(value):
    """``value`` as JSON would hold it (tuples as lists), for comparing configs."""
    return json.loads(json.dumps(value))


def _public(config) -> dict:
    return _json({key: value for key, value in dict(config).items() if not key.startswith("_")})


@pytest.mark.parametrize("hub_id", MODELS)
def test_every_model_builds_on_meta_at_the_recorded_size(hub_id):
    model = PUBLISHED[hub_id]
    assert set(model.models) == set(model.parameters)
    for component in model.models:
        module = meta_model(model, component)
        assert type(module).__name__ == model.model_index[component][1]
        assert all(p.is_meta for p in module.parameters())
        assert parameter_count(module) == model.parameters[component], component


@pytest.mark.parametrize(("hub_id", "component"), sorted(PUBLISHED_SIZES))
def test_parameter_counts_match_the_published_weights(hub_id, component):
    assert PUBLISHED[hub_id].parameters[component] == pytest.approx(PUBLISHED_SIZES[hub_id, component], rel=0.02)


def test_records_agree_with_each_other():
    for model in PUBLISHED.values():
        assert model.model_index["_class_name"] == model.pipeline
        assert set(model.configs) == {k for k, v in model.model_index.items()
                                      if not k.startswith("_") and isinstance(v, list) and v[0]} - {"tokenizer"}
        assert model.configs["transformer"]["text_embed_dim" if model.family == "cogvideox" else "text_dim"] == 4096
        assert model.configs["text_encoder"]["d_model"] == 4096
        two_experts = "transformer_2" in model.configs
        assert two_experts == (model.guidance_scale_2 is not None) == (model.model_index.get("boundary_ratio")
                                                                        is not None)
        assert model.height % 16 == 0 and model.width % 16 == 0 and (model.num_frames - 1) % 4 == 0
    assert PUBLISHED["Wan-AI/Wan2.2-TI2V-5B-Diffusers"].model_index["expand_timesteps"] is True
    assert PUBLISHED["Wan-AI/Wan2.2-TI2V-5B-Diffusers"].guidance_scale == 5.0
    assert PUBLISHED["Wan-AI/Wan2.2-TI2V-5B-Diffusers"].flow_shift == 5.0
    assert PUBLISHED["Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"].configs["transformer"]["image_dim"] == 1280
    assert PUBLISHED["THUDM/CogVideoX-2b"].flow_shift is None


def _expected_timesteps(config: dict, steps: int) -> np.ndarray:
    """The timesteps the published pipeline runs, in closed form: CogVideoX's DDIM with ``trailing`` spacing
    (999, 999 - 1000/steps, ...), or UniPC on flow sigmas: sigma from 1 to 1/1000 in ``steps`` equal steps, shifted
    by ``flow_shift`` (s*sigma / (1 + (s-1)*sigma)), times 1000, truncated to integers."""
    if config["_class_name"] == "CogVideoXDDIMScheduler":
        assert config["timestep_spacing"] == "trailing"
        return np.round(np.arange(1000, 0, -1000 / steps)).astype(np.int64) - 1
    assert config["use_flow_sigmas"] and config["prediction_type"] == "flow_prediction"
    shift = config["flow_shift"]
    sigmas = np.linspace(1, 1 / 1000, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    sigmas[0] -= 1e-6  # diffusers keeps the first sigma below 1 (its log is taken)
    return (sigmas * 1000).astype(np.int64)


@pytest.mark.parametrize("hub_id", MODELS)
def test_scheduler_gives_the_published_timesteps(hub_id):
    import diffusers

    model = PUBLISHED[hub_id]
    config = model.configs["scheduler"]
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    scheduler.set_timesteps(model.steps)  # what CogVideoXPipeline / WanPipeline.__call__ do with the default steps
    timesteps = scheduler.timesteps.numpy()
    assert len(timesteps) == model.steps
    np.testing.assert_array_equal(timesteps, _expected_timesteps(config, model.steps))
    boundary = model.model_index.get("boundary_ratio")
    if boundary is not None:  # both experts get steps
        high_noise = int((timesteps >= boundary * config["num_train_timesteps"]).sum())
        assert 0 < high_noise < model.steps


@pytest.mark.parametrize("hub_id", MODELS)
def test_config_folder_round_trips(hub_id, config_folders):
    import diffusers
    import transformers

    model, folder = PUBLISHED[hub_id], config_folders[hub_id]
    index = diffusers.DiffusionPipeline.load_config(folder)
    assert {k: v for k, v in index.items() if k not in ("_diffusers_version", "tokenizer")} == \
        {k: v for k, v in model.model_index.items() if k != "tokenizer"}
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert transformers.AutoTokenizer.from_pretrained(folder / "tokenizer")("a red disc").input_ids[-1] == 1  # </s>
    for component, config in model.configs.items():
        library, class_name = model.model_index[component]
        sub = folder / component
        if component == "image_processor":
            assert json.loads((sub / "preprocessor_config.json").read_text()) == config
            transformers.AutoImageProcessor.from_pretrained(sub)
        elif library == "diffusers":
            cls = getattr(diffusers, class_name)
            loaded = cls.load_config(sub)
            assert loaded["_class_name"] == config["_class_name"] == class_name
            if component == "scheduler":
                built = cls.from_config(loaded)
            else:
                with torch.device("meta"):
                    built = cls.from_config(loaded)
            assert _public(built.config) == _public(config), component
        else:  # the encoders keep everything but their depth, as transformers reads them
            loaded = transformers.AutoConfig.from_pretrained(sub)
            shrunk = {**config, "num_hidden_layers" if "num_hidden_layers" in config else "num_layers": 2}
            expected = getattr(transformers, class_name).config_class.from_dict(shrunk)
            assert _public(loaded.to_dict()) == _public(expected.to_dict()), component
            assert _public(loaded.to_dict())["d_model" if "d_model" in config else "hidden_size"] == \
                config["d_model" if "d_model" in config else "hidden_size"]


@pytest.mark.parametrize("hub_id", MODELS)
def test_registry_detects_the_family(hub_id, config_folders):
    """``registry._pipeline_class`` (what ``load_pipeline`` reads a folder's family with) names the record's family,
    image-to-video pipelines included; ``takes_image_named`` knows which take a first frame."""
    model, folder = PUBLISHED[hub_id], config_folders[hub_id]
    assert registry.FAMILIES[registry._pipeline_class(folder, hub_id)] == model.family
    takes = model.pipeline in IMAGE_TO_VIDEO or bool(model.model_index.get("expand_timesteps"))
    assert registry.takes_image_named(str(folder)) is takes
    assert registry.takes_image_named(hub_id) is takes


@pytest.mark.parametrize("hub_id", MODELS)
def test_folder_check_sizes_each_model_exactly(hub_id, config_folders):
    """``folder.check_pipeline_folder`` sizes a folder's models from their configs (counting 1 and 2 layers and
    extrapolating); on the published configs the estimate is the exact parameter-and-buffer count."""
    model, folder = PUBLISHED[hub_id], config_folders[hub_id]
    for component in model.models:
        library, class_name = model.model_index[component]
        path = folder / component / "config.json"
        config = json.loads(path.read_text())
        estimate = folder_check._count_parameters(library, class_name, config, path)
        if library == "diffusers":
            module = meta_model(model, component)
        else:  # written with 2 layers
            import transformers

            with torch.device("meta"):
                module = getattr(transformers, class_name)(transformers.AutoConfig.from_pretrained(path.parent))
        assert estimate == parameter_count(module) + sum(b.numel() for b in module.buffers()), component


def _small(model, **configs):
    """``model`` with some component configs replaced (a record small enough to write random weights in a test)."""
    return dataclasses.replace(model, configs={**model.configs, **configs})


@pytest.mark.parametrize("hub_id", ["Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "THUDM/CogVideoX-5b-I2V"])
def test_random_weights_folder_loads(hub_id, tmp_path):
    """The random-weights path on a narrowed copy of a record (full sizes take minutes and tens of GB): every
    component is written as safetensors in the published dtype and the pipeline class loads the folder."""
    import diffusers
    from safetensors import safe_open

    model = PUBLISHED[hub_id]
    narrow = {"transformer": {"num_layers": 1, "num_attention_heads": 2},
              "vae": {"base_dim": 8} if model.family == "wan" else {"block_out_channels": [8] * 4,
                                                                    "norm_num_groups": 4},
              "text_encoder": {"d_ff": 64, "num_heads": 2, "vocab_size": 256},  # d_model stays 4096
              "image_encoder": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}}
    if model.family == "wan" and model.configs["transformer"]["added_kv_proj_dim"]:
        narrow["transformer"]["added_kv_proj_dim"] = 2 * model.configs["transformer"]["attention_head_dim"]
    small = _small(model, **{name: {**model.configs[name], **change} for name, change in narrow.items()
                             if name in model.configs})
    folder = write_folder(small, tmp_path / "pipe", text_layers=1)
    dtype = getattr(torch, model.dtype)
    with safe_open(next((folder / "transformer").glob("*.safetensors")), "pt") as weights:
        assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {"BF16"}
    pipe = getattr(diffusers, model.pipeline).from_pretrained(folder, dtype=dtype)
    assert type(pipe).__name__ == model.pipeline
    assert _public(pipe.transformer.config) == _public(small.configs["transformer"])
    assert pipe.text_encoder.config.d_model == 4096 and pipe.text_encoder.config.num_layers == 1
    params = dict(pipe.transformer.named_parameters())
    assert all(torch.isfinite(p.float()).all() for p in params.values())
    assert any(p.float().std() > 0 for p in params.values())
    if model.family == "cogvideox":  # the learned positional table is a saved buffer (5b-I2V)
        assert pipe.transformer.patch_embed.pos_embedding.abs().sum() > 0
    else:
        assert type(pipe.image_encoder).__name__ == "CLIPVisionModel"
    tokens = pipe.tokenizer("a red disc moving left", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(tokens).last_hidden_state
    assert hidden.shape == (1, tokens.shape[1], 4096) and torch.isfinite(hidden.float()).all()


def test_write_folder_refuses_bad_arguments(tmp_path):
    model = PUBLISHED["THUDM/CogVideoX-2b"]
    with pytest.raises(ValueError, match="weights"):
        write_folder(model, tmp_path, weights="real")
    with pytest.raises(ValueError, match="text_layers"):
        write_folder(model, tmp_path, text_layers=0)
    with pytest.raises(ValueError, match="not a model"):
        meta_model(model, "scheduler")


def _meta_pipeline(record):
    """The record's pipeline with every model on the meta device (no memory): what the family adapters read."""
    import diffusers

    from vidinvert.models import published

    parts = {name: meta_model(record, name) for name in record.models}
    parts["scheduler"] = published._library_class(record, "scheduler")[1].from_config(record.configs["scheduler"])
    parts["tokenizer"] = published._stand_in_tokenizer(record)
    flags = {k: v for k, v in record.model_index.items() if not k.startswith("_") and not isinstance(v, list)}
    return getattr(diffusers, record.pipeline)(**parts, **flags)


TEXT_TO_VIDEO = [m for m in MODELS if PUBLISHED[m].pipeline not in IMAGE_TO_VIDEO]


@pytest.mark.parametrize("hub_id", TEXT_TO_VIDEO)
def test_the_adapter_of_a_published_architecture_runs_at_its_published_size_and_length(hub_id):
    """CogVideoX 1.5 at 768x1360 (its position table is sized 2400x2400), Wan 14B and A14B at 720x1280, TI2V-5B at
    121 frames: the adapter knows the checkpoint by its architecture and takes the published defaults."""
    from vidinvert.windows import trained_window

    record = PUBLISHED[hub_id]
    model = registry.adapter_for(_meta_pipeline(record), name=hub_id)
    assert model.published is record
    assert model.native_size() == (record.height, record.width)
    assert model.trained_frames == model.default_frames == record.num_frames
    latent = (record.num_frames - 1) // model.temporal_factor + 1
    assert trained_window(model) == latent // model.temporal_patch * model.temporal_patch  # --window auto


@pytest.mark.parametrize("name", ["tiny", "tiny-2b", "tiny-1.5", "tiny-wan", "tiny-wan22", "tiny-wan22-5b"])
def test_small_models_are_no_published_checkpoint(name):
    assert registry.wrap(registry.load_pipeline(name, device="cpu"), name=name).published is None


@pytest.mark.parametrize("hub_id", ["THUDM/CogVideoX-2b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers"])
def test_info_reads_a_folders_configs_without_its_weights(hub_id, config_folders, capsys):
    """``vidinvert info`` on a folder holding configs only (no weight files at all): it answers from the configs."""
    from vidinvert.cli import main

    record = PUBLISHED[hub_id]
    assert main(["info", "--model", str(config_folders[hub_id])]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert (model["family"], model["published"], model["weights_loaded"]) == (record.family, hub_id, False)
    meta = meta_model(record, "transformer")
    assert model["parameters"]["transformer"] == record.parameters["transformer"] + sum(
        b.numel() for b in meta.buffers())  # parameters and buffers, as the folder check counts them
    assert _public(model["transformer"]) == _public(record.configs["transformer"])
