"""The command line: help for every command, one-line errors, `python -m vinstruct`."""

import subprocess
import sys

import pytest

from vinstruct.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_real_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"vinstruct {command}" in out and "not implemented" not in out.lower()


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "vinstruct", "--help"], capture_output=True, text=True, check=True)
    assert "commands:" in out.stdout


def test_info_on_a_checkpoint_and_a_clear_error_on_a_bad_path(tiny_checkpoint, tmp_path, capsys):
    assert main(["info", str(tiny_checkpoint), "--json"]) == 0
    assert '"projector": "mlp2x_gelu"' in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
