"""Connected subgraphs of a text KG written as dataset folders (for CPU-sized text benchmarks and tests).

The subgraph keeps the standard split of every triple whose two entities were selected, so valid/test triples stay
test triples; a breadth-first walk from seeded random start entities over the training graph picks the entities.
The folder holds ``train/valid/test.tsv`` and the text files restricted to the kept ids, so ``load_dataset(folder)``
(and therefore ``load_run``) reloads exactly the same graph.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import torch

from kgdistill.data.triples import KGDataset


def bfs_entities(dataset: KGDataset, num_entities: int, seed: int = 0) -> list[int]:
    """Up to ``num_entities`` entity ids reached breadth-first (undirected, training graph) from random seeds."""
    g = torch.Generator().manual_seed(seed)
    adj: list[list[int]] = [[] for _ in range(dataset.num_entities)]
    for h, _, t in dataset.train.tolist():
        adj[h].append(t)
        adj[t].append(h)
    order = torch.randperm(dataset.num_entities, generator=g).tolist()
    chosen: dict[int, None] = {}
    for start in order:
        if len(chosen) >= num_entities:
            break
        if start in chosen or not adj[start]:
            continue
        queue = deque([start])
        while queue and len(chosen) < num_entities:
            e = queue.popleft()
            if e in chosen:
                continue
            chosen[e] = None
            queue.extend(n for n in adj[e] if n not in chosen)
    return list(chosen)


def write_subgraph(dataset: KGDataset, folder: str | Path, num_entities: int, seed: int = 0) -> Path:
    """Write the subgraph induced by :func:`bfs_entities` into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = torch.zeros(dataset.num_entities, dtype=torch.bool)
    keep[bfs_entities(dataset, num_entities, seed)] = True
    used: set[int] = set()
    for split, triples in dataset.splits.items():
        sel = triples[keep[triples[:, 0]] & keep[triples[:, 2]]]
        if split != "train":  # evaluation entities must be known to the id maps: they are (all splits share them)
            pass
        with open(folder / f"{split}.tsv", "w", encoding="utf-8") as f:
            for h, r, t in sel.tolist():
                f.write(f"{dataset.entities[h]}\t{dataset.relations[r]}\t{dataset.entities[t]}\n")
                used.update((h, t))
    labels = [dataset.entities[i] for i in sorted(used)]
    for attr, name in (("entity_names", "entity2text.tsv"), ("entity_descriptions", "entity2description.tsv")):
        mapping = getattr(dataset, attr)
        if mapping:
            with open(folder / name, "w", encoding="utf-8") as f:
                f.writelines(f"{lab}\t{mapping[lab]}\n" for lab in labels if lab in mapping)
    if dataset.relation_texts:
        with open(folder / "relation2text.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{lab}\t{txt}\n" for lab, txt in dataset.relation_texts.items())
    return folder
