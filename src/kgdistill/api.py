"""The public Python API, re-exported lazily by :mod:`kgdistill` (``import kgdistill`` stays cheap)::

    import kgdistill

    teacher = kgdistill.train("kinship", "runs/teacher", model="complex", dim=64, epochs=60)
    report = kgdistill.distill("kd", teacher, "runs/kd", dims=[8], epochs=60)
    print(kgdistill.evaluate(report.results[-1].path)["both"]["mrr"])
    artifact = kgdistill.load(kgdistill.export(report.results[-1].path, "student.safetensors", dtype="int8"))
    print(artifact.predict("term15", head="person0", k=5))

Every function takes a run folder (or a loaded :class:`~kgdistill.runs.Run`) where a run is needed, writes what it
trains into run folders, and leaves process-wide settings (threads aside, when asked for) alone.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from kgdistill.data.triples import SPLITS, TEXT_FILES, KGDataset
from kgdistill.errors import ConfigError, DataError

if TYPE_CHECKING:
    from kgdistill.distill.api import DistillReport
    from kgdistill.artifact import Artifact
    from kgdistill.models.base import KGCModel
    from kgdistill.runs import Run

PathLike = Union[str, "os.PathLike[str]"]
Triple = tuple[str, str, str]

#: where a run trained on an in-memory dataset keeps its copy of the data
RUN_DATA_FOLDER = "data"


class Dataset(KGDataset):
    """A knowledge graph with train / valid / test splits: load one by name or folder, or build one in memory.

    >>> ds = Dataset.from_triples(train=[("a", "likes", "b"), ("b", "likes", "c")],
    ...                           valid=[("a", "likes", "c")], test=[("c", "likes", "a")], name="toy")
    >>> ds.num_entities, ds.num_relations
    (3, 1)

    Ids are given by the sorted labels, as for a folder. A dataset built in memory trains like any other; its
    run folder keeps a copy of it (``RUN/data/``) so that later commands (load, evaluate, distil) find it.
    """

    @classmethod
    def _of(cls, ds: KGDataset) -> Dataset:
        out = cls(**{f.name: getattr(ds, f.name) for f in dataclasses.fields(KGDataset) if f.init})
        return out

    @classmethod
    def load(cls, name_or_folder: PathLike, data_dir: PathLike | None = None, download: bool = False) -> Dataset:
        """A bundled dataset (``nations``, ``kinship``, ``umls``), a named benchmark (``wn18rr``, ``fb15k-237``,
        found under ``data_dir`` / ``$KGDISTILL_DATA``) or any folder with ``train.tsv``, ``valid.tsv``,
        ``test.tsv`` (and optional ``entity2text.tsv`` / ``relation2text.tsv``)."""
        from kgdistill.data.datasets import load_dataset

        return cls._of(load_dataset(name_or_folder, data_dir=data_dir, download=download))

    @classmethod
    def from_triples(cls, train: Iterable[Triple], valid: Iterable[Triple], test: Iterable[Triple], *,
                     name: str = "in-memory", entity_names: Mapping[str, str] | None = None,
                     relation_texts: Mapping[str, str] | None = None,
                     entity_descriptions: Mapping[str, str] | None = None) -> Dataset:
        """A dataset from ``(head, relation, tail)`` label triples per split; every split needs one triple or more.
        Optional readable entity names, relation texts and entity descriptions (text models use them)."""
        labeled = {"train": _triples(train, "train"), "valid": _triples(valid, "valid"), "test": _triples(test, "test")}
        for split, triples in labeled.items():
            if not triples:
                raise DataError(f"{name}/{split}: the split is empty (expected at least one triple)")
            for triple in triples:
                for label in triple:
                    if not label or any(c in label for c in "\t\r\n"):
                        raise DataError(f"{name}/{split}: label {label!r} of {triple} is empty or holds a tab or a "
                                        "line break")
        text = {k: dict(v) for k, v in (("entity_names", entity_names), ("relation_texts", relation_texts),
                                        ("entity_descriptions", entity_descriptions)) if v}
        return cls.from_labeled(name, labeled, **text)

    @classmethod
    def from_dataframe(cls, train: Any, valid: Any = None, test: Any = None, *,
                       columns: Sequence[str] = ("head", "relation", "tail"), split_column: str = "split",
                       name: str = "dataframe", **text: Mapping[str, str]) -> Dataset:
        """A dataset from pandas DataFrames (pandas itself is not needed by kgdistill: any object whose
        ``frame[column]`` iterates over the values works).

        Either one frame per split (``train``, ``valid``, ``test``), or one frame with a ``split_column`` holding
        ``train`` / ``valid`` / ``test``. ``columns``: the head, relation and tail columns. ``text``: as in
        :meth:`from_triples`.
        """
        if len(columns) != 3:
            raise ConfigError(f"columns: expected (head, relation, tail), got {list(columns)}")
        if (valid is None) != (test is None):
            raise ConfigError("from_dataframe: give both valid and test frames, or neither (then the frame's "
                              f"{split_column!r} column says the split)")

        def rows(frame: Any) -> list[Triple]:
            try:
                cols = [list(frame[c]) for c in columns]
            except KeyError as err:
                raise DataError(f"{name}: no column {err.args[0]!r} (columns={list(columns)})") from None
            return [(str(h), str(r), str(t)) for h, r, t in zip(*cols)]

        if valid is not None:
            return cls.from_triples(rows(train), rows(valid), rows(test), name=name, **text)
        try:
            splits = [str(s) for s in train[split_column]]
        except KeyError:
            raise DataError(f"{name}: no {split_column!r} column; pass valid and test frames, or name the column "
                            "with split_column=") from None
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise DataError(f"{name}: {split_column!r} holds {unknown}; expected train, valid or test")
        triples = rows(train)
        by_split = {s: [t for t, where in zip(triples, splits) if where == s] for s in SPLITS}
        return cls.from_triples(by_split["train"], by_split["valid"], by_split["test"], name=name, **text)


def _triples(items: Iterable[Triple], split: str) -> list[Triple]:
    out = []
    for item in items:
        triple = tuple(item)
        if len(triple) != 3:
            raise DataError(f"{split}: expected (head, relation, tail) triples, got {item!r}")
        out.append((str(triple[0]), str(triple[1]), str(triple[2])))
    return out


def write_dataset(dataset: KGDataset, folder: PathLike) -> Path:
    """Write ``dataset`` as a folder that :meth:`Dataset.load` reads back (``train/valid/test.tsv`` by label and
    the text files it has); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        ids = dataset.splits.get(split)
        if ids is None or ids.shape[0] == 0:
            raise DataError(f"{dataset.name}: no {split} triples; a dataset needs train, valid and test splits")
        lines = [f"{dataset.entities[h]}\t{dataset.relations[r]}\t{dataset.entities[t]}\n" for h, r, t in ids.tolist()]
        _write_text(folder / f"{split}.tsv", "".join(lines))
    for key, fname in TEXT_FILES.items():
        mapping: dict[str, str] = getattr(dataset, key)
        if mapping:
            body = "".join(f"{k}\t{' '.join(v.split())}\n" for k, v in mapping.items())
            _write_text(folder / fname, body)
    return folder


def _write_text(path: Path, body: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(path)


def _dataset_reference(dataset: KGDataset) -> str | None:
    """How a run config can name ``dataset`` so that loading it gives the same ids: its name (bundled or named
    benchmark), its folder, or None for a dataset that exists only in memory."""
    from kgdistill.data.datasets import get_spec, resolve_dataset_path

    if not dataset.source:
        return None
    try:
        spec = get_spec(dataset.name)
    except (KeyError, ValueError, DataError, ConfigError):
        spec = None
    if spec is not None:
        found = resolve_dataset_path(spec)
        if dataset.source == f"bundled:{spec.name}" or \
                found is not None and Path(found).resolve() == Path(dataset.source).resolve():
            return spec.name
    folder = Path(dataset.source)
    return str(folder.resolve()) if folder.is_dir() else None


def train(dataset: PathLike | KGDataset, out: PathLike | None = None, *, model: str | None = None,
          dim: int | None = None, config: Any = None, device: str = "cpu", progress: bool = False,
          trackers: Sequence[Any] | None = None, tracker_uri: str | None = None, **options: Any) -> Run:
    """Train a model and write its run folder ``out``; returns the loaded :class:`~kgdistill.runs.Run`.

    ``dataset``: a name, a folder or a :class:`Dataset` (one built in memory is written into ``out/data/`` and the
    run config points there). ``model`` / ``dim``: the interaction (``transe``, ``distmult``, ``complex``,
    ``rotate``, ``simple``) and its dimension. ``options``: any other config field by name, as on the command line
    (``epochs=60``, ``lr=0.1``, ``training_mode="1vsall"``, ``batch_size=...``; dotted paths such as
    ``**{"training.seed": 1}`` too). ``config``: a :class:`~kgdistill.config.RunConfig` (or a YAML path) to start
    from; a :class:`~kgdistill.text.config.TextRunConfig` trains a text bi-encoder (``dataset`` a name or folder).
    Bars are drawn only with ``progress`` and a terminal on stderr; per-epoch lines go to :mod:`logging`.
    ``trackers``: ``["tensorboard", "mlflow", "csv"]`` (or :class:`~kgdistill.tracking.Tracker` objects) log the run
    (:mod:`kgdistill.tracking`); ``tracker_uri``: the MLflow tracking URI.
    """
    if trackers:
        from kgdistill.tracking import tracking

        with tracking(trackers, uri=tracker_uri):
            return train(dataset, out, model=model, dim=dim, config=config, device=device, progress=progress,
                         **options)
    from kgdistill.config import RunConfig, load_config, with_overrides

    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)  # the class of the kind the file records (a text run's config.yaml: text)
    if config is not None and type(config).__name__ == "TextRunConfig":
        return _train_text(config, dataset, out, device, progress, options)
    base = config if config is not None else RunConfig()
    overrides: dict[str, Any] = {**options, "device": device, "progress": progress}
    if model is not None:
        overrides["model"] = model
    if dim is not None:
        overrides["dim"] = dim
    if out is not None:
        overrides["output_dir"] = os.fspath(out)
    in_memory: KGDataset | None = None
    if isinstance(dataset, KGDataset):
        where = _dataset_reference(dataset)
        if where is None:
            in_memory = dataset
            if out is None:
                raise ConfigError("train: a dataset built in memory needs an output folder (out=...), where a copy "
                                  "of it is kept for later commands")
            where = str((Path(out) / RUN_DATA_FOLDER).resolve())
        overrides["dataset"] = where
    else:
        overrides["dataset"] = os.fspath(dataset)
    resolved = with_overrides(base, overrides)
    if in_memory is None:
        from kgdistill import runs

        return runs.train(resolved)
    return _train_in_memory(resolved, in_memory)


def _train_in_memory(config: Any, dataset: KGDataset) -> Run:
    """Train on a copy of ``dataset`` read back from files (so the run's ids are those any later load gives),
    and keep those files in the run folder once it exists."""
    from kgdistill import runs
    from kgdistill.config import load_yaml

    target = Path(config.data.dataset)
    run_dir = Path(config.output_dir)
    if target.exists():
        raise ConfigError(f"{run_dir}: already holds a {RUN_DATA_FOLDER}/ folder; choose another output folder")
    with tempfile.TemporaryDirectory(prefix="kgdistill-data-") as tmp:
        staged = write_dataset(dataset, Path(tmp) / RUN_DATA_FOLDER)
        reread = KGDataset.from_folder(staged, name=dataset.name)
        reread.source = str(target)
        try:
            return runs.train(config, dataset=reread)
        finally:  # also after an interruption, so that the run can be resumed
            started = run_dir / "config.yaml"
            if started.exists() and not target.exists() and \
                    load_yaml(started).data.dataset == config.data.dataset:
                shutil.copytree(staged, target)


def _train_text(config: Any, dataset: PathLike | KGDataset, out: PathLike | None, device: str, progress: bool,
                options: dict[str, Any]) -> Run:
    from kgdistill.config import with_overrides
    from kgdistill.text.trainer import train_text

    if isinstance(dataset, KGDataset):
        where = _dataset_reference(dataset)
        if where is None:
            raise ConfigError("train: text runs read their dataset from a name or a folder; write an in-memory "
                              "dataset with kgdistill.api.write_dataset first")
        dataset = where
    overrides = {**options, "dataset": os.fspath(dataset), "device": device, "progress": progress}
    if out is not None:
        overrides["output_dir"] = os.fspath(out)
    return train_text(with_overrides(config, overrides))


def _run_path(run: PathLike | Run) -> Path:
    return Path(run.path) if hasattr(run, "path") and hasattr(run, "model") else Path(os.fspath(run))  # type: ignore


def distill(method: str, teacher: PathLike | Run, out: PathLike, *, device: str = "cpu", progress: bool = False,
            num_threads: int | None = None, resume: bool = False, trackers: Sequence[Any] | None = None,
            tracker_uri: str | None = None, **options: Any) -> DistillReport:
    """Distil the ``teacher`` run (folder or :class:`~kgdistill.runs.Run`) with ``method`` into run folders under
    ``out``: an embedding teacher with ``kd``, ``kd-huber``, ``dualde``, ``iterde``, ``metasd``, ``iterde-metasd``,
    ``scratch``; a text bi-encoder teacher with ``pmd``, ``hrkd``, ``logit``, ``patient`` (a method of the other
    model kind is refused in one line; a single-stage text method writes its run folder at ``out`` itself).

    ``options``: the method's options (``dims=[8]``, ``epochs=60``, ...; None-valued ones inherit the teacher's
    training settings). Returns a :class:`~kgdistill.distill.api.DistillReport` (``results[i].path``: the student
    run folders; ``table()``: the summary). ``trackers`` / ``tracker_uri``: as in :func:`train` (one tracker run
    per stage).
    """
    if trackers:
        from kgdistill.tracking import tracking

        with tracking(trackers, uri=tracker_uri):
            return distill(method, teacher, out, device=device, progress=progress, num_threads=num_threads,
                           resume=resume, **options)
    from kgdistill.distill.api import distill as run_method

    return run_method(method, _run_path(teacher), out, device=device, progress=progress, num_threads=num_threads,
                      resume=resume, **options)


def load(path: PathLike, device: str = "cpu") -> Run | Artifact:
    """A run folder (any model kind) as a :class:`~kgdistill.runs.Run` (model, config, dataset, metrics), or an
    exported artifact file or ``--format hf`` folder as an :class:`~kgdistill.artifact.Artifact` (model, names,
    ``predict``)."""
    target = Path(os.fspath(path))
    if target.is_dir():
        from kgdistill.artifact import is_hf_folder, load_hf

        if is_hf_folder(target):  # a folder written by export(..., format="hf")
            return load_hf(target, device=device)
        from kgdistill.runs import load_run

        return load_run(target, device=device)
    from kgdistill.artifact import load_artifact

    return load_artifact(target, device=device)


def evaluate(target: PathLike | Run | Artifact | KGCModel, dataset: PathLike | KGDataset | None = None,
             split: str = "test", *, batch_size: int = 256, filtered: bool = True, device: str = "cpu",
             progress: bool = False) -> dict[str, dict[str, float]]:
    """Filtered (or raw) ranking metrics of a model on ``split``: ``{"both" | "head" | "tail": {"mrr", "mr",
    "hits@1", "hits@3", "hits@10"}}``.

    ``target``: a run folder, an artifact file, a loaded run or artifact, or a model (then ``dataset`` is needed).
    ``dataset`` defaults to the run's own; for an artifact or a model give one with the same ids.
    """
    from kgdistill.evaluate import DatasetEvaluator

    if isinstance(target, (str, os.PathLike)):
        target = load(target, device=device)
    model = getattr(target, "model", target)
    if isinstance(dataset, (str, os.PathLike)):
        dataset = Dataset.load(dataset)
    if dataset is None:
        dataset = getattr(target, "dataset", None) if hasattr(target, "config") else None
        if dataset is None:
            raise ConfigError("evaluate: give the dataset to rank against (an artifact or a bare model has none)")
    entities = getattr(target, "entities", None)
    if entities is not None and list(entities) != dataset.entities:
        raise DataError(f"evaluate: the dataset {dataset.name!r} has other entity ids than the model")
    model = model.to(device).eval()
    result = DatasetEvaluator(dataset, batch_size, filtered, device).evaluate(model, split, progress=progress)
    return result.summary()


def export(run: PathLike | Run, out: PathLike, dtype: str = "float32", *, force: bool = False,
           format: str = "artifact", **options: Any) -> Path:  # noqa: A002 - the CLI's --format
    """Export a run folder's model (any kind) to one self-contained ``.safetensors`` artifact; returns its path.

    ``dtype``: ``float32`` (lossless), ``float16`` or ``int8`` (the ranking effect is measured and stored).
    ``options``: see :func:`kgdistill.export.export_run`. Load it back with :func:`load`.
    ``format="hf"``: a Hugging Face-style folder ``out`` (``config.json``, ``model.safetensors``, id maps, known
    triples, ``README.md`` model card; options ``include_known``, ``license``): see :mod:`kgdistill.export_hf`.
    """
    if format == "hf":
        from kgdistill.export_hf import export_hf

        return export_hf(_run_path(run), out, dtype=dtype, force=force, **options).path
    if format != "artifact":
        raise ConfigError(f"export: format must be 'artifact' or 'hf', got {format!r}")
    from kgdistill.export import export_run

    return export_run(_run_path(run), out, dtype, force=force, **options)


__all__ = ["Dataset", "distill", "evaluate", "export", "load", "train", "write_dataset"]
