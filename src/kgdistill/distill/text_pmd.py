"""PMD: progressive distillation with masked generation features (AAAI 2024, METHODS.md §4).

Total loss ``(1 − a − b)·CE + a·L_score + b·L_MGFD``:

* ``L_score``: MSE between the student's and the teacher's aligned logit matrices (same candidates, teacher frozen,
  no margin), over real candidates only;
* ``L_MGFD``, two variants:
  - ``input-mask`` (PMD's code): a fraction ``mask_rate`` of the input tokens (never [CLS], [SEP] or padding) is
    replaced by [MASK]; teacher and student read the same masked input (the student's CE uses it too); the feature is
    the L2-normalised mean of last-layer hidden states over the masked positions; ``L = d(f_S, f_T)`` on the hr
    side + the same on the entity side, averaged over the texts. ``mgfd_reduction``: ``sum`` (``d = ‖f_S − f_T‖²``,
    the default) or ``mean`` (the PMD code's ``nn.MSELoss``: ``‖f_S − f_T‖² / hidden``). ``mgfd_unmasked``: a text
    with no masked token (every text at rate 0) uses all its tokens (``all-tokens``, the default) or contributes 0
    (``zero``, the PMD code: MGFD is identically 0 at a rate-0 grade);
  - ``feature-generator`` (MGD, Yang et al., ECCV 2022): the student reads the clean input; its last-layer features
    at a random ``mask_rate`` of positions are zeroed, a generator (Linear–ReLU–Linear per token) regenerates the
    teacher's features at every real token; the loss is the mean over tokens of the squared distance of L2-normalised
    token features (summed, or averaged with ``mgfd_reduction: mean``, over the feature dimension).

:func:`run_pmd` runs the whole chain: pre-distillation into a same-size student, then each grade from the previous one
with the grade's mask rate (paper: 12 → 12 → 9 → 6 → 3 with 20 % / 10 % / 5 % / 0 %). ``layer_choice`` picks the
kept layers: ``top`` (each grade evenly spaced on its teacher grade, ending at its top layer) or ``paper`` (the PMD
paper's layers counted on the chain's original model; see :func:`chain_layers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgdistill.atomicio import atomic_write_json
from kgdistill.config import opt
from kgdistill.distill.method import methods
from kgdistill.distill.text_method import TextCommonConfig, TextMethod, text_option
from kgdistill.distributed import DistContext
from kgdistill.errors import ConfigError
from kgdistill.text.biencoder import BiEncoder, BiEncoderOutput
from kgdistill.text.objective import Objective, masked_mean, objectives
from kgdistill.text.textdata import TextBatch

MGFD_VARIANTS = ("input-mask", "feature-generator")
MGFD_REDUCTIONS = ("sum", "mean")
MGFD_UNMASKED = ("all-tokens", "zero")


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


def mgfd_distance(student_hidden: Tensor, teacher_hidden: Tensor, positions: Tensor, real: Tensor,
                  reduction: str = "sum", unmasked: str = "all-tokens") -> Tensor:
    """The input-mask MGFD term of one side: mean over the ``B`` texts of ``d(f_S, f_T)`` with ``f`` =
    :func:`mgfd_feature` of ``[B, L, d]`` hidden states over the masked ``positions [B, L]``.

    ``reduction``: ``sum`` → ``d = ‖f_S − f_T‖²``; ``mean`` → ``‖f_S − f_T‖² / d`` (``nn.MSELoss``).
    ``unmasked``: a text without masked positions uses its ``real`` tokens (``all-tokens``) or counts 0 (``zero``;
    it still counts in the mean over ``B``, as in the PMD code, where such a text's feature is 0 for both).
    """
    fs = mgfd_feature(student_hidden, positions, real)
    ft = mgfd_feature(teacher_hidden, positions, real)
    per_text = (fs - ft).pow(2).sum(-1)
    if reduction == "mean":
        per_text = per_text / fs.shape[-1]
    if unmasked == "zero":
        per_text = per_text * positions.any(1).to(per_text.dtype)
    return per_text.mean()


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
                    rate: float, gen: torch.Generator | None = None, reduction: str = "sum") -> Tensor:
    """MGD term: zero a random ``rate`` of the student's token features ``[B, L, d_S]``, regenerate the teacher's
    ``[B, L, d_T]``; mean over real tokens (``real[B, L]``) of ‖norm(G(x)) − norm(f_T)‖² (``/ d_T`` with
    ``reduction="mean"``)."""
    drop = sample_mask(real, rate, gen)
    x = student_hidden.masked_fill(drop.unsqueeze(-1), 0.0)
    g = F.normalize(generator(x), dim=-1)
    t = F.normalize(teacher_hidden, dim=-1)
    per_token = (g - t).pow(2).sum(-1)
    if reduction == "mean":
        per_token = per_token / t.shape[-1]
    return per_token[real].mean()


@objectives.register("pmd")
class PMDObjective(Objective):
    needs_teacher = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        d = self.config.distill
        if d.mgfd_variant not in MGFD_VARIANTS:
            raise ConfigError(f"mgfd_variant must be one of {', '.join(MGFD_VARIANTS)}, got {d.mgfd_variant!r}")
        if d.mgfd_reduction not in MGFD_REDUCTIONS:
            raise ConfigError(f"mgfd_reduction must be one of {', '.join(MGFD_REDUCTIONS)}, got {d.mgfd_reduction!r}")
        if d.mgfd_unmasked not in MGFD_UNMASKED:
            raise ConfigError(f"mgfd_unmasked must be one of {', '.join(MGFD_UNMASKED)}, got {d.mgfd_unmasked!r}")
        check_mask_rate(d.mask_rate)
        self.variant, self.rate = d.mgfd_variant, float(d.mask_rate)
        self.reduction, self.unmasked = d.mgfd_reduction, d.mgfd_unmasked
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
                feat = feat + mgfd_distance(s.last_hidden, t.last_hidden, pos, real, self.reduction, self.unmasked)
        else:
            out = self.forward(self.student, batch)
            t_out = self.teacher_forward(batch)
            feat = 0.0
            for side, src in (("hr", batch.hr_inputs), ("tail", batch.tail_inputs)):
                real = maskable_positions(src["input_ids"], src["attention_mask"], self.special_ids)
                s, t = getattr(out, side), getattr(t_out, side)
                feat = feat + generation_loss(self.generators[side], s.last_hidden, t.last_hidden, real, self.rate,
                                              self.gen, self.reduction)
        ce = self.ce(out, batch)
        s_logits, valid = self.aligned_logits(self.student, out, batch)
        t_logits, _ = self.aligned_logits(self.teacher, t_out, batch)  # type: ignore[arg-type]
        score = score_distillation(s_logits, t_logits, valid)
        return self.combine(ce, score, feat)  # type: ignore[arg-type]


def check_mask_rate(rate: float) -> float:
    """``rate`` as a float, or a one-line error when it is not in [0, 1) (a rate of 1 masks every token)."""
    r = float(rate)
    if not 0.0 <= r < 1.0:
        raise ConfigError(f"mask rate {rate} is out of [0, 1): it is the fraction of each text's tokens masked")
    return r


def plan_grades(teacher_layers: int, grades: list[int], mask_rates: list[float], pre_distill: bool = True
                ) -> list[tuple[int, float]]:
    """Stages ``[(layers, mask rate)]``: pre-distillation at the teacher's size first (added when ``grades`` does
    not start with it), then each grade, strictly decreasing. ``mask_rates`` must give one rate per stage, each in
    [0, 1). Every error is raised here, before any stage trains."""
    grades = [int(g) for g in grades]
    if not grades:
        raise ConfigError("the PMD chain needs at least one grade (e.g. --grades 6,3)")
    if any(g < 1 for g in grades):
        raise ConfigError(f"grades are layer counts ≥ 1, got {grades}")
    if grades[0] > teacher_layers:
        raise ConfigError(f"grades must not grow: teacher {teacher_layers} layers, grades {grades}")
    if any(b >= a for a, b in zip(grades, grades[1:])):
        raise ConfigError(f"grades must decrease (each grade smaller than the one before), got {grades}")
    if pre_distill and grades[0] != teacher_layers:
        grades = [teacher_layers, *grades]
    if len(mask_rates) != len(grades):
        raise ConfigError(f"{len(grades)} stages ({' → '.join(map(str, grades))} layers; the first, at the "
                          f"teacher's {teacher_layers} layers, is pre-distillation) need {len(grades)} mask rates, "
                          f"got {len(mask_rates)}: {mask_rates}")
    return list(zip(grades, [check_mask_rate(r) for r in mask_rates]))


def chain_layers(stages: list[tuple[int, float]], root_layers: int, choice: str = "top", init: str = "teacher",
                 plm_layers: int | None = None) -> list[list[int]]:
    """The kept layers of every stage of a chain from a ``root_layers``-layer teacher: each entry indexes the layers
    of the stage's initialisation source (its teacher grade with ``init="teacher"``, the PLM with ``"pretrained"``).

    ``choice="top"``: each grade :func:`default_layers` of its source (kgdistill's behaviour so far: 12 → 6 → 3
    keeps original layers ``[1,3,5,7,9,11]`` then ``[3,7,11]``). ``choice="paper"``: the layers are the paper's,
    counted on the original model (:func:`default_layers` ``(N, k, "paper")``): exact with ``init="pretrained"``
    (the PMD code's: 12 → 3 ``[2,6,10]``); a grade initialised from its teacher takes, for each of those layers, the
    nearest one its teacher grade still holds (:func:`nearest_held`; 12 → 6 → 3: ``[1,5,9]``). For a 6-layer
    MiniLM both choices keep ``[1,3,5]`` for 3 layers; they differ at 2 (``[2,5]`` vs ``[1,4]``) and 1 layer.
    """
    from kgdistill.text.students import default_layers, nearest_held

    out: list[list[int]] = []
    held = list(range(root_layers))  # original-model layers the current source holds (init="teacher")
    for n_layers, _ in stages:
        if init == "pretrained":
            out.append(default_layers(plm_layers or root_layers, n_layers, choice))
            continue
        if choice == "top":
            layers = default_layers(len(held), n_layers, "top")
        else:
            layers = nearest_held(held, default_layers(root_layers, n_layers, "paper"))
        out.append(layers)
        held = [held[j] for j in layers]
    return out


def run_pmd(teacher_run: str | Path, grades: list[int], mask_rates: list[float], config: Any,
            output_root: str | Path, pre_distill: bool = True, layers_per_grade: list[list[int]] | None = None,
            ctx: DistContext | None = None, stage_steps: list[int] | None = None) -> list[Any]:
    """Run PMD end to end from a trained teacher run folder; one run folder per stage under ``output_root``
    (``pmd-L<layers>-m<rate>``) and ``pmd_summary.json`` with each stage's metrics. ``config`` is a
    :class:`~kgdistill.text.config.TextRunConfig` giving the training budget and loss weights of every stage;
    ``ctx``: the process group every stage trains in (default: :func:`~kgdistill.distributed.init_distributed`);
    ``stage_steps``: the steps per epoch of each stage, in order (default: the config's for every stage), e.g. to
    split a total budget unevenly between the pre-distillation stage and the last one."""
    from kgdistill.runs import load_run
    from kgdistill.text.students import check_same_plm
    from kgdistill.text.trainer import train_text

    import os

    root = Path(output_root)
    main = os.environ.get("RANK", "0") == "0"  # under torchrun every stage trains on every rank; rank 0 writes
    teacher = load_run(teacher_run, with_dataset=False).model
    if not isinstance(teacher, BiEncoder):
        raise ConfigError(f"{teacher_run}: the PMD teacher must be a text bi-encoder run")
    check_same_plm(teacher, config.model.plm)
    stages = plan_grades(teacher.num_layers, grades, mask_rates, pre_distill)
    if layers_per_grade is not None and len(layers_per_grade) != len(stages):
        raise ConfigError(f"layers_per_grade needs {len(stages)} entries, got {len(layers_per_grade)}")
    if stage_steps and (len(stage_steps) != len(stages) or any(int(n) < 1 for n in stage_steps)):
        raise ConfigError(f"stage_steps needs {len(stages)} step counts ≥ 1 (one per stage of the chain "
                          f"{' → '.join(str(n) for n, _ in stages)}), got {list(stage_steps)}")
    d = config.distill
    pretrained = d.student_init == "pretrained"
    chosen = [list(x) for x in layers_per_grade] if layers_per_grade is not None else chain_layers(
        stages, teacher.num_layers, d.layer_choice, d.student_init,
        _plm_layers(config, teacher.num_layers) if pretrained else None)
    prev, runs, summary = str(teacher_run), [], []
    del teacher
    if main:  # every input error is raised above, before the root folder exists
        root.mkdir(parents=True, exist_ok=True)
    for i, (n_layers, rate) in enumerate(stages):
        layers = chosen[i]
        cfg = replace(config, output_dir=str(root / f"pmd-L{n_layers}-m{rate:g}"),
                      distill=replace(config.distill, method="pmd", teacher=prev, layers=layers, mask_rate=rate))
        if stage_steps:
            cfg = replace(cfg, training=replace(cfg.training, steps_per_epoch=int(stage_steps[i])))
        run = train_text(cfg, ctx=ctx)
        runs.append(run)
        summary.append({"stage": i, "layers": n_layers, "kept": layers, "mask_rate": rate, "teacher": prev,
                        "run": str(run.path), "metrics": run.metrics})
        if main:
            atomic_write_json(root / "pmd_summary.json", summary)  # temp + fsync + rename
        prev = str(run.path)
    return runs


def _plm_layers(config: Any, fallback: int) -> int:
    from kgdistill.text import plm as plm_mod

    spec = plm_mod.resolve_plm(config.model.plm)
    if spec.tiny is not None:
        return spec.tiny["layers"]
    cfg = json.loads((spec.path / "config.json").read_text())  # type: ignore[operator]
    return int(cfg.get("num_hidden_layers", fallback))


@dataclass(frozen=True)
class PMDConfig(TextCommonConfig):
    """PMD's options: the text methods' common ones, the feature term and the chain of grades."""

    beta: float = text_option("beta")
    mask_rate: float = text_option("mask_rate")
    mgfd_variant: str = text_option("mgfd_variant")
    mgfd_reduction: str = text_option("mgfd_reduction")
    mgfd_unmasked: str = text_option("mgfd_unmasked")
    grades: list = opt([], "the PMD chain: student layer counts, e.g. 6,4,2 (pre-distillation at the teacher's size "
                           "is added when missing; one run folder per stage under --out); none: one student")
    mask_rates: list = opt([], "one mask rate per stage of the chain, e.g. 0.2,0.1,0 (without grades: the first is "
                               "the mask rate)")
    pre_distill: bool = opt(True, "the chain starts with a same-size pre-distillation stage")
    stage_steps: list = opt([], "steps per epoch of each stage of the chain, in order (default: steps_per_epoch "
                                "for every stage)", item=int)


@methods.register("pmd")
class PMD(TextMethod):
    """PMD (AAAI 2024): progressive distillation of a text bi-encoder with masked generation features."""

    name = "pmd"
    objective = "pmd"
    Config = PMDConfig

    def chain(self, config: PMDConfig) -> dict[str, Any]:
        return {"grades": list(config.grades), "mask_rates": list(config.mask_rates),
                "pre_distill": config.pre_distill, "stage_steps": list(config.stage_steps)}

    @staticmethod
    def run_chain(config: Any, grades: list[int], mask_rates: list[float], *, pre_distill: bool = True,
                  ctx: Any = None, stage_steps: list[int] | None = None) -> list[Any]:
        """The PMD chain of a text run ``config`` (its teacher, its options): one run folder per stage under
        ``config.output_dir`` (default ``runs/pmd``); see :func:`run_pmd`."""
        root = config.output_dir or "runs/pmd"
        return run_pmd(config.distill.teacher, grades, mask_rates, replace(config, output_dir=None), root,
                       pre_distill=pre_distill, ctx=ctx, stage_steps=stage_steps)
