"""A model built with fake tensors: every module at its real size and dtype, with no memory and no weights read.

Planning (``engine/budget.py``) runs the engine's own encode, invert, edit and decode on such a model: torch's
``FakeTensorMode`` gives each parameter and activation its shape, dtype and device without storage, so a 14B
transformer is built in a second and traced at 720p on a laptop. Configs come from where the real model's would:
a folder's ``model_index.json`` and component configs (the bundled demo models too), the published record of a
hub id (``published.py``; no download), or the code that builds a tiny model. Tokenizers and schedulers are real
(small, and the schedule is data the sampler reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..errors import VidinvertError
from ..settings import ModelSettings
from .device import auto_dtype, resolve_dtype
from .registry import (DEMO_I2V, DEMO_MODEL, DEMO_MODELS, FAMILY_VAE_DTYPE, TINY_MODELS, default_model,
                       family_named, wrap)


def fake_mode() -> FakeTensorMode:
    """The mode a traced model's tensors belong to; real tensors (schedules, a clip's frames) may meet them."""
    return FakeTensorMode(allow_non_fake_inputs=True)


def traced_model(settings: ModelSettings, mode: FakeTensorMode, device: str = "cpu"):
    """The family adapter (``registry.wrap``) over a pipeline of fake modules for the model ``settings`` names, in
    its dtype (``auto``: bf16 on ``device="cuda"``, fp32 elsewhere), with its folder's recommendations.

    One-line error for a hub id that is neither a local folder nor a published checkpoint (``published.PUBLISHED``):
    its configs cannot be read without a download.
    """
    name = settings.name or default_model()
    dtype = resolve_dtype(auto_dtype(settings.dtype, torch.device(device)))
    if name in TINY_MODELS:
        pipe = _tiny(name, mode)
    else:
        folder = _folder(name)
        if folder is not None:
            pipe = _from_folder(folder, mode)
        else:
            pipe = _from_published(name, mode)
    _to_dtype(pipe, dtype, family_named(name) or _family(pipe), mode)
    if settings.vae_tiling:
        from .registry import enable_vae_tiling

        enable_vae_tiling(pipe.vae)
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
    model = wrap(pipe, name=name)
    return model


def _folder(name: str) -> Path | None:
    """The pipeline folder ``name`` is (a bundled model's too), or None."""
    if name in DEMO_MODELS:
        from ..demo import I2V_MODEL_DIR, MODEL_DIR, WAN_MODEL_DIR

        return {DEMO_MODEL: MODEL_DIR, DEMO_I2V: I2V_MODEL_DIR}.get(name, WAN_MODEL_DIR)
    path = Path(name).expanduser()
    return path if (path / "model_index.json").is_file() else None


def _family(pipe) -> str:
    from .registry import family_of

    return family_of(pipe)


def _library(name: str):
    import diffusers
    import transformers

    return diffusers if name == "diffusers" else transformers


def _module(library: str, class_name: str, config: dict, mode: FakeTensorMode) -> torch.nn.Module:
    """A model component built from its config with fake parameters."""
    cls = getattr(_library(library), class_name)
    with mode:
        if library == "diffusers":
            module = cls.from_config(config)
        else:
            module = cls(cls.config_class.from_dict(config))
    return module.eval()


def _from_folder(folder: Path, mode: FakeTensorMode):
    """A folder's pipeline: models from their configs (fake), tokenizers and the scheduler loaded as they are."""
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    parts = {}
    for key, spec in index.items():
        if not key.startswith("_") and not isinstance(spec, list):  # a pipeline flag (boundary_ratio...)
            parts[key] = spec
        if key.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        library, class_name = spec
        cls = getattr(_library(library), class_name)
        sub = folder / key
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            config = json.loads((sub / "config.json").read_text())
            parts[key] = _module(library, class_name, config, mode)
        else:
            parts[key] = cls.from_pretrained(sub)
    pipe = getattr(diffusers, index["_class_name"])(**parts)
    pipe.register_to_config(_name_or_path=str(folder))  # where its recommendations (vidinvert.json) are read
    return pipe


def _from_published(name: str, mode: FakeTensorMode):
    """A published checkpoint's pipeline from its record: every model at its published size (the text encoder
    too), a stand-in tokenizer of the published prompt length."""
    import diffusers

    from . import published

    record = published.PUBLISHED.get(name)
    if record is None:
        known = ", ".join(published.PUBLISHED)
        raise VidinvertError(f"cannot plan {name}: it is not a local pipeline folder nor a published checkpoint "
                             "vidinvert knows", f"give a downloaded folder, or one of {known}")
    parts = {}
    for key, spec in record.model_index.items():
        if not key.startswith("_") and not isinstance(spec, list):  # a pipeline flag (boundary_ratio...)
            parts[key] = spec
        if key.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        library, class_name = spec
        if key in record.parameters:
            parts[key] = _module(library, class_name, record.configs[key], mode)
        elif key.startswith("tokenizer"):
            parts[key] = published._stand_in_tokenizer(record)
        elif key == "scheduler":
            parts[key] = getattr(diffusers, class_name).from_config(record.configs[key])
        else:  # an image processor of an image-to-video pipeline
            parts[key] = None
    return getattr(diffusers, record.pipeline)(**parts)


def _tiny(name: str, mode: FakeTensorMode):
    """A tiny model's pipeline, built by its own code (kilobytes of weights), its models then made fake."""
    from .registry import load_pipeline

    pipe = load_pipeline(name, dtype="fp32", device="cpu")
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            _fake(component, mode)
    return pipe


def _fake(module: torch.nn.Module, mode: FakeTensorMode) -> None:
    """Replace every parameter and buffer of ``module`` by a fake tensor of the same shape, dtype and device."""
    done: dict[int, torch.nn.Parameter] = {}  # tied parameters stay tied
    for sub in module.modules():
        for key, param in sub._parameters.items():
            if param is not None:
                if id(param) not in done:
                    done[id(param)] = torch.nn.Parameter(mode.from_tensor(param.detach()), requires_grad=False)
                sub._parameters[key] = done[id(param)]
        for key, buffer in sub._buffers.items():
            if buffer is not None:
                sub._buffers[key] = mode.from_tensor(buffer)


def _to_dtype(pipe, dtype: torch.dtype, family: str, mode: FakeTensorMode) -> None:
    """Every model in ``dtype`` as ``load_pipeline`` puts them (a family's VAE in the dtype it is published in)."""
    with mode:
        for key, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                _cast(component, FAMILY_VAE_DTYPE.get(family, dtype) if key == "vae" else dtype)


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """``module.to(dtype)`` for fake parameters, which ``Module.to`` cannot swap in place: floating parameters and
    buffers are replaced."""
    done: dict[int, torch.nn.Parameter] = {}  # a tied parameter (an embedding shared by two modules) stays one
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                if id(param) not in done:
                    done[id(param)] = torch.nn.Parameter(param.detach().to(dtype), requires_grad=False)
                sub._parameters[name] = done[id(param)]
        for name, buffer in sub._buffers.items():
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                sub._buffers[name] = buffer.to(dtype)


def weights_bytes(pipe) -> dict[str, int]:
    """Bytes of each model component's parameters and buffers, as stored (shared storages counted once)."""
    sizes = {}
    for key, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            seen, total = set(), 0
            for tensor in (*component.parameters(), *component.buffers()):
                storage = id(tensor.untyped_storage())
                if storage not in seen:
                    seen.add(storage)
                    total += tensor.untyped_storage().nbytes()
            sizes[key] = total
    return sizes


def stored_bytes(settings: ModelSettings, pipe) -> dict[str, int]:
    """Bytes of each model component's weight files as loading reads them, in loading order (``model_index.json``'s):
    a folder's files, or a published checkpoint's parameters at its published dtype; ``{}`` for a tiny model
    (built in code)."""
    name = settings.name or default_model()
    if name in TINY_MODELS:
        return {}
    folder = _folder(name)
    sizes = {}
    for key, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        if folder is not None:
            files = [f for f in (folder / key).glob("*") if f.suffix in (".safetensors", ".bin")]
            sizes[key] = sum(f.stat().st_size for f in files)
        else:
            from .published import PUBLISHED

            record = PUBLISHED[name]
            element = torch.finfo(resolve_dtype(record.dtype)).bits // 8
            sizes[key] = record.parameters.get(key, 0) * element
    return sizes
