"""KD baselines of the PMD ablation in the same harness: logit KD and patient KD.

* Logit KD (Hinton et al., 2015): ``KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) · τ²`` over the aligned in-batch logits.
* Patient KD (Sun et al., EMNLP 2019, "Patient Knowledge Distillation for BERT Model Compression"): logit KD plus the
  squared distance between L2-normalised pooled hidden states of each intermediate student layer and the teacher
  layer it was taken from (PKD-skip), on both encoders.
The no-KD baseline is the plain objective (``method: none``) with a student initialised from the teacher's layers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kgdistill.text.biencoder import BiEncoderOutput, EncoderOutput, mean_pool
from kgdistill.text.objective import Objective, objectives, sqdist
from kgdistill.text.textdata import TextBatch


def logit_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(p_T ‖ p_S) · τ²`` averaged over rows; ``[B, C]`` logits, masked entries ≈ −1e4 in both (no mass)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    p_t = F.softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * t * t


def patient_term(student: EncoderOutput, teacher: EncoderOutput, layer_map: list[int]) -> Tensor:
    """Mean over intermediate student layers ``i < k−1`` of ``sqdist(norm(pool(h_S[i])), norm(pool(h_T[map[i]])))``.

    ``hidden_states`` hold the embeddings first, so student layer ``i`` is ``hidden_states[i + 1]``.
    """
    assert student.hidden_states is not None and teacher.hidden_states is not None
    terms = []
    for i in range(len(layer_map) - 1):
        s = F.normalize(mean_pool(student.hidden_states[i + 1], student.attention_mask), dim=-1)
        t = F.normalize(mean_pool(teacher.hidden_states[layer_map[i] + 1], teacher.attention_mask), dim=-1)
        terms.append(sqdist(s, t))
    if not terms:  # a 1-layer student has no intermediate layer: compare the last ones
        s = F.normalize(mean_pool(student.hidden_states[-1], student.attention_mask), dim=-1)
        t = F.normalize(mean_pool(teacher.hidden_states[layer_map[-1] + 1], teacher.attention_mask), dim=-1)
        terms.append(sqdist(s, t))
    return sum(terms) / len(terms)  # type: ignore[return-value]


@objectives.register("logit", "logit-kd", "kd")
class LogitKD(Objective):
    needs_teacher = True

    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        out = self.forward(self.student, batch)
        t_out = self.teacher_forward(batch)
        ce = self.ce(out, batch)
        s_logits, _ = self.aligned_logits(self.student, out, batch)
        t_logits, _ = self.aligned_logits(self.teacher, t_out, batch)  # type: ignore[arg-type]
        kd = logit_kd(s_logits, t_logits, self.config.distill.kd_temperature)
        return self.combine(ce, kd)


@objectives.register("patient", "patient-kd", "pkd")
class PatientKD(Objective):
    needs_teacher = True

    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        out: BiEncoderOutput = self.forward(self.student, batch, output_hidden_states=True)
        t_out = self.teacher_forward(batch, output_hidden_states=True)
        ce = self.ce(out, batch)
        s_logits, _ = self.aligned_logits(self.student, out, batch)
        t_logits, _ = self.aligned_logits(self.teacher, t_out, batch)  # type: ignore[arg-type]
        kd = logit_kd(s_logits, t_logits, self.config.distill.kd_temperature)
        pt = patient_term(out.hr, t_out.hr, self.layer_map) + patient_term(out.tail, t_out.tail, self.layer_map)
        return self.combine(ce, kd, pt)
