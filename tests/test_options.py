"""The options table: one declaration per option, read the same way by every front end."""

import json

import pytest

from vidinvert.batch.jobfile import read_jobs
from vidinvert.cli import build_parser, settings
from vidinvert.options import BATCH, COMMANDS, EDIT, INVERT, OPTIONS, for_command, row_options, settings_from_values

RENAMED = {  # old spelling -> (new flag, a value, where the value lands in the settings)
    "strength": ("edit-fraction", 0.5, lambda s: (s.invert.depth, s.edit.strength)),
    "injection-steps": ("injection-fraction", 0.5, lambda s: s.edit.injection.step_fraction),
    "reference-weight-steps": ("reference-weight-fraction", 0.4, lambda s: s.edit.injection.reference_weight_fraction),
    "blend-steps": ("blend-fraction", 0.3, lambda s: s.edit.blend.step_fraction),
    "overlap": ("overlap-fraction", 0.5, lambda s: s.invert.overlap),
    "blend-threshold": ("blend-threshold-fraction", 0.7, lambda s: s.edit.blend.threshold),
}


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_deprecated_flag_means_its_new_flag_and_says_so(old, capsys):
    new, value, where = RENAMED[old]
    parser = build_parser()
    extra = ["--window", "auto"] if old == "overlap" else []
    by_new = settings(parser.parse_args(["edit", "--prompt", "p", f"--{new}", str(value), *extra]))
    assert capsys.readouterr().err == ""
    by_old = settings(parser.parse_args(["edit", "--prompt", "p", f"--{old}", str(value), *extra]))
    assert by_old == by_new and where(by_new) not in (None, settings(parser.parse_args(["edit", "--prompt", "p",
                                                                                         *extra])))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vidinvert edit: warning: --{old} is deprecated and goes in the next release: use --{new}"]


def test_deprecated_flags_are_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["edit", "--help"])
    text = capsys.readouterr().out
    assert "--edit-fraction" in text and "--strength" not in text and "--injection-steps" not in text


def test_invert_takes_an_inversion_fraction_and_strength_still_reads_as_it(capsys):
    parser = build_parser()
    new = settings(parser.parse_args(["invert", "--inversion-fraction", "0.6"]))
    old = settings(parser.parse_args(["invert", "--strength", "0.6"]))
    assert new.invert.depth == old.invert.depth == 0.6
    assert "use --inversion-fraction" in capsys.readouterr().err


def test_krnr_takes_the_edit_fraction_for_the_edit_alone():
    asked = settings_from_values({"krnr": 2, "edit_fraction": 0.9})
    assert (asked.invert.depth, asked.edit.strength) == (1.0, 0.9)
    asked = settings_from_values({"krnr": 2})
    assert (asked.invert.depth, asked.edit.strength) == (1.0, 0.95)


def test_a_batch_row_with_an_old_key_runs_as_the_new_key_with_one_note(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    rows = [{"video": "a.mp4", "prompt": "x", "strength": 0.5, "injection_steps": 0.4},
            {"video": "a.mp4", "prompt": "y", "id": "b", "strength": 0.5, "injection-fraction": 0.4}]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    notes: list[str] = []
    first, second = read_jobs(path, notes=notes)
    assert (first.invert, first.edit) == (second.invert, second.edit)
    assert first.edit.strength == 0.5 and first.edit.injection.step_fraction == 0.4
    assert notes == ["job file: strength is deprecated and goes in the next release: use edit-fraction",
                     "job file: injection-steps is deprecated and goes in the next release: use injection-fraction"]


def test_every_option_has_help_and_a_group_and_fraction_names_say_fraction():
    for option in OPTIONS:
        assert option.help and option.commands
        if option.kind == "float" and option.help.startswith("fraction"):
            assert option.key.endswith("fraction"), option.key


def test_each_command_declares_a_key_once_and_batch_rows_take_every_edit_option():
    for command in COMMANDS:
        keys = [o.key for o in for_command(command)]
        assert len(keys) == len(set(keys))
    rows = {o.key for o, _ in row_options().values()}
    edit_only = {o.key for o in for_command(EDIT)} - rows
    assert edit_only == {"video", "prompt", "save-inversion", "use-inversion", "save-mask", "output", "output-dir", "force",
                         "quiet"}
    assert "inversion-fraction" in {o.key for o in for_command(INVERT)} - {o.key for o in for_command(BATCH)}


def test_fixed_point_options_with_ddim_are_refused_not_ignored(tmp_path, capsys):
    from vidinvert.cli import main

    for command, extra in (("edit", ["--prompt", "x"]), ("invert", []), ("reconstruct", [])):
        out = tmp_path / ("o.inv" if command == "invert" else "o.mp4")
        assert main([command, *extra, "--model", "tiny", "--tol", "1e-4", "--max-iter", "3", "-o", str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "vidinvert: error: --tol and --max-iter only apply to --inversion fixed-point, and the inversion is "
            "ddim; add --inversion fixed-point, or drop them"]
        assert not list(tmp_path.iterdir())
    assert main(["edit", "--prompt", "x", "--model", "tiny", "--anderson", "2", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "--anderson only applies to --inversion fixed-point" in capsys.readouterr().err
