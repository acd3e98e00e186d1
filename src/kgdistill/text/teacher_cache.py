"""A frozen teacher's per-text features, computed once and reused in later epochs (``distill.cache_teacher``).

A frozen teacher in eval mode maps one tokenised text to the same features every time, so the logit-KD and
patient-KD objectives, whose teacher terms need only per-text vectors (the pooled embedding, and patient KD's pooled
intermediate layers), can keep them: from the second epoch on the teacher runs only on texts it has not seen. The key
is the text's token ids (and which encoder read it), so neighbour-name padding, inverse relations and anything else
that changes the text changes the key. Memory: ``(1 + layers) × hidden`` floats per distinct (h, r) query and per
distinct entity text, on the training device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Features = Callable[[dict[str, Tensor]], Tensor]


class TeacherCache:
    """``features(encoder, inputs, compute) -> [b, n, d]``: cached rows, ``compute`` run on the missing rows only."""

    def __init__(self) -> None:
        self._store: dict[bytes, Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def features(self, encoder: str, inputs: dict[str, Tensor], compute: Features) -> Tensor:
        """Features of every row of the tokenised ``inputs`` (``input_ids``, ``attention_mask``: ``[b, L]``) read by
        ``encoder`` (``"hr"`` or ``"tail"``); ``compute(sub_inputs) -> [m, n, d]`` is called once, on the rows not
        seen before (none when all are cached)."""
        ids = inputs["input_ids"].detach().cpu()
        lengths = inputs["attention_mask"].detach().sum(1).cpu().tolist()
        prefix = encoder.encode() + b"\0"
        keys = [prefix + ids[i, :n].numpy().tobytes() for i, n in enumerate(lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            rows = torch.tensor(missing, device=inputs["input_ids"].device)
            computed = compute({name: value[rows] for name, value in inputs.items()})
            for j, i in enumerate(missing):
                self._store[keys[i]] = computed[j].detach()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([self._store[k] for k in keys])


__all__ = ["TeacherCache"]
