"""What ``registry.load_pipeline`` does to a loaded pipeline beyond its dtype: LoRA weights, fp8 weight storage, the
attention backend and where the weights live (device, CPU offload, group offload), each through diffusers' own API.

Order matters and is fixed in ``place``: LoRAs are loaded first (onto plain modules: diffusers' LoRA loader would
otherwise have to undo and redo the offloading hooks), then layerwise casting (which leaves the LoRA layers in the
compute dtype), then the attention backend, then the weights' placement. Every failure is one line naming the
setting (``LoRA``, ``attention backend``...).

``identity`` is what of this a model's fingerprint must know (``family.DiffusersFamily.fingerprint``): the LoRAs each
transformer carries, with their scales, and the fp8 storage dtype; nothing for a plain model, whose fingerprint is
therefore what it was before these options existed.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import torch

from ..errors import VidinvertError
from ..provenance import file_sha256 as file_sha256_uncached
from ..settings import LoraFile

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # per diffusers loaders/lora_base.py LORA_WEIGHT_NAME_SAFE
CASTING_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}  # --layerwise-casting -> storage
FLAGS = {"lora": "LoRA", "lora_2": "LoRA 2 (second expert)"}  # how messages name each LoRA setting


# ---- LoRA -------------------------------------------------------------------------------------------------------
def lora_file(path: str, setting: str = "LoRA") -> Path:
    """The weights file a LoRA path names: the file itself, or a folder's ``pytorch_lora_weights.safetensors``."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / LORA_WEIGHT_NAME
    if not file.is_file():
        raise VidinvertError(f"{setting} file not found: {file}", "give a LoRA .safetensors file")
    return file


@functools.lru_cache(maxsize=64)
def _sha256(file: str, size: int, mtime_ns: int) -> str:
    return file_sha256_uncached(file)


def file_sha256(file: Path) -> str:
    """The file's SHA-256, computed once per process for an unchanged file."""
    stat = file.stat()
    return _sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


def lora_record(loras: tuple[LoraFile, ...], setting: str = "LoRA") -> list[dict]:
    """What the settings JSON keeps of each LoRA: its file's name, SHA-256 and scale."""
    records = []
    for lora in loras:
        file = lora_file(lora.path, setting)
        records.append({"file": file.name, "sha256": file_sha256(file), "scale": lora.scale})
    return records


def adapter_name(expert: int, index: int, file: Path) -> str:
    """The adapter name a LoRA is loaded under: which expert, which of its LoRAs, and the file's content, so that
    ``identity`` (hence the fingerprint) tells one file from another."""
    return f"vidinvert{expert}_{index}_{file_sha256(file)[:16]}"


def load_loras(pipe, loras: tuple[LoraFile, ...], loras_2: tuple[LoraFile, ...] = ()) -> None:
    """Load LoRAs onto the transformer (``loras``) and Wan 2.2 A14B's second expert (``loras_2``), each at its
    scale, with diffusers' ``load_lora_weights`` and ``set_adapters``.

    One-line errors: a missing file, a file that is no LoRA, one whose keys match no layer of the model,
    ``loras_2`` on a pipeline without a second expert, a pipeline without LoRA support (or peft missing).
    """
    if not loras and not loras_2:
        return
    if loras_2 and getattr(pipe, "transformer_2", None) is None:
        raise VidinvertError(f"{FLAGS['lora_2']} needs a model with a second expert (Wan 2.2 A14B); this "
                             f"{type(pipe).__name__} has one transformer", "use --lora for its transformer")
    if not hasattr(pipe, "load_lora_weights"):
        raise VidinvertError(f"{type(pipe).__name__} cannot load LoRA weights", "drop --lora")
    try:
        import peft  # noqa: F401 - diffusers' LoRA loading needs it
    except ImportError:
        raise VidinvertError("LoRA loading needs peft, which is not installed", "pip install peft") from None
    names, weights = [], []
    for expert, (items, setting) in enumerate(((loras, FLAGS["lora"]), (loras_2, FLAGS["lora_2"]))):
        component = "transformer_2" if expert else "transformer"
        for index, lora in enumerate(items):
            file = lora_file(lora.path, setting)
            name = adapter_name(expert, index, file)
            before = set(_adapters(pipe, component))
            try:
                with _quiet_diffusers():
                    pipe.load_lora_weights(str(file), adapter_name=name, load_into_transformer_2=bool(expert))
            except Exception as err:  # noqa: BLE001 - safetensors, peft and diffusers each fail their own way
                raise VidinvertError(f"{setting} {lora.path} could not be loaded: {_first_line(err)}",
                                     "give a LoRA trained for this model, in diffusers' or peft's layout") from None
            if name not in set(_adapters(pipe, component)) - before:
                raise VidinvertError(f"{setting} {lora.path} matches no layer of this model's {component}",
                                     "give a LoRA trained for this model")
            names.append(name)
            weights.append(lora.scale)
    pipe.set_adapters(names, weights)


def _adapters(pipe, component: str) -> list[str]:
    return pipe.get_list_adapters().get(component, [])


def _loras_of(transformer) -> list:
    """``[(adapter, scale)]`` active on ``transformer``: peft's scaling of its first LoRA layer (LoRA alpha / rank
    times the weight ``set_adapters`` gave)."""
    if getattr(transformer, "peft_config", None) is None:
        return []
    from peft.tuners.lora import LoraLayer

    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            return sorted((name, round(float(module.scaling[name]), 6)) for name in module.active_adapters
                          if name in module.scaling)
    return []


# ---- layerwise casting ------------------------------------------------------------------------------------------
def enable_layerwise_casting(transformers, mode: str) -> None:
    """Store each transformer's weights in ``mode``'s fp8 format, computed in its current dtype (diffusers'
    ``enable_layerwise_casting``, whose default patterns keep norms, embeddings, the output projection and LoRA
    layers in the compute dtype)."""
    if mode == "none":
        return
    if mode not in CASTING_DTYPES:
        raise VidinvertError(f"unknown layerwise casting {mode!r}", f"use one of none, {', '.join(CASTING_DTYPES)}")
    for transformer in transformers:
        transformer.enable_layerwise_casting(storage_dtype=CASTING_DTYPES[mode], compute_dtype=transformer.dtype)


def _storage_dtype(transformer) -> torch.dtype | None:
    """The fp8 storage dtype of a transformer with layerwise casting, else None (per diffusers
    hooks/layerwise_casting.py: the hook is registered as "layerwise_casting")."""
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook("layerwise_casting") if registry is not None else None
        if hook is not None:
            return hook.storage_dtype
    return None


# ---- attention backend ------------------------------------------------------------------------------------------
def usable_attention_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    """diffusers' attention backends that can run here: their packages present (diffusers' own requirement
    check) and their constraints met by ``dtype`` tensors on ``device``; each one that needs no download is also
    run once on a few tokens."""
    from diffusers.models import attention_dispatch as dispatch

    sample = torch.zeros(1, 4, 2, 8, device=device, dtype=dtype)  # [B, S, heads, head_dim]
    usable = []
    for backend in dispatch.AttentionBackendName:
        try:
            dispatch._check_attention_backend_requirements(backend)
            for check in dispatch._AttentionBackendRegistry._constraints.get(backend, []):
                check(query=sample, key=sample, value=sample, attn_mask=None, dropout_p=0.0, is_causal=False)
            if not backend.value.endswith("_hub"):
                with warnings.catch_warnings():  # flex warns that it runs uncompiled
                    warnings.simplefilter("ignore")
                    dispatch.dispatch_attention_fn(sample, sample, sample, backend=backend)
        except Exception:  # noqa: BLE001 - each backend refuses in its own way
            continue
        usable.append(backend.value)
    return usable


def set_attention_backend(pipe, backend: str | None, device: torch.device) -> None:
    """Every transformer of ``pipe`` attends with diffusers' ``backend`` (``transformer.set_attention_backend``).

    CogVideoX's own processor calls SDPA directly, so its blocks first get ``CogVideoXAttnProcessor`` (the same
    computation through diffusers' dispatch). diffusers also makes the backend the process-wide default; that is
    undone here, so that the choice stays with this model's processors (a page or batch may hold other models).
    """
    if backend is None:
        return
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    transformers = [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]
    dtype = transformers[0].dtype
    usable = usable_attention_backends(device, dtype)
    if backend not in usable:
        raise VidinvertError(f"attention backend {backend!r} is unknown or unusable on {device} in "
                             f"{str(dtype).replace('torch.', '')}", f"use one of {', '.join(usable)}")
    if type(pipe).__name__ == "CogVideoXPipeline":
        from .cogvideox_attention import CogVideoXAttnProcessor

        pipe.transformer.set_attn_processor(CogVideoXAttnProcessor())
    active = _AttentionBackendRegistry._active_backend
    try:
        for transformer in transformers:
            with _quiet_diffusers():  # it logs that backends are experimental, on every call
                transformer.set_attention_backend(backend)
    except Exception as err:  # noqa: BLE001 - a hub kernel's download, for one
        raise VidinvertError(f"attention backend {backend!r} could not be set: {_first_line(err)}",
                             "use another backend or drop --attention-backend") from None
    finally:
        _AttentionBackendRegistry.set_active_backend(active)


# ---- placement --------------------------------------------------------------------------------------------------
def enable_group_offload(pipe, mode: str, blocks: int, device: torch.device) -> None:
    """Every model of ``pipe`` waits on the CPU and moves to ``device`` a group at a time (diffusers' pipeline
    ``enable_group_offload``: the transformers and the VAE through their own method, the text encoder through
    ``apply_group_offloading``). ``mode``: ``block`` (groups of ``blocks`` blocks) or ``leaf`` (each layer).

    CUDA streams overlap the next group's transfer with the current one's compute where the device has them (on
    CUDA, for leaf groups or one block per group: diffusers uses streams with one block per group only). On the CPU
    the groups are moved from the CPU to the CPU, which costs nothing and saves nothing: the option is accepted so
    that a job runs the same everywhere.
    """
    offload_type = {"block": "block_level", "leaf": "leaf_level"}[mode]
    streams = device.type == "cuda" and (mode == "leaf" or blocks == 1)
    pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type=offload_type,
                              num_blocks_per_group=blocks if mode == "block" else None, use_stream=streams)


def place(pipe, device: torch.device, cpu_offload: str = "none", group_offload: str = "none",
          group_offload_blocks: int = 1, layerwise_casting: str = "none", attention_backend: str | None = None,
          lora: tuple[LoraFile, ...] = (), lora_2: tuple[LoraFile, ...] = ()) -> None:
    """Apply the options of ``ModelSettings`` beyond name and dtype to a pipeline loaded on the CPU, in order:
    LoRAs, layerwise casting, attention backend, then placement (CPU offload, group offload, or all on ``device``).
    """
    load_loras(pipe, lora, lora_2)
    transformers = [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]
    enable_layerwise_casting(transformers, layerwise_casting)
    set_attention_backend(pipe, attention_backend, device)
    if group_offload != "none" and cpu_offload != "none":
        raise VidinvertError(f"group offload ({group_offload}) and cpu offload ({cpu_offload}) both decide where the "
                             "weights wait", "use one of them")
    if cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif group_offload != "none":
        enable_group_offload(pipe, group_offload, group_offload_blocks, device)
    else:
        pipe.to(device)


def identity(transformers) -> tuple:
    """What a model's fingerprint adds for these options: ``({"loras": ..., "layerwise_casting": ...},)`` with the
    adapters (named after their files' contents) and scales each transformer carries and its fp8 storage dtype;
    ``()`` for plain transformers."""
    loras = [_loras_of(t) for t in transformers]
    storage = [_storage_dtype(t) for t in transformers]
    if not any(loras) and not any(storage):
        return ()
    return ({"loras": loras, "layerwise_casting": [str(s) if s is not None else None for s in storage]},)


# ---- helpers ----------------------------------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


class _quiet_diffusers:
    """diffusers' logger at errors only, for a call that logs warnings we turn into our own messages."""

    def __enter__(self):
        self.logger = logging.getLogger("diffusers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
