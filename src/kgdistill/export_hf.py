"""Export a run as a Hugging Face-style model folder with a model card: ``kgdistill export RUN DIR --format hf``.

The folder::

    DIR/config.json          model class and config, how each tensor is stored, metrics, lineage, run config,
                             licence, the sha256 and size of every other file (checked on load)
    DIR/model.safetensors    the weights (tensor names as in the model's state dict; float32, or float16 / int8
                             with ``--dtype``, sparse layouts for pruned tables: see :mod:`kgdistill.export`)
    DIR/entities.tsv         id <TAB> label <TAB> name (the run's id maps)
    DIR/relations.tsv        id <TAB> label <TAB> text
    DIR/known.safetensors    the known triples train ∪ valid ∪ test as one [n, 3] tensor ``known`` of the narrowest
                             integer type that holds every id (uint8 / int16 / int32: 3, 6 or 12 bytes a triple),
                             used to hide known answers in predictions; left out with ``--no-known``
    DIR/entity_descriptions.tsv  text models only: the descriptions they encode new entities from
    DIR/README.md            the model card: what it is, metrics with the evaluation protocol, lineage teacher →
                             student (with both metrics), training config, dataset, licence, how to load

``kgdistill.load(DIR)`` (and ``kgdistill load DIR``) returns an :class:`~kgdistill.artifact.Artifact` with the same
predictions as the run. ``README.md`` is not checksummed: the card may be edited.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save as safetensors_save

import kgdistill
from kgdistill.artifact import (  # noqa: F401 - the folder format's reader lives there (load_artifact reads both)
    CARD,
    CONFIG,
    DESCRIPTIONS,
    DTYPES,
    EXTRA_PREFIX,
    FILES,
    KNOWN,
    WEIGHTS,
    Artifact,
    ArtifactError,
    _check_shapes,
    _sha,
    decode_state,
    describe_model,
    encode_state,
    exporter_for,
    import_model_plugins,
    is_hf_folder,
    load_hf,
    model_kind,
    read_id_map_with_names,
    rebuild_model,
)
from kgdistill.artifact import HF_FORMAT as FORMAT
from kgdistill.artifact import HF_VERSION as VERSION
from kgdistill.errors import KGDistillError, RunFolderError
from kgdistill.export import _run_dataset, _score_error, read_run_files

METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


@dataclass
class HFExport:
    """What :func:`export_hf` wrote: the folder and the size of each file in bytes."""

    path: Path
    sizes: dict[str, int]
    config: dict[str, Any]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def _check_target(run_dir: Path, out: Path, force: bool) -> None:
    """Before any work: never the run folder itself or a folder above it, never a folder of other files, an existing
    export only with ``force``, never below a file."""
    run_res, out_res = run_dir.resolve(), out.resolve()
    if out_res == run_res or run_res.is_relative_to(out_res):
        raise KGDistillError(f"{out}: is the run folder {run_dir} or holds it (exporting there would break the run); "
                             f"choose a new folder")
    if out.exists() and not out.is_dir():
        raise KGDistillError(f"{out}: is a file; --format hf writes a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise KGDistillError(f"{out}: {parent} is a file, so no folder can be created below it")
            break
    if out.is_dir() and any(out.iterdir()):
        others = sorted(p.name for p in out.iterdir() if p.name not in FILES)
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise KGDistillError(f"{out}: exists and holds other files ({shown}); choose a new or empty folder")
        if not force:
            raise KGDistillError(f"{out}: already holds an export; use --force to replace it, or choose another "
                                 f"folder")


# ---- lineage --------------------------------------------------------------------------------------------------
def _test_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    both = (metrics.get("test") or {}).get("both") if isinstance(metrics.get("test"), dict) else None
    return {k: both[k] for k in METRIC_KEYS if k in both} if isinstance(both, dict) else {}


def _describe_run(run_dir: Path) -> dict[str, Any]:
    """A run's place in a lineage: its model, method and test metrics (tolerant of missing files)."""
    try:
        files = read_run_files(run_dir)
    except (RunFolderError, OSError, ValueError, yaml.YAMLError):
        return {"run": str(run_dir), "available": False}
    model = files["model"]
    described = describe_model(str(model.get("class", "")), model.get("config") or {})
    entry: dict[str, Any] = {"run": str(run_dir), "available": True, "method": files["method"],
                             "model": described["model"], "dim": described["dim"],
                             "parameters": files["metrics"].get("num_parameters"),
                             "test": _test_metrics(files["metrics"])}
    if isinstance(files["meta"].get("pykeen"), dict):
        p = files["meta"]["pykeen"]
        entry["pykeen"] = {k: p.get(k) for k in ("model_class", "source", "version")}
    return entry


def lineage(run_dir: Path, max_depth: int = 8) -> list[dict[str, Any]]:
    """Teacher chain of a distilled student, oldest first, ending with the run itself: each entry's model, method,
    test metrics and (for students) the distillation options of its ``distill.yaml``. A trained run: one entry."""
    chain: list[dict[str, Any]] = []
    current: Path | None = run_dir
    seen: set[Path] = set()
    while current is not None and len(chain) < max_depth and current.resolve() not in seen:
        seen.add(current.resolve())
        entry = _describe_run(current)
        step = current / "distill.yaml"
        parent: Path | None = None
        if step.is_file():
            try:
                d = yaml.safe_load(step.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                d = {}
            if isinstance(d, dict):
                entry.update(method=d.get("method", entry.get("method")), stage=d.get("stage"),
                             distill_options={k: v for k, v in (d.get("config") or {}).items() if v not in (None, [])})
                if d.get("teacher") or d.get("teacher_path"):
                    from kgdistill.report.lineage import resolve_teacher

                    # the recorded absolute teacher_path, or a relative teacher found next to / above the run
                    parent = resolve_teacher(current, d) or Path(str(d.get("teacher_path") or d["teacher"]))
                    entry["teacher"] = str(parent)
        chain.append(entry)
        current = parent if parent is not None and parent.exists() else None
        if parent is not None and not parent.exists():
            chain.append({"run": str(parent), "available": False})
    return list(reversed(chain))


# ---- the model card ---------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| split | side | " + " | ".join(k.upper() if k != "mr" else "MR" for k in METRIC_KEYS) + " |",
             "|---|---|" + "---:|" * len(METRIC_KEYS)]
    rows = 0
    for split, value in metrics.items():
        if not isinstance(value, dict) or "both" not in value:
            continue
        for side in ("both", "head", "tail"):
            if isinstance(value.get(side), dict):
                lines.append(f"| {split} | {side} | " + " | ".join(_fmt(value[side].get(k)) for k in METRIC_KEYS)
                             + " |")
                rows += 1
    return lines if rows else ["(the run has no evaluation metrics)"]


def model_card(cfg: dict[str, Any], sizes: dict[str, int], folder_name: str) -> str:
    """The ``README.md`` of an export (YAML front matter for model hubs, then Markdown)."""
    mc = cfg["model_config"]
    described = describe_model(cfg["model_class"], mc)
    run_cfg = cfg.get("run_config") or {}
    evaluation = run_cfg.get("evaluation") or {}
    filtered = evaluation.get("filtered", True)
    dataset = cfg.get("dataset") or "unknown"
    chain = cfg.get("lineage") or []
    distilled = len(chain) > 1
    title = f"{described['model']} (dim {described['dim']}) on {dataset}"
    front = {"license": cfg.get("license") or "unknown", "library_name": "kgdistill",
             "tags": ["knowledge-graph-completion", "link-prediction", "kgdistill", str(described["model"])]
             + (["knowledge-distillation"] if distilled else []),
             "datasets": [str(dataset)]}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {title}", ""]
    what = (f"A knowledge graph completion model: it scores triples (head, relation, tail) of the {dataset} graph "
            f"({cfg['counts']['entities']:,} entities, {cfg['counts']['relations']:,} relations) and ranks the "
            f"missing entity of (head, relation, ?) or (?, relation, tail). ")
    what += (f"It is a student distilled with kgdistill (method `{cfg.get('method')}`) from the teacher below."
             if distilled else f"Made with kgdistill (`{cfg.get('method')}`).")
    lines += ["## What it is", "", what, "",
              "| field | value |", "|---|---|",
              f"| model class | `{cfg['model_class']}` |", f"| interaction / encoder | `{described['model']}` |",
              f"| dimension | {_fmt(described['dim'])} |"]
    if "reciprocal" in mc:
        lines.append(f"| inverse relations | {'yes' if mc.get('reciprocal') else 'no'} |")
    if mc.get("interaction_options"):
        lines.append(f"| interaction options | `{json.dumps(mc['interaction_options'])}` |")
    lines += [f"| parameters | {_fmt(cfg['num_parameters'])} ({_fmt(cfg['num_parameters_nonzero'])} non-zero) |",
              f"| stored as | {cfg['dtype']} |",
              "| known triples | " + (f"{_fmt(cfg['known']['count'])} ({cfg['known']['dtype']}, known.safetensors)"
                                      if cfg.get("known") else f"left out ({cfg.get('known_left_out', '--no-known')})")
              + " |",
              f"| licence | {cfg.get('license') or 'unknown'} |", ""]
    lines += ["## Metrics", "",
              f"Link prediction on {dataset}: for every triple of a split, the head and the tail are each ranked "
              f"against all {cfg['counts']['entities']:,} entities ("
              + ("filtered: the other known true triples of train ∪ valid ∪ test are removed from the candidates"
                 if filtered else "raw: no filtering") +
              "; ties get the mean of the optimistic and pessimistic ranks, the realistic rank). `both` averages "
              "head and tail prediction. MRR = mean reciprocal rank, MR = mean rank, HITS@k = share of ranks ≤ k. "
              "Measured by kgdistill when the run finished.", ""]
    lines += _metrics_table(cfg.get("metrics") or {})
    q = cfg.get("quantization") or {}
    if cfg["dtype"] != "float32" and "mrr_change" in q:
        lines += ["", (f"Stored as {cfg['dtype']}: {q['split']} MRR {q['mrr_float32']:.4f} → "
                       f"{q['mrr_' + cfg['dtype']]:.4f} (change {q['mrr_change']:+.4f}, on {q['triples']:,} "
                       f"triples).")]
    lines += [""]
    if chain:
        lines += ["## Lineage", "",
                  "Teacher → student" if distilled else "A trained run (no teacher).", ""]
        lines += ["| step | run | method | model | dim | params | test MRR | test HITS@10 | options |",
                  "|---:|---|---|---|---:|---:|---:|---:|---|"]
        for i, e in enumerate(chain):
            test = e.get("test") or {}
            opts = e.get("distill_options") or {}
            shown = ", ".join(f"{k}={v}" for k, v in opts.items() if k not in ("dims",)) if opts else ""
            if e.get("pykeen"):
                shown = f"imported from PyKEEN {e['pykeen'].get('model_class')}"
            name = Path(e["run"]).name + ("" if e.get("available", True) else " (not found)")
            lines.append(f"| {i} | {name} | {e.get('method', '')} | {e.get('model', '')} | {_fmt(e.get('dim'))} | "
                         f"{_fmt(e.get('parameters'))} | {_fmt(test.get('mrr'))} | {_fmt(test.get('hits@10'))} | "
                         f"{shown} |")
        lines += ["", "The last row is this model. Paths of the runs: "
                  + "; ".join(f"`{e['run']}`" for e in chain) + ".", ""]
    data = run_cfg.get("data") or {}
    lines += ["## Dataset", "",
              f"`{dataset}`" + (f" (data_dir `{data.get('data_dir')}`)" if data.get("data_dir") else "")
              + f": {cfg['counts']['entities']:,} entities, {cfg['counts']['relations']:,} relations"
              + (f", {cfg['known']['count']:,} known triples (train ∪ valid ∪ test)" if cfg.get("known") else "")
              + ". Entity and relation ids are the line numbers of `entities.tsv` / `relations.tsv`.", ""]
    lines += ["## Training configuration", "", "The run's resolved `config.yaml`:", "", "```yaml",
              yaml.safe_dump(run_cfg, sort_keys=False).strip() or "{}", "```", ""]
    entity, relation = cfg.get("example") or ("ENTITY", "RELATION")
    hide = ", exclude_known=True" if cfg.get("known") else ""
    lines += ["## How to load", "", "```python", "import torch", "import kgdistill", "",
              f'art = kgdistill.load("{folder_name}")   # an Artifact: model, id maps, known triples',
              f'art.predict("{relation}", head="{entity}", k=10{hide})   # top-10 tails, by label or name',
              "scores = art.model.score_t(torch.tensor([0]), torch.tensor([0]))  # tails of entity 0, relation 0",
              "```", "", (f"or on the command line: `kgdistill load {folder_name} --head {entity} --relation "
                          f"{relation} -k 10` (and `kgdistill serve {folder_name}` for an HTTP API). Needs only "
                          f"`pip install kgdistill`, not the training data."), ""]
    lines += ["## Files", "", "| file | bytes |", "|---|---:|"]
    lines += [f"| {name} | {size:,} |" for name, size in sizes.items()]
    lines += ["", f"Exported by kgdistill {cfg.get('kgdistill')} on {cfg.get('created')}.", ""]
    return "\n".join(lines)


# ---- export ----------------------------------------------------------------------------------------------------
def export_hf(run_dir: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "float32",
              include_known: bool = True, force: bool = False, license: str | None = None,
              eval_split: str | None = "test", eval_max_triples: int | None = 5000) -> HFExport:
    """Write ``run_dir``'s model as a Hugging Face-style folder ``out`` with a model card; returns the sizes.

    ``dtype`` as in :func:`kgdistill.export.export_run` (float16 / int8 measure their MRR change on
    ``eval_split``); ``include_known=False`` leaves out ``known.safetensors`` (predictions then cannot hide known
    answers); ``license``: the licence field of the card (e.g. ``mit``, ``cc-by-4.0``; default ``unknown``).
    ``out`` must be new or empty, or an earlier export (replaced only with ``force``); never the run folder."""
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.models.base import load_model

    if dtype not in DTYPES:
        raise KGDistillError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    run_dir, out = Path(run_dir), Path(out)
    files = read_run_files(run_dir)
    _check_target(run_dir, out, force)
    import_model_plugins(str(files["model"].get("class", "")) or None)
    model = load_model(run_dir).eval()
    exporter = exporter_for(model)
    entities, _ = read_id_map_with_names(run_dir / "entities.tsv")
    relations, _ = read_id_map_with_names(run_dir / "relations.tsv")
    notes: list[str] = []
    dataset = None
    if include_known or exporter.include_text or (eval_split and dtype != "float32"):
        dataset = _run_dataset(files["config"], notes)
    if dataset is not None and (dataset.entities != entities or dataset.relations != relations):
        raise RunFolderError(f"{run_dir}: the dataset {dataset.name!r} has other ids than the run's id maps")

    stored, infos = encode_state(model.state_dict(), dtype, exporter.quantize, "")
    extra_stored, extra_infos = encode_state(exporter.extras(model), dtype, exporter.quantize, EXTRA_PREFIX)
    stored.update(extra_stored)
    restored = rebuild_model(model_kind(model), model.config(), decode_state(stored, infos, ""))
    queries = dataset.splits[eval_split][:, :2] if dataset is not None and eval_split in dataset.splits else None
    quant: dict[str, Any] = {"dtype": dtype, **_score_error(model, restored, len(entities), len(relations), queries)}
    if dtype != "float32" and dataset is not None and eval_split in dataset.splits:
        evaluator = DatasetEvaluator(dataset, batch_size=256)
        triples = dataset.splits[eval_split][:eval_max_triples]
        before = evaluator.evaluate(model, eval_split, triples=triples).summary()["both"]
        after = evaluator.evaluate(restored, eval_split, triples=triples).summary()["both"]
        quant.update({"split": eval_split, "triples": int(triples.shape[0]), "mrr_float32": before["mrr"],
                      f"mrr_{dtype}": after["mrr"], "mrr_change": after["mrr"] - before["mrr"]})

    blobs: dict[str, bytes] = {WEIGHTS: safetensors_save(stored, metadata={"format": "pt"}),
                               "entities.tsv": (run_dir / "entities.tsv").read_bytes(),
                               "relations.tsv": (run_dir / "relations.tsv").read_bytes()}
    known_info = None
    if include_known and dataset is not None:
        known = dataset.all_triples()
        narrow = known_dtype(max(len(entities), len(relations)))
        blobs[KNOWN] = safetensors_save({"known": known.to(narrow).contiguous()})
        known_info = {"file": KNOWN, "count": int(known.shape[0]), "dtype": str(narrow).removeprefix("torch.")}
    elif include_known:
        notes.append("known triples left out: the run's dataset was not found")
    left_out = None if known_info else "--no-known" if not include_known else "the run's dataset was not found"
    if exporter.include_text and dataset is not None:
        blobs[DESCRIPTIONS] = "".join(f"{i}\t{' '.join(dataset.entity_descriptions.get(e, '').split())}\n"
                                      for i, e in enumerate(entities)).encode("utf-8")
    config: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "model_class": model_kind(model), "model_config": model.config(),
        "dtype": dtype, "tensors": infos, "extras": extra_infos,
        "counts": {"entities": len(entities), "relations": len(relations)},
        "dataset": (files["config"].get("data") or {}).get("dataset"), "method": files["method"],
        "source_run": str(run_dir.resolve()), "metrics": files["metrics"], "run_config": files["config"],
        "lineage": lineage(run_dir), "license": license or "unknown", "known": known_info, "known_left_out": left_out,
        "num_parameters": model.num_parameters(), "num_parameters_nonzero": model.num_parameters(nonzero=True),
        "quantization": quant, "notes": notes, "kgdistill": kgdistill.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {name: {"sha256": _sha(data), "bytes": len(data)} for name, data in blobs.items()},
        "example": _example(dataset, entities, relations),
    }
    config_bytes = json.dumps(config, indent=2).encode("utf-8")
    sizes = {name: len(data) for name, data in blobs.items()}
    sizes[CONFIG] = len(config_bytes)
    card_size, card = 0, b""
    for _ in range(4):  # the card lists its own size: settle on a size that is the card's
        card = model_card(config, {**sizes, CARD: card_size}, out.name).encode("utf-8")
        if len(card) == card_size:
            break
        card_size = len(card)
    sizes[CARD] = len(card)
    blobs[CONFIG], blobs[CARD] = config_bytes, card
    _write_folder(out, blobs)
    return HFExport(out, {name: sizes[name] for name in (CONFIG, WEIGHTS, "entities.tsv", "relations.tsv", KNOWN,
                                                         DESCRIPTIONS, CARD) if name in sizes}, config)


def _example(dataset: Any, entities: list[str], relations: list[str]) -> list[str] | None:
    """(head label, relation label) of the first test triple (or ids 0, 0) for the card's loading example."""
    if not entities or not relations:
        return None
    if dataset is not None and "test" in dataset.splits and dataset.splits["test"].shape[0]:
        h, r, _ = dataset.splits["test"][0].tolist()
        return [entities[h], relations[r]]
    return [entities[0], relations[0]]


def known_dtype(num_ids: int) -> torch.dtype:
    """The narrowest integer type holding ids ``0 .. num_ids - 1``: uint8, int16 or int32."""
    return torch.uint8 if num_ids <= 256 else torch.int16 if num_ids <= 32768 else torch.int32


def _write_folder(out: Path, blobs: dict[str, bytes]) -> None:
    """Write the files into a temporary sibling folder, then put it in place of ``out`` (an earlier export is
    removed only after the new one is complete)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name, data in blobs.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# ---- load ------------------------------------------------------------------------------------------------------
# ---- command line ----------------------------------------------------------------------------------------------
def print_export(result: HFExport, seconds: float) -> None:
    """The folder, each file's size (and the weights' tensor layouts), as ``kgdistill export --format hf`` prints."""
    from kgdistill.tables import format_table

    print(f"export folder: {result.path} ({result.total_bytes:,} bytes in {len(result.sizes)} files, {seconds:.1f}s)")
    what = {CONFIG: "model config, metrics, lineage, checksums", WEIGHTS: "weights",
            "entities.tsv": "entity id map", "relations.tsv": "relation id map",
            KNOWN: f"known triples ({(result.config.get('known') or {}).get('dtype')}, "
                   f"{(result.config.get('known') or {}).get('count', 0):,})",
            DESCRIPTIONS: "entity descriptions", CARD: "model card"}
    print(format_table([{"file": n, "bytes": s, "holds": what.get(n, "")} for n, s in result.sizes.items()]))
    if result.config.get("known") is None:
        print("known triples: left out (predictions cannot hide known answers)")
    for note in result.config.get("notes", []):
        print(f"note: {note}")


__all__ = ["FORMAT", "HFExport", "export_hf", "is_hf_folder", "lineage", "load_hf", "model_card", "print_export"]
