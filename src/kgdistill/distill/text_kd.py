"""KD baselines of the PMD ablation in the same harness: logit KD and patient KD.

* Logit KD (Hinton et al., 2015): ``KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) · τ²`` over the aligned in-batch logits
  (:func:`kgdistill.distill.terms.kl_with_temperature`, the embedding methods' KD term; masked entries ≈ −1e4 in
  both carry no mass).
* Patient KD (Sun et al., EMNLP 2019, "Patient Knowledge Distillation for BERT Model Compression"): logit KD plus the
  squared distance between L2-normalised pooled hidden states of each intermediate student layer and the teacher
  layer it was taken from (PKD-skip), on both encoders.
Both need only per-text teacher vectors, so ``distill.cache_teacher`` keeps them across epochs
(:mod:`kgdistill.text.teacher_cache`).
The no-KD baseline is the plain objective (``method: none``) with a student initialised from the teacher's layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kgdistill.distill.method import methods
from kgdistill.distill.terms import kl_with_temperature
from kgdistill.distill.text_method import TextCommonConfig, TextMethod, text_option
from kgdistill.text.biencoder import BiEncoderOutput, EncoderOutput, mean_pool
from kgdistill.text.objective import Objective, objectives
from kgdistill.text.textdata import TextBatch


def patient_pairs(layer_map: list[int]) -> list[tuple[int, int]]:
    """``(student, teacher)`` indices into ``hidden_states`` (embeddings first) compared by PKD-skip: every
    intermediate student layer ``i < k−1`` with the teacher layer it was taken from (a 1-layer student has none:
    its last layer is compared)."""
    pairs = [(i + 1, layer_map[i] + 1) for i in range(len(layer_map) - 1)]
    return pairs or [(len(layer_map), layer_map[-1] + 1)]


def pooled_layers(out: EncoderOutput, indices: list[int]) -> Tensor:
    """``[b, n, d]``: L2-normalised mean-pooled ``hidden_states[j]`` for each ``j`` in ``indices``."""
    assert out.hidden_states is not None
    return torch.stack([F.normalize(mean_pool(out.hidden_states[j], out.attention_mask), dim=-1) for j in indices],
                       dim=1)


def patient_term(student_layers: Tensor, teacher_layers: Tensor) -> Tensor:
    """Mean over the compared layers of ``sqdist`` between pooled layer features ``[b, n, d]`` of student and
    teacher (:func:`pooled_layers` of :func:`patient_pairs`)."""
    return (student_layers - teacher_layers).pow(2).sum(-1).mean()


class TeacherFeatures:
    """The teacher's per-text features a baseline needs: pooled embeddings of the (h, r) queries, tails and heads,
    plus (patient KD) pooled teacher layers; from :class:`~kgdistill.text.teacher_cache.TeacherCache` when
    ``distill.cache_teacher`` is on."""

    def __init__(self, objective: Objective, batch: TextBatch, layers: list[int]) -> None:
        teacher = objective.teacher
        assert teacher is not None

        def compute(which: str) -> Callable[[dict[str, Tensor]], Tensor]:
            def run(inputs: dict[str, Tensor]) -> Tensor:
                with torch.no_grad():
                    out = teacher.encode(which, inputs, output_hidden_states=bool(layers))
                parts = [out.pooled.unsqueeze(1)] + ([pooled_layers(out, layers)] if layers else [])
                return torch.cat(parts, dim=1)
            return run

        def get(which: str, inputs: dict[str, Tensor]) -> Tensor:
            cache = objective.teacher_cache
            return compute(which)(inputs) if cache is None else cache.features(which, inputs, compute(which))

        self.inv_t = teacher.inv_t
        hr, tail = get("hr", batch.hr_inputs), get("tail", batch.tail_inputs)
        head = get("tail", batch.head_inputs) if batch.head_inputs is not None else None
        self.hr, self.tail = hr[:, 0], tail[:, 0]
        self.head = head[:, 0] if head is not None else None
        self.hr_layers, self.tail_layers = hr[:, 1:], tail[:, 1:]

    def logits(self, objective: Objective, batch: TextBatch) -> Tensor:
        return objective.aligned_logits_of(self.inv_t, self.hr, self.tail, self.head, batch)[0]


@objectives.register("logit", "logit-kd", "kd")
class LogitKD(Objective):
    needs_teacher = True
    caches_teacher = True

    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        out = self.forward(self.student, batch)
        ce = self.ce(out, batch)
        s_logits, _ = self.aligned_logits(self.student, out, batch)
        t_logits = TeacherFeatures(self, batch, []).logits(self, batch)
        kd = kl_with_temperature(s_logits, t_logits, self.config.distill.kd_temperature)
        return self.combine(ce, kd)


@objectives.register("patient", "patient-kd", "pkd")
class PatientKD(Objective):
    needs_teacher = True
    caches_teacher = True

    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        out: BiEncoderOutput = self.forward(self.student, batch, output_hidden_states=True)
        pairs = patient_pairs(self.layer_map)
        teacher = TeacherFeatures(self, batch, [t for _, t in pairs])
        ce = self.ce(out, batch)
        s_logits, _ = self.aligned_logits(self.student, out, batch)
        kd = kl_with_temperature(s_logits, teacher.logits(self, batch), self.config.distill.kd_temperature)
        student_idx = [s for s, _ in pairs]
        pt = patient_term(pooled_layers(out.hr, student_idx), teacher.hr_layers) + \
            patient_term(pooled_layers(out.tail, student_idx), teacher.tail_layers)
        return self.combine(ce, kd, pt)


@dataclass(frozen=True)
class LogitKDConfig(TextCommonConfig):
    """Logit KD's options: the text methods' common ones, the temperature and the teacher cache."""

    kd_temperature: float = text_option("kd_temperature")
    cache_teacher: bool = text_option("cache_teacher")


@dataclass(frozen=True)
class PatientKDConfig(LogitKDConfig):
    """Patient KD's options: logit KD's and the weight of the hidden-state term."""

    beta: float = text_option("beta")


@methods.register("logit", "logit-kd")
class LogitKDMethod(TextMethod):
    """Logit KD (Hinton et al., 2015) of a text bi-encoder: KL at temperature τ on the aligned in-batch logits."""

    name = "logit"
    objective = "logit"
    Config = LogitKDConfig


@methods.register("patient", "patient-kd", "pkd")
class PatientKDMethod(TextMethod):
    """Patient KD (Sun et al., 2019) of a text bi-encoder: logit KD plus PKD-skip hidden-state distances."""

    name = "patient"
    objective = "patient"
    Config = PatientKDConfig
