"""Hardening (issue 16): no code execution from run folders, locked run folders, no silent overwrites, corruption
detected, every bad input one clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from kgdistill import cli, runs
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.errors import RunFolderError
from kgdistill.training.checkpoint import load_checkpoint


def small_config(out: Path, **training: object) -> RunConfig:
    """A run of a few seconds: TransE-8 on nations."""
    t = dict(training_mode="slcwa", epochs=2, batch_size=512, num_negatives=4, eval_every=1, patience=0, seed=5)
    t.update(training)
    return RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model="transe", dim=8),
                     training=TrainingConfig(**t), evaluation=EvaluationConfig(eval_splits=["test"]),
                     output_dir=str(out), progress=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder (with its checkpoint); tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("runs") / "run"
    runs.train(small_config(out))
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class _WritesMarker:
    """Unpickling this object calls ``open(marker, "w")``: code execution on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


# ---- 1. code execution from a checkpoint ------------------------------------------------------------------------
def test_crafted_checkpoint_is_refused_without_running_its_code(finished_run: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    ckpt_path = run / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)  # the project's own checkpoint loads the safe way
    marker = tmp_path / "pwned"
    ckpt["state"]["history"].append({"epoch": 3, "payload": _WritesMarker(marker)})
    torch.save(ckpt, ckpt_path)

    with pytest.raises(RunFolderError, match="refused to load.*could run code"):
        load_checkpoint(ckpt_path)
    assert not marker.exists()
    status = cli.main(["train", "--resume", str(run), "--epochs", "3"])
    err = capsys.readouterr().err
    assert status == 2
    assert not marker.exists()
    assert err.count("\n") == 1 and "last.pt" in err and "refused to load" in err and "Traceback" not in err


def test_damaged_checkpoint_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"\xff" * 300)
    with pytest.raises(RunFolderError, match="last.pt: checkpoint cannot be read"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(RunFolderError, match="not a kgdistill checkpoint"):
        load_checkpoint(path)
