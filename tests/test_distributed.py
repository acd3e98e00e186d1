"""Two processes (gloo, CPU) under torchrun: sharded evaluation, data-parallel training, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgdistill.cli import main, strip_nproc
from kgdistill.distributed import shard_bounds

TRAIN = ["train", "--dataset", "nations", "--model", "complex", "--dim", "16", "--training-mode", "1vsall",
         "--optimizer", "adagrad", "--lr", "0.1", "--regularizer", "n3", "--regularizer-weight", "0.005",
         "--epochs", "6", "--batch-size", "256", "--eval-every", "3", "--patience", "0", "--progress", "false"]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "kgdistill.cli", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_shard_bounds_cover_everything_once() -> None:
    for n in (0, 1, 5, 10, 11):
        for world in (1, 2, 3):
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def test_strip_nproc() -> None:
    assert strip_nproc(["train", "--nproc", "2", "--epochs", "3", "--nproc=4"]) == ["train", "--epochs", "3"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "single"
    torch.set_num_threads(1)
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def test_two_process_training_matches_one_process(single_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    proc = torchrun([*TRAIN, "--out", str(out)])
    assert proc.stdout.count("run folder:") == 1  # only rank 0 prints
    one = json.loads((single_run / "metrics.json").read_text())["test"]["both"]
    two = json.loads((out / "metrics.json").read_text())["test"]["both"]
    # 1vsAll has no sampling: the averaged gradients of two half batches equal the full batch's gradient,
    # up to float summation order
    assert two["mrr"] == pytest.approx(one["mrr"], abs=0.01)
    assert json.loads((out / "meta.json").read_text())["processes"] == 2


def test_sharded_evaluation_equals_single_process(single_run: Path, tmp_path: Path) -> None:
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    assert main(["evaluate", str(single_run), "--split", "valid", "test", "--per-relation",
                 "--json", str(single)]) == 0
    torchrun(["evaluate", str(single_run), "--split", "valid", "test", "--per-relation", "--json", str(sharded)])
    assert json.loads(sharded.read_text()) == json.loads(single.read_text())


def test_two_process_slcwa_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "slcwa"
    args = ["train", "--dataset", "nations", "--model", "transe", "--dim", "16", "--epochs", "2", "--batch-size",
            "256", "--num-negatives", "8", "--lr", "0.01", "--margin", "6", "--eval-every", "0", "--progress",
            "false", "--out", str(out)]
    torchrun(args)
    torchrun(["train", "--resume", str(out), "--epochs", "4"])
    epochs = [json.loads(line)["epoch"] for line in (out / "trace.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert len(ckpt["sample_generators"]) == 2 and ckpt["state"]["epoch"] == 4


FAILING_RANK_SCRIPT = '''
import os, sys
from kgdistill.cli import main
from kgdistill.errors import KGDistillError
from kgdistill.training import loop

original = loop.Trainer.train_epoch

def train_epoch(self, epoch):
    if epoch == 2 and os.environ["RANK"] == "1":
        raise KGDistillError("simulated failure on this rank")
    return original(self, epoch)

loop.Trainer.train_epoch = train_epoch
sys.exit(main(sys.argv[1:]))
'''


def test_a_failing_rank_stops_the_job_with_a_clear_message(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
           *TRAIN, "--epochs", "4", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode != 0
    assert "rank 1: error: simulated failure on this rank" in proc.stderr
