"""The run folder of every model kind: one writer, one reader of its configuration.

Every run — a KGE training (:func:`kgdistill.runs.train`), a text bi-encoder (:func:`kgdistill.text.trainer.train_text`)
and each stage of a distillation (:func:`kgdistill.distill.stage.run_stage`) — writes its folder through a
:class:`RunWriter`::

    RUN_DIR/config.yaml        the resolved run configuration; its ``kind`` line names the model kind (kge | text)
    RUN_DIR/meta.json          versions, git revision, seed, timing
    RUN_DIR/entities.tsv       id <TAB> label <TAB> name
    RUN_DIR/relations.tsv      id <TAB> label <TAB> text
    RUN_DIR/trace.jsonl        one JSON record per event (epoch, validation, resume, ...)
    RUN_DIR/checkpoints/last.pt (+ .sha256)
    RUN_DIR/model.safetensors  final weights, with model.json and manifest.json (sha256 of both)
    RUN_DIR/metrics.json       final metrics per split

Every file is written atomically (:mod:`kgdistill.atomicio`), and only by the writing rank (``enabled``): the
writer of another rank of a multi-process run writes nothing. The folder's lock and the checks before it is created
are in :mod:`kgdistill.runfolder`.

Reading: :func:`run_kind` and :func:`read_config` dispatch on the recorded kind. Folders written before kinds were
recorded still read: a ``config.yaml`` without ``kind`` is a KGE run, unless the folder holds the
``text_config.yaml`` that text runs then wrote (their ``config.yaml`` was a stand-in KGE config).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from kgdistill.atomicio import atomic_open, atomic_write_json, atomic_write_text
from kgdistill.errors import ConfigError, RunFolderError

CONFIG_FILE = "config.yaml"
#: the text run config of text run folders written before ``config.yaml`` recorded the kind
LEGACY_TEXT_CONFIG = "text_config.yaml"
LAST_CHECKPOINT = "last.pt"


# ---- reading ---------------------------------------------------------------------------------------------------
def _recorded_kind(run_dir: Path) -> str | None:
    """The ``kind`` line of ``run_dir/config.yaml``; None when the file has none (or cannot be read here: the
    config reader then says why)."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "kind" not in data:
        return None
    from kgdistill.config import CONFIG_KINDS

    if data["kind"] not in CONFIG_KINDS:
        raise RunFolderError(f"{run_dir / CONFIG_FILE}: kind must be one of {', '.join(CONFIG_KINDS)}, "
                             f"got {data['kind']!r}")
    return str(data["kind"])


def run_kind(run_dir: str | Path) -> str:
    """The model kind of the run in ``run_dir``: ``kge`` or ``text`` (from ``config.yaml``'s ``kind``; in an older
    folder, ``text`` when it holds ``text_config.yaml``)."""
    run_dir = Path(run_dir)
    recorded = _recorded_kind(run_dir)
    if recorded is not None:
        return recorded
    return "text" if (run_dir / LEGACY_TEXT_CONFIG).is_file() else "kge"


def read_config(run_dir: str | Path, kind: str | None = None) -> Any:
    """The run configuration of ``run_dir`` as the class of its kind (:data:`kgdistill.config.CONFIG_KINDS`).

    ``kind``: the kind the caller handles; a run of another kind is refused in one line naming the command for it.
    """
    from kgdistill.config import config_class, load_yaml

    run_dir = Path(run_dir)
    recorded = _recorded_kind(run_dir)
    found = recorded or ("text" if (run_dir / LEGACY_TEXT_CONFIG).is_file() else "kge")
    if kind is not None and found != kind:
        how = "kgdistill text-train --resume" if found == "text" else "kgdistill train --resume"
        raise ConfigError(f"{run_dir}: a {found} run (not a {kind} run); it is continued with {how}")
    if recorded is None and found == "text":  # an older text run folder: its config.yaml is a stand-in
        return load_yaml(run_dir / LEGACY_TEXT_CONFIG, config_class(found))
    return load_yaml(run_dir / CONFIG_FILE, config_class(found))


def read_id_map(path: Path) -> list[str]:
    """The labels of an ``entities.tsv`` / ``relations.tsv`` (``id<TAB>label[<TAB>name]``, consecutive ids)."""
    labels = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 2 or parts[0] != str(len(labels)):
            raise RunFolderError(f"{path}:{lineno}: expected '<id><TAB><label>' with consecutive ids")
        labels.append(parts[1])
    return labels


def git_revision() -> str | None:
    """The git revision of this kgdistill checkout (None outside a git work tree)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_meta(seed: int) -> dict[str, Any]:
    """The ``meta.json`` of a run starting now: versions, platform, git revision, seed, start time."""
    import torch

    import kgdistill

    return {"kgdistill": kgdistill.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "git_revision": git_revision(), "seed": seed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---- writing ---------------------------------------------------------------------------------------------------
def write_id_maps(dataset: Any, folder: Path) -> None:
    """``entities.tsv`` / ``relations.tsv`` (``id<TAB>label<TAB>name``), each written atomically."""
    with atomic_open(Path(folder) / "entities.tsv", "w", encoding="utf-8") as f:
        for i, label in enumerate(dataset.entities):
            f.write(f"{i}\t{label}\t{dataset.entity_names.get(label, label)}\n")
    with atomic_open(Path(folder) / "relations.tsv", "w", encoding="utf-8") as f:
        for i, label in enumerate(dataset.relations):
            f.write(f"{i}\t{label}\t{dataset.relation_texts.get(label, label)}\n")


class RunWriter:
    """Writes the files of one run folder (see the module's layout); every method is a no-op when not ``enabled``
    (a rank other than 0), except reading."""

    def __init__(self, path: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._trace: Any = None

    # -- configuration, id maps, extra files
    def start(self, config: Any, dataset: Any) -> None:
        """Create the folder and write ``config.yaml`` (with its kind) and the id maps."""
        if not self.enabled:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        write_id_maps(dataset, self.path)

    def write_config(self, config: Any) -> None:
        """``config.yaml``: the run configuration (a KGE or text run config) after its ``kind`` line. An older text
        folder's ``text_config.yaml`` is removed once the new file holds its content."""
        from kgdistill.config import config_kind, save_yaml

        if not self.enabled:
            return
        kind = config_kind(config)
        save_yaml(config, self.path / CONFIG_FILE)
        if kind == "text":
            (self.path / LEGACY_TEXT_CONFIG).unlink(missing_ok=True)

    def write_text(self, name: str, text: str) -> None:
        """A further file of the run (e.g. a distillation stage's ``distill.yaml``)."""
        if self.enabled:
            atomic_write_text(self.path / name, text)

    # -- meta.json, metrics.json
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def read_meta(self) -> dict[str, Any] | None:
        """``meta.json`` as written by an earlier session, None when there is none (or it cannot be read)."""
        try:
            data = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.write_json("meta.json", meta)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        self.write_json("metrics.json", metrics)

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            atomic_write_json(self.path / name, obj)

    # -- trace, checkpoints, model
    @property
    def trace(self) -> Any:
        """The run's :class:`~kgdistill.training.trace.Trace` (writing nothing when not enabled)."""
        if self._trace is None:
            from kgdistill.training.trace import Trace

            self._trace = Trace(self.path / "trace.jsonl" if self.enabled else None)
        return self._trace

    def checkpoint_path(self, name: str = LAST_CHECKPOINT) -> Path:
        return self.path / "checkpoints" / name

    def save_checkpoint(self, state: dict[str, Any], name: str = LAST_CHECKPOINT) -> None:
        """``checkpoints/<name>``, atomically with its sha256 sidecar."""
        from kgdistill.training.checkpoint import atomic_torch_save

        if self.enabled:
            atomic_torch_save(state, self.checkpoint_path(name))

    def load_checkpoint(self, name: str = LAST_CHECKPOINT) -> dict[str, Any]:
        from kgdistill.training.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint_path(name))

    def save_model(self, model: Any) -> None:
        """``model.safetensors`` + ``model.json`` + ``manifest.json``."""
        from kgdistill.models.base import save_model

        if self.enabled:
            save_model(model, self.path)


__all__ = ["CONFIG_FILE", "LEGACY_TEXT_CONFIG", "LAST_CHECKPOINT", "RunWriter", "run_kind", "read_config",
           "read_id_map", "write_id_maps", "run_meta", "git_revision"]
