"""Experiment trackers (TensorBoard, MLflow, CSV), fed from the records every run writes to its ``trace.jsonl``::

    from kgdistill.tracking import tracking

    with tracking(["tensorboard", "mlflow"]):          # or kgdistill.train(..., trackers=["mlflow"])
        kgdistill.train("kinship", "runs/teacher", model="complex", dim=64, epochs=60)

While a session is open, every record a :class:`~kgdistill.training.trace.Trace` writes in this context (per-epoch
losses, validation metrics, distillation records, early stops, resumes, text-model steps) reaches each tracker,
keyed by its run folder. Every run folder is one tracker run: opened at its first record with the folder's resolved
configuration as parameters (``config.yaml``, and ``distill.yaml`` / ``text_config.yaml`` where present), closed
when the session ends with the folder's final metrics (``metrics.json``) and, for MLflow, the run folder as
artifacts (without ``checkpoints/``). A distillation writes one tracker run per stage.

Metric names: ``<event>/<field>`` (``epoch/loss``, ``validation/mrr``, ``distill/soft``...) at step = the record's
``step`` or ``epoch``; final metrics ``<split>/<metric>`` (``test/mrr``, ``test/hits@10``; ``test/head/mrr`` per
side) and the scalar ones by name (``num_parameters``, ``train_seconds``). MLflow spells ``@`` as ``_at_``.

Backends (``pip install 'kgdistill[tracking]'`` for the first two):

* ``tensorboard``: event files in ``RUN/tensorboard/`` (``tensorboard --logdir runs/``), the config as text and
  hyper-parameters with the final metrics (HParams tab).
* ``mlflow``: any tracking URI (``--tracker-uri``; default ``$MLFLOW_TRACKING_URI``, else a SQLite store
  ``sqlite:///mlflow.db`` in the current folder, artifacts next to it in ``mlartifacts/``); experiment
  ``$MLFLOW_EXPERIMENT_NAME`` or ``kgdistill``.
* ``csv``: ``RUN/metrics.csv`` with one row per value (``time,event,step,name,value``); no dependency.

A tracker whose library is missing, an unknown tracker name or a tracking URI that cannot be reached is a
:class:`~kgdistill.errors.ConfigError` raised when the session opens, before any training.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kgdistill.errors import ConfigError
from kgdistill.registry import suggest
from kgdistill.training.trace import LISTENERS

TRACKERS = ("tensorboard", "mlflow", "csv")
#: the files of a run folder read as its parameters (name -> parameter prefix)
PARAM_FILES = {"config.yaml": "", "distill.yaml": "distill.", "text_config.yaml": "text."}
#: what the MLflow artifacts of a run folder leave out
ARTIFACT_EXCLUDE = ("checkpoints", ".kgdistill.lock")
DEFAULT_EXPERIMENT = "kgdistill"
CSV_FILE = "metrics.csv"
TENSORBOARD_FOLDER = "tensorboard"
_SKIP_FIELDS = ("event", "time", "epoch", "step")

log = logging.getLogger(__name__)


# ---- records -> values -------------------------------------------------------------------------------------------
def record_step(record: dict[str, Any]) -> int:
    """The step of a trace record: its ``step`` when it has one, else its ``epoch`` (0 without either)."""
    for key in ("step", "epoch"):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return 0


def record_values(record: dict[str, Any]) -> dict[str, float]:
    """``{"<event>/<field>": value}`` of a record's finite numbers (booleans as 0/1; nested mappings by path)."""
    event = str(record.get("event", "event"))
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _SKIP_FIELDS:
            continue
        out.update(_numbers(f"{event}/{key}", value))
    return out


def _numbers(prefix: str, value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(_numbers(f"{prefix}/{k}", v))
        return out
    if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
        return {prefix: float(value)}
    return {}


def final_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The final metrics of ``metrics.json``: ``<split>/<metric>`` for both sides, ``<split>/<side>/<metric>`` per
    side, other numbers by name."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and "both" in value:
            for side, numbers in value.items():
                prefix = key if side == "both" else f"{key}/{side}"
                out.update(_numbers(prefix, numbers))
        else:
            out.update(_numbers(key, value))
    return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": value}`` (lists and scalars are values)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def run_params(run_dir: Path) -> dict[str, Any]:
    """The resolved configuration of a run folder as flat parameters (``model.dim``, ``training.lr``, ...)."""
    params: dict[str, Any] = {}
    for name, prefix in PARAM_FILES.items():
        path = run_dir / name
        if not path.exists():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if name == "distill.yaml" and isinstance(data.get("config"), dict):
            data = {**{k: v for k, v in data.items() if k != "config"}, **data["config"]}
        if isinstance(data, dict):
            params.update({f"{prefix}{k}": v for k, v in flatten(data).items()})
    return params


# ---- backends ----------------------------------------------------------------------------------------------------
class Tracker:
    """A tracker backend: one tracker run per run folder. Subclass it (and pass the instance) to add one."""

    name = "tracker"

    def start(self, run_dir: Path, params: dict[str, Any], first: dict[str, Any]) -> None:
        """A run folder's first record (``first``) arrived; ``params``: its resolved configuration."""

    def log(self, run_dir: Path, record: dict[str, Any], values: dict[str, float], step: int) -> None:
        """One trace record and its numbers (``values``) at ``step``."""

    def finish(self, run_dir: Path, final: dict[str, float], step: int, failed: bool) -> None:
        """The session ends: the run folder's final metrics (empty when it has none); ``failed``: by an error."""

    def close(self) -> None:
        """After every run folder is finished."""


class CSVTracker(Tracker):
    """``RUN/metrics.csv``: ``time,event,step,name,value``, one row per number; a resume drops the later rows."""

    name = "csv"
    COLUMNS = ("time", "event", "step", "name", "value")

    def start(self, run_dir: Path, params: dict[str, Any], first: dict[str, Any]) -> None:
        path = run_dir / CSV_FILE
        if first.get("event") == "resume" and path.exists():  # the steps redone after a crash are logged again
            limit = record_step(first)
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if _int(r.get("step")) <= limit]
            self._write(path, rows, "w")
        elif not path.exists():
            self._write(path, [], "w")

    def log(self, run_dir: Path, record: dict[str, Any], values: dict[str, float], step: int) -> None:
        when = record.get("time", round(time.time(), 3))
        self._write(run_dir / CSV_FILE, [{"time": when, "event": record.get("event"), "step": step, "name": k,
                                          "value": repr(v)} for k, v in values.items()], "a")

    def finish(self, run_dir: Path, final: dict[str, float], step: int, failed: bool) -> None:
        when = round(time.time(), 3)
        self._write(run_dir / CSV_FILE, [{"time": when, "event": "final", "step": step, "name": k, "value": repr(v)}
                                         for k, v in final.items()], "a")

    def _write(self, path: Path, rows: list[dict[str, Any]], mode: str) -> None:
        with open(path, mode, newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.COLUMNS)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class TensorBoardTracker(Tracker):
    """Event files in ``RUN/tensorboard/`` through ``torch.utils.tensorboard.SummaryWriter``."""

    name = "tensorboard"

    def __init__(self) -> None:
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self._writer_cls = SummaryWriter
        self.writers: dict[Path, Any] = {}
        self.params: dict[Path, dict[str, Any]] = {}

    def start(self, run_dir: Path, params: dict[str, Any], first: dict[str, Any]) -> None:
        purge = record_step(first) + 1 if first.get("event") == "resume" else None
        writer = self._writer_cls(log_dir=str(run_dir / TENSORBOARD_FOLDER), purge_step=purge)
        self.writers[run_dir] = writer
        self.params[run_dir] = params
        if purge is None and params:
            writer.add_text("config", "```\n" + yaml.safe_dump(_unflatten(params), sort_keys=False) + "```", 0)

    def log(self, run_dir: Path, record: dict[str, Any], values: dict[str, float], step: int) -> None:
        writer = self.writers[run_dir]
        when = record.get("time")
        for key, value in values.items():
            writer.add_scalar(key, value, step, walltime=when)
        writer.flush()

    def finish(self, run_dir: Path, final: dict[str, float], step: int, failed: bool) -> None:
        writer = self.writers.pop(run_dir)
        for key, value in final.items():
            writer.add_scalar(f"final/{key}", value, step)
        if final:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                       for k, v in self.params.get(run_dir, {}).items()}
            writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in final.items()}, run_name=".")
        writer.close()


def _unflatten(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        *parents, last = key.split(".")
        target = out
        for p in parents:
            target = target.setdefault(p, {}) if isinstance(target.get(p, {}), dict) else target
        target[last] = value
    return out


_MLFLOW_NAME = re.compile(r"[^A-Za-z0-9_\-. :/]")


def mlflow_key(key: str) -> str:
    """A metric / parameter name MLflow accepts (``hits@10`` -> ``hits_at_10``; other characters -> ``_``)."""
    return _MLFLOW_NAME.sub("_", key.replace("@", "_at_"))


class MLflowTracker(Tracker):
    """One MLflow run per run folder (run name: the folder's name; tags: its path, method and stage)."""

    name = "mlflow"

    def __init__(self, uri: str | None = None, experiment: str | None = None) -> None:
        require("mlflow", "mlflow")
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        check_tracking_uri(self.uri)
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(self.experiment,
                                                                   artifact_location=_artifact_location(self.uri))
            else:
                self.experiment_id = found.experiment_id
        except Exception as err:  # noqa: BLE001 - any store failure is one line before training starts
            raise ConfigError(f"--tracker-uri {self.uri}: MLflow cannot use this tracking store "
                              f"({_first_line(err)})") from None
        self.runs: dict[Path, str] = {}

    def start(self, run_dir: Path, params: dict[str, Any], first: dict[str, Any]) -> None:
        from mlflow.entities import Param

        tags = {"kgdistill.run_dir": str(run_dir.resolve()), "mlflow.source.name": "kgdistill"}
        for key in ("distill.method", "distill.stage", "distill.teacher", "data.dataset", "model.model"):
            if params.get(key) is not None:
                tags[f"kgdistill.{key.split('.')[-1]}"] = str(params[key])
        if first.get("event") == "resume":
            tags["kgdistill.resumed_at"] = str(record_step(first))
        run = self.client.create_run(self.experiment_id, run_name=run_dir.name, tags=tags)
        self.runs[run_dir] = run.info.run_id
        items = [Param(mlflow_key(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])

    def log(self, run_dir: Path, record: dict[str, Any], values: dict[str, float], step: int) -> None:
        when = int(float(record.get("time", time.time())) * 1000)
        self._metrics(self.runs[run_dir], values, step, when)

    def _metrics(self, run_id: str, values: dict[str, float], step: int, when: int) -> None:
        from mlflow.entities import Metric

        items = [Metric(mlflow_key(k), v, when, step) for k, v in values.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def finish(self, run_dir: Path, final: dict[str, float], step: int, failed: bool) -> None:
        run_id = self.runs.pop(run_dir)
        try:
            self._metrics(run_id, final, step, int(time.time() * 1000))
            for entry in sorted(run_dir.iterdir()):
                if entry.name in ARTIFACT_EXCLUDE:
                    continue
                if entry.is_dir():
                    self.client.log_artifacts(run_id, str(entry), artifact_path=entry.name)
                elif entry.is_file():
                    self.client.log_artifact(run_id, str(entry))
        finally:
            self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]


def _artifact_location(uri: str) -> str | None:
    """For a local SQLite store: ``mlartifacts/`` next to the database file (MLflow's default is the current
    folder's ``mlruns/``); None (the store's default) otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    if str(db) in ("", ":memory:"):
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def require(package: str, tracker: str) -> None:
    """A :class:`ConfigError` when ``package`` is not installed (the tracker cannot run)."""
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"tracker {tracker}: the {package} package is not installed; install it with "
                          f"pip install 'kgdistill[tracking]' (or pip install {package})")


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Refuse an MLflow tracking URI that cannot be reached: an HTTP(S) server that does not answer (or does not
    answer as MLflow), a SQLite or file store whose folder does not exist."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        host, port = parsed.hostname, parsed.port or (443 if scheme == "https" else 80)
        if not host:
            raise ConfigError(f"--tracker-uri {uri}: no host in the URI")
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as err:
            raise ConfigError(f"--tracker-uri {uri}: cannot reach {host}:{port} "
                              f"({err.strerror or type(err).__name__})") from None
        probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            with urllib.request.urlopen(probe, timeout=timeout):
                pass
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                return  # a server that wants credentials (MLFLOW_TRACKING_TOKEN, ...): MLflow will send them
            raise ConfigError(f"--tracker-uri {uri}: not an MLflow tracking server (HTTP {err.code} for "
                              f"{probe})") from None
        except (urllib.error.URLError, OSError) as err:
            raise ConfigError(f"--tracker-uri {uri}: no answer from the server "
                              f"({getattr(err, 'reason', None) or err})") from None
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
            raise ConfigError(f"--tracker-uri {uri}: the folder {Path(path).parent} does not exist")
    elif scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri)
        if not path.resolve().parent.is_dir():
            raise ConfigError(f"--tracker-uri {uri}: the folder {path.parent} does not exist")


def make_tracker(spec: str | Tracker, uri: str | None = None, experiment: str | None = None) -> Tracker:
    """A tracker by name (``tensorboard``, ``mlflow``, ``csv``) or a :class:`Tracker` instance as it is."""
    if isinstance(spec, Tracker):
        return spec
    name = str(spec).strip().lower()
    if name == "csv":
        return CSVTracker()
    if name == "tensorboard":
        return TensorBoardTracker()
    if name == "mlflow":
        return MLflowTracker(uri, experiment)
    raise ConfigError(f"unknown tracker {spec!r}; known: {', '.join(TRACKERS)}.{suggest(name, list(TRACKERS))}")


class TrackingSession:
    """The trackers of one session and the run folders they have seen (see the module docstring)."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)
        self.runs: dict[Path, int] = {}  # run folder -> last step

    def record(self, run_dir: Path, record: dict[str, Any]) -> None:
        run_dir = Path(run_dir)
        first = run_dir not in self.runs
        params = run_params(run_dir) if first else {}
        step = record_step(record)
        self.runs[run_dir] = max(self.runs.get(run_dir, 0), step)
        values = record_values(record)
        for t in list(self.trackers):
            try:
                if first:
                    t.start(run_dir, params, record)
                t.log(run_dir, record, values, step)
            except Exception as err:  # noqa: BLE001 - a tracker that fails mid-run must not cost the training
                self._drop(t, err)

    def _drop(self, tracker: Tracker, err: BaseException) -> None:
        log.warning("tracker %s failed (%s); it logs nothing more in this session, the training goes on",
                    tracker.name, _first_line(err))
        self.trackers.remove(tracker)

    def close(self, failed: bool = False) -> None:
        self.finish_runs(failed)
        for t in sorted(self.trackers, key=lambda t: isinstance(t, MLflowTracker)):
            t.close()

    def finish_runs(self, failed: bool = False) -> None:
        """Finish the tracker runs of every run folder seen so far (final metrics, artifacts); a later record of
        one of them opens a new tracker run."""
        # MLflow last: its artifacts then hold the other trackers' files complete
        ordered = sorted(self.trackers, key=lambda t: isinstance(t, MLflowTracker))
        for run_dir, last_step in self.runs.items():
            final = {}
            metrics_path = run_dir / "metrics.json"
            if metrics_path.exists():
                try:
                    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
                    final = final_values(metrics)
                    last_step = int(metrics.get("epochs_done") or last_step)
                except (OSError, ValueError):
                    final = {}
            for t in ordered:
                if t in self.trackers:
                    try:
                        t.finish(run_dir, final, last_step, failed or not metrics_path.exists())
                    except Exception as err:  # noqa: BLE001 - the others still finish
                        self._drop(t, err)
        self.runs.clear()


def finish_runs(failed: bool = False) -> None:
    """Finish the open tracker runs of the sessions active in this context (e.g. after each trial of a search,
    so that a long search keeps no writer open per trial)."""
    for listener in LISTENERS.get():
        session = getattr(listener, "__self__", None)
        if isinstance(session, TrackingSession):
            session.finish_runs(failed)


@contextmanager
def tracking(trackers: Sequence[str | Tracker] | str | None, uri: str | None = None,
             experiment: str | None = None) -> Iterator[TrackingSession | None]:
    """A tracking session over the block: every run folder trained in it is logged by each of ``trackers``.

    ``trackers``: names (``tensorboard``, ``mlflow``, ``csv``) or :class:`Tracker` instances; empty or None: no
    session. ``uri``: the MLflow tracking URI; ``experiment``: its experiment name. Every tracker is made (and an
    MLflow store reached) before the block runs, so a bad name, a missing library or an unreachable URI is one
    :class:`~kgdistill.errors.ConfigError` before any training.
    """
    if isinstance(trackers, (str, Tracker)):
        trackers = [trackers]
    if not trackers:
        yield None
        return
    names = [t for t in trackers if not isinstance(t, Tracker)]
    for name in names:  # every name checked before any backend is set up
        if str(name).strip().lower() not in TRACKERS:
            make_tracker(name)
    made: list[Tracker] = []
    for spec in dict.fromkeys(trackers):
        made.append(make_tracker(spec, uri, experiment))
    session = TrackingSession(made)
    token = LISTENERS.set(LISTENERS.get() + (session.record,))
    failed = True
    try:
        yield session
        failed = False
    finally:
        LISTENERS.reset(token)
        session.close(failed=failed)


# ---- command line ------------------------------------------------------------------------------------------------
__all__ = [
    "TRACKERS",
    "CSVTracker",
    "MLflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackingSession",
    "check_tracking_uri",
    "final_values",
    "finish_runs",
    "make_tracker",
    "mlflow_key",
    "record_values",
    "run_params",
    "tracking",
]
