"""The interface every KGC model of kgdistill implements (embedding models and text bi-encoders alike).

Scoring modes follow LibKGE: ``score_hrt`` scores given triples, ``score_t`` ranks tails for ``(h, r, ?)`` and
``score_h`` ranks heads for ``(?, r, t)``, against all entities or a candidate set. Higher = better.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from kgdistill.atomicio import commit_files, sha256_bytes
from kgdistill.errors import RunFolderError
from kgdistill.registry import Registry

model_classes: Registry[type[KGCModel]] = Registry("model class")
# declared here, imported on first use: a fresh process loads any kind of run folder without importing it first
model_classes.declare("embedding", "kgdistill.models.embedding:EmbeddingModel")
model_classes.declare("biencoder", "kgdistill.text.biencoder:BiEncoder", "simkgc")

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"
MODEL_MANIFEST = "manifest.json"


class KGCModel(nn.Module):
    """Abstract KGC model over ``num_entities`` entities and ``num_relations`` relations."""

    num_entities: int
    num_relations: int

    def score_hrt(self, hrt: Tensor) -> Tensor:
        """``hrt[n, 3]`` → scores ``[n]``."""
        raise NotImplementedError

    def score_t(self, h: Tensor, r: Tensor, candidates: Tensor | None = None) -> Tensor:
        """Tail scores for queries ``(h[n], r[n], ?)``.

        ``candidates``: None (all entities) → ``[n, E]``; ``[k]`` ids shared by all queries → ``[n, k]``;
        ``[n, k]`` ids per query → ``[n, k]``.
        """
        raise NotImplementedError

    def score_h(self, r: Tensor, t: Tensor, candidates: Tensor | None = None) -> Tensor:
        """Head scores for queries ``(?, r[n], t[n])``; candidates as in :meth:`score_t`."""
        raise NotImplementedError

    def score(self, side: str, anchors: Tensor, relations: Tensor) -> Tensor:
        """Evaluator adapter: ``side="tail"`` → ``score_t(anchors, relations)``; ``"head"`` → ``score_h``."""
        if side == "tail":
            return self.score_t(anchors, relations)
        if side == "head":
            return self.score_h(relations, anchors)
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")

    def num_parameters(self, nonzero: bool = False) -> int:
        """Number of (non-zero) scalar parameters."""
        if nonzero:
            return int(sum(int((p != 0).sum()) for p in self.parameters()))
        return int(sum(p.numel() for p in self.parameters()))

    def apply_constraints(self) -> None:
        """Project parameters back onto their constraint set after an optimiser step (default: nothing)."""

    def config(self) -> dict[str, Any]:
        """JSON-serialisable arguments that rebuild this model with :func:`build_model`."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def build_model(kind: str, config: dict[str, Any]) -> KGCModel:
    return model_classes.get(kind)(**config)


def save_model(model: KGCModel, folder: str | Path) -> None:
    """Write ``model.safetensors`` + ``model.json`` (class name and config) and ``manifest.json`` (their sha256)
    into ``folder``, as a group: all three are written and fsynced before the first is renamed into place, and the
    manifest comes last, so a crash leaves either the old set or a set whose mismatch :func:`load_model` reports."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = model_classes.canonical(type(model).registry_name)  # type: ignore[attr-defined]
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = safetensors_save(tensors)
    config = json.dumps({"class": kind, "config": model.config()}, indent=2).encode()
    manifest = {"files": {MODEL_WEIGHTS: {"sha256": sha256_bytes(weights), "bytes": len(weights)},
                          MODEL_CONFIG: {"sha256": sha256_bytes(config), "bytes": len(config)}}}
    commit_files({folder / MODEL_WEIGHTS: weights, folder / MODEL_CONFIG: config,
                  folder / MODEL_MANIFEST: json.dumps(manifest, indent=2).encode()})


def _check_manifest(folder: Path, contents: dict[str, bytes]) -> None:
    """Compare the files' sha256 with ``manifest.json`` (runs written before manifests existed have none)."""
    path = folder / MODEL_MANIFEST
    if not path.exists():
        return
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise RunFolderError(f"{path}: damaged (expected JSON with the sha256 of {', '.join(contents)})") from None
    for name, data in contents.items():
        want = (listed.get(name) or {}).get("sha256") if isinstance(listed, dict) else None
        if want is None:
            raise RunFolderError(f"{path}: lists no sha256 for {name}")
        if sha256_bytes(data) != want:
            raise RunFolderError(f"{folder / name}: damaged: its sha256 differs from the one recorded in "
                                 f"{MODEL_MANIFEST} when the run was written; restore the file or retrain")


def _read_model_json(path: Path, data: bytes) -> tuple[str, dict[str, Any]]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: damaged (not UTF-8 text; expected the JSON written with the model)") from None
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path}:{err.lineno}: damaged (not valid JSON: {err.msg}; expected the model's "
                             f"class and config)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("class"), str) or \
            not isinstance(meta.get("config"), dict):
        raise RunFolderError(f"{path}: damaged (expected {{\"class\": NAME, \"config\": {{...}}}})")
    return meta["class"], meta["config"]


#: the most values one tensor of a model may claim: far above any model kgdistill trains (2^34 = 64 GiB of float32)
MAX_TENSOR_VALUES = 1 << 34


def check_claimed_size(config: dict[str, Any], shapes: dict[str, list[int]], where: str | Path) -> None:
    """Refuse, before anything is allocated, a config whose sizes disagree with the stored tensors' shapes.

    A damaged or hand-edited ``model.json`` (or artifact metadata) claiming, say, ``dim = 10**6`` would otherwise
    make the model constructor allocate gigabytes before ``load_state_dict`` notices the mismatch. Embedding models
    (``num_entities`` and ``dim`` in the config): every entity row holds at least ``dim`` values, so the largest
    stored tensor must hold at least ``num_entities × dim`` values, and no size may be negative or absurd.
    """
    for key in ("num_entities", "num_relations", "dim"):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1 or
                                  value > MAX_TENSOR_VALUES):
            raise RunFolderError(f"{where}: {key} = {value!r} in the model config is not a plausible size")
    entities, dim = config.get("num_entities"), config.get("dim")
    if entities is None or dim is None or not shapes:
        return
    largest = max(math.prod(s) for s in shapes.values())
    if entities * dim > largest:
        raise RunFolderError(f"{where}: the model config claims {entities:,} entities × dim {dim:,} = "
                             f"{entities * dim:,} values, but the largest stored tensor holds {largest:,}; the "
                             f"config and the weights do not belong together")


def check_finite(state: dict[str, Tensor], where: str | Path) -> None:
    """Refuse weights holding NaN or ±Inf (damaged bytes often decode to them)."""
    for name, t in state.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise RunFolderError(f"{where}: tensor {name!r} holds {bad:,} NaN/Inf value(s) of {t.numel():,}; the "
                                 f"weights are damaged")


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> KGCModel:
    """Rebuild a model saved by :func:`save_model`, refusing damaged files with one message naming the file:
    sha256 against ``manifest.json``, malformed JSON or safetensors, NaN/Inf weights, sizes that do not match."""
    folder = Path(folder)
    for name in (MODEL_WEIGHTS, MODEL_CONFIG):
        if not (folder / name).exists():
            raise RunFolderError(f"{folder}: missing {name} (is this a finished kgdistill run folder?)")
    weights_path, config_path = folder / MODEL_WEIGHTS, folder / MODEL_CONFIG
    weights, config_bytes = weights_path.read_bytes(), config_path.read_bytes()
    _check_manifest(folder, {MODEL_WEIGHTS: weights, MODEL_CONFIG: config_bytes})
    kind, config = _read_model_json(config_path, config_bytes)
    try:
        state = safetensors_load(weights)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        raise RunFolderError(f"{weights_path}: damaged or not a safetensors file ({err})") from None
    check_finite(state, weights_path)
    check_claimed_size(config, {k: list(v.shape) for k, v in state.items()}, config_path)
    try:
        model = build_model(kind, config)
    except (TypeError, ValueError, KeyError) as err:
        raise RunFolderError(f"{config_path}: cannot rebuild the model ({type(err).__name__}: {err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise RunFolderError(f"{weights_path}: does not fit the model described in {MODEL_CONFIG} "
                             f"({' '.join(line.strip() for line in first[:3])})") from None
    return model.to(device)
