"""Progress bars only on a terminal, per-epoch log lines everywhere, the same --progress / --no-progress flags."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from kgdistill.cli import parse_args

TRAIN = ["train", "--dataset", "nations", "--model", "distmult", "--dim", "8", "--epochs", "3", "--eval-every", "2",
         "--patience", "0", "--eval-splits", "test", "--batch-size", "64", "--num-threads", "1"]


def run_cli(args: list[str], stderr_to: Path | None = None, terminal: bool = False) -> bytes:
    """Run ``kgdistill ARGS`` in a new process; stderr goes to a file, or to a pseudo-terminal (returns what was
    written there)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "100"}
    if terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100 (a new pty: 0 x 0)
        proc = subprocess.Popen([sys.executable, "-m", "kgdistill.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(timeout=600) == 0, b"".join(chunks)[-2000:]
        return b"".join(chunks)
    assert stderr_to is not None
    with open(stderr_to, "wb") as err:
        proc = subprocess.run([sys.executable, "-m", "kgdistill.cli", *args], stdout=subprocess.DEVNULL, stderr=err,
                              env=env, timeout=600, check=False)
    written = stderr_to.read_bytes()
    assert proc.returncode == 0, written[-2000:]
    return written


def test_train_into_a_log_file_writes_lines_not_bar_frames(tmp_path: Path) -> None:
    log = run_cli([*TRAIN, "--out", str(tmp_path / "run")], stderr_to=tmp_path / "stderr.log").decode()
    assert "\r" not in log  # no bar frames (the default is --progress: bars only on a terminal)
    lines = log.splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in lines if " loss " in line] == \
        ["epoch 1", "epoch 2", "epoch 3"]
    assert sum("validation MRR" in line for line in lines) == 2  # epoch 2 (eval_every) and the last epoch


def test_distill_into_a_log_file_writes_lines_not_bar_frames(tmp_path: Path) -> None:
    run_cli([*TRAIN, "--out", str(tmp_path / "teacher")], stderr_to=tmp_path / "train.log")
    log = run_cli(["distill", "--method", "kd", "--teacher", str(tmp_path / "teacher"), "--dims", "4", "--epochs",
                   "2", "--eval-every", "0", "--threads", "1", "--out", str(tmp_path / "kd")],
                  stderr_to=tmp_path / "distill.log").decode()
    assert "\r" not in log
    assert sum(" loss " in line for line in log.splitlines()) == 2


def test_bars_are_drawn_on_a_terminal_unless_switched_off(tmp_path: Path) -> None:
    shown = run_cli([*TRAIN, "--out", str(tmp_path / "a")], terminal=True)
    assert b"batch/s" in shown and b"epoch 1: loss" in shown
    for off in (["--no-progress"], ["--progress", "false"]):
        quiet = run_cli([*TRAIN, *off, "--out", str(tmp_path / off[-1])], terminal=True)
        assert b"batch/s" not in quiet and b"it/s" not in quiet
        assert b"validation MRR" in quiet  # the log lines stay


@pytest.mark.parametrize("verb", [["train"], ["text-train"], ["text-distill"], ["distill", "--method", "kd",
                                  "--teacher", "T"], ["evaluate", "RUN"], ["reference", "run", "NAME", "--out", "O"],
                                  ["demo"], ["hpo", "--space", "S", "--trials", "1", "--storage", "sqlite://"],
                                  ["benchmark", "--teacher", "T", "--methods", "kd", "--dims", "8", "--out", "O"]])
def test_every_verb_takes_progress_and_no_progress(verb: list[str]) -> None:
    values = []
    for flags in ([], ["--progress"], ["--no-progress"], ["--progress", "true"], ["--progress", "false"]):
        args = parse_args([*verb, *flags])
        value = getattr(args, "cfg_progress", None) if hasattr(args, "cfg_progress") else args.progress
        values.append(str(value).lower())
    # None: the config's default; demo and hpo: off unless asked (the demo prints a table, hpo a line per trial)
    default = {"train": "none", "text-train": "none", "text-distill": "none", "demo": "false", "hpo": "false"}.get(
        verb[0], "true")
    assert values == [default, "true", "false", "true", "false"]


def test_text_train_into_a_log_file_writes_one_line_per_epoch(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import importlib.resources
    import shutil

    bundled = Path(str(importlib.resources.files("kgdistill.data").joinpath("bundled", "umls")))
    data = tmp_path / "umls_small"
    data.mkdir()
    for name in ("train.tsv", "entity2text.tsv", "relation2text.tsv"):
        shutil.copy(bundled / name, data / name)
    for split in ("valid", "test"):
        (data / f"{split}.tsv").write_text("\n".join((bundled / f"{split}.tsv").read_text().splitlines()[:10]) + "\n")
    log = run_cli(["text-train", "--dataset", str(data), "--plm", "tiny:layers=1,hidden=16,heads=2,intermediate=32",
                   "--max-length", "12", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16",
                   "--eval-every", "1", "--eval-splits", "test", "--num-threads", "1", "--progress",
                   "--out", str(tmp_path / "text")], stderr_to=tmp_path / "text.log").decode()
    assert "\r" not in log
    epochs = [line for line in log.splitlines() if " loss " in line]
    assert len(epochs) == 2 and all("validation MRR" in line for line in epochs)
