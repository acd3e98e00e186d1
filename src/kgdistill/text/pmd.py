"""PMD: progressive distillation with masked generation features (AAAI 2024, METHODS.md §4).

Total loss ``(1 − a − b)·CE + a·L_score + b·L_MGFD``:

* ``L_score``: MSE between the student's and the teacher's aligned logit matrices (same candidates, teacher frozen,
  no margin), over real candidates only;
* ``L_MGFD``, two variants:
  - ``input-mask`` (PMD's code): a fraction ``mask_rate`` of the input tokens (never [CLS], [SEP] or padding) is
    replaced by [MASK]; teacher and student read the same masked input (the student's CE uses it too); the feature is
    the L2-normalised mean of last-layer hidden states over the masked positions (all real tokens where none is
    masked, e.g. at rate 0); ``L = ‖f_S − f_T‖²`` on the hr side + the same on the entity side;
  - ``feature-generator`` (MGD, Yang et al., ECCV 2022): the student reads the clean input; its last-layer features
    at a random ``mask_rate`` of positions are zeroed, a generator (Linear–ReLU–Linear per token) regenerates the
    teacher's features at every real token; the loss is the mean squared distance of L2-normalised token features.

:func:`run_pmd` runs the whole chain: pre-distillation into a same-size student, then each grade from the previous one
with the grade's mask rate (paper: 12 → 12 → 9 → 6 → 3 with 20 % / 10 % / 5 % / 0 %).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgdistill.errors import ConfigError
from kgdistill.text.biencoder import BiEncoder, BiEncoderOutput
from kgdistill.text.objective import Objective, masked_mean, objectives, sqdist
from kgdistill.text.textdata import TextBatch

MGFD_VARIANTS = ("input-mask", "feature-generator")


def maskable_positions(input_ids: Tensor, attention_mask: Tensor, special_ids: list[int]) -> Tensor:
    """``[B, L]`` bool: real tokens that are not special tokens ([CLS], [SEP], [PAD], ...)."""
    ok = attention_mask.bool()
    for s in special_ids:
        ok &= input_ids != s
    return ok


def sample_mask(maskable: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Choose exactly ``round(rate · n_i)`` of the ``n_i`` maskable positions of each row → ``[B, L]`` bool."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"mask rate must be in [0, 1], got {rate}")
    n = maskable.sum(1)
    k = torch.floor(n.to(torch.float64) * rate + 0.5).long()
    noise = torch.rand(maskable.shape, generator=generator, device="cpu").to(maskable.device)
    noise = noise.masked_fill(~maskable, 2.0)  # non-maskable positions sort last
    order = noise.argsort(dim=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k.unsqueeze(1)) & maskable


def mask_tokens(inputs: dict[str, Tensor], rate: float, mask_token_id: int, special_ids: list[int],
                generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Replace ``rate`` of the maskable tokens by ``mask_token_id``; returns (new inputs, positions ``[B, L]``)."""
    maskable = maskable_positions(inputs["input_ids"], inputs["attention_mask"], special_ids)
    positions = sample_mask(maskable, rate, generator)
    ids = inputs["input_ids"].masked_fill(positions, mask_token_id)
    return {**inputs, "input_ids": ids}, positions


def mgfd_feature(last_hidden: Tensor, positions: Tensor, fallback: Tensor) -> Tensor:
    """L2-normalised mean of ``last_hidden[B, L, d]`` over ``positions``; rows with no masked position use
    ``fallback`` positions (all real non-special tokens)."""
    empty = ~positions.any(1, keepdim=True)
    use = torch.where(empty, fallback, positions)
    return F.normalize(masked_mean(last_hidden, use), dim=-1)


def score_distillation(student_logits: Tensor, teacher_logits: Tensor, valid: Tensor) -> Tensor:
    """MSE of ``[B, C]`` logit matrices over ``valid`` entries (false-negative candidates left out)."""
    diff = (student_logits - teacher_logits).pow(2)
    return diff[valid].mean() if valid.any() else diff.sum() * 0.0


class FeatureGenerator(nn.Module):
    """MGD generator: ``Linear(d_S, h) → ReLU → Linear(h, d_T)`` applied per token."""

    def __init__(self, student_dim: int, teacher_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or teacher_dim
        self.net = nn.Sequential(nn.Linear(student_dim, hidden), nn.ReLU(), nn.Linear(hidden, teacher_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def generation_loss(generator: nn.Module, student_hidden: Tensor, teacher_hidden: Tensor, real: Tensor,
                    rate: float, gen: torch.Generator | None = None) -> Tensor:
    """MGD term: zero a random ``rate`` of the student's token features ``[B, L, d_S]``, regenerate the teacher's
    ``[B, L, d_T]``; mean over real tokens (``real[B, L]``) of ‖norm(G(x)) − norm(f_T)‖²."""
    drop = sample_mask(real, rate, gen)
    x = student_hidden.masked_fill(drop.unsqueeze(-1), 0.0)
    g = F.normalize(generator(x), dim=-1)
    t = F.normalize(teacher_hidden, dim=-1)
    per_token = (g - t).pow(2).sum(-1)
    return per_token[real].mean()


@objectives.register("pmd")
class PMDObjective(Objective):
    needs_teacher = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        d = self.config.distill
        if d.mgfd_variant not in MGFD_VARIANTS:
            raise ConfigError(f"mgfd_variant must be one of {', '.join(MGFD_VARIANTS)}, got {d.mgfd_variant!r}")
        self.variant, self.rate = d.mgfd_variant, float(d.mask_rate)
        tok = self.student.tokenizer
        if tok.mask_token_id is None:
            raise ConfigError("PMD needs a tokenizer with a [MASK] token")
        self.mask_id, self.special_ids = int(tok.mask_token_id), [int(i) for i in tok.all_special_ids]
        # token masks: one stream per rank (rank 0's is the single-process one), the shares hold other examples
        self.gen = torch.Generator().manual_seed(self.config.training.seed + 17 + 7919 * self.ctx.rank)
        self.generators = nn.ModuleDict()
        if self.variant == "feature-generator":
            ds, dt = self.student.hidden_size, self.teacher.hidden_size  # type: ignore[union-attr]
            self.generators = nn.ModuleDict({"hr": FeatureGenerator(ds, dt), "tail": FeatureGenerator(ds, dt)})
            self.generators.to(self.student.device)

    def modules(self) -> list[nn.Module]:
        return [self.generators] if len(self.generators) else []

    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        if self.variant == "input-mask":
            hr_in, hr_pos = mask_tokens(batch.hr_inputs, self.rate, self.mask_id, self.special_ids, self.gen)
            tail_in, tail_pos = mask_tokens(batch.tail_inputs, self.rate, self.mask_id, self.special_ids, self.gen)
            inputs = {"hr": hr_in, "tail": tail_in}
            out: BiEncoderOutput = self.forward(self.student, batch, inputs)
            t_out = self.teacher_forward(batch, inputs)
            feat = 0.0
            for side, pos, src in (("hr", hr_pos, batch.hr_inputs), ("tail", tail_pos, batch.tail_inputs)):
                real = maskable_positions(src["input_ids"], src["attention_mask"], self.special_ids)
                s, t = getattr(out, side), getattr(t_out, side)
                feat = feat + sqdist(mgfd_feature(s.last_hidden, pos, real), mgfd_feature(t.last_hidden, pos, real))
        else:
            out = self.forward(self.student, batch)
            t_out = self.teacher_forward(batch)
            feat = 0.0
            for side, src in (("hr", batch.hr_inputs), ("tail", batch.tail_inputs)):
                real = maskable_positions(src["input_ids"], src["attention_mask"], self.special_ids)
                s, t = getattr(out, side), getattr(t_out, side)
                feat = feat + generation_loss(self.generators[side], s.last_hidden, t.last_hidden, real, self.rate,
                                              self.gen)
        ce = self.ce(out, batch)
        s_logits, valid = self.aligned_logits(self.student, out, batch)
        t_logits, _ = self.aligned_logits(self.teacher, t_out, batch)  # type: ignore[arg-type]
        score = score_distillation(s_logits, t_logits, valid)
        return self.combine(ce, score, feat)  # type: ignore[arg-type]


def plan_grades(teacher_layers: int, grades: list[int], mask_rates: list[float], pre_distill: bool = True
                ) -> list[tuple[int, float]]:
    """Stages ``[(layers, mask rate)]``: pre-distillation at the teacher's size first (added when ``grades`` does
    not start with it), then each grade. ``mask_rates`` must give one rate per stage."""
    grades = [int(g) for g in grades]
    if pre_distill and (not grades or grades[0] != teacher_layers):
        grades = [teacher_layers, *grades]
    if any(b > a for a, b in zip([teacher_layers, *grades], grades)):
        raise ConfigError(f"grades must not grow: teacher {teacher_layers} layers, grades {grades}")
    if len(mask_rates) != len(grades):
        raise ConfigError(f"{len(grades)} stages ({' → '.join(map(str, grades))} layers; the first, at the "
                          f"teacher's {teacher_layers} layers, is pre-distillation) need {len(grades)} mask rates, "
                          f"got {len(mask_rates)}: {mask_rates}")
    return list(zip(grades, [float(r) for r in mask_rates]))


def run_pmd(teacher_run: str | Path, grades: list[int], mask_rates: list[float], config: Any,
            output_root: str | Path, pre_distill: bool = True, layers_per_grade: list[list[int]] | None = None
            ) -> list[Any]:
    """Run PMD end to end from a trained teacher run folder; one run folder per stage under ``output_root``
    (``pmd-L<layers>-m<rate>``) and ``pmd_summary.json`` with each stage's metrics. ``config`` is a
    :class:`~kgdistill.text.config.TextRunConfig` giving the training budget and loss weights of every stage."""
    from kgdistill.runs import load_run
    from kgdistill.text.students import default_layers
    from kgdistill.text.trainer import train_text

    import os

    root = Path(output_root)
    main = os.environ.get("RANK", "0") == "0"  # under torchrun every stage trains on every rank; rank 0 writes
    if main:
        root.mkdir(parents=True, exist_ok=True)
    teacher = load_run(teacher_run, with_dataset=False).model
    if not isinstance(teacher, BiEncoder):
        raise ConfigError(f"{teacher_run}: the PMD teacher must be a text bi-encoder run")
    stages = plan_grades(teacher.num_layers, grades, mask_rates, pre_distill)
    if layers_per_grade is not None and len(layers_per_grade) != len(stages):
        raise ConfigError(f"layers_per_grade needs {len(stages)} entries, got {len(layers_per_grade)}")
    prev, prev_layers, runs, summary = str(teacher_run), teacher.num_layers, [], []
    del teacher
    for i, (n_layers, rate) in enumerate(stages):
        if layers_per_grade is not None:
            layers = list(layers_per_grade[i])
        elif config.distill.student_init == "pretrained":
            layers = default_layers(_plm_layers(config, prev_layers), n_layers)
        else:
            layers = default_layers(prev_layers, n_layers)
        cfg = replace(config, output_dir=str(root / f"pmd-L{n_layers}-m{rate:g}"),
                      distill=replace(config.distill, method="pmd", teacher=prev, layers=layers, mask_rate=rate))
        run = train_text(cfg)
        runs.append(run)
        summary.append({"stage": i, "layers": n_layers, "kept": layers, "mask_rate": rate, "teacher": prev,
                        "run": str(run.path), "metrics": run.metrics})
        if main:
            (root / "pmd_summary.json").write_text(json.dumps(summary, indent=2))
        prev, prev_layers = str(run.path), n_layers
    return runs


def _plm_layers(config: Any, fallback: int) -> int:
    from kgdistill.text import plm as plm_mod

    spec = plm_mod.resolve_plm(config.model.plm)
    if spec.tiny is not None:
        return spec.tiny["layers"]
    cfg = json.loads((spec.path / "config.json").read_text())  # type: ignore[operator]
    return int(cfg.get("num_hidden_layers", fallback))
