"""The interface every KGC model of kgdistill implements (embedding models and text bi-encoders alike).

Scoring modes follow LibKGE: ``score_hrt`` scores given triples, ``score_t`` ranks tails for ``(h, r, ?)`` and
``score_h`` ranks heads for ``(?, r, t)``, against all entities or a candidate set. Higher = better.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from kgdistill.errors import RunFolderError
from kgdistill.registry import Registry

model_classes: Registry[type[KGCModel]] = Registry("model class")
# declared here, imported on first use: a fresh process loads any kind of run folder without importing it first
model_classes.declare("embedding", "kgdistill.models.embedding:EmbeddingModel")
model_classes.declare("biencoder", "kgdistill.text.biencoder:BiEncoder", "simkgc")

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"


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
    """Write ``model.safetensors`` + ``model.json`` (class name and config) into ``folder`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = model_classes.canonical(type(model).registry_name)  # type: ignore[attr-defined]
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (MODEL_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(folder / MODEL_WEIGHTS)
    tmp_json = folder / (MODEL_CONFIG + ".tmp")
    tmp_json.write_text(json.dumps({"class": kind, "config": model.config()}, indent=2))
    tmp_json.replace(folder / MODEL_CONFIG)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> KGCModel:
    """Rebuild a model saved by :func:`save_model`."""
    folder = Path(folder)
    for name in (MODEL_WEIGHTS, MODEL_CONFIG):
        if not (folder / name).exists():
            raise RunFolderError(f"{folder}: missing {name} (is this a finished kgdistill run folder?)")
    meta = json.loads((folder / MODEL_CONFIG).read_text())
    model = build_model(meta["class"], meta["config"])
    state = load_file(str(folder / MODEL_WEIGHTS))
    model.load_state_dict(state)
    return model.to(device)
