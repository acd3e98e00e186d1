"""Top-k prediction by names: ``(head, relation, ?)`` and ``(?, relation, tail)``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from kgdistill.data.triples import KGDataset
from kgdistill.errors import KGDistillError
from kgdistill.models.base import KGCModel


class UnknownEntityError(KGDistillError):
    """An entity or relation name that the dataset does not know; the message suggests close matches."""


PLURAL = {"entity": "entities", "relation": "relations"}


def _lookup(name: str, labels: list[str], to_id: dict[str, int], texts: dict[str, str], kind: str) -> int:
    if name in to_id:
        return to_id[name]
    by_text: dict[str, int] = {}
    for label, text in texts.items():
        if label in to_id:
            by_text.setdefault(text, to_id[label])
            by_text.setdefault(text.lower(), to_id[label])
    if name in by_text:
        return by_text[name]
    if name.lower() in by_text:
        return by_text[name.lower()]
    candidates = list(dict.fromkeys([*to_id, *texts.values()]))  # a name equal to its label is listed once
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
    raise UnknownEntityError(f"unknown {kind} {name!r} ({len(labels):,} {PLURAL.get(kind, kind + 's')} known).{hint}")


def entity_id(dataset: KGDataset, name: str) -> int:
    """Id of an entity given by label (file id) or by name text."""
    return _lookup(name, dataset.entities, dataset.entity_to_id, dataset.entity_names, "entity")


def relation_id(dataset: KGDataset, name: str) -> int:
    return _lookup(name, dataset.relations, dataset.relation_to_id, dataset.relation_texts, "relation")


@dataclass(frozen=True)
class Prediction:
    rank: int
    entity_id: int
    label: str
    name: str
    score: float
    known: bool  # the triple is in train/valid/test


def predict(model: KGCModel, dataset: KGDataset, relation: str, head: str | None = None, tail: str | None = None,
            k: int = 10, exclude_known: bool = False) -> list[Prediction]:
    """Top-``k`` tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)`` (exactly one given)."""
    if (head is None) == (tail is None):
        raise KGDistillError("give exactly one of head or tail")
    if k < 1:
        raise KGDistillError(f"k must be ≥ 1, got {k}")
    rel = relation_id(dataset, relation)
    anchor = entity_id(dataset, head if head is not None else tail)  # type: ignore[arg-type]
    side = "tail" if head is not None else "head"
    device = model.device
    model.eval()
    with torch.inference_mode():
        scores = model.score(side, torch.tensor([anchor], device=device), torch.tensor([rel], device=device))[0]
    scores = scores.float().cpu()
    triples = dataset.all_triples()
    if side == "tail":
        known_ids = triples[(triples[:, 0] == anchor) & (triples[:, 1] == rel), 2]
    else:
        known_ids = triples[(triples[:, 2] == anchor) & (triples[:, 1] == rel), 0]
    known = torch.zeros_like(scores, dtype=torch.bool)
    known[known_ids] = True
    if exclude_known:
        scores = scores.masked_fill(known, float("-inf"))
    top = torch.topk(scores, min(k, scores.numel()))
    return [Prediction(i + 1, int(e), dataset.entities[int(e)], dataset.entity_name(int(e)), float(s), bool(known[e]))
            for i, (s, e) in enumerate(zip(top.values, top.indices)) if s != float("-inf")]
