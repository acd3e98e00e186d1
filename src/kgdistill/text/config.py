"""Frozen configurations of text runs (saved as the ``config.yaml`` of every text run, after ``kind: text``; field
 help in metadata).

Field names are unique across sections, so each is also a CLI flag (``--mask-rate 0.1``) and a flat override key.
Loss weights of every distillation method follow one rule: ``(1 - alpha - beta) · CE + alpha · logit term +
beta · feature term`` (a method without a feature term ignores ``beta``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from kgdistill.config import DataConfig, EvaluationConfig, opt

ENCODE_DTYPES = ("fp32", "bf16", "int8")
TRAIN_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class TextModelConfig:
    plm: str = opt("minilm-l6", "PLM: minilm-l6 | mpnet | a local folder | tiny:layers=4,hidden=32 (random, tests)")
    max_length: int = opt(50, "tokens per input (SimKGC: 50)")
    pooling: str = opt("mean", "mean | cls")
    init_temperature: float = opt(0.05, "initial InfoNCE temperature τ")
    learn_temperature: bool = opt(True, "learn τ (as log 1/τ)")
    additive_margin: float = opt(0.02, "additive margin γ subtracted from positive logits while training")
    neighbour_names: int = opt(0, "pad short entity texts with up to N neighbour names (SimKGC: 10; 0 = off)")
    neighbour_min_words: int = opt(20, "descriptions shorter than this many words get neighbour names")
    rerank_hops: int = opt(0, "test-time re-ranking: boost entities within N hops of the anchor (SimKGC WN18RR: 5)")
    rerank_weight: float = opt(0.05, "score added by re-ranking")
    encode_batch_size: int = opt(128, "entities / queries per encoding batch at evaluation")
    plm_layers: list = opt([], "keep only these PLM layers for a model trained without a teacher (e.g. 0,2,4)",
                           item=int)
    encode_dtype: str = opt("fp32", "entity / query encoding at evaluation and serving: fp32 | bf16 (CPU/GPU "
                                    "autocast; min cosine to fp32 ≥ 0.999) | int8 (dynamically quantised Linear "
                                    "layers, CPU; less exact, see BENCHMARKS.md); training steps are not affected",
                            choices=ENCODE_DTYPES)


@dataclass(frozen=True)
class TextTrainingConfig:
    epochs: int = opt(3, "epochs over train triples and their inverses")
    batch_size: int = opt(32, "queries per batch (in-batch negatives)")
    lr: float = opt(5e-5, "AdamW learning rate")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    warmup_steps: int = opt(100, "linear warm-up steps, then linear decay to 0")
    max_grad_norm: float = opt(10.0, "gradient clipping norm")
    pre_batch: int = opt(0, "pre-batch negatives: number of earlier batches queued (SimKGC: 2; 0 = off)")
    pre_batch_weight: float = opt(0.5, "weight of pre-batch logits")
    self_negatives: bool = opt(True, "add the head itself as a negative")
    steps_per_epoch: int | None = opt(None, "cap on steps per epoch (None = all triples)")
    seed: int = opt(42, "random seed (initialisation, shuffling, masks)")
    eval_every: int = opt(1, "validate every N epochs and keep the best (0 = only the last)")
    checkpoint_every: int = opt(1, "write checkpoints/last.pt every N epochs")
    keep_checkpoint: bool = opt(True, "keep checkpoints/last.pt once the run has finished (model + AdamW state, "
                                      "about 4× the model: what continuing with more epochs needs); false deletes it")
    num_threads: int | None = opt(None, "torch CPU threads")
    log_every: int = opt(50, "trace the loss every N steps")
    train_dtype: str = opt("fp32", "training steps' forward passes: fp32 | bf16 (autocast; the weights, the optimiser "
                                   "and HRKD's meta step stay fp32)", choices=TRAIN_DTYPES)


@dataclass(frozen=True)
class DistillConfig:
    method: str = opt("none", "none (plain training) | logit | patient | pmd | hrkd")
    teacher: str | None = opt(None, "teacher run folder (needed by every method but none; with none: the student "
                                    "is initialised from it, i.e. the no-KD baseline)")
    layers: list = opt([], "teacher layers kept by the student (default: evenly spaced, --student-layers N)", item=int)
    student_layers: int | None = opt(None, "number of student layers (when --layers is not given)")
    student_init: str = opt("teacher", "teacher (copy the teacher's layers) | pretrained (the PLM's, as PMD's code)")
    alpha: float = opt(0.1, "weight of the logit / score distillation term")
    beta: float = opt(0.1, "weight of the feature term (MGFD, patient hidden states, HRKD layer terms)")
    mask_rate: float = opt(0.2, "PMD: fraction of tokens masked (never [CLS] / [SEP])")
    mgfd_variant: str = opt("input-mask", "PMD feature term: input-mask (PMD code) | feature-generator (MGD style)")
    mgfd_reduction: str = opt("sum", "PMD feature distance over the feature dimension: sum (squared L2 distance; "
                                     "measured ahead of mean on umls, 5 seeds, BENCHMARKS.md) | mean (the PMD code's "
                                     "nn.MSELoss: sum / hidden size, e.g. 1/384 of sum for MiniLM)",
                              choices=("sum", "mean"))
    mgfd_unmasked: str = opt("all-tokens", "PMD input-mask MGFD of a text with no masked token (every text at a "
                                           "rate-0 grade): all-tokens (the feature is the mean over all its tokens; "
                                           "measured ahead of zero on umls, 5 seeds) | zero (the PMD code: no "
                                           "term, so MGFD is identically 0 at a rate-0 grade)",
                             choices=("all-tokens", "zero"))
    layer_choice: str = opt("top", "student layers when --layers is not given: top (evenly spaced ending at the "
                                   "source's top layer; the paper's table from 12 layers; in a PMD chain each grade "
                                   "counts on its teacher grade) | paper (the PMD paper's layers counted on the "
                                   "chain's original model: 12 → 6 [1,3,5,7,9,11], 12 → 3 [2,6,10], otherwise the "
                                   "centre of k equal blocks ⌊(i+½)·N/k⌋, e.g. 6 → 3 [1,3,5], 6 → 2 [1,4])",
                            choices=("top", "paper"))
    kd_temperature: float = opt(1.0, "temperature of logit KD / HRKD soft CE")
    cache_teacher: bool = opt(False, "logit / patient KD: keep the frozen teacher's per-text features across epochs "
                                     "(the teacher then runs once per distinct text; memory: (1 + layers) × hidden "
                                     "floats per text)")
    hrkd_domains: str = opt("relation", "HRKD domains: relation (one per relation) | prefix (first path segment) "
                                        "| clusters:K (relations hashed into K groups by their text)")
    hrkd_meta_every: int = opt(5, "HRKD: one meta step (second-order lookahead) every N steps (0 = never)")
    hrkd_meta_lr: float = opt(1e-3, "HRKD: Adam learning rate of the domain-relational graph")
    hrkd_weights: str = opt("learned", "HRKD: learned (the domain-relational graph) | uniform (ablation: every "
                                       "present domain weighs the same, no meta step)",
                             choices=("learned", "uniform"))
    hrkd_holdout: float = opt(0.0, "fraction of training triples held out from *every* method's training (so "
                                   "methods stay comparable); HRKD draws its meta batches from it; 0 = none: HRKD "
                                   "draws meta batches from the training triples")
    hrkd_heads: int = opt(4, "HRKD: graph attention heads")
    hrkd_proto_dim: int = opt(64, "HRKD: prototype projection size")


@dataclass(frozen=True)
class TextRunConfig:
    """A text bi-encoder run: the ``text`` kind of :data:`kgdistill.config.CONFIG_KINDS` (its ``config.yaml``)."""

    KIND: ClassVar[str] = "text"

    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="umls"))
    model: TextModelConfig = field(default_factory=TextModelConfig)
    training: TextTrainingConfig = field(default_factory=TextTrainingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    device: str = opt("cpu", "cpu | cuda | cuda:N")
    output_dir: str | None = opt(None, "run folder (default: runs/<dataset>-text-<time>)")
    progress: bool = opt(False, "show progress bars")


def _choices() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for section in (TextModelConfig, TextTrainingConfig, DistillConfig):
        out.update({f.name: tuple(f.metadata["choices"]) for f in fields(section) if "choices" in f.metadata})
    return out


#: field -> the values it accepts (from the fields' ``choices``; checked by :func:`kgdistill.validate.validate_config`)
CHOICES = _choices()


def check_text_config(cfg: TextRunConfig) -> None:
    """One-line :class:`~kgdistill.errors.ConfigError` for option values no run can use (before anything runs):
    the choices and ranges of :func:`kgdistill.validate.validate_config`, which checks every option."""
    from kgdistill.validate import validate_config

    validate_config(cfg)

