"""The `scaling` dispatcher: its table names the module that owns each subcommand (parser and
handler together), and building the parser or planning a sweep never imports JAX."""

from __future__ import annotations

import argparse
import subprocess
import sys

from scaling import cli


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _handlers(parser: argparse.ArgumentParser) -> list:
    """The handler of this (sub)command, or of each of its leaves."""
    nested = _subcommands(parser)
    if not nested:
        return [parser.get_default("handler")]
    return [h for p in nested.values() for h in _handlers(p)]


def test_the_table_lists_every_subcommand_in_help_order():
    assert list(_subcommands(cli.build_parser())) == list(cli.commands())


def test_each_handler_lives_in_the_module_the_table_names():
    parsers = _subcommands(cli.build_parser())
    for name, module in cli.commands().items():
        handlers = _handlers(parsers[name])
        assert handlers and all(callable(h) for h in handlers), name
        assert {h.__module__ for h in handlers} == {module.__name__}, name


def test_help_and_plan_import_no_jax():
    """`scaling --help`, the train and mup-check parsers and `scaling sweep plan demo` load
    no JAX (their handlers import it when a run starts)."""
    code = (
        "import contextlib, io, sys\n"
        "from scaling.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['mup-check', '--help'],"
        " ['sweep', 'plan', 'demo']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            assert main(argv) == 0, argv\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, argv\n"
        "bad = [m for m in ('jax', 'flax', 'optax', 'orbax', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _help(*path: str) -> str:
    parser = cli.build_parser()
    for name in path:
        parser = _subcommands(parser)[name]
    return " ".join(parser.format_help().split())  # argparse wraps at the terminal width


def test_help_shows_each_default_once_and_none_where_there_is_none():
    run = _help("sweep", "run")
    assert "wall-time limit per run (default 240)" in run
    assert "array tasks running at once (default 64)" in run
    assert "memory per node in GiB --" in run.replace("GiB (", "")  # default None: nothing
    assert "bootstrap seed (default 0)" in _help("analyze")  # 0 is a default, not "off"
    assert "Adam updates per probe (default 5)" in _help("mup-check")
    every = [_help(name) for name in cli.commands()]
    assert not any("(default None)" in h or "(default False)" in h for h in every)
    # a help text that states its default already gets no second one
    parser = _subcommands(cli.build_parser())["analyze"]
    fmt = parser._get_formatter()
    helps = [fmt._expand_help(a) for a in parser._actions if a.help]
    assert "bootstrap resamples (default 4000)" in helps
    assert all(h.lower().count("default") <= 1 for h in helps)


def test_options_without_a_help_text_still_show_their_default():
    """argparse prints nothing after an option without a help text, so its default was hidden
    (`ablate --ffn-order`, `compare --n-kind`, `sweep run --backend`, `mup-check --batch`)."""
    assert "--ffn-order {greedy,gradient} default greedy" in _help("ablate")
    assert "--n-kind {total,nonembed} default total" in _help("compare")
    assert "--backend {local,slurm} default local" in _help("sweep", "run")
    assert "--batch BATCH default 16" in _help("mup-check")
    assert "--model-type {bpe,unigram} default bpe" in _help("tokenizer", "train")
    every = [_help(name) for name in cli.commands()]
    assert not any("(default None)" in h or "default False" in h for h in every)
