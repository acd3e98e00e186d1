"""Hardening (issue 16): no code execution from run folders, locked run folders, no silent overwrites, corruption
detected, every bad input one clear message."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kgdistill import cli, runs
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.data.datasets import load_dataset
from kgdistill.data.triples import UnseenRelationWarning
from kgdistill.errors import DataError, RunFolderError
from kgdistill.runfolder import LOCK_FILE, RunFolderLock
from kgdistill.training import loop
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
    # an attacker who can write the folder also rewrites the recorded sha256: the pickle itself must be refused
    (run / "checkpoints" / "last.pt.sha256").write_text(hashlib.sha256(ckpt_path.read_bytes()).hexdigest())

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


# ---- 2. one writer per run folder -------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path | None = None, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kgdistill", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)  # type: ignore[call-overload]


def _wait_for_lock_holder(run: Path, proc: subprocess.Popen, seconds: float = 120.0) -> int:
    lock = run / LOCK_FILE
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        text = lock.read_text().strip() if lock.exists() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the first writer never took the lock")


def test_second_writer_of_a_run_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--dataset", "nations", "--model", "transe", "--dim", "8", "--num-negatives", "4", "--eval-every",
             "0", "--eval-splits", "test", "--progress", "false", "--num-threads", "1", "--out", str(run)]
    first = _cli("train", *flags, "--epochs", "100000")
    try:
        holder = _wait_for_lock_holder(run, first)
        assert holder == first.pid
        second = _cli("train", *flags, "--epochs", "1", "--model", "distmult")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 1, err  # a failure, not bad input
        assert err.count("\n") == 1 and f"pid {first.pid}" in err and str(run) in err, err
        assert "Traceback" not in err
        assert "distmult" not in (run / "config.yaml").read_text()  # the refused run wrote nothing
        resume = _cli("train", "--resume", str(run), "--epochs", "1")
        _, err = resume.communicate(timeout=120)
        assert resume.returncode == 1 and f"pid {first.pid}" in err, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # the kernel dropped the lock with its holder: the folder can be taken again at once
    with RunFolderLock(run) as lock:
        assert lock.held and (run / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (run / LOCK_FILE).read_text() == ""  # released


def test_lock_is_released_when_training_fails_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that raises inside the library (not a dead process) must not keep its folder locked."""
    run = tmp_path / "run"

    def crash(self: loop.Trainer, epoch: int) -> dict[str, float]:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        runs.train(small_config(run))
    with RunFolderLock(run) as lock:
        assert lock.held


# ---- 3. no silent overwrites ------------------------------------------------------------------------------------
TRAIN_FAST = ["train", "--dataset", "nations", "--model", "transe", "--dim", "8", "--num-negatives", "4",
              "--eval-every", "0", "--eval-splits", "test", "--progress", "false"]


def test_train_refuses_a_folder_of_user_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {"config.yaml": "my: settings\n", "metrics.json": "{\"mine\": 1}", "entities.tsv": "a\tb\n"}
    for name, text in files.items():
        (mine / name).write_text(text)
    assert cli.main([*TRAIN_FAST, "--epochs", "1", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is not a kgdistill run folder" in err and "config.yaml" in err and err.count("\n") == 1
    assert {p.name: p.read_text() for p in mine.iterdir()} == files  # untouched, nothing added


def test_finished_epochs_0_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli.main([*TRAIN_FAST, "--epochs", "0", "--out", str(run)]) == 0
    assert not (run / "checkpoints" / "last.pt").exists()  # the case the old check missed
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_FILE}
    capsys.readouterr()
    assert cli.main([*TRAIN_FAST, "--epochs", "1", "--model", "distmult", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_FILE} == before


@pytest.mark.parametrize("below", [False, True])
def test_out_at_or_below_a_file_is_an_option_error(tmp_path: Path, below: bool,
                                                   capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep")
    out = target / "run" if below else target
    assert cli.main([*TRAIN_FAST, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "file.txt" in err and "file" in err and "Traceback" not in err and err.count("\n") == 1
    assert target.read_text() == "keep"


def test_export_never_overwrites_silently(finished_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    weights = (run / "model.safetensors").read_bytes()
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes")
    assert cli.main(["export", str(run), str(mine)]) == 2
    err = capsys.readouterr().err
    assert "exists; use --force" in err and err.count("\n") == 1
    assert mine.read_text() == "my notes"
    for own in ("model.safetensors", "model.json", "config.yaml"):
        for force in ([], ["--force"]):
            assert cli.main(["export", str(run), str(run / own), *force]) == 2
            assert "is a file of the run folder" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == weights
    assert cli.main(["export", str(run), str(mine), "--force"]) == 0
    assert mine.read_bytes()[:8] != b"my notes"
    assert cli.main(["export", str(run), str(run)]) == 0  # into the run folder under its own name: allowed
    assert (run / "run-float32.safetensors").exists()
    assert runs.load_run(run, with_dataset=False).model.state_dict().keys()


# ---- 4. corruption ----------------------------------------------------------------------------------------------
def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_model_files_have_a_manifest_and_usual_permissions(finished_run: Path) -> None:
    manifest = json.loads((finished_run / "manifest.json").read_text())
    for name in ("model.safetensors", "model.json"):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((finished_run / name).read_bytes()).hexdigest()
        assert (finished_run / name).stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert not list(finished_run.glob("*.tmp")) and not list(finished_run.glob(".*.tmp"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_overwritten_bytes_in_the_weights_are_detected(finished_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The issue's case: 0xff bytes in the middle of model.safetensors used to evaluate to a wrong MRR."""
    run = copy_run(finished_run, tmp_path / "run")
    weights = bytearray((run / "model.safetensors").read_bytes())
    mid = len(weights) // 2
    weights[mid:mid + 400] = b"\xff" * 400
    (run / "model.safetensors").write_bytes(bytes(weights))
    for argv in (["evaluate", str(run)], ["predict", str(run), "--head", "usa", "--relation", "embassy"],
                 ["export", str(run), str(tmp_path / "a.safetensors")]):
        err = _one_line_error(argv, capsys)
        assert "model.safetensors: damaged" in err and "sha256" in err
    assert not (tmp_path / "a.safetensors").exists()
    (run / "manifest.json").unlink()  # a run without a manifest (older kgdistill): the NaNs still give it away
    err = _one_line_error(["evaluate", str(run)], capsys)
    assert "model.safetensors" in err and "NaN/Inf" in err


@pytest.mark.parametrize("damage", ["truncate_weights", "garbage_weights", "truncate_json", "json_list"])
def test_malformed_model_files_are_one_message(finished_run: Path, tmp_path: Path, damage: str,
                                               capsys: pytest.CaptureFixture) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    (run / "manifest.json").unlink()  # the parse errors themselves must be clear, not only the checksum
    weights, config = run / "model.safetensors", run / "model.json"
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
    elif damage == "garbage_weights":
        weights.write_bytes(b"\x00" * 5 + b"not safetensors")
    elif damage == "truncate_json":
        config.write_text(config.read_text()[:20])
    else:
        config.write_text("[1, 2]")
    err = _one_line_error(["evaluate", str(run)], capsys)
    name = "model.safetensors" if "weights" in damage else "model.json"
    assert f"{name}" in err and "damaged" in err


def _peak_rss_kib(argv: list[str]) -> tuple[int, str]:
    """Run ``kgdistill ARGV`` in a fresh process; its peak resident memory (KiB) and its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "kgdistill", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss, f"{proc.returncode}:{err}"


def test_config_claiming_an_absurd_dim_is_refused_before_allocating(finished_run: Path, tmp_path: Path) -> None:
    """dim = 3·10^6 on nations (14 entities, 55 relations): TransE's tables would take ~0.8 GB."""
    run = copy_run(finished_run, tmp_path / "run")
    normal, _ = _peak_rss_kib(["evaluate", str(run), "--split", "valid"])
    (run / "manifest.json").unlink()
    meta = json.loads((run / "model.json").read_text())
    meta["config"]["dim"] = 3 * 10 ** 6
    (run / "model.json").write_text(json.dumps(meta))
    peak, err = _peak_rss_kib(["evaluate", str(run), "--split", "valid"])
    assert err.startswith("2:") and "model.json" in err and "do not belong together" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert peak < normal + 200_000, (peak, normal)  # KiB: nothing near 0.8 GB was allocated


def _rewrite_artifact_meta(path: Path, change: Callable[[dict], None]) -> None:
    """Change an artifact's metadata, keeping its tensors (what a hand edit or a damaged header does)."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(path))
    meta = json.loads(header["meta"])
    change(meta)
    save_file(tensors, str(path), metadata={**header, "meta": json.dumps(meta)})


def test_damaged_artifact_is_refused(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    art = tmp_path / "a.safetensors"
    assert cli.main(["export", str(finished_run), str(art)]) == 0
    assert cli.main(["load", str(art), "--head", "usa", "--relation", "embassy", "-k", "3"]) == 0
    capsys.readouterr()
    raw = bytearray(art.read_bytes())
    raw[-600:-200] = b"\xff" * 400  # inside the tensor data (the header comes first)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    err = _one_line_error(["load", str(bad), "--head", "usa", "--relation", "embassy"], capsys)
    assert "bad.safetensors: damaged" in err and "sha256" in err
    bad.write_bytes(art.read_bytes()[:-100])
    err = _one_line_error(["load", str(bad)], capsys)
    assert "bad.safetensors" in err and ("truncated" in err or "not a kgdistill artifact" in err)


def test_artifact_claiming_an_absurd_dim_is_refused(finished_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    art = tmp_path / "a.safetensors"
    assert cli.main(["export", str(finished_run), str(art)]) == 0

    def huge(meta: dict) -> None:
        meta["model_config"]["dim"] = 10 ** 6
        meta.pop("data_sha256")

    _rewrite_artifact_meta(art, huge)
    err = _one_line_error(["load", str(art)], capsys)
    assert "a.safetensors" in err and "do not belong together" in err

    def huge_shape(meta: dict) -> None:
        meta["tensors"]["entity"]["shape"][1] = 10 ** 6

    _rewrite_artifact_meta(art, huge_shape)
    err = _one_line_error(["load", str(art)], capsys)
    assert "a.safetensors" in err and "damaged" in err


def test_damaged_checkpoint_is_not_blamed_on_the_learning_rate(finished_run: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "last.pt"
    assert (run / "checkpoints" / "last.pt.sha256").read_text().split()[0] == \
        hashlib.sha256(ckpt.read_bytes()).hexdigest()
    raw = bytearray(ckpt.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 400] = b"\xff" * 400
    ckpt.write_bytes(bytes(raw))
    err = _one_line_error(["train", "--resume", str(run), "--epochs", "4"], capsys)
    assert "last.pt: damaged" in err and "lr" not in err
    # no recorded sha256 (a checkpoint of an older kgdistill): NaN weights still say "damaged", not "lower the lr"
    (run / "checkpoints" / "last.pt.sha256").unlink()
    good = torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True)
    good["model"]["entity"][3, 2] = float("nan")
    torch.save(good, ckpt)
    err = _one_line_error(["train", "--resume", str(run), "--epochs", "4"], capsys)
    assert "last.pt: damaged" in err and "'entity'" in err and "NaN/Inf" in err and "learning rate" not in err


# ---- 5. data: invisible characters, relations only in evaluation ------------------------------------------------
def _write_kg(folder: Path, train: str, valid: str = "a\tr\tb\n", test: str = "b\tr\tc\n") -> Path:
    folder.mkdir()
    (folder / "train.tsv").write_bytes(train.encode("utf-8") if isinstance(train, str) else train)
    (folder / "valid.tsv").write_text(valid, encoding="utf-8")
    (folder / "test.tsv").write_text(test, encoding="utf-8")
    return folder


def test_utf8_bom_does_not_make_a_phantom_entity(tmp_path: Path) -> None:
    folder = _write_kg(tmp_path / "kg", "\ufeffa\tr\tb\nb\tr\tc\nc\tr\ta\n")
    ds = load_dataset(str(folder))
    assert ds.entities == ["a", "b", "c"] and ds.relations == ["r"]
    (folder / "entity2text.tsv").write_bytes("\ufeffa\tAlpha\nb\tBeta\n".encode())
    assert load_dataset(str(folder)).entity_names == {"a": "Alpha", "b": "Beta"}


@pytest.mark.parametrize("line,what", [("uk \tr\tb", "head 'uk '"), ("a\t r\tb", "relation ' r'"),
                                       ("a\tr\tb\u00a0", "tail 'b\\xa0'")])
def test_whitespace_around_a_label_is_an_error_naming_file_and_line(tmp_path: Path, line: str, what: str,
                                                                    capsys: pytest.CaptureFixture) -> None:
    folder = _write_kg(tmp_path / "kg", f"a\tr\tb\n{line}\n")
    with pytest.raises(DataError, match=r"train.tsv:2: the " + re.escape(what)):
        load_dataset(str(folder))
    err = _one_line_error(["info", str(folder)], capsys)
    assert "train.tsv:2" in err and "whitespace" in err


def test_labels_only_in_valid_or_test_are_counted_and_reported(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    folder = _write_kg(tmp_path / "kg", "a\tr\tb\nb\tr\tc\n", valid="a\tr\tz\n", test="b\tonly_test\tc\n")
    with pytest.warns(UnseenRelationWarning, match="1 relation.*'only_test'"):
        ds = load_dataset(str(folder))
    assert ds.only_in_evaluation() == {"entities": ["z"], "relations": ["only_test"]}
    stats = ds.statistics()
    assert stats["entities_only_in_valid_test"] == 1 and stats["relations_only_in_valid_test"] == 1
    with pytest.warns(UnseenRelationWarning):
        assert cli.main(["info", str(folder)]) == 0
    captured = capsys.readouterr()
    assert re.search(r"relations_only_in_valid_test\s*\|\s*1", captured.out)
    assert "relations only in valid/test (never in train): only_test" in captured.out
    assert "entities only in valid/test (never in train): z" in captured.out


# ---- 6. --resume --------------------------------------------------------------------------------------------------
def test_resume_refuses_flags_it_would_ignore(finished_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    config = (run / "config.yaml").read_bytes()
    err = _one_line_error(["train", "--resume", str(run), "--lr", "99", "--dim", "3"], capsys)
    assert "--dim, --lr" in err and "--epochs" in err
    err = _one_line_error(["train", "--resume", str(run), "--set", "training.lr=5"], capsys)
    assert "--set" in err
    err = _one_line_error(["train", "--resume", str(run), "--epochs", "-5"], capsys)
    assert "--epochs -5 (epochs)" in err and "≥ 0" in err
    err = _one_line_error(["train", "--resume", str(run), "--epochs", "many"], capsys)
    assert "many" in err
    assert (run / "config.yaml").read_bytes() == config  # nothing rewritten by a refused resume
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--num-threads", "1", "--progress",
                     "false"]) == 0
    assert "epochs: 3" in (run / "config.yaml").read_text()


def test_meta_after_crash_and_resume_reports_the_whole_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    original = loop.Trainer.train_epoch

    def slow(self: loop.Trainer, epoch: int) -> dict[str, float]:
        time.sleep(0.4)
        return original(self, epoch)

    def slow_then_crash(self: loop.Trainer, epoch: int) -> dict[str, float]:
        if epoch == 4:
            raise KeyboardInterrupt
        return slow(self, epoch)

    monkeypatch.setattr(loop.Trainer, "train_epoch", slow_then_crash)
    with pytest.raises(KeyboardInterrupt):
        runs.train(small_config(run, epochs=6, eval_every=0))
    started = json.loads((run / "meta.json").read_text())["started"]
    time.sleep(1.1)  # the resume starts in another second than the run
    monkeypatch.setattr(loop.Trainer, "train_epoch", slow)
    runs.resume(run)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["started"] == started and len(meta["resumed"]) == 1 and meta["resumed"][0] != started
    assert meta["train_seconds"] >= 6 * 0.4  # epochs 1-3 before the crash, 4-6 after
    assert json.loads((run / "metrics.json").read_text())["train_seconds"] == meta["train_seconds"]


# ---- 7. options: one message, exit 2, before any folder ---------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--dim", "0"], "--dim 0 (dim): expected an integer ≥ 1"),
    (["--dim", "-5"], "--dim -5"),
    (["--lr", "nan"], "--lr nan (lr): expected a finite number > 0"),
    (["--lr", "-0.1"], "--lr -0.1"),
    (["--num-negatives", "0"], "--num-negatives 0"),
    (["--eval-batch-size", "0"], "--eval-batch-size 0"),
    (["--margin", "nan"], "--margin nan"),
    (["--label-smoothing", "2"], "--label-smoothing 2.0 (label_smoothing): expected a number in [0, 1)"),
    (["--epochs", "-5"], "--epochs -5"),
    (["--model-options", "{{{"], "model_options: cannot read '{{{' as a YAML mapping"),
    (["--training-mode", "1vsAll"], "--training-mode '1vsAll' (training_mode): unknown"),
    (["--optimizer", "adamm"], "Did you mean 'adam'"),
    (["--data-dir", "no/such/folder"], "--data-dir no/such/folder: does not exist"),
    (["--device", "cuda"], "--device cuda:"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_option_is_one_message_before_any_folder(flags: list[str], message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA machine: --device cuda is valid here")
    out = tmp_path / "run"
    err = _one_line_error([*TRAIN_FAST, "--epochs", "1", "--out", str(out), *flags], capsys)
    assert message in err, err
    assert not out.exists()  # no folder, no config.yaml left behind


def test_binary_config_file_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    err = _one_line_error([*TRAIN_FAST, "--config", str(config), "--out", str(tmp_path / "run")], capsys)
    assert "config.yaml" in err and "not a YAML text file" in err
    err = _one_line_error([*TRAIN_FAST, "--config", str(tmp_path), "--out", str(tmp_path / "run")], capsys)
    assert "cannot read the config file" in err
    assert not (tmp_path / "run").exists()


def test_data_dir_is_stored_as_an_absolute_path(tmp_path: Path, shared_data_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from kgdistill.validate import validate_config

    monkeypatch.chdir(shared_data_dir.parent)
    config = replace(small_config(tmp_path / "run"), data=DataConfig(dataset="wn18rr", data_dir=shared_data_dir.name))
    assert validate_config(config).data.data_dir == str(shared_data_dir.resolve())


@pytest.mark.parametrize("flags,message", [(["--threads", "-1"], "--threads -1 (threads): expected an integer ≥ 1"),
                                           (["--port", "99999"], "--port 99999: expected a TCP port"),
                                           (["--port", "-1"], "--port -1")])
def test_bad_serve_option_is_one_message(flags: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    err = _one_line_error(["serve", str(tmp_path / "missing.safetensors"), *flags], capsys)
    assert message in err


@pytest.mark.parametrize("argv", [["info", "wn18rr"], ["datasets"]])
def test_missing_data_dir_is_an_error_not_a_fallback(argv: list[str], tmp_path: Path, shared_data_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("KGDISTILL_DATA", str(shared_data_dir))  # where the old code silently looked instead
    err = _one_line_error([*argv, "--data-dir", str(tmp_path / "nope")], capsys)
    assert "--data-dir" in err and "nope: does not exist" in err


# ---- 8. the service ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kgdistill.export import export_run

    return export_run(finished_run, tmp_path_factory.mktemp("art") / "a.safetensors")


def test_slow_clients_do_not_stall_the_service(artifact: Path) -> None:
    """The issue's stall: 520 sockets that never finish their headers made every other client get 503. Real
    sockets against a real server on 127.0.0.1; the load stops by itself after 4 s."""
    pytest.importorskip("uvicorn")
    from kgdistill.export import load_artifact
    from kgdistill.serve.app import create_app
    from kgdistill.serve.loadtest import slow_client_load
    from kgdistill.serve.server import ServerThread

    with ServerThread(create_app(load_artifact(artifact)), request_timeout=2.0) as server:
        result = slow_client_load("127.0.0.1", server.port, slow=520, seconds=4.0, clients=2,
                                  query={"head": "usa", "relation": "embassy", "k": 3})
    assert result["slow_sockets"] == 520
    assert result["answered_2xx"] >= 50 and result["other_status"] == {} and result["errors"] == {}, result
    assert result["p99_s"] < 1.0, result
    assert result["slow_closed_by_server"] == 520, result  # the request deadline closed every one of them


def test_connection_cap_closes_the_oldest_waiting_connection(artifact: Path) -> None:
    pytest.importorskip("uvicorn")
    from kgdistill.export import load_artifact
    from kgdistill.serve.app import create_app
    from kgdistill.serve.loadtest import PARTIAL_REQUEST
    from kgdistill.serve.server import ServerThread

    with ServerThread(create_app(load_artifact(artifact)), request_timeout=60.0, max_connections=20) as server:
        slow = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(PARTIAL_REQUEST)
            slow.append(s)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        time.sleep(0.3)
        closed = 0
        for s in slow:
            s.settimeout(0.05)
            try:
                closed += s.recv(10) == b""
            except TimeoutError:
                pass
            s.close()
    assert closed >= 10, closed  # the oldest ones went; the first of them in the order they came


def test_500_body_tells_nothing_of_the_internals(artifact: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("fastapi")
    import httpx

    from kgdistill.export import load_artifact
    from kgdistill.serve.app import create_app

    app = create_app(load_artifact(artifact))

    def crash() -> dict:
        raise RuntimeError("secret path /srv/private/key.pem")

    monkeypatch.setattr(app.state.scorer.stats, "as_dict", crash)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/metadata")

    import asyncio

    with caplog.at_level("ERROR", logger="kgdistill.serve.app"):
        r = asyncio.run(get())
    assert r.status_code == 500
    assert "secret" not in r.text and "RuntimeError" not in r.text and "internal error (reference" in r.text
    assert "secret path" in caplog.text  # the log keeps the details


def test_docs_work_offline(artifact: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from kgdistill.export import load_artifact
    from kgdistill.serve.app import create_app

    with TestClient(create_app(load_artifact(artifact))) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
        js = client.get("/docs-assets/swagger-ui-bundle.js")
        css = client.get("/docs-assets/swagger-ui.css")
        assert js.status_code == 200 and len(js.content) > 100_000 and css.status_code == 200


# ---- 9. smaller items -------------------------------------------------------------------------------------------
def test_close_matches_name_each_candidate_once() -> None:
    from kgdistill.data.triples import KGDataset
    from kgdistill.predict import UnknownEntityError, entity_id
    from kgdistill.registry import suggest

    assert suggest("transee", ["transe", "TransE", "rotate", "transe"]) == " Did you mean 'transe'?"
    ds = KGDataset.from_labeled("kg", {"train": [("usa", "r", "uk"), ("uk", "r", "ussr")], "valid": [], "test": []},
                                entity_names={"usa": "usa", "uk": "uk", "ussr": "ussr"})
    with pytest.raises(UnknownEntityError) as err:
        entity_id(ds, "usaa")
    assert str(err.value).count("'usa'") == 1, err.value


def test_unknown_registry_name_is_one_message_everywhere(capsys: pytest.CaptureFixture) -> None:
    err = _one_line_error(["distill", "--method", "kdd", "--teacher", "nowhere"], capsys)
    assert "unknown distillation method 'kdd'" in err and "Did you mean 'kd'" in err


def test_kernel_cache_never_falls_back_to_a_predictable_shared_path(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from kgdistill.kernels import _build

    predictable = Path(tempfile.gettempdir()) / f"kgdistill-kernels-{os.getuid()}"
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    monkeypatch.setattr(_build, "_private_dir", None)
    monkeypatch.setenv("KGDISTILL_KERNEL_CACHE", str(blocker / "cache"))  # cannot be created
    folder = _build._writable_dir()
    assert folder != predictable and folder.name.startswith("kgdistill-kernels-")
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.getuid()
    assert _build._writable_dir() == folder  # one private folder per process
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant a library here
    monkeypatch.setenv("KGDISTILL_KERNEL_CACHE", str(shared))
    assert _build._writable_dir() == folder
    planted = tmp_path / "own" / "kgdistill_kernels_x.so"
    planted.parent.mkdir()
    planted.write_bytes(b"\x7fELF")
    planted.chmod(0o666)
    assert not _build._trusted(planted)
    planted.chmod(0o644)
    assert _build._trusted(planted)
    folder.rmdir()


def test_atomic_writes_keep_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from kgdistill.atomicio import atomic_open, atomic_write_json, commit_files

    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"mrr": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"mrr": 0.')
            raise RuntimeError("disk full")  # a crash mid-write
    assert json.loads(path.read_text()) == {"mrr": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(FileNotFoundError):  # the second file cannot be written: the first is not replaced either
        commit_files({path: b"new", tmp_path / "missing" / "model.json": b"x"})
    assert json.loads(path.read_text()) == {"mrr": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_text_resume_refuses_flags_it_would_ignore(finished_run: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("transformers")
    err = _one_line_error(["text-train", "--resume", str(finished_run), "--lr", "3"], capsys)
    assert "--lr cannot change them" in err
    err = _one_line_error(["text-train", "--resume", str(finished_run), "--epochs", "x"], capsys)
    assert "cannot read 'x' as int" in err


@pytest.mark.parametrize("body,headers,status,message", [
    (b"\xff\xfe{", {"content-type": "application/json"}, 400, "not valid UTF-8 (byte 0xff at position 0)"),
    (b"[1, 2]", {"content-type": "application/json"}, 422, "the body must be a JSON object"),
    (b'{"head": "usa", "relation": "ngo"}', {"content-type": "text/plain"}, 422,
     "sent with Content-Type: application/json (got text/plain)"),
])
def test_bad_bodies_get_a_precise_message(artifact: Path, body: bytes, headers: dict, status: int,
                                          message: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from kgdistill.export import load_artifact
    from kgdistill.serve.app import create_app

    with TestClient(create_app(load_artifact(artifact))) as client:
        r = client.post("/predict/tail", content=body, headers=headers)
        assert r.status_code == status and message in r.json()["detail"], r.text
        assert client.get("/predict/tail").headers["allow"] == "POST"  # other HTTP errors as before


def test_a_body_that_never_completes_is_cut_a_keep_alive_request_is_not(artifact: Path) -> None:
    pytest.importorskip("uvicorn")
    from kgdistill.export import load_artifact
    from kgdistill.serve.app import create_app
    from kgdistill.serve.server import ServerThread

    with ServerThread(create_app(load_artifact(artifact)), request_timeout=1.0) as server:
        slow_body = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow_body.sendall(b"POST /predict/tail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"head\": ")  # 9 of the 100 bytes announced
        keep = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        ports = set()
        for _ in range(4):  # a well-behaved keep-alive client: each request within the deadline, on one connection
            keep.request("POST", "/predict/tail", body=b'{"head": "usa", "relation": "embassy", "k": 2}',
                         headers={"Content-Type": "application/json"})
            assert keep.getresponse().read()
            ports.add(keep.sock.getsockname()[1])
            time.sleep(0.4)
        assert len(ports) == 1  # 1.6 s on one connection: each request got its own deadline
        slow_body.settimeout(3)
        assert slow_body.recv(100) == b""  # closed at the deadline, without an answer
        keep.close()
        slow_body.close()


def test_distill_stage_keeps_its_start_across_crash_and_resume(finished_run: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kgdistill.distill.api import distill

    original = loop.Trainer.train_epoch

    def crash_at_2(self: loop.Trainer, epoch: int) -> dict[str, float]:
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(loop.Trainer, "train_epoch", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        distill("kd", finished_run, tmp_path / "kd", dims=[4], epochs=3, with_teacher_row=False)
    stage = tmp_path / "kd" / "kd-4"
    started = json.loads((stage / "meta.json").read_text())["started"]
    time.sleep(1.1)
    monkeypatch.setattr(loop.Trainer, "train_epoch", original)
    distill("kd", finished_run, tmp_path / "kd", dims=[4], epochs=3, with_teacher_row=False, resume=True)
    meta = json.loads((stage / "meta.json").read_text())
    assert meta["started"] == started and meta["resumed"] is True and meta["epochs_done"] == 3


def test_bad_option_with_nproc_is_one_message_before_the_launch(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    err = _one_line_error([*TRAIN_FAST, "--nproc", "2", "--dim", "0", "--out", str(tmp_path / "run")], capsys)
    assert "--dim 0" in err and "rank" not in err
    assert not (tmp_path / "run").exists()
