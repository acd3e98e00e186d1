"""Export a run folder to one self-contained artifact file (``kgdistill export RUN OUT``).

The format, its codec and its reader live in :mod:`kgdistill.artifact`; this module writes it: the model's tensors
(quantised to float16 / int8 on request, with the MRR change measured), the id maps and names, the known triples and
the run's metadata, in one atomically written safetensors file. The names of :mod:`kgdistill.artifact` are
re-exported here (``from kgdistill.export import load_artifact`` keeps working).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import Tensor

import kgdistill
from kgdistill.artifact import (
    DTYPES,
    FORMAT,
    VERSION,
    Artifact,
    ArtifactError,
    Exporter,
    _data_section,
    _text_tensor,
    decode_state,
    decode_tensor,
    describe_model,
    encode_state,
    encode_tensor,
    exporter_for,
    exporters,
    import_model_plugins,
    load_artifact,
    model_kind,
    read_id_map_with_names,
    read_metadata,
    rebuild_model,
)
from kgdistill.atomicio import atomic_write_bytes
from kgdistill.data.triples import KGDataset
from kgdistill.errors import KGDistillError, RunFolderError
from kgdistill.models.base import KGCModel


# ---- export -----------------------------------------------------------------------------------------------------
def read_run_files(run_dir: str | Path) -> dict[str, Any]:
    """The plain files of a run folder, read tolerantly: ``config`` (raw YAML dict), ``metrics``, ``meta`` and the
    ``method`` that produced it (``meta.json`` / config ``method`` or ``distill.method``; "train" otherwise)."""
    import yaml

    run_dir = Path(run_dir)
    if not (run_dir / "model.json").exists():
        raise RunFolderError(f"{run_dir}: not a finished run folder (no model.json / model.safetensors)")

    def read_json(name: str) -> dict[str, Any]:
        p = run_dir / name
        return json.loads(p.read_text()) if p.exists() else {}

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    config = config if isinstance(config, dict) else {}
    meta = read_json("meta.json")
    distill = config.get("distill") if isinstance(config.get("distill"), dict) else {}
    method = meta.get("method") or config.get("method") or distill.get("method") or "train"
    return {"config": config, "metrics": read_json("metrics.json"), "meta": meta, "method": str(method),
            "model": read_json("model.json")}


def _run_dataset(config: dict[str, Any], notes: list[str]) -> KGDataset | None:
    from kgdistill.data.datasets import load_dataset

    data = config.get("data") or {}
    if not data.get("dataset"):
        notes.append("the run's config names no dataset: known triples and the quantisation MRR not included")
        return None
    try:
        return load_dataset(data.get("dataset", ""), data_dir=data.get("data_dir"), download=False,
                            data_url=data.get("data_url"))
    except KGDistillError as err:
        notes.append(f"dataset not available ({err}): known triples and the quantisation MRR not included")
        return None


def _score_error(a: KGCModel, b: KGCModel, num_entities: int, num_relations: int, queries: Tensor | None
                 ) -> dict[str, float]:
    """Largest absolute score difference of two models over all entities for up to 64 tail queries."""
    if queries is None:
        g = torch.Generator().manual_seed(0)
        queries = torch.stack([torch.randint(num_entities, (64,), generator=g),
                               torch.randint(num_relations, (64,), generator=g)], 1)
    h, r = queries[:64, 0], queries[:64, 1]
    with torch.inference_mode():
        sa, sb = a.score_t(h, r).float(), b.score_t(h, r).float()
    return {"max_abs_score_error": float((sa - sb).abs().max()), "max_abs_score": float(sa.abs().max())}


#: the files of a run folder an export never writes over (``--force`` or not)
RUN_FILES = ("model.safetensors", "model.json", "config.yaml", "meta.json", "metrics.json", "entities.tsv",
             "relations.tsv", "trace.jsonl", "manifest.json", "text_config.yaml", "distill.yaml", ".kgdistill.lock")


def export_target(run_dir: Path, out: str | Path, dtype: str, force: bool = False) -> Path:
    """The artifact path ``export_run`` writes, checked before any work: never a file of the run folder (which
    would break the run), never an existing file unless ``force``, never below a file."""
    out = Path(out)
    if out.is_dir():
        out = out / f"{run_dir.name}-{dtype}.safetensors"
    if out.is_dir():
        raise KGDistillError(f"{out}: is a folder; give the artifact a file name")
    inside = out.resolve().relative_to(run_dir.resolve()).as_posix() \
        if out.resolve().is_relative_to(run_dir.resolve()) else None
    if inside is not None and (inside in RUN_FILES or inside.startswith("checkpoints/")):
        raise KGDistillError(f"{out}: is a file of the run folder {run_dir} (exporting onto it would break the "
                             f"run); write the artifact elsewhere")
    if out.exists() and not force:
        raise KGDistillError(f"{out}: exists; use --force to replace it, or choose another file")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise KGDistillError(f"{out}: {parent} is a file, so nothing can be written below it")
            break
    return out


def export_run(run_dir: str | Path, out: str | Path, dtype: str = "float32", *, eval_split: str | None = "test",
               eval_max_triples: int | None = 5000, include_known: bool = True,
               dataset: KGDataset | None = None, force: bool = False) -> Path:
    """Export the model of a run folder to one artifact file; returns its path.

    ``dtype``: float32 (lossless) | float16 | int8 (per-row scale), applied to the tensors the model's exporter
    selects (embedding tables for embedding models). For float16 / int8 the filtered MRR on ``eval_split`` is
    measured before and after (on its first ``eval_max_triples`` triples: text models are slow to evaluate) and
    stored in the metadata (``quantization``). ``include_known`` stores train ∪ valid
    ∪ test so that predictions can hide known answers. The dataset is read from the run's config (or given); when it
    cannot be found the artifact is written without known triples and without the MRR measurement.
    ``out``: a file path, or an existing folder (the file is then named ``<run>-<dtype>.safetensors``). An existing
    file is only replaced with ``force``; a file of the run folder itself (its model, config, ...) never is.
    """
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.models.base import load_model

    if dtype not in DTYPES:
        raise KGDistillError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    run_dir = Path(run_dir)
    files = read_run_files(run_dir)
    out = export_target(run_dir, out, dtype, force)
    import_model_plugins(str(files["model"].get("class", "")) or None)
    model = load_model(run_dir).eval()
    exporter = exporter_for(model)
    entities, entity_names = read_id_map_with_names(run_dir / "entities.tsv")
    relations, relation_names = read_id_map_with_names(run_dir / "relations.tsv")
    notes: list[str] = []
    wants_data = include_known or exporter.include_text or (eval_split and dtype != "float32")
    if dataset is None and wants_data:
        dataset = _run_dataset(files["config"], notes)
    if dataset is not None and (dataset.entities != entities or dataset.relations != relations):
        raise RunFolderError(f"{run_dir}: the dataset {dataset.name!r} has other ids than the run's id maps")

    stored, infos = encode_state(model.state_dict(), dtype, exporter.quantize, "w/")
    extra_stored, extra_infos = encode_state(exporter.extras(model), dtype, exporter.quantize, "x/")
    texts = {"entities": entities, "entity_names": entity_names, "relations": relations,
             "relation_names": relation_names}
    if exporter.include_text and dataset is not None:
        texts["entity_descriptions"] = [dataset.entity_descriptions.get(e, "") for e in entities]
    stored.update(extra_stored)
    stored.update({f"text/{k}": _text_tensor(v) for k, v in texts.items() if v})
    if include_known and dataset is not None:
        stored["known"] = dataset.all_triples().to(torch.int32).contiguous()

    restored = rebuild_model(model_kind(model), model.config(), decode_state(stored, infos, "w/"))
    queries = dataset.splits[eval_split][:, :2] if dataset is not None and eval_split in dataset.splits else None
    quant: dict[str, Any] = {"dtype": dtype, **_score_error(model, restored, len(entities), len(relations), queries)}
    if dtype != "float32" and dataset is not None and eval_split:
        evaluator = DatasetEvaluator(dataset, batch_size=256)
        triples = dataset.splits[eval_split][:eval_max_triples]
        before = evaluator.evaluate(model, eval_split, triples=triples).summary()["both"]
        after = evaluator.evaluate(restored, eval_split, triples=triples).summary()["both"]
        quant.update({"split": eval_split, "triples": int(triples.shape[0]), "mrr_float32": before["mrr"],
                      f"mrr_{dtype}": after["mrr"], "mrr_change": after["mrr"] - before["mrr"],
                      "hits10_float32": before["hits@10"], f"hits10_{dtype}": after["hits@10"]})

    meta = {
        "model_class": model_kind(model), "model_config": model.config(), "dtype": dtype, "tensors": infos,
        "extras": extra_infos, "counts": {k: len(v) for k, v in texts.items()},
        "dataset": (files["config"].get("data") or {}).get("dataset"), "method": files["method"],
        "source_run": str(run_dir.resolve()), "metrics": files["metrics"], "run_config": files["config"],
        "num_parameters": model.num_parameters(), "num_parameters_nonzero": model.num_parameters(nonzero=True),
        "quantization": quant, "notes": notes, "kgdistill": kgdistill.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # the sha256 of the tensor bytes goes into the header; the bytes after the header do not depend on it
    meta["data_sha256"] = hashlib.sha256(_data_section(safetensors_save(stored))).hexdigest()
    atomic_write_bytes(out, safetensors_save(stored, metadata={"format": FORMAT, "version": str(VERSION),
                                                               "meta": json.dumps(meta)}))
    return out


__all__ = ["DTYPES", "FORMAT", "VERSION", "Artifact", "ArtifactError", "Exporter", "RUN_FILES", "decode_state",
           "decode_tensor", "describe_model", "encode_state", "encode_tensor", "export_run", "export_target",
           "exporter_for", "exporters", "import_model_plugins", "load_artifact", "model_kind", "read_metadata",
           "read_run_files", "rebuild_model"]
