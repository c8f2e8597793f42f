"""Checks on a local pipeline folder before anything in it is built: its files, its config values, and whether the
weights its configs declare fit in memory.

diffusers builds every component from its config before loading weights, so a config declaring 100000 layers or a
4096-wide attention head asks for tens of GB (or a scheduler with 10**10 training steps for an 80 GB table) before
any weight file is read. Here the sizes are read from the configs and the parameters counted on the meta device
(no memory), and named files are checked to be regular files (a named pipe would block the loader forever).
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path

import torch

from ..errors import VidinvertError
from ..video import refuse_special_file
from .device import available_memory

MAX_TRAIN_TIMESTEPS = 100_000  # schedulers' num_train_timesteps; released models use 1000
MAX_LAYERS = 1000  # most repeated layers a config may declare; released video models have at most ~60
# Config keys counting repeated layers: parameters grow by the same amount per layer, so they are counted at 1 and 2
# layers (on the meta device) and extrapolated, never built at the declared count.
LAYER_KEYS = ("num_layers", "num_decoder_layers", "num_hidden_layers", "layers_per_block")
HEAD_KEYS = ("num_attention_heads", "attention_head_dim", "num_heads")  # positive integers (or lists of them)
LIBRARIES = ("diffusers", "transformers")  # component libraries whose models are counted


def check_pipeline_folder(folder: Path, name: str, dtype: torch.dtype) -> None:
    """Refuse a pipeline folder whose files or configs would hang, crash or exhaust memory while loading.

    Args:
        folder: a folder with a ``model_index.json`` naming its components (``{"vae": ["diffusers", "..."]}``).
        name: the model as the user named it, for errors.
        dtype: the dtype the weights will be loaded in (sizes the memory estimate).
    """
    components = _components(folder)
    for sub in components:
        _refuse_special_files(folder / sub, name)
    scheduler = folder / "scheduler" / "scheduler_config.json"
    if "scheduler" in components and scheduler.is_file():
        _check_timesteps(_read_config(scheduler), scheduler)
    sizes = {}
    for sub, (library, class_name) in components.items():
        config = folder / sub / "config.json"
        if library in LIBRARIES and config.is_file():
            count = _count_parameters(library, class_name, _read_config(config), config)
            if count is not None:
                sizes[sub] = count * torch.finfo(dtype).bits // 8
    _check_memory(sizes, name, dtype)


def folder_info(folder: Path, name: str) -> dict:
    """What a pipeline folder declares, read from its configs alone (no weights loaded): its pipeline class, the
    parameters of each model component (counted on the meta device), the transformer's and scheduler's configs, and
    the published checkpoint it is an architecture of (``published.match_configs``)."""
    from .published import match_configs

    index = _read_config(folder / "model_index.json")
    components = _components(folder)
    configs = {}
    for sub in ("transformer", "scheduler"):
        path = folder / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")
        if sub not in components or not path.is_file():
            raise VidinvertError(f"could not load {name}: it has no {sub}/{path.name}",
                                 "point the model at a complete pipeline folder, or re-download it")
        configs[sub] = _read_config(path)
    parameters = {}
    for sub, (library, class_name) in components.items():
        config = folder / sub / "config.json"
        if library in LIBRARIES and config.is_file():
            count = _count_parameters(library, class_name, _read_config(config), config)
            if count is not None:
                parameters[sub] = count
    record = match_configs(str(index.get("_class_name")), configs["transformer"], index)
    return {"pipeline": index.get("_class_name"), "published": record.hub_id if record else None,
            "parameters": parameters, "transformer": configs["transformer"], "scheduler": configs["scheduler"]}


def _components(folder: Path) -> dict[str, tuple[str, str]]:
    """``{subfolder: (library, class name)}`` from ``model_index.json`` (entries not of that form are skipped)."""
    index = folder / "model_index.json"
    data = _read_config(index)
    return {key: (value[0], value[1]) for key, value in data.items()
            if not key.startswith("_") and isinstance(value, list) and len(value) == 2
            and all(isinstance(v, str) for v in value) and (folder / key).is_dir()}


def _refuse_special_files(component: Path, name: str) -> None:
    """Every file under a component folder (symlinks followed, each folder once) must be a regular file."""
    seen = set()
    for root, dirs, files in os.walk(component, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        for file in files:
            refuse_special_file(Path(root) / file, f"replace it with the file itself to load {name}")


def _read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        raise VidinvertError(f"{path} is not valid JSON", "re-download or re-save the pipeline") from None
    if not isinstance(data, dict):
        raise VidinvertError(f"{path} must hold a JSON object", "re-download or re-save the pipeline")
    return data


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_sizes(config: dict, path: Path) -> None:
    """Layer counts: positive integers up to ``MAX_LAYERS``; head counts and widths: positive integers (per block
    where a config lists one per block)."""
    for key in LAYER_KEYS + HEAD_KEYS:
        value = config.get(key)
        values = value if isinstance(value, list) and value else [value]
        if value is None or all(_positive_int(v) and (key in HEAD_KEYS or v <= MAX_LAYERS) for v in values):
            continue
        bound = "a positive integer" if key in HEAD_KEYS else f"an integer from 1 to {MAX_LAYERS:,}"
        raise VidinvertError(f"{path} has {key} {value!r}; it must be {bound}", "fix the config or re-download the model")


def _check_timesteps(config: dict, path: Path) -> None:
    """The scheduler's ``num_train_timesteps`` sizes its alpha tables: a positive integer up to the limit."""
    value = config.get("num_train_timesteps", 1000)
    if not (_positive_int(value) and value <= MAX_TRAIN_TIMESTEPS):
        raise VidinvertError(f"{path} has num_train_timesteps {value!r}; it must be an integer from 1 to "
                             f"{MAX_TRAIN_TIMESTEPS:,}", "fix the scheduler config (released models use 1000)")


def _count_parameters(library: str, class_name: str, config: dict, path: Path) -> int | None:
    """Parameters and buffers the model ``config`` declares, counted on the meta device; ``None`` for a class that is
    not a model of ``library`` (diffusers reports it when loading)."""
    import diffusers
    import transformers

    _check_sizes(config, path)
    module = diffusers if library == "diffusers" else transformers
    base = diffusers.ModelMixin if library == "diffusers" else transformers.PreTrainedModel
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return None

    def count(**layers) -> int:
        if library == "diffusers":
            build = lambda: cls.from_config({**config, **layers})  # noqa: E731
        else:
            build = lambda: cls(cls.config_class.from_dict({**config, **layers}))  # noqa: E731
        with torch.device("meta"):
            model = build()
        return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())

    layers = {key: config[key] for key in LAYER_KEYS if isinstance(config.get(key), int) and config[key] > 2}
    try:
        one = count(**{key: 1 for key in layers})
        total = one
        for key, value in layers.items():
            per_layer = count(**{k: 2 if k == key else 1 for k in layers}) - one
            total += (value - 1) * per_layer
    except Exception as err:  # noqa: BLE001 - any config the class cannot be built from
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VidinvertError(f"cannot build {class_name} from {path}: {first[:200]}",
                             "fix the config or re-download the model") from None
    return total


def _check_memory(sizes: dict[str, int], name: str, dtype: torch.dtype) -> None:
    """Refuse weights that do not fit in the memory free now (every component is loaded into CPU memory first)."""
    free = available_memory(torch.device("cpu"))
    need = sum(sizes.values())
    if free is None or need <= free:
        return
    gib = 2**30
    parts = ", ".join(f"{sub} {size / gib:.1f}" for sub, size in sorted(sizes.items(), key=lambda item: -item[1]))
    raise VidinvertError(
        f"{name} declares about {need / gib:.1f} GiB of weights in {str(dtype).removeprefix('torch.')} ({parts} GiB), "
        f"but only {free / gib:.1f} GiB of memory is free",
        "check the sizes in its config.json files (num_layers, attention_head_dim, ...), use --dtype bf16, "
        "or free memory")
