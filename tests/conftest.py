"""Shared fixtures. Data fixtures first (keep them small); add others below."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kgdistill.data.triples import KGDataset

# In CI the repository is a fresh clone with ../shared beside it.
_SHARED_FALLBACK = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared benchmark folder (WN18RR/, FB15k-237/, ...): the first $KGDISTILL_DATA entry holding WN18RR/,
    else ``<repo>/../shared/data``. Fails (never skips) when it is missing."""
    candidates = [Path(p).expanduser() for p in os.environ.get("KGDISTILL_DATA", "").split(os.pathsep) if p]
    for folder in [*candidates, _SHARED_FALLBACK]:
        if (folder / "WN18RR" / "train.tsv").is_file():
            return folder.resolve()
    pytest.fail(f"shared data not found: looked in {[str(c) for c in candidates]} ($KGDISTILL_DATA) and "
                f"{_SHARED_FALLBACK}; set KGDISTILL_DATA to the folder holding WN18RR/ and FB15k-237/")


@pytest.fixture
def tiny_kg() -> KGDataset:
    """A deterministic toy KG: 12 entities, 3 relations, 63/11/10 train/valid/test triples, with names."""
    steps = {"r0": (1, 2, 3), "r1": (5, 6), "r2": (7, 9)}
    triples = sorted((f"e{i:02d}", r, f"e{(i + s) % 12:02d}") for r, ss in steps.items() for s in ss for i in range(12))
    labeled = {"train": [t for k, t in enumerate(triples) if k % 8 not in (3, 7)],
               "valid": [t for k, t in enumerate(triples) if k % 8 == 3],
               "test": [t for k, t in enumerate(triples) if k % 8 == 7]}
    return KGDataset.from_labeled("tiny", labeled, entity_names={f"e{i:02d}": f"entity {i}" for i in range(12)},
                                  relation_texts={r: f"relation {r[1]}" for r in steps})
