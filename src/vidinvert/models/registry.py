"""Which models vidinvert can open, and how: the bundled demo model, the tiny random ones, folders and hub ids.

The family of a folder is read from its ``model_index.json`` (``_class_name``); ``FAMILIES`` maps a diffusers
pipeline class to the adapter that wraps it. ``open_model`` is what every front end calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import VidinvertError
from ..settings import (GROUP_OFFLOAD_MODES, LAYERWISE_CASTING_MODES, MODEL_SETTINGS_FILE, OFFLOAD_MODES, LoraFile,
                        ModelSettings, check_model_edit_defaults, check_model_invert_defaults, parse_lora)
from .device import auto_dtype, is_out_of_memory, resolve_device, resolve_dtype
from .folder import check_pipeline_folder
from .placement import place

DEMO_MODEL = "demo"  # the small CogVideoX trained on the synthetic world, shipped in vidinvert/demo/model
DEMO_WAN = "demo-wan"  # the small Wan 2.1-layout model trained on the same world, in vidinvert/demo/model_wan
DEMO_I2V = "demo-i2v"  # the CogVideoX demo fine-tuned to image-to-video, in vidinvert/demo/model_i2v
DEMO_MODELS = (DEMO_MODEL, DEMO_WAN, DEMO_I2V)
TINY_COGVIDEOX = ("tiny", "tiny-5b", "tiny-2b", "tiny-1.5")  # random CogVideoX weights built in code (tiny.py)
TINY_COGVIDEOX_I2V = {"tiny-i2v": "5b", "tiny-i2v-1.5": "1.5"}  # random CogVideoX image-to-video weights
TINY_WAN = {"tiny-wan": "2.1", "tiny-wan22": "2.2", "tiny-wan22-5b": "2.2-5b",  # name -> style (tiny_wan.py)
            "tiny-wan-i2v": "2.1-i2v", "tiny-wan22-i2v": "2.2-i2v"}  # Wan 2.1 I2V (CLIP), Wan 2.2 I2V A14B
TINY_MODELS = TINY_COGVIDEOX + tuple(TINY_COGVIDEOX_I2V) + tuple(TINY_WAN)  # random weights built in code
FAMILIES = {"CogVideoXPipeline": "cogvideox", "CogVideoXImageToVideoPipeline": "cogvideox",
            "WanPipeline": "wan", "WanImageToVideoPipeline": "wan"}  # diffusers pipeline class -> family module
IMAGE_TO_VIDEO = ("CogVideoXImageToVideoPipeline", "WanImageToVideoPipeline")  # rows conditioned on a frame
IMAGE_TO_VIDEO_TINY = ("tiny-wan-i2v", "tiny-wan22-i2v", "tiny-wan22-5b")  # Wan tiny names taking a first frame
EXAMPLE_HUB_ID = "THUDM/CogVideoX-5b"
EXAMPLE_PROMPT = "a green disc moving right in a dark sky"  # the demo model's example prompt, on every front end
EXAMPLE_WAN_HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
FAMILY_VAE_DTYPE = {"wan": torch.float32}  # per the Wan model cards (AutoencoderKLWan.from_pretrained(...,
# torch_dtype=torch.float32)): the VAE is loaded in float32 whatever the rest; other families' VAEs follow --dtype


def default_model() -> str:
    """The model used when none is named: the shipped demo model, or the tiny random one where it is missing."""
    from ..demo import model_available

    return DEMO_MODEL if model_available() else "tiny"


def sample_video() -> Path:
    """The bundled clip: the demo world's held-out sample where the demo model ships, else the tiny model's clip."""
    from ..demo import SAMPLE_CLIP

    return SAMPLE_CLIP if SAMPLE_CLIP.is_file() else Path(__file__).resolve().parent.parent / "assets" / "sample.mp4"


def _pipeline_class(folder: Path, name: str) -> str:
    index = folder / "model_index.json"
    if not index.is_file():
        raise VidinvertError(
            f"{name} is not a diffusers pipeline folder (no model_index.json)",
            f"point the model at a folder saved with save_pretrained, or at a hub id such as {EXAMPLE_HUB_ID}",
        )
    try:
        class_name = json.loads(index.read_text()).get("_class_name", "")
    except (json.JSONDecodeError, OSError, UnicodeDecodeError, AttributeError):
        raise VidinvertError(f"{index} is not valid JSON", "re-download or re-save the pipeline") from None
    if class_name not in FAMILIES:
        supported = ", ".join(FAMILIES)
        raise VidinvertError(
            f"{name} holds a {class_name or 'unknown'} pipeline, which vidinvert cannot edit with",
            f"use a text-to-video pipeline of a supported family ({supported}), e.g. {EXAMPLE_HUB_ID}",
        )
    return class_name


def _from_pretrained(model: str, dtype: torch.dtype):
    """Load a folder (family read from its ``model_index.json``) or a hub id; one-line errors otherwise.

    A folder is loaded with its own pipeline class, after ``check_pipeline_folder`` (its files and config sizes); a
    hub id through ``DiffusionPipeline`` (which reads the same ``_class_name``), then refused if its class is not one
    of ``FAMILIES``. Whatever any component's loader raises (weights, config, tokenizer, scheduler) is one line.
    Each model is loaded straight in its dtype (diffusers casts tensor by tensor as it reads them): ``dtype``, or its
    family's ``FAMILY_VAE_DTYPE`` for the VAE.
    """
    import diffusers

    path = Path(model).expanduser()
    if path.exists():
        class_name = _pipeline_class(path, model)
        loader = getattr(diffusers, class_name)
        check_pipeline_folder(path, model, dtype)
        source = str(path)
        dtypes = _dtypes(FAMILIES[class_name], dtype)
    elif model.count("/") == 1 and not model.startswith((".", "/", "~")):
        loader, source = diffusers.DiffusionPipeline, model  # a hub id
        dtypes = _dtypes(family_named(model) or _published_family(model), dtype)
    else:
        raise VidinvertError(f"model not found: {model}", f"give a local pipeline folder or a hub id like {EXAMPLE_HUB_ID}")
    try:
        pipe = loader.from_pretrained(source, dtype=dtypes)
    except Exception as err:  # noqa: BLE001 - each library fails its own way, e.g. a pickled .bin refused by torch's
        # weights_only is an OSError from diffusers (transformer, VAE) but an UnpicklingError from transformers
        if is_out_of_memory(err):
            raise VidinvertError(f"out of memory loading {model}",
                                 "free memory, use --dtype bf16, or a smaller model") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VidinvertError(
            f"could not load {model}: {first[:200]}",
            "check the path or hub id, your network (hub ids download weights) and that it is a supported pipeline",
        ) from None
    if type(pipe).__name__ not in FAMILIES:
        raise VidinvertError(f"{model} holds a {type(pipe).__name__} pipeline, which vidinvert cannot edit with",
                             f"use a text-to-video pipeline of a supported family ({', '.join(FAMILIES)})")
    return pipe


def _dtypes(family: str | None, dtype: torch.dtype):
    """``from_pretrained``'s dtype: one for every model, or per component where the family's VAE keeps its own."""
    vae = FAMILY_VAE_DTYPE.get(family)
    return dtype if vae is None or vae == dtype else {"default": dtype, "vae": vae}


def _published_family(hub_id: str) -> str | None:
    from .published import PUBLISHED

    record = PUBLISHED.get(hub_id)
    return record.family if record is not None else None


def _cast(pipe, family: str, dtype: torch.dtype) -> None:
    """A pipeline built in float32 (the tiny models) -> every model in ``dtype``, the VAE in its family's dtype."""
    for key, module in pipe.components.items():
        target = FAMILY_VAE_DTYPE.get(family, dtype) if key == "vae" else dtype
        if isinstance(module, torch.nn.Module) and module.dtype != target:
            module.to(dtype=target)


def load_pipeline(
    model: str | None = None,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device | None = "auto",
    cpu_offload: str = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    *,
    group_offload: str = "none",
    group_offload_blocks: int = 1,
    layerwise_casting: str = "none",
    attention_backend: str | None = None,
    lora: tuple = (),
    lora_2: tuple = (),
):
    """Load a text-to-video pipeline of a supported family.

    Args:
        model: local pipeline folder, hub id (``THUDM/CogVideoX-5b``), ``"demo"`` for the shipped demo model
            (trained on a synthetic world of coloured shapes, see ``vidinvert.demo``), ``"tiny"``/``"tiny-2b"``/...
            for a tiny random model built in code (no download; its output is noise, see tiny.py), or ``None`` for
            ``default_model()``.
        dtype: parameter dtype, ``"fp32" | "bf16" | "fp16"`` (bf16 is what the 5b weights are published in); a Wan
            VAE stays in float32 (``FAMILY_VAE_DTYPE``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        cpu_offload: ``"none"``; ``"model"`` keeps each whole model on the CPU until it runs (small cost);
            ``"sequential"`` streams layer by layer (least memory, slowest). Both need accelerate and CUDA.
        vae_tiling: decode/encode in spatial tiles (large frames with little memory).
        vae_slicing: decode a batch one video at a time.
        group_offload: ``"none"``, ``"block"`` or ``"leaf"``: every model waits on the CPU and moves to ``device`` a
            group of ``group_offload_blocks`` blocks (or a layer) at a time (``placement.enable_group_offload``).
        layerwise_casting: ``"none"``, ``"fp8_e4m3"`` or ``"fp8_e5m2"``: the transformers' weights stored in fp8.
        attention_backend: a diffusers attention backend name (``None``: diffusers' default).
        lora, lora_2: LoRAs (``LoraFile`` or ``"PATH[:SCALE]"``) for the transformer and Wan 2.2 A14B's second
            expert.

    Returns:
        A diffusers pipeline placed according to ``device``/``cpu_offload``.
    """
    torch_dtype = resolve_dtype(dtype)
    target = resolve_device(device)
    if cpu_offload not in OFFLOAD_MODES:
        raise VidinvertError(f"unknown cpu offload mode {cpu_offload!r}", f"use one of {', '.join(OFFLOAD_MODES)}")
    for name, value, choices in (("group offload mode", group_offload, GROUP_OFFLOAD_MODES),
                                 ("layerwise casting", layerwise_casting, LAYERWISE_CASTING_MODES)):
        if value not in choices:
            raise VidinvertError(f"unknown {name} {value!r}", f"use one of {', '.join(choices)}")
    lora = tuple(parse_lora(item, "LoRA") for item in ([lora] if isinstance(lora, (str, LoraFile)) else lora))
    lora_2 = tuple(parse_lora(item, "LoRA 2 (second expert)")
                   for item in ([lora_2] if isinstance(lora_2, (str, LoraFile)) else lora_2))
    if cpu_offload != "none" and target.type != "cuda":
        raise VidinvertError(f"cpu offload ({cpu_offload}) needs a CUDA device", "drop the option or use a CUDA device")
    if torch_dtype == torch.float16 and target.type == "cpu":  # diffusers runs fp16 on the CPU slowly, if at all
        raise VidinvertError("fp16 does not run on the CPU in useful time (diffusers does not support fp16 "
                             "there)", "use --dtype fp32 or bf16 on the CPU, or fp16 on a CUDA device")
    model = default_model() if model is None else model
    if model in DEMO_MODELS:
        from ..demo import I2V_MODEL_DIR, MODEL_DIR, WAN_MODEL_DIR, model_available

        folder, recipe = {DEMO_MODEL: (MODEL_DIR, "train --family cogvideox"), DEMO_WAN: (WAN_MODEL_DIR, "train --family wan"),
                          DEMO_I2V: (I2V_MODEL_DIR, "train_i2v")}[model]
        if not model_available(folder):
            raise VidinvertError(f"the {model} model is not installed ({folder} has no model_index.json)",
                                 f"train it with python -m training.{recipe} from the repository, or use a tiny model")
        pipe = _from_pretrained(str(folder), torch_dtype)
    elif model in TINY_WAN:
        from ..tiny_wan import TinyWanConfig, build_tiny_wan_pipeline

        pipe = build_tiny_wan_pipeline(TinyWanConfig(style=TINY_WAN[model]))
        _cast(pipe, "wan", torch_dtype)
    elif model in TINY_MODELS:
        from ..tiny import TinyConfig, build_tiny_pipeline

        if model in TINY_COGVIDEOX_I2V:
            config = TinyConfig(style=TINY_COGVIDEOX_I2V[model], image_to_video=True)
        else:
            config = TinyConfig(style=model.split("-", 1)[1] if "-" in model else "5b")
        pipe = build_tiny_pipeline(config, dtype=torch_dtype)
    else:
        pipe = _from_pretrained(model, torch_dtype)
    vae_dtype = FAMILY_VAE_DTYPE.get(family_of(pipe))
    if vae_dtype is not None and pipe.vae.dtype != vae_dtype:  # e.g. a hub id loaded without its family known
        pipe.vae.to(dtype=vae_dtype)
    place(pipe, target, cpu_offload, group_offload, group_offload_blocks, layerwise_casting, attention_backend, lora,
          lora_2)
    if vae_tiling:
        enable_vae_tiling(pipe.vae)
    if vae_slicing:
        pipe.vae.enable_slicing()
    return pipe


def default_guidance(name: str | None) -> tuple[float, float | None]:
    """``(guidance, second expert's guidance or None)`` its authors publish for the model ``name`` names, known
    without loading it: a published hub id's (``published.PUBLISHED``), or that of the published checkpoint a folder's
    transformer config is an architecture of; ``settings.DEFAULT_GUIDANCE`` for any other (bundled, tiny, custom)."""
    from ..settings import DEFAULT_GUIDANCE
    from .published import PUBLISHED, match_configs

    record = PUBLISHED.get(name) if name else None
    folder = Path(name).expanduser() if name else None
    if record is None and folder is not None and (folder / "transformer" / "config.json").is_file():
        try:
            index = json.loads((folder / "model_index.json").read_text())
            transformer = json.loads((folder / "transformer" / "config.json").read_text())
            record = match_configs(str(index.get("_class_name")), transformer, index)
        except (OSError, ValueError, AttributeError):  # an unreadable folder: loading it reports what is wrong
            record = None
    if record is None:
        return DEFAULT_GUIDANCE, None
    return record.guidance_scale, record.guidance_scale_2


def family_named(name: str | None) -> str | None:
    """The family (``FAMILIES`` value) of the model ``name`` names, known without loading it: a bundled or tiny model
    by its name, a folder by its ``model_index.json``; ``None`` for a hub id (and for what loading will refuse)."""
    name = name or default_model()
    if name in TINY_WAN or name == DEMO_WAN:
        return "wan"
    if name in TINY_COGVIDEOX or name in TINY_COGVIDEOX_I2V or name in (DEMO_MODEL, DEMO_I2V):
        return "cogvideox"
    try:
        return FAMILIES.get(json.loads((Path(name).expanduser() / "model_index.json").read_text()).get("_class_name"))
    except (OSError, ValueError, AttributeError):
        return None


def takes_image_named(name: str | None) -> bool | None:
    """Whether the model ``name`` names can follow a first frame, known without loading it: bundled and tiny models
    by name, a folder by its ``model_index.json``, a published hub id by its record; ``None`` where unknown."""
    name = name or default_model()
    if name in TINY_COGVIDEOX_I2V or name == DEMO_I2V:
        return True
    if name in TINY_MODELS or name in DEMO_MODELS:
        return name in IMAGE_TO_VIDEO_TINY
    from .published import PUBLISHED

    record = PUBLISHED.get(name)
    try:
        index = record.model_index if record is not None else json.loads(
            (Path(name).expanduser() / "model_index.json").read_text())
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(index, dict):
        return None
    return index.get("_class_name") in IMAGE_TO_VIDEO or bool(index.get("expand_timesteps"))


def family_of(pipe) -> str:
    """The family (``FAMILIES`` value) of a loaded pipeline; one-line error for any other pipeline."""
    family = FAMILIES.get(type(pipe).__name__)
    if family is None:
        raise VidinvertError(f"{type(pipe).__name__} is not a pipeline vidinvert can edit with",
                             f"use a text-to-video pipeline of a supported family ({', '.join(FAMILIES)})")
    return family


def _tiles_fit(sample: int, latent: int, overlap: float, factor: int) -> bool:
    """Whether diffusers' CogVideoX tiled encode and decode (per diffusers
    ``models/autoencoders/autoencoder_kl_cogvideox.py``, ``tiled_encode``/``tiled_decode``) stitch tiles of
    ``sample`` pixels / ``latent`` latents with this ``overlap`` into exactly the untiled size: the pixel stride
    must be the latent stride times ``factor``, in both directions."""
    encode_stride = int(sample * (1 - overlap))  # pixels between tile starts
    encode_kept = latent - int(latent * overlap)  # latents kept per tile
    decode_stride = int(latent * (1 - overlap))  # latents between tile starts
    decode_kept = sample - int(sample * overlap)  # pixels kept per tile
    return (sample == latent * factor and encode_stride > 0 and encode_stride == encode_kept * factor
            and decode_stride > 0 and decode_stride * factor == decode_kept)


def enable_vae_tiling(vae) -> None:
    """``vae.enable_tiling()`` with tile sizes its tiled encode/decode can stitch.

    diffusers derives the tile sizes from the VAE's sample size (half of it) and overlaps of 1/6 and 1/5; for
    CogVideoX's own 480x720 that gives tiles of 30x45 latents that stitch exactly, but for small sample sizes (our
    tiny and demo models: 4-latent tiles) the pixel and latent strides disagree and the stitched latents come out a
    column short or long. Where the defaults do not fit, tiles of at least 4 latents (a multiple of 4) with a
    quarter overlap are used, which stitch exactly (every stride is a whole number of latents)."""
    vae.enable_tiling()
    if not hasattr(vae, "tile_latent_min_height"):  # not CogVideoX's tiling (e.g. Wan's VAE): its own defaults
        return
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # the factor diffusers' tiling uses
    sizes = {}
    for side, overlap_name in (("height", "tile_overlap_factor_height"), ("width", "tile_overlap_factor_width")):
        sample, latent = getattr(vae, f"tile_sample_min_{side}"), getattr(vae, f"tile_latent_min_{side}")
        if not _tiles_fit(sample, latent, getattr(vae, overlap_name), factor):
            latent = max(4, latent // 4 * 4)
            sizes[f"tile_sample_min_{side}"], sizes[overlap_name] = latent * factor, 0.25
    if sizes:
        vae.enable_tiling(**sizes)


def recommended(pipe) -> tuple[dict, dict]:
    """``(edit, invert)``: the settings a pipeline's folder recommends (``{"edit": {...}, "invert": {...}}`` in its
    ``MODEL_SETTINGS_FILE``), checked; ``({}, {})`` when it has none (a hub id, or a folder without the file)."""
    folder = getattr(pipe, "name_or_path", None)
    path = Path(folder) / MODEL_SETTINGS_FILE if folder else None
    if path is None or not path.is_file():
        return {}, {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        raise VidinvertError(f"{path} is not valid JSON", f"fix or delete {path}") from None
    if not isinstance(data, dict):
        raise VidinvertError(f"{path} must hold a JSON object", f"fix or delete {path}")
    return (check_model_edit_defaults(data.get("edit", {}), str(path)),
            check_model_invert_defaults(data.get("invert", {}), str(path)))


def wrap(pipe, name: str | None = None):
    """The family adapter for a loaded pipeline (``VideoFamily``), chosen by the pipeline's class, with the settings
    its folder recommends (``recommended``)."""
    model = adapter_for(pipe, name)
    model.recommended_edit, model.recommended_invert = recommended(pipe)
    return model


def adapter_for(pipe, name: str | None = None):
    """The family adapter (a ``family.DiffusersFamily``) for a loaded pipeline, chosen by the pipeline's class
    (``FAMILIES``; one-line error for any other), with the native size and trained frames of a bundled or tiny model
    named ``name``."""
    if family_of(pipe) == "wan":
        from .wan import adapter_class

        native = trained = None
        if name == DEMO_WAN:
            from ..demo import NATIVE_SIZE as native, TRAINED_FRAMES as trained
        elif name in TINY_WAN:
            from ..tiny_wan import native_size

            native = native_size(TINY_WAN[name])
        return adapter_class(pipe)(pipe, name=name, native_size=native, trained_frames=trained)
    from .cogvideox import CogVideoXI2VModel, CogVideoXModel

    adapter = CogVideoXI2VModel if type(pipe).__name__ in IMAGE_TO_VIDEO else CogVideoXModel
    return adapter(pipe, name=name)


def open_model(settings: ModelSettings = ModelSettings()):
    """Load and wrap the model ``settings`` name, with its dtype (``auto`` resolved), device and memory options."""
    device = resolve_device(settings.device)
    name = settings.name or default_model()
    pipe = load_pipeline(name, dtype=auto_dtype(settings.dtype, device), device=device,
                         cpu_offload=settings.cpu_offload, vae_tiling=settings.vae_tiling,
                         vae_slicing=settings.vae_slicing, group_offload=settings.group_offload,
                         group_offload_blocks=settings.group_offload_blocks,
                         layerwise_casting=settings.layerwise_casting, attention_backend=settings.attention_backend,
                         lora=settings.lora, lora_2=settings.lora_2)
    return wrap(pipe, name=name)


def model_note(name: str) -> str | None:
    """What a user should know about a bundled model (None for real weights)."""
    if name == DEMO_MODEL:
        return ("using the bundled demo model, a 4.4M-parameter CogVideoX trained on a synthetic world: it knows "
                f"captions like '{EXAMPLE_PROMPT}'; use real weights such as "
                f"{EXAMPLE_HUB_ID} for real videos")
    if name == DEMO_I2V:
        return ("using the bundled image-to-video demo model, the CogVideoX demo fine-tuned to follow a first frame "
                "(synthetic world of coloured shapes): edit its sample with --first-frame; use real weights such as "
                "THUDM/CogVideoX-5b-I2V for real videos")
    if name == DEMO_WAN:
        return ("using the bundled Wan demo model, a 1.8M-parameter Wan 2.1-layout model trained on a synthetic "
                f"world: it knows captions like '{EXAMPLE_PROMPT}'; use real weights such as "
                f"{EXAMPLE_WAN_HUB_ID} for real videos")
    if name in TINY_MODELS:
        real = EXAMPLE_WAN_HUB_ID if name in TINY_WAN else EXAMPLE_HUB_ID
        return ("using the embedded tiny model (random weights, built in code): results are noise-like; use real "
                f"weights such as {real} for real edits")
    return None
