"""Bounded fuzzing: damaged videos and damaged .inv files give a one-line VidinvertError or a valid result.

Hypothesis runs a fixed, derandomized set of examples (reproducible in CI, no example database written),
small enough for the file to finish in well under a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # in the `test` extra
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import assert_one_line, assert_one_line_error  # noqa: E402

from vidinvert.cli import main  # noqa: E402
from vidinvert.errors import VidinvertError  # noqa: E402
from vidinvert.inversion import Inversion  # noqa: E402
from vidinvert.export import write_video  # noqa: E402
from vidinvert.video import read_video  # noqa: E402


def fuzz_settings(examples: int, shrink: bool = True) -> settings:
    """Fixed examples (derandomized), no deadline, no example database; no shrinking where failure is expected."""
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if shrink else ())
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, phases=phases,
                    report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- mutations

_anywhere = st.integers(0, 2**31)  # taken modulo the file length
MUTATION = st.one_of(
    st.tuples(st.just("flip"), _anywhere, st.integers(0, 7)),  # one bit
    st.tuples(st.just("cut"), _anywhere),  # truncate
    st.tuples(st.just("insert"), _anywhere, st.binary(min_size=1, max_size=64)),  # junk in the middle
    st.tuples(st.just("delete"), _anywhere, st.integers(1, 256)),
    st.tuples(st.just("zero"), _anywhere, st.integers(1, 512)),  # a run of zero bytes (a bad sector)
    st.tuples(st.just("header"), st.integers(0, 127), st.integers(0, 255)),  # overwrite a header byte
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    """Apply the mutation ops in turn; positions wrap around the current length."""
    out = bytearray(data)
    for op in ops:
        if not out:
            break
        kind, where = op[0], op[1] % len(out)
        if kind == "flip":
            out[where] ^= 1 << op[2]
        elif kind == "cut":
            del out[where:]
        elif kind == "insert":
            out[where:where] = op[2]
        elif kind == "delete":
            del out[where:where + op[2]]
        elif kind == "zero":
            end = min(len(out), where + op[2])
            out[where:end] = bytes(end - where)
        else:  # header: the first 128 bytes hold the container's or the safetensors' header
            out[op[1] % len(out)] = op[2]
    return bytes(out)


def expect_clean_failure_or_valid(call, check_valid) -> str:
    """Run call: a one-line VidinvertError ("error") or a result that passes check_valid ("ok"); nothing else."""
    try:
        result = call()
    except VidinvertError as err:
        assert_one_line(err)
        return "error"
    check_valid(result)
    return "ok"


# ----------------------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> dict[str, bytes]:
    """Small valid files (9 frames, 32x48, half noise so packets are large) by extension."""
    rng = np.random.default_rng(0)
    frames = np.zeros((9, 32, 48, 3), np.uint8)
    frames[:, :, :24] = rng.integers(0, 256, (9, 32, 24, 3), dtype=np.uint8)
    for i in range(9):
        frames[i, :, 24:] = 28 * i  # a brightness ramp over time
    folder = tmp_path_factory.mktemp("good")
    return {ext: write_video(frames, folder / f"good.{ext}").read_bytes() for ext in ("mp4", "mkv", "gif")}


READ_OPTIONS = st.sampled_from([
    {},  # counts frames first (auto stride)
    {"stride": 1},  # open-ended
    {"stride": 2, "min_frames": 1, "temporal_multiple": 1},
    {"height": 32, "width": 32, "resize": "crop", "skip_start": 1},
])


def valid_clip(clip) -> None:
    frames = clip.frames
    assert frames.ndim == 4 and frames.shape[1] == 3 and frames.dtype == torch.float32
    assert frames.shape[0] >= 1 and frames.shape[2] >= 1 and frames.shape[3] >= 1
    assert torch.isfinite(frames).all() and frames.abs().max() <= 1.0
    assert len(clip.indices) == frames.shape[0] and list(clip.indices) == sorted(set(clip.indices))
    assert math.isfinite(clip.fps) and clip.fps > 0


@pytest.mark.parametrize("ext, examples", [("mp4", 250), ("mkv", 100), ("gif", 60)])
def test_fuzz_read_video(good_videos, tmp_path_factory, ext, examples):
    path = tmp_path_factory.mktemp("fuzz") / f"damaged.{ext}"
    outcomes = {"error": 0, "ok": 0}

    @fuzz_settings(examples)
    @given(ops=MUTATIONS, options=READ_OPTIONS)
    def run(ops, options):
        path.write_bytes(mutate(good_videos[ext], ops))
        outcomes[expect_clean_failure_or_valid(lambda: read_video(path, **options), valid_clip)] += 1

    run()
    assert outcomes["error"] > 0  # the damage was real enough to be refused at least sometimes


# ----------------------------------------------------------------------------- .inv files


@pytest.fixture(scope="module")
def good_inv(tmp_path_factory) -> bytes:
    """A real .inv as bytes, made as users make one (``vidinvert invert`` on the tiny 5b-style model, 2 steps, a
    9-frame 64x64 clip), so its metadata carries everything the command records (frame selection, fps...)."""
    folder = tmp_path_factory.mktemp("inv")
    frames = torch.linspace(-3, 3, 9 * 3 * 64 * 64).reshape(9, 3, 64, 64).sin()  # [9, 3, 64, 64] in [-1, 1]
    clip = write_video(frames, folder / "clip.mp4", fps=12.0)
    path = folder / "good.inv"
    assert main(["invert", str(clip), "-o", str(path), "--steps", "2", "--model", "tiny-5b", "--quiet"]) == 0
    Inversion.load(path)
    return path.read_bytes()


def inv_regions(data: bytes) -> tuple[range, range, range]:
    """(vidinvert's metadata text, the length prefix + JSON header, the tensor data) as byte ranges."""
    length = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + length]
    start = header.index(b'"vidinvert":"') + len(b'"vidinvert":"')
    end = start
    while header[end:end + 1] != b'"' or header[end - 1:end] == b"\\":
        end += 1
    return range(8 + start, 8 + end), range(0, 8 + length), range(8 + length, len(data))


def valid_inversion(inv) -> None:
    assert torch.isfinite(inv.trajectory).all() and torch.isfinite(inv.clean).all()
    assert tuple(inv.trajectory.shape[1:]) == tuple(inv.clean.shape) == tuple(inv.meta.latent_shape)
    assert inv.trajectory.shape[0] == len(inv.meta.timesteps)


FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=1, max_size=4)  # (where, bit)


def apply_flips(data: bytes, region: range, flips, skip: range | None = None) -> bytes:
    """Flip single bits at positions (modulo its size) of ``region`` less ``skip``."""
    out = bytearray(data)
    positions = [i for i in region if skip is None or i not in skip]
    for where, bit in flips:
        out[positions[where % len(positions)]] ^= 1 << bit
    return bytes(out)


# Length-changing damage anywhere, plus overwrites of the 8-byte little-endian header length.
INV_MUTATIONS = st.lists(st.one_of(
    st.tuples(st.just("cut"), _anywhere),
    st.tuples(st.just("insert"), _anywhere, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _anywhere, st.integers(1, 256)),
    st.tuples(st.just("zero"), _anywhere, st.integers(1, 512)),
    st.tuples(st.just("header"), st.integers(0, 7), st.integers(0, 255)),
), min_size=1, max_size=4)


def test_fuzz_inversion_load_structure(good_inv, tmp_path):
    """Truncations, inserted junk, deleted and zeroed runs, a damaged header length."""
    path = tmp_path / "structure.inv"

    @fuzz_settings(300)
    @given(ops=INV_MUTATIONS)
    def run(ops):
        path.write_bytes(mutate(good_inv, ops))
        expect_clean_failure_or_valid(lambda: Inversion.load(path), valid_inversion)

    run()


def test_fuzz_inversion_load_bit_flips(good_inv, tmp_path):
    """Bit flips in the tensor data, or in the safetensors header outside vidinvert's metadata text."""
    text, header, tensors = inv_regions(good_inv)
    path = tmp_path / "flips.inv"

    @fuzz_settings(200)
    @given(flips=FLIPS, in_header=st.booleans())
    def run(flips, in_header):
        path.write_bytes(apply_flips(good_inv, header if in_header else tensors, flips, skip=text))
        expect_clean_failure_or_valid(lambda: Inversion.load(path), valid_inversion)

    run()


def test_fuzz_inversion_load_metadata_text(good_inv, tmp_path):
    """Bit flips inside the JSON text of vidinvert's own metadata (keys and values)."""
    text, _, _ = inv_regions(good_inv)
    path = tmp_path / "meta.inv"

    @fuzz_settings(100, shrink=False)
    @given(flips=FLIPS)
    def run(flips):
        path.write_bytes(apply_flips(good_inv, text, flips))
        expect_clean_failure_or_valid(lambda: Inversion.load(path), valid_inversion)

    run()


def metadata_of(data: bytes) -> dict:
    """vidinvert's metadata JSON of an .inv file's bytes."""
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(json.loads(data[8:8 + length])["__metadata__"]["vidinvert"])


def rewrite_metadata(data: bytes, change) -> bytes:
    """The same .inv with vidinvert's metadata JSON replaced by ``change(meta_dict)`` (any JSON value)."""
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    header["__metadata__"]["vidinvert"] = json.dumps(change(json.loads(header["__metadata__"]["vidinvert"])))
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + length:]


# Damage is written by the name of a field, wherever the saved metadata keeps it (top level or inside a nested
# object such as the frame selection), so these cases hold when fields are added or regrouped.


def _edit_key(node, name: str, edit) -> int:
    """Apply ``edit(obj)`` to every JSON object holding key ``name``, at any depth; returns how many there were."""
    found = 0
    if isinstance(node, dict):
        for value in list(node.values()):
            found += _edit_key(value, name, edit)
        if name in node:
            edit(node)
            found += 1
    elif isinstance(node, list):
        for value in node:
            found += _edit_key(value, name, edit)
    return found


def set_field(name: str, value):
    """A change for ``rewrite_metadata`` setting field ``name`` (wherever it is) to ``value``."""
    def change(meta):
        assert _edit_key(meta, name, lambda obj: obj.__setitem__(name, value)), f"no field {name!r} in {meta}"
        return meta
    return change


def drop_field(name: str):
    """A change for ``rewrite_metadata`` deleting field ``name`` wherever it is."""
    def change(meta):
        assert _edit_key(meta, name, lambda obj: obj.pop(name)), f"no field {name!r} in {meta}"
        return meta
    return change


@pytest.mark.parametrize("change", [
    pytest.param(lambda m: {**m, "colour": 1}, id="unknown-key"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("read", {"colour": 1}), id="read-wrong-keys"),
    pytest.param(drop_field("model"), id="missing-model"),
    pytest.param(drop_field("model_fingerprint"), id="missing-fingerprint"),
    pytest.param(drop_field("num_steps"), id="missing-num-steps"),
    pytest.param(drop_field("timesteps"), id="missing-timesteps"),
    pytest.param(drop_field("latent_shape"), id="missing-latent-shape"),
    pytest.param(lambda m: [1, 2], id="not-an-object"),
    pytest.param(lambda m: None, id="null"),
    pytest.param(set_field("latent_shape", 5), id="shape-not-a-list"),
    pytest.param(set_field("timesteps", None), id="timesteps-null"),
    pytest.param(set_field("timesteps", []), id="timesteps-empty"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("num_steps", "3"), id="num-steps-string"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("num_steps", -3), id="num-steps-negative"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("num_steps", 10**9), id="num-steps-huge"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("prompt", 12345), id="prompt-number"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("fps", "fast"), id="fps-string"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("read", "all of it"), id="read-not-an-object"),
    # needs schema validation on load (issue 12/17)
    pytest.param(set_field("stride", "two"), id="read-stride-string"),
])
def test_inversion_load_refuses_damaged_metadata(good_inv, tmp_path, change):
    """Valid safetensors whose vidinvert metadata is damaged: a one-line error naming the file, never a result."""
    path = tmp_path / "wrong.inv"
    path.write_bytes(rewrite_metadata(good_inv, change))
    assert_one_line_error(lambda: Inversion.load(path), "wrong.inv")


def as_json(meta) -> dict:
    """A loaded ``InversionMeta`` as the JSON object it would be saved as."""
    return json.loads(json.dumps(dataclasses.asdict(meta)))


@pytest.mark.parametrize("change", [
    pytest.param(lambda m: m, id="unchanged"),
    pytest.param(set_field("prompt", "a red square, \u00e9t\u00e9 \"quoted\""), id="other-prompt"),
    pytest.param(set_field("fps", 29.97), id="other-fps"),
    pytest.param(set_field("stride", 2), id="other-stride"),
])
def test_inversion_load_keeps_valid_metadata(good_inv, tmp_path, change):
    """Valid metadata loads, and every field comes back exactly as written (saving again writes the same JSON)."""
    path = tmp_path / "valid.inv"
    path.write_bytes(rewrite_metadata(good_inv, change))
    loaded = Inversion.load(path)
    valid_inversion(loaded)
    written = change(metadata_of(good_inv))
    assert as_json(loaded.meta) == written
    again = loaded.save(tmp_path / "again.inv")
    assert metadata_of(again.read_bytes()) == written
    assert Inversion.load(again).meta == loaded.meta


def test_metadata_edits_reach_the_field(good_inv):
    """The damage helpers change what they name, and fail loudly on a field the file does not have."""
    meta = metadata_of(good_inv)
    assert set_field("fps", "fast")(metadata_of(good_inv)) != meta
    assert "stride" not in json.dumps(drop_field("stride")(metadata_of(good_inv)))
    with pytest.raises(AssertionError, match="no field 'colour'"):
        set_field("colour", 1)(metadata_of(good_inv))


def test_inversion_round_trip_and_region_helper(good_inv, tmp_path):
    """The fuzz targets are what they claim: the unmutated file loads, the regions cover the file."""
    text, header, tensors = inv_regions(good_inv)
    assert b"model_fingerprint" in good_inv[text.start:text.stop]
    assert header.stop == tensors.start and tensors.stop == len(good_inv)
    path = tmp_path / "same.inv"
    path.write_bytes(rewrite_metadata(good_inv, lambda m: m))
    valid_inversion(Inversion.load(path))
