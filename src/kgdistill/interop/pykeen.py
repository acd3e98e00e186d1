"""PyKEEN interoperability (extra ``pykeen``): PyKEEN-trained models as kgdistill teachers, students as PyKEEN models.

* :func:`from_pykeen` — a PyKEEN model object (TransE, DistMult, ComplEx, RotatE) → a kgdistill
  :class:`~kgdistill.models.embedding.EmbeddingModel` whose ids are those of a kgdistill dataset (mapped by label).
* :func:`import_pykeen` — the same from a ``PipelineResult.save_to_directory(DIR)`` folder (``trained_model.pkl`` +
  ``training_triples/``) or a model object, written as an ordinary run folder (config, id maps, model, metrics)
  that any distillation method takes as its teacher (``kgdistill import-pykeen DIR --dataset NAME --out RUN
  --trust-pickle``; ``kgdistill distill --teacher DIR --trust-pickle`` also accepts such a folder directly).
* :func:`to_pykeen` — a kgdistill run (its embedding model) → a PyKEEN model object with the same scores, and the
  PyKEEN ``TriplesFactory`` holding kgdistill's id maps.

How the interactions correspond (scores are equal, not only ranks):

========  =====================================  ==================================================================
PyKEEN    score                                   kgdistill
========  =====================================  ==================================================================
TransE    ``-||h + r - t||_p`` (``p`` = 1 or 2,   ``transe`` with ``{p: 1|2}``; PyKEEN's ``power_norm=True`` (the
          ``scoring_fct_norm``)                   p-th power) has no counterpart and is refused
DistMult  ``Σ h·r·t``                             ``distmult``
ComplEx   ``Re<h, r, conj(t)>``; PyKEEN keeps a   ``complex``; rows ``[re | im]`` (all real parts, then all
          complex row as interleaved              imaginary parts): the layout is converted
          ``(re, im)`` pairs
RotatE    ``-||h ∘ r - t||_2`` (L2 norm of the    ``rotate`` with ``{norm: l2}`` (the paper's sum of moduli,
          complex difference), ``|r| = 1``        ``complex_l1``, has no PyKEEN counterpart); relation rows are the
                                                  phases ``angle(r)``
========  =====================================  ==================================================================

Inverse relations: a PyKEEN model trained with ``create_inverse_triples=True`` keeps relation ``r`` in row ``2r`` and
its inverse in row ``2r + 1`` and predicts heads as tails of the inverse; kgdistill's ``reciprocal`` models keep the
inverse of ``r`` in row ``r + R`` and do the same, so the rows are reordered.

Ids: PyKEEN's entity and relation ids come from its triples factory; kgdistill's from the dataset's sorted labels.
Rows are moved by label. Entities or relations of the dataset that PyKEEN never saw (absent from its training
triples) get zero rows (their count is recorded); a PyKEEN label that the dataset lacks is an error (a different
graph).

Reading a folder unpickles ``trained_model.pkl`` (the whole model object) and ``training_triples/base.pth``
(``torch.load(weights_only=False)``, as PyKEEN itself does; a restricted unpickler cannot read them): a folder from
an untrusted source can run arbitrary code. So every function that reads a folder refuses it with
:class:`UntrustedPickleError` (before anything is unpickled or written) unless called with ``trust_pickle=True``
(CLI: ``--trust-pickle``). A model object given in Python (already unpickled by the caller) needs no opt-in.
PyKEEN's weights-only checkpoints (``pykeen.checkpoints.save_model``) hold neither the model's class and
hyperparameters nor its labels, so they are no substitute for a result folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kgdistill.data.triples import KGDataset
from kgdistill.errors import KGDistillError

PathLike = str | os.PathLike

#: PyKEEN model class → kgdistill interaction
SUPPORTED = {"TransE": "transe", "DistMult": "distmult", "ComplEx": "complex", "RotatE": "rotate"}
MODEL_FILE = "trained_model.pkl"
TRIPLES_FOLDER = "training_triples"
#: largest allowed deviation of a RotatE relation's modulus from 1 (PyKEEN's constrainer keeps it at 1)
UNIT_TOLERANCE = 1e-5


class PyKEENError(KGDistillError):
    """A PyKEEN folder or model that cannot be converted (one line naming what is wrong)."""


class UntrustedPickleError(PyKEENError):
    """A PyKEEN result folder read without ``trust_pickle=True`` / ``--trust-pickle``: its files are pickles."""


def _require_pykeen() -> Any:
    try:
        import pykeen
    except ModuleNotFoundError:
        raise PyKEENError("PyKEEN interoperability needs the pykeen extra: pip install 'kgdistill[pykeen]'") from None
    return pykeen


def _supported_line() -> str:
    return ", ".join(SUPPORTED)


@dataclass
class PyKEENSource:
    """A PyKEEN model with its label ↔ id maps (and, from a folder, PyKEEN's results and metadata)."""

    model: Any
    entity_to_id: dict[str, int]
    relation_to_id: dict[str, int]
    where: str = "PyKEEN model"
    results: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def is_pykeen_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder written by ``PipelineResult.save_to_directory`` (holds ``trained_model.pkl``)."""
    return Path(path).is_dir() and (Path(path) / MODEL_FILE).is_file()


def read_pykeen_folder(path: PathLike, *, trust_pickle: bool = False) -> PyKEENSource:
    """Read a ``save_to_directory`` folder: the model (unpickled, on the CPU) and the training triples factory's
    label ↔ id maps. Unpickling runs whatever code the files name, so without ``trust_pickle=True`` the folder is
    refused (:class:`UntrustedPickleError`) before anything is loaded. Anything else is one :class:`PyKEENError`
    line."""
    path = Path(path)
    if not path.is_dir():
        raise PyKEENError(f"{path}: no such folder (expected a PyKEEN result folder written by "
                          f"PipelineResult.save_to_directory)")
    if not (path / MODEL_FILE).is_file():
        raise PyKEENError(f"{path}: not a PyKEEN result folder (no {MODEL_FILE}; expected the folder written by "
                          f"PipelineResult.save_to_directory)")
    if not trust_pickle:
        raise UntrustedPickleError(f"{path / MODEL_FILE}: not unpickled (it and {TRIPLES_FOLDER}/ are pickles, and "
                                   f"loading a pickle can run arbitrary code); if you trust where this PyKEEN folder "
                                   f"comes from, pass --trust-pickle (Python: trust_pickle=True)")
    _require_pykeen()
    from pykeen.triples import TriplesFactory

    try:
        model = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - unpickling raises many types for a damaged or foreign file
        raise PyKEENError(f"{path / MODEL_FILE}: cannot be loaded as a PyKEEN model "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    _check_model(model, str(path))
    if not (path / TRIPLES_FOLDER).is_dir():
        raise PyKEENError(f"{path}: no {TRIPLES_FOLDER}/ (saved with save_training=False?): the entity and relation "
                          f"labels are unknown; convert the model in Python with its triples factory instead")
    try:
        factory = TriplesFactory.from_path_binary(path / TRIPLES_FOLDER)
    except Exception as err:  # noqa: BLE001
        raise PyKEENError(f"{path / TRIPLES_FOLDER}: not a readable PyKEEN triples factory "
                          f"({type(err).__name__}: {err})") from None

    def read_json(name: str) -> dict[str, Any]:
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    return PyKEENSource(model, dict(factory.entity_to_id), dict(factory.relation_to_id), str(path),
                        read_json("results.json"), read_json("metadata.json"))


def _check_model(model: Any, where: str) -> str:
    """The kgdistill interaction of a supported PyKEEN model; anything else is one line naming the supported ones."""
    _require_pykeen()
    from pykeen.models import ERModel
    from pykeen.nn.modules import ComplExInteraction, DistMultInteraction, RotatEInteraction, TransEInteraction

    name = type(model).__name__
    wanted = {"TransE": TransEInteraction, "DistMult": DistMultInteraction, "ComplEx": ComplExInteraction,
              "RotatE": RotatEInteraction}
    ok = isinstance(model, ERModel) and name in wanted and type(model.interaction) is wanted[name] and \
        len(model.entity_representations) == 1 and len(model.relation_representations) == 1
    if not ok:
        raise PyKEENError(f"{where}: PyKEEN model {name} is not supported; supported: {_supported_line()}")
    return SUPPORTED[name]


def _source_of(model: Any, triples_factory: Any, entity_to_id: Any, relation_to_id: Any) -> PyKEENSource:
    if triples_factory is not None:
        entity_to_id = entity_to_id or triples_factory.entity_to_id
        relation_to_id = relation_to_id or triples_factory.relation_to_id
    if entity_to_id is None or relation_to_id is None:
        raise PyKEENError("from_pykeen: give the triples factory the model was trained on (triples_factory=...), or "
                          "entity_to_id and relation_to_id: PyKEEN models do not keep their labels")
    return PyKEENSource(model, dict(entity_to_id), dict(relation_to_id))


def _label_index(ours: list[str], theirs: dict[str, int], kind: str, where: str, dataset: str
                 ) -> tuple[Tensor, int]:
    """For each of our ids, PyKEEN's id (-1 where PyKEEN lacks the label); and how many are missing."""
    position = {label: i for i, label in enumerate(ours)}
    foreign = [label for label in theirs if label not in position]
    if foreign:
        shown = ", ".join(repr(x) for x in sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        raise PyKEENError(f"{where}: {len(foreign)} of its {len(theirs)} {kind} labels are not in the dataset "
                          f"{dataset!r} ({shown}); import it with the dataset it was trained on")
    index = torch.tensor([theirs.get(label, -1) for label in ours], dtype=torch.long)
    return index, int((index < 0).sum())


def _gather(rows: Tensor, index: Tensor) -> Tensor:
    """``rows[index]`` with zero rows where ``index`` is -1."""
    out = torch.zeros(index.shape[0], *rows.shape[1:], dtype=rows.dtype)
    found = index >= 0
    out[found] = rows[index[found]]
    return out


def _complex_rows(x: Tensor) -> Tensor:
    """Complex ``[n, d]`` → real ``[n, 2d]`` laid out ``[re | im]``."""
    return torch.cat([x.real, x.imag], dim=-1).float()


@dataclass
class Converted:
    """A converted model and how it was converted."""

    model: Any  # EmbeddingModel
    interaction: str
    options: dict[str, Any]
    reciprocal: bool
    entity_constraint: str
    pykeen_class: str
    missing_entities: int
    missing_relations: int


def convert(source: PyKEENSource, dataset: KGDataset) -> Converted:
    """The PyKEEN model of ``source`` as a kgdistill embedding model with ``dataset``'s ids (scores equal)."""
    from pykeen.nn.modules import TransEInteraction

    from kgdistill.models.embedding import EmbeddingModel

    model, where = source.model, source.where
    kind = _check_model(model, where)
    options: dict[str, Any] = {}
    if kind == "transe":
        inter: TransEInteraction = model.interaction
        if inter.power_norm or inter.p not in (1, 2, 1.0, 2.0):
            raise PyKEENError(f"{where}: PyKEEN TransE with p={inter.p}, power_norm={inter.power_norm} is not "
                              f"supported (kgdistill's TransE: p = 1 or 2, power_norm=False)")
        options["p"] = int(inter.p)
    elif kind == "rotate":
        options["norm"] = "l2"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ent = model.entity_representations[0](indices=None).detach().cpu()
            rel = model.relation_representations[0](indices=None).detach().cpu()
    finally:
        model.train(was_training)
    if ent.dim() != 2 or rel.dim() != 2:
        raise PyKEENError(f"{where}: unexpected representation shapes {tuple(ent.shape)} / {tuple(rel.shape)}")
    complex_entities = kind in ("complex", "rotate")
    if complex_entities != ent.is_complex():
        raise PyKEENError(f"{where}: PyKEEN {type(model).__name__} with {'complex' if ent.is_complex() else 'real'} "
                          f"entity rows is not supported")
    dim = ent.shape[1]
    if complex_entities:
        ent = _complex_rows(ent)
    if kind == "complex":
        rel = _complex_rows(rel)
    elif kind == "rotate":
        if not rel.is_complex():
            raise PyKEENError(f"{where}: PyKEEN RotatE with real relation rows is not supported")
        deviation = float((rel.abs() - 1).abs().max()) if rel.numel() else 0.0
        if deviation > UNIT_TOLERANCE:
            raise PyKEENError(f"{where}: RotatE relation rows are not unit-modulus (max ||r| - 1| = {deviation:.3g});"
                              f" apply PyKEEN's constraint first (model.post_parameter_update())")
        rel = torch.angle(rel).float()
    else:
        ent, rel = ent.float(), rel.float()
    reciprocal = bool(getattr(model, "use_inverse_triples", False))
    num_rel = len(source.relation_to_id)
    expected_rows = 2 * num_rel if reciprocal else num_rel
    if rel.shape[0] != expected_rows or ent.shape[0] != len(source.entity_to_id):
        raise PyKEENError(f"{where}: the model has {ent.shape[0]} entity / {rel.shape[0]} relation rows but its "
                          f"triples factory maps {len(source.entity_to_id)} entities / {num_rel} relations"
                          + (" (with inverses)" if reciprocal else ""))
    e_index, missing_e = _label_index(dataset.entities, source.entity_to_id, "entity", where, dataset.name)
    r_index, missing_r = _label_index(dataset.relations, source.relation_to_id, "relation", where, dataset.name)
    if reciprocal:  # PyKEEN: r → row 2r, inverse → 2r + 1; kgdistill: r → r, inverse → r + R
        fwd = torch.where(r_index >= 0, 2 * r_index, r_index)
        inv = torch.where(r_index >= 0, 2 * r_index + 1, r_index)
        relation_rows = torch.cat([_gather(rel, fwd), _gather(rel, inv)])
    else:
        relation_rows = _gather(rel, r_index)
    entity_rows = _gather(ent, e_index)
    constrainer = getattr(model.entity_representations[0], "constrainer", None)
    entity_constraint = "unit_norm" if kind == "transe" and constrainer is not None else "none"
    ours = EmbeddingModel(kind, dataset.num_entities, dataset.num_relations, dim, reciprocal=reciprocal,
                          entity_constraint=entity_constraint, interaction_options=options)
    ours.load_state_dict({"entity": entity_rows.contiguous(), "relation": relation_rows.contiguous()})
    return Converted(ours.eval(), kind, options, reciprocal, entity_constraint, type(model).__name__, missing_e,
                     missing_r)


def from_pykeen(model: Any, dataset: PathLike | KGDataset, *, triples_factory: Any = None,
                entity_to_id: dict[str, int] | None = None, relation_to_id: dict[str, int] | None = None,
                data_dir: PathLike | None = None, trust_pickle: bool = False) -> Any:
    """A PyKEEN model object (or a ``save_to_directory`` folder) → a kgdistill ``EmbeddingModel`` over ``dataset``'s
    ids. For a model object give the triples factory it was trained on (or its two label ↔ id maps). A folder is
    unpickled, so it is read only with ``trust_pickle=True`` (see :func:`read_pykeen_folder`)."""
    ds = _dataset(dataset, data_dir)
    source = read_pykeen_folder(model, trust_pickle=trust_pickle) if isinstance(model, (str, os.PathLike)) else \
        _source_of(model, triples_factory, entity_to_id, relation_to_id)
    return convert(source, ds).model


def _dataset(dataset: PathLike | KGDataset, data_dir: PathLike | None = None) -> KGDataset:
    from kgdistill.data.datasets import load_dataset

    if isinstance(dataset, KGDataset):
        return dataset
    return load_dataset(os.fspath(dataset), data_dir=data_dir, download=False)


def _dataset_name(dataset: PathLike | KGDataset, ds: KGDataset) -> str:
    if not isinstance(dataset, KGDataset):
        value = os.fspath(dataset)
        return str(Path(value).resolve()) if Path(value).is_dir() else value
    from kgdistill.api import _dataset_reference

    where = _dataset_reference(ds)
    if where is None:
        raise PyKEENError("import_pykeen: the dataset exists only in memory; write it to a folder first "
                          "(kgdistill.api.write_dataset) so that the run can name it")
    return where


def import_pykeen(source: Any, dataset: PathLike | KGDataset, out: PathLike, *, triples_factory: Any = None,
                  data_dir: PathLike | None = None, eval_splits: tuple[str, ...] = ("valid", "test"),
                  eval_batch_size: int = 256, trust_pickle: bool = False) -> Any:
    """Write a PyKEEN model (a ``save_to_directory`` folder, or a model object with its ``triples_factory``) as a
    kgdistill run folder ``out`` over ``dataset``'s ids: ``config.yaml``, ``entities.tsv`` / ``relations.tsv``,
    the model, ``metrics.json`` (kgdistill's filtered evaluation of ``eval_splits``) and ``meta.json`` (the PyKEEN
    source, its results and the conversion). Returns the loaded :class:`~kgdistill.runs.Run`, ready to be a teacher
    of any distillation method. ``out`` must be new or empty (never a run with results). A folder is unpickled, so it
    is read only with ``trust_pickle=True`` (refused otherwise before ``out`` is created; a model object needs no
    opt-in)."""
    import kgdistill
    from kgdistill.atomicio import atomic_write_json
    from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig, save_yaml
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.models.base import save_model
    from kgdistill.runfolder import check_no_finished_run, check_output_folder, run_folder_lock
    from kgdistill.runs import evaluate_splits, load_run, write_id_maps

    out = Path(out)
    check_output_folder(out)
    check_no_finished_run(out)
    if isinstance(source, (str, os.PathLike)):
        src = read_pykeen_folder(source, trust_pickle=trust_pickle)
    else:
        src = _source_of(source, triples_factory, None, None)
    ds = _dataset(dataset, data_dir)
    reference = _dataset_name(dataset, ds)
    converted = convert(src, ds)  # every check before the folder is created
    pykeen = _require_pykeen()
    losses = src.results.get("losses") if isinstance(src.results.get("losses"), list) else []
    config = RunConfig(
        data=DataConfig(dataset=reference, data_dir=os.fspath(data_dir) if data_dir is not None else None),
        model=ModelConfig(model=converted.interaction, dim=converted.model.dim, model_options=converted.options,
                          reciprocal=converted.reciprocal, entity_constraint=converted.entity_constraint),
        training=TrainingConfig(training_mode="1vsall" if converted.reciprocal else "slcwa",
                                epochs=max(len(losses), 1)),
        evaluation=EvaluationConfig(eval_batch_size=eval_batch_size, eval_splits=list(eval_splits)),
        output_dir=str(out), progress=False)
    meta = {"kgdistill": kgdistill.__version__, "torch": torch.__version__, "method": "import-pykeen",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pykeen": {"version": pykeen.get_version() if hasattr(pykeen, "get_version") else None,
                       "source": str(Path(src.where).resolve()) if Path(src.where).exists() else src.where,
                       "model_class": converted.pykeen_class, "inverse_triples": converted.reciprocal,
                       "entities": len(src.entity_to_id), "relations": len(src.relation_to_id),
                       "missing_entities": converted.missing_entities,
                       "missing_relations": converted.missing_relations,
                       "results": {k: v for k, v in src.results.items() if k != "times"},
                       "metadata": src.metadata}}
    with run_folder_lock(out):
        check_no_finished_run(out)
        save_yaml(config, out / "config.yaml")
        write_id_maps(ds, out)
        evaluator = DatasetEvaluator(ds, eval_batch_size, True, "cpu")
        metrics = evaluate_splits(converted.model, evaluator, [s for s in eval_splits if s in ds.splits])
        metrics["num_parameters"] = converted.model.num_parameters()
        times = src.results.get("times") if isinstance(src.results.get("times"), dict) else {}
        if isinstance(times.get("training"), (int, float)):
            metrics["train_seconds"] = round(float(times["training"]), 3)  # PyKEEN's own training time
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(out / "meta.json", meta)
        save_model(converted.model, out)
        atomic_write_json(out / "metrics.json", metrics)
    return load_run(out)


# ---- kgdistill → PyKEEN -------------------------------------------------------------------------------------------
def _model_and_labels(run: Any) -> tuple[Any, list[str], list[str], Tensor]:
    """(embedding model, entity labels, relation labels, triples for the factory) of a run folder / Run (its
    training split) / Artifact (its known triples, all splits; none when exported without them)."""
    from kgdistill.artifact import Artifact

    if isinstance(run, (str, os.PathLike)):
        from kgdistill.api import load

        run = load(run)
    if isinstance(run, Artifact):
        known = run.known.long() if run.known is not None else torch.empty(0, 3, dtype=torch.long)
        return run.model, list(run.entities), list(run.relations), known
    dataset = getattr(run, "dataset", None)
    if dataset is None or not hasattr(run, "model"):
        raise PyKEENError("to_pykeen: expected a run folder, a loaded Run (with its dataset) or an artifact")
    return run.model, list(dataset.entities), list(dataset.relations), dataset.splits["train"]


def pykeen_triples_factory(entities: list[str], relations: list[str], triples: Tensor, inverse: bool = False) -> Any:
    """A PyKEEN ``TriplesFactory`` over kgdistill's ids (label ``entities[i]`` ↔ id ``i``)."""
    _require_pykeen()
    from pykeen.triples import TriplesFactory

    return TriplesFactory(mapped_triples=triples.long().reshape(-1, 3),
                          entity_to_id={label: i for i, label in enumerate(entities)},
                          relation_to_id={label: i for i, label in enumerate(relations)},
                          create_inverse_triples=inverse)


def to_pykeen(run: Any, triples_factory: Any = None) -> Any:
    """A PyKEEN model with the scores of ``run``'s model (a run folder, a loaded :class:`~kgdistill.runs.Run` or an
    artifact; embedding models with TransE, DistMult, ComplEx or RotatE ``{norm: l2}``).

    Its triples factory (``model`` was built on it; also returned by :func:`pykeen_triples_factory`) maps labels to
    kgdistill's ids, so ``model.predict_t(torch.tensor([[h, r]]))`` ranks kgdistill's entity ids. Reciprocal models
    become PyKEEN models with inverse triples. ``triples_factory``: use this one instead (same labels and ids)."""
    _require_pykeen()
    from pykeen.models import ComplEx, DistMult, RotatE, TransE

    from kgdistill.models.embedding import EmbeddingModel

    model, entities, relations, triples = _model_and_labels(run)
    where = str(getattr(run, "path", None) or "model")
    if not isinstance(model, EmbeddingModel):
        raise PyKEENError(f"{where}: only embedding models convert to PyKEEN (got {type(model).__name__})")
    kind, options = model.interaction_name, model.interaction.extra_options()
    if kind not in SUPPORTED.values():
        raise PyKEENError(f"{where}: kgdistill {kind} has no PyKEEN counterpart here; supported: transe, distmult, "
                          f"complex, rotate (norm l2)")
    if kind == "rotate" and options.get("norm") != "l2":
        raise PyKEENError(f"{where}: kgdistill RotatE with norm {options.get('norm')!r} has no PyKEEN counterpart "
                          f"(PyKEEN's RotatE uses the L2 norm of the complex difference); train with "
                          f"model_options {{norm: l2}}")
    if triples_factory is None:
        triples_factory = pykeen_triples_factory(entities, relations, triples, inverse=model.reciprocal)
    if bool(triples_factory.create_inverse_triples) != bool(model.reciprocal) or \
            triples_factory.num_entities != model.num_entities or \
            triples_factory.real_num_relations != model.num_relations:
        raise PyKEENError(f"{where}: the triples factory does not match the model (entities, relations or inverse "
                          f"triples)")
    dim = model.dim
    cls = {"transe": TransE, "distmult": DistMult, "complex": ComplEx, "rotate": RotatE}[kind]
    kwargs: dict[str, Any] = {"scoring_fct_norm": int(options.get("p", 1))} if kind == "transe" else {}
    ours_ent = model.entity.detach().cpu().float()
    ours_rel = model.relation.detach().cpu().float()
    R = model.num_relations
    if model.reciprocal:  # kgdistill rows [r | r + R] → PyKEEN rows 2r, 2r + 1
        order = torch.stack([torch.arange(R), torch.arange(R) + R], 1).reshape(-1)
        ours_rel = ours_rel[order]
    if kind in ("complex", "rotate"):
        ent = torch.complex(ours_ent[:, :dim], ours_ent[:, dim:])
        rel = torch.complex(ours_rel[:, :dim], ours_rel[:, dim:]) if kind == "complex" else \
            torch.polar(torch.ones_like(ours_rel), ours_rel)
        ent_w, rel_w = torch.view_as_real(ent).reshape(ent.shape[0], -1), torch.view_as_real(rel).reshape(
            rel.shape[0], -1)
    else:
        ent_w, rel_w = ours_ent, ours_rel
    with torch.random.fork_rng(devices=[]):  # PyKEEN's random initialisation (overwritten) leaves the RNG as it was
        theirs = cls(triples_factory=triples_factory, embedding_dim=dim, **kwargs)
    with torch.no_grad():
        theirs.entity_representations[0]._embeddings.weight.copy_(ent_w)
        theirs.relation_representations[0]._embeddings.weight.copy_(rel_w)
    return theirs.eval()


__all__ = [
    "SUPPORTED",
    "PyKEENError",
    "PyKEENSource",
    "UntrustedPickleError",
    "convert",
    "from_pykeen",
    "import_pykeen",
    "is_pykeen_folder",
    "pykeen_triples_factory",
    "read_pykeen_folder",
    "to_pykeen",
]
