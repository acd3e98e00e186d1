"""Self-contained model artifacts: the format, and loading it back without the training data.

An artifact is one safetensors file (written by :func:`kgdistill.export.export_run`). Its tensors hold the model
weights (dense, row-sparse or CSR-sparse, each optionally quantised), the known triples (``known``, ``int32[n, 3]``,
for filtering predictions) and the id maps and texts as UTF-8 byte tensors (``text/...``); its header metadata holds
one JSON document (``meta``: model class and config, dtype, how each tensor is stored, the run's metrics and the
measured effect of quantisation). :func:`load_artifact` also reads the folders of ``kgdistill export RUN DIR
--format hf`` (:func:`load_hf`; written by :mod:`kgdistill.export_hf`).

Storage of a floating tensor ``W[n, d]`` (``dense`` everywhere else):

* ``dense``: ``W`` as float32 / float16, or int8 ``Q`` with a per-row scale ``s[n] = max|W_i| / 127`` (``W ≈ Q·s``);
* ``rows``: only the non-zero rows (ids ``int32[k]`` + values ``[k, d]``), for tables pruned row-wise;
* ``csr``: non-zero values with CSR indices, for tables pruned element-wise (MetaSD-style masks).

The smallest of the three is chosen per tensor, so pruned models are stored sparse automatically. Loading rebuilds
dense float32 weights (zeros stay exact zeros), so serving code sees an ordinary :class:`KGCModel`.

Error bounds of the quantisation: float16 keeps a relative error ≤ 2⁻¹¹ per value; int8 an absolute error
≤ ``s_i / 2 = max|W_i| / 254`` per value of row ``i``. The effect on ranking is measured by
:func:`kgdistill.export.export_run`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as safetensors_load
from torch import Tensor

from kgdistill.data.triples import KGDataset
from kgdistill.errors import KGDistillError, RunFolderError
from kgdistill.models.base import KGCModel, build_model, model_classes
from kgdistill.registry import Registry

FORMAT = "kgdistill-artifact"
VERSION = 1
DTYPES = ("float32", "float16", "int8")
_TEXT_FIELDS = ("entities", "entity_names", "relations", "relation_names", "entity_descriptions")


class ArtifactError(KGDistillError):
    """An artifact file is missing, not a kgdistill artifact, or of an unsupported version."""


# ---- exporters: what to store for a model class ------------------------------------------------------------------
@dataclass
class Exporter:
    """How a model class is exported; the generic default stores the state dict.

    ``quantize(name, tensor)`` selects the tensors that float16 / int8 export compresses (default: 2-D floating
    tensors, i.e. embedding tables and per-output-row weight matrices). ``extras(model)`` returns additional tensors
    stored next to the weights (e.g. a text model's cached entity encodings) and ``restore(model, extras)`` puts them
    back after loading. ``include_text``: store entity descriptions (text models need them to encode new entities).
    """

    quantize: Callable[[str, Tensor], bool] = lambda name, t: t.is_floating_point() and t.dim() == 2
    extras: Callable[[KGCModel], dict[str, Tensor]] = lambda model: {}
    restore: Callable[[KGCModel, dict[str, Tensor]], None] = lambda model, extras: None
    include_text: bool = False


exporters: Registry[Exporter] = Registry("exporter")
exporters.register("embedding")(Exporter(quantize=lambda name, t: name in ("entity", "relation")))


def _default_exporter(model: KGCModel) -> Exporter:
    """Fallback for classes without a registered exporter; duck-typed hooks let text models plug in unregistered:
    ``export_extras() -> dict[str, Tensor]``, ``import_extras(dict)`` and ``uses_entity_text = True``."""
    return Exporter(
        extras=lambda m: dict(m.export_extras()) if hasattr(m, "export_extras") else {},
        restore=lambda m, x: m.import_extras(x) if hasattr(m, "import_extras") and x else None,
        include_text=bool(getattr(model, "uses_entity_text", False)),
    )


def describe_model(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``{"model", "dim", "layers"}`` of a model class and config: the interaction or PLM name, the embedding /
    hidden dimension and the number of encoder layers (None where it does not apply)."""
    plm = config.get("plm_config") if isinstance(config.get("plm_config"), dict) else {}
    dim = config.get("dim", plm.get("hidden_size"))
    layers = next((v for v in (config.get("num_layers"), config.get("layers"), plm.get("num_hidden_layers"))
                   if v is not None), None)
    return {"model": config.get("interaction") or config.get("plm_name") or kind, "dim": dim, "layers": layers}


def model_kind(model: KGCModel) -> str:
    """Canonical registry name of ``model``'s class."""
    return model_classes.canonical(type(model).registry_name)  # type: ignore[attr-defined]


def exporter_for(model: KGCModel) -> Exporter:
    kind = model_kind(model)
    return exporters.get(kind) if kind in exporters else _default_exporter(model)


#: Modules whose import registers further model classes (text bi-encoders, distilled / pruned models).
PLUGIN_MODULES = ("kgdistill.text.biencoder", "kgdistill.distill")


def import_model_plugins(kind: str | None = None) -> None:
    """Make model class ``kind`` available: import the modules that register model classes unless it already is.

    Raises :class:`ArtifactError` when ``kind`` stays unknown (e.g. the text extra is not installed)."""
    import kgdistill.models.embedding  # noqa: F401 - registers "embedding"

    if kind is not None and kind in model_classes:
        return
    missing = []
    for module in PLUGIN_MODULES:
        try:
            __import__(module)
        except ModuleNotFoundError as err:  # a package that is not there, or an extra that is not installed
            missing.append(err.name or module)
    if kind is not None and kind not in model_classes:
        hint = f" (not importable: {', '.join(missing)}; is the matching extra installed?)" if missing else ""
        raise ArtifactError(f"unknown model class {kind!r}; known: {', '.join(model_classes.names())}{hint}")


# ---- tensor codec -----------------------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encode_tensor(t: Tensor, dtype: str, quantize: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Encode one tensor → (stored tensors keyed by suffix ``""``, ``".scale"``, ``".rows"``, ``".indptr"``,
    ``".indices"``; a JSON description). 2-D floating tensors get the smallest of the dense / rows / csr layouts;
    ``quantize`` selects whether ``dtype`` (float16 / int8) applies to this tensor or it stays float32."""
    t = t.detach().cpu()
    info: dict[str, Any] = {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)}
    value_dtype = dtype if quantize and t.is_floating_point() else "float32"
    if not t.is_floating_point() or t.dim() != 2 or t.numel() == 0:
        if t.is_floating_point() and value_dtype == "float16":
            t = t.half()
        elif t.is_floating_point():
            t = t.float()
        return {"": t.contiguous()}, {**info, "layout": "dense", "stored": _dtype_name(t.dtype)}
    t = t.float()
    n, d = t.shape
    vbytes = {"float32": 4, "float16": 2, "int8": 1}[value_dtype]
    nonzero = t != 0
    row_nz = nonzero.any(1)
    nnz, rows_nz = int(nonzero.sum()), int(row_nz.sum())
    idx_dtype = torch.int16 if d <= 32767 else torch.int32
    scale_bytes = 4 if value_dtype == "int8" else 0
    sizes = {"dense": n * d * vbytes + n * scale_bytes,
             "rows": rows_nz * (d * vbytes + 4 + scale_bytes),
             "csr": nnz * (vbytes + idx_dtype.itemsize) + 4 * (n + 1) + n * scale_bytes}
    layout = min(("dense", "rows", "csr"), key=lambda k: sizes[k])  # ties keep the dense layout
    out: dict[str, Tensor] = {}
    row_max = t.abs().amax(1)
    if layout == "dense":
        values, vmax = t, row_max
    elif layout == "rows":
        ids = row_nz.nonzero().squeeze(1)
        out[".rows"] = ids.to(torch.int32)
        values, vmax = t[ids], row_max[ids]
    else:
        indptr = torch.zeros(n + 1, dtype=torch.int64)
        torch.cumsum(nonzero.sum(1), 0, out=indptr[1:])
        out[".indptr"] = indptr.to(torch.int32)
        out[".indices"] = nonzero.nonzero()[:, 1].to(idx_dtype)
        values, vmax = t[nonzero], row_max
    if value_dtype == "int8":
        scale = vmax / 127.0
        divisor = scale.clamp_min(torch.finfo(torch.float32).tiny)
        if layout == "csr":
            divisor = torch.repeat_interleave(divisor, indptr.diff())
        else:
            divisor = divisor[:, None]
        out[""] = torch.round(values / divisor).clamp_(-127, 127).to(torch.int8)
        out[".scale"] = scale.float()
    else:
        out[""] = values.to(torch.float16 if value_dtype == "float16" else torch.float32)
    info.update(layout=layout, stored=value_dtype, nnz=nnz, bytes=sizes[layout])
    return {k: v.contiguous() for k, v in out.items()}, info


def decode_tensor(parts: dict[str, Tensor], info: dict[str, Any]) -> Tensor:
    """Inverse of :func:`encode_tensor`: a dense tensor of the original shape and dtype (float16 / int8 values
    dequantised; zeros of the sparse layouts exact)."""
    shape, layout = info["shape"], info["layout"]
    dtype = getattr(torch, info["dtype"])
    values = parts[""]
    if ".scale" in parts:
        scale = parts[".scale"].float()
        if layout == "csr":
            scale = torch.repeat_interleave(scale, parts[".indptr"].long().diff())
        else:
            scale = scale[:, None]
        values = values.float() * scale
    if layout == "dense":
        return values.to(dtype).reshape(shape)
    out = torch.zeros(shape, dtype=dtype)
    if layout == "rows":
        out[parts[".rows"].long()] = values.to(dtype)
    elif layout == "csr":
        rows = torch.repeat_interleave(torch.arange(shape[0]), parts[".indptr"].long().diff())
        out[rows, parts[".indices"].long()] = values.to(dtype)
    else:
        raise ArtifactError(f"unknown tensor layout {layout!r} (an artifact of a newer kgdistill?)")
    return out


def encode_state(tensors: dict[str, Tensor], dtype: str, quantize: Callable[[str, Tensor], bool], prefix: str
                 ) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
    """Encode a dict of tensors under ``prefix`` (``w/`` weights, ``x/`` extras)."""
    stored: dict[str, Tensor] = {}
    infos: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()  # safetensors refuses tensors sharing memory (tied weights): copy repeats
    for name, t in tensors.items():
        parts, info = encode_tensor(t, dtype, dtype != "float32" and quantize(name, t))
        for suffix, v in parts.items():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen and v.numel():
                v = v.clone()
            seen.add(ptr)
            stored[f"{prefix}{name}{suffix}"] = v
        infos[name] = info
    return stored, infos


def decode_state(stored: dict[str, Tensor], infos: dict[str, dict[str, Any]], prefix: str) -> dict[str, Tensor]:
    out = {}
    for name, info in infos.items():
        key = f"{prefix}{name}"
        parts = {s: stored[key + s] for s in ("", ".scale", ".rows", ".indptr", ".indices") if key + s in stored}
        if "" not in parts:
            raise ArtifactError(f"corrupt artifact: tensor {key!r} is missing")
        out[name] = decode_tensor(parts, info)
    return out


def _text_tensor(items: list[str]) -> Tensor:
    data = "\n".join(items).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone() if data else torch.zeros(0, dtype=torch.uint8)


def _text_list(t: Tensor | None, count: int) -> list[str]:
    if count == 0 or t is None:
        return []
    items = bytes(t.numpy()).decode("utf-8").split("\n")
    if len(items) != count:
        raise ArtifactError(f"corrupt artifact: expected {count} text entries, found {len(items)}")
    return items


def rebuild_model(kind: str, config: dict[str, Any], state: dict[str, Tensor]) -> KGCModel:
    """Build a model of class ``kind`` and put ``state`` in (assigned, not copied); in eval mode.

    (Building on the meta device to skip the random initialisation was tried: it imports torch's compiler stack,
    several seconds, more than the initialisation costs.)"""
    model = build_model(kind, config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# ---- the artifact -----------------------------------------------------------------------------------------------
@dataclass
class Artifact:
    """A loaded artifact: the model, the id maps with readable names, the known triples and the metadata."""

    model: KGCModel
    entities: list[str]
    entity_names: list[str]
    relations: list[str]
    relation_names: list[str]
    meta: dict[str, Any]
    known: Tensor | None = None
    entity_descriptions: list[str] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def size_bytes(self) -> int | None:
        if self.path is not None and self.path.is_dir():  # a --format hf folder: all its files
            return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return self.path.stat().st_size if self.path is not None and self.path.exists() else None

    @cached_property
    def dataset(self) -> KGDataset:
        """A :class:`KGDataset` view (known triples as its only split) for :mod:`kgdistill.predict` and friends."""
        known = self.known.long() if self.known is not None else torch.empty(0, 3, dtype=torch.long)
        return KGDataset(name=str(self.meta.get("dataset") or "artifact"), entities=self.entities,
                         relations=self.relations, splits={"train": known},
                         entity_names=dict(zip(self.entities, self.entity_names)),
                         relation_texts=dict(zip(self.relations, self.relation_names)))

    @staticmethod
    def _index(labels: list[str], names: list[str]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            index.setdefault(name.lower(), i)
        for i, name in enumerate(names):
            index[name] = i
        for i, label in enumerate(labels):
            index[label] = i
        return index

    @cached_property
    def _entity_index(self) -> dict[str, int]:
        return self._index(self.entities, self.entity_names)

    @cached_property
    def _relation_index(self) -> dict[str, int]:
        return self._index(self.relations, self.relation_names)

    def find_entity(self, name: str) -> int | None:
        """Id of an entity by label or name (exact, then case-insensitive name); None when unknown. O(1)."""
        found = self._entity_index.get(name)
        return found if found is not None else self._entity_index.get(name.lower())

    def find_relation(self, name: str) -> int | None:
        found = self._relation_index.get(name)
        return found if found is not None else self._relation_index.get(name.lower())

    def entity_id(self, name: str) -> int:
        """Id of an entity by label or name (case-insensitive names); raises
        :class:`~kgdistill.predict.UnknownEntityError` with close matches."""
        from kgdistill.predict import entity_id

        found = self.find_entity(name)
        return found if found is not None else entity_id(self.dataset, name)

    def relation_id(self, name: str) -> int:
        from kgdistill.predict import relation_id

        found = self.find_relation(name)
        return found if found is not None else relation_id(self.dataset, name)

    @cached_property
    def filter_index(self) -> Any:
        """A :class:`~kgdistill.evaluation.FilterIndex` over the known triples (None without them)."""
        from kgdistill.evaluation import FilterIndex

        if self.known is None:
            return None
        return FilterIndex.from_triples(self.known.long(), self.num_entities, self.num_relations)

    def predict(self, relation: str, head: str | None = None, tail: str | None = None, k: int = 10,
                exclude_known: bool = False) -> list[Any]:
        """Top-``k`` tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)``; see
        :func:`kgdistill.predict.predict`."""
        from kgdistill.predict import predict

        return predict(self.model, self.dataset, relation, head=head, tail=tail, k=k, exclude_known=exclude_known)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: model, sizes, parameters, metrics, quantisation effect."""
        cfg = self.meta.get("model_config", {})
        described = describe_model(self.meta.get("model_class", ""), cfg)
        return {
            "model": self.meta.get("model_class"), "interaction": cfg.get("interaction"), "dim": described["dim"],
            "layers": described["layers"], "dtype": self.meta.get("dtype"),
            "dataset": self.meta.get("dataset"), "entities": self.num_entities, "relations": self.num_relations,
            "known_triples": 0 if self.known is None else int(self.known.shape[0]),
            "parameters": {"total": self.model.num_parameters(), "nonzero": self.model.num_parameters(nonzero=True)},
            "artifact_bytes": self.size_bytes, "tensors": self.meta.get("tensors", {}),
            "metrics": self.meta.get("metrics", {}), "quantization": self.meta.get("quantization"),
            "source_run": self.meta.get("source_run"), "method": self.meta.get("method"),
            "created": self.meta.get("created"), "kgdistill": self.meta.get("kgdistill"),
        }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of an artifact, read from the file header only (no tensors loaded)."""
    path = Path(path)
    if path.is_dir():
        hint = " (a run folder: export it first with `kgdistill export RUN_DIR OUT`)" \
            if (path / "model.json").exists() else ""
        raise ArtifactError(f"{path}: is a folder, not an artifact file{hint}")
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a foreign file
        raise ArtifactError(f"{path}: not a kgdistill artifact ({err})") from None
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a kgdistill artifact (a safetensors file without kgdistill metadata)")
    if int(header.get("version", 0)) > VERSION:
        raise ArtifactError(f"{path}: artifact format version {header['version']} is newer than this kgdistill "
                            f"reads ({VERSION}); upgrade kgdistill")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{path}: damaged (its kgdistill metadata is not valid JSON)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors"), dict) or \
            not isinstance(meta.get("model_config"), dict) or not isinstance(meta.get("model_class"), str):
        raise ArtifactError(f"{path}: damaged (its metadata lacks model_class / model_config / tensors)")
    return meta


def _data_section(raw: bytes) -> bytes:
    """The tensor bytes of a serialised safetensors file (after the 8-byte length and the JSON header)."""
    return raw[8 + int.from_bytes(raw[:8], "little"):]


def _check_shapes(stored: dict[str, Tensor], infos: dict[str, dict[str, Any]], prefix: str, path: Path) -> None:
    """Before decoding allocates anything: every logical shape agrees with the tensors actually stored."""
    for name, info in infos.items():
        key, shape = f"{prefix}{name}", info.get("shape")
        values = stored.get(key)
        if values is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ArtifactError(f"{path}: damaged (tensor {key!r} missing or its shape {shape!r} unreadable)")
        layout, numel = info.get("layout"), math.prod(shape)
        ok = {"dense": lambda: values.numel() == numel,
              "rows": lambda: len(shape) == 2 and values.dim() == 2 and values.shape[1] == shape[1] and
              key + ".rows" in stored and stored[key + ".rows"].numel() == values.shape[0] and
              values.shape[0] <= shape[0],
              "csr": lambda: len(shape) == 2 and key + ".indptr" in stored and
              stored[key + ".indptr"].numel() == shape[0] + 1}
        if layout not in ok or not ok[layout]():
            raise ArtifactError(f"{path}: damaged (tensor {key!r} claims shape {shape} that its stored values "
                                f"do not fill)")


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load an artifact written by :func:`export_run` / :func:`export_model`; needs no training data.

    Damage is one :class:`ArtifactError` naming the file: tensor bytes against the sha256 stored in the metadata,
    a truncated or malformed file, shapes the stored values do not fill or a model config claiming sizes the
    tensors do not hold (refused before anything is allocated), NaN/Inf weights."""
    from kgdistill.models.base import check_claimed_size, check_finite

    path = Path(path)
    if path.is_dir():
        if is_hf_folder(path):  # a folder written by ``kgdistill export RUN DIR --format hf``
            return load_hf(path, device=device)
    meta = read_metadata(path)
    import_model_plugins(meta["model_class"])
    raw = path.read_bytes()
    want = meta.get("data_sha256")
    if want is not None and hashlib.sha256(_data_section(raw)).hexdigest() != want:
        raise ArtifactError(f"{path}: damaged: the sha256 of its tensor data differs from the one recorded at "
                            f"export; export the run again")
    try:
        stored = safetensors_load(raw)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        raise ArtifactError(f"{path}: damaged or truncated safetensors file ({err})") from None
    del raw
    _check_shapes(stored, meta["tensors"], "w/", path)
    _check_shapes(stored, meta.get("extras", {}), "x/", path)
    try:
        check_claimed_size(meta["model_config"], {k: i["shape"] for k, i in meta["tensors"].items()}, path)
        check_finite(stored, path)
    except RunFolderError as err:
        raise ArtifactError(str(err)) from None
    state = decode_state(stored, meta["tensors"], "w/")
    model = rebuild_model(meta["model_class"], meta["model_config"], state)
    extras = decode_state(stored, meta.get("extras", {}), "x/")
    exporter_for(model).restore(model, extras)
    counts = meta["counts"]
    texts = {f: _text_list(stored.get(f"text/{f}"), counts.get(f, 0)) for f in _TEXT_FIELDS}
    known = stored.get("known")
    return Artifact(model=model.to(device), entities=texts["entities"], entity_names=texts["entity_names"],
                    relations=texts["relations"], relation_names=texts["relation_names"], meta=meta,
                    known=known, entity_descriptions=texts["entity_descriptions"], extras=extras, path=path)


def read_id_map_with_names(path: Path) -> tuple[list[str], list[str]]:
    """``id<TAB>label[<TAB>name]`` lines → (labels, names); a missing name is the label."""
    from kgdistill.runs import read_id_map

    labels = read_id_map(path)
    names = [parts[2] if len(parts) > 2 and parts[2] else labels[i] for i, parts in
             enumerate(line.split("\t") for line in path.read_text(encoding="utf-8").splitlines())]
    return labels, names



# ---- the folder format of ``kgdistill export RUN DIR --format hf`` (written by :mod:`kgdistill.export_hf`) ----
HF_FORMAT = "kgdistill-hf"
HF_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
KNOWN = "known.safetensors"
CARD = "README.md"
DESCRIPTIONS = "entity_descriptions.tsv"
#: the files this exporter writes (a folder holding only these may be replaced with ``force``)
FILES = (CONFIG, WEIGHTS, KNOWN, CARD, DESCRIPTIONS, "entities.tsv", "relations.tsv")
EXTRA_PREFIX = "extra/"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`export_hf` (its ``config.json`` says so)."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == HF_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_hf(path: str | os.PathLike, device: str | torch.device = "cpu") -> Artifact:
    """Load a folder written by :func:`export_hf` as an :class:`Artifact` (model, id maps, known
    triples); every file is checked against the sha256 in ``config.json``. Damage is one :class:`ArtifactError`."""
    from kgdistill.models.base import check_claimed_size, check_finite

    path = Path(path)
    try:
        cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path / CONFIG}: not readable as JSON ({err})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != HF_FORMAT:
        raise ArtifactError(f"{path}: not a kgdistill export folder ({CONFIG} lacks format {HF_FORMAT!r})")
    if int(cfg.get("version", 0)) > HF_VERSION:
        raise ArtifactError(f"{path}: export format version {cfg['version']} is newer than this kgdistill reads "
                            f"({HF_VERSION}); upgrade kgdistill")
    if not isinstance(cfg.get("model_config"), dict) or not isinstance(cfg.get("tensors"), dict) or \
            not isinstance(cfg.get("files"), dict):
        raise ArtifactError(f"{path / CONFIG}: damaged (lacks model_config / tensors / files)")
    data: dict[str, bytes] = {}
    for name, info in cfg["files"].items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"{f}: missing (listed in {CONFIG})")
        data[name] = f.read_bytes()
        if _sha(data[name]) != (info or {}).get("sha256"):
            raise ArtifactError(f"{f}: damaged: its sha256 differs from the one recorded in {CONFIG} at export; "
                                f"export the run again")
    import_model_plugins(cfg["model_class"])
    try:
        stored = safetensors_load(data[WEIGHTS])
    except Exception as err:  # noqa: BLE001
        raise ArtifactError(f"{path / WEIGHTS}: damaged safetensors file ({err})") from None
    _check_shapes(stored, cfg["tensors"], "", path / WEIGHTS)
    _check_shapes(stored, cfg.get("extras", {}), EXTRA_PREFIX, path / WEIGHTS)
    try:
        check_claimed_size(cfg["model_config"], {k: i["shape"] for k, i in cfg["tensors"].items()}, path / CONFIG)
        check_finite(stored, path / WEIGHTS)
    except RunFolderError as err:
        raise ArtifactError(str(err)) from None
    state = decode_state(stored, cfg["tensors"], "")
    model = rebuild_model(cfg["model_class"], cfg["model_config"], state)
    extras = decode_state(stored, cfg.get("extras", {}), EXTRA_PREFIX)
    exporter_for(model).restore(model, extras)
    entities, entity_names = read_id_map_with_names(path / "entities.tsv")
    relations, relation_names = read_id_map_with_names(path / "relations.tsv")
    known = safetensors_load(data[KNOWN])["known"].to(torch.int32) if KNOWN in data else None
    descriptions: list[str] = []
    if DESCRIPTIONS in data:
        descriptions = [line.split("\t", 1)[1] if "\t" in line else "" for line in
                        data[DESCRIPTIONS].decode("utf-8").splitlines()]
    meta = {**cfg, "counts": {"entities": len(entities), "relations": len(relations)}}
    return Artifact(model=model.to(device), entities=entities, entity_names=entity_names, relations=relations,
                    relation_names=relation_names, meta=meta, known=known, entity_descriptions=descriptions,
                    extras=extras, path=path)
