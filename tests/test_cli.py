"""The command line: every step's ``--help`` builds and explains, the top-level help lists every
step, and every step names a register function that exists (the table names callables)."""

from __future__ import annotations

import argparse
import importlib
import os

import pytest
from helpers import fixture_path

from flashrna.cli import STEPS, build_step_parser, main


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """A step's parser, or the parsers of its sub-steps (``finetune chip``, ``report table1``)."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [leaf for a in subparsers for p in a.choices.values() for leaf in leaf_parsers(p)] or [
        parser
    ]


@pytest.mark.parametrize("step", list(STEPS))
def test_every_step_has_a_help_page(step, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([step, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: flashrna {step}")
    assert len(text.splitlines()) > 3  # options with their help, not only a usage line


@pytest.mark.parametrize("step", list(STEPS))
def test_the_step_table_names_existing_callables(step):
    module, function = STEPS[step][0].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    for parser in leaf_parsers(build_step_parser(step)):
        assert callable(parser.get_default("run")), f"{parser.prog}: no adapter to run"
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--help"])
        assert exit_info.value.code == 0


def test_top_level_help_lists_every_step(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for step, (_, summary) in STEPS.items():
        assert f"  {step}" in text and summary in text


def test_unknown_step_is_refused_with_the_list(capsys):
    assert main(["no-such-step"]) == 2
    err = capsys.readouterr().err
    assert "unknown step 'no-such-step'" in err and "score-variants" in err


def test_a_step_ends_with_a_summary_line_unless_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # restored after the test
    assert main(["model-info", "--preset", "tiny", "--length", "4096"]) == 0
    captured = capsys.readouterr()
    assert "parameters" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("flashrna model-info: done in ")
    checkpoint = fixture_path("flashrna-official/official-tiny.ckpt")
    assert main(["import-model", str(checkpoint), "--out", str(tmp_path / "m")]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("flashrna import-model: done in ")
    assert last.endswith(f"; output in {tmp_path / 'm'}")
    assert main(["model-info", "-q", "--preset", "tiny", "--length", "4096"]) == 0
    captured = capsys.readouterr()
    assert "parameters" in captured.out and "done in" not in captured.err
    assert os.environ["TQDM_DISABLE"] == "1"
