"""The `rlhf` dispatcher: help lists every stage; user errors exit with status 2 and one line."""

import subprocess
import sys

from core.cli import COMMANDS, main, stage_main
from core.config import StrictModel


def test_help_lists_every_stage_command():
    out = subprocess.run([sys.executable, "-m", "core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ["sft", "reward", "rs", "ppo", "gatt", "run", "report", "eval", "toyworld"]:
        assert command in COMMANDS
        assert f"  {command} " in out.stdout


def test_stage_main_turns_config_errors_into_exit_2(tmp_path, capsys):
    class Cfg(StrictModel):
        steps: int = 1

    ran = []
    assert stage_main(["steps=3"], "x", "", Cfg, ran.append) == 0
    assert ran == [Cfg(steps=3)]
    assert stage_main(["stepz=3"], "x", "", Cfg, ran.append) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config: unknown key 'stepz'"]
    assert main([]) == 2
