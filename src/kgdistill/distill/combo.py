"""Beyond the papers: an IterDE chain whose final student is then MetaSD-pruned (METHODS.md §6).

The chain stops one halving earlier by default (``target_dim`` 64) and MetaSD prunes the 64-dim student to 50%
sparsity: the same number of non-zero parameters as a dense 32-dim student, so the rows compare at equal budget.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

from kgdistill.config import opt
from kgdistill.distributed import DistContext
from kgdistill.distill.iterde import IterDEConfig, run_chain
from kgdistill.distill.method import Method, methods, teacher_model
from kgdistill.distill.metasd import MetaSDConfig, run_metasd
from kgdistill.distill.stage import StageResult
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.runs import Run


@dataclass(frozen=True)
class IterDEMetaSDConfig(IterDEConfig, MetaSDConfig):
    target_dim: int | None = opt(None, "last dimension of the IterDE chain, then pruned by MetaSD (default: 64, or "
                                       "half the teacher's dim for a teacher of fewer than 128 dims)")
    sparsity: float = opt(0.5, "MetaSD sparsity of the chain's final student (0.5 at dim 64 = the non-zeros of "
                               "a dense 32-dim model)")
    regularizer: str | None = opt(None, "regulariser of every step (None: the teacher's)")
    pruning: str = opt("global", "MetaSD pruning of the chain's final student: global (released; the combination's "
                                 "measured default) | row | dims")


@methods.register("iterde-metasd")
class IterDEMetaSD(Method):
    name = "iterde-metasd"
    Config = IterDEMetaSDConfig

    def run(self, teacher: Run, config: IterDEMetaSDConfig, out: Path, *, device: str = "cpu",
            progress: bool = False, ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        if config.target_dim is None and not config.dims:
            config = replace(config, target_dim=min(64, teacher_model(teacher).dim // 2))
        results = run_chain(teacher, config, out, device=device, progress=progress, method=self.name, ctx=ctx,
                            resume=resume)
        final = results[-1].model
        assert isinstance(final, EmbeddingModel)
        pruned = run_metasd(teacher, config, out, base=copy.deepcopy(final), device=device, progress=progress,
                            name=f"iterde-metasd-{final.dim}-s{config.sparsity:g}", method=self.name, ctx=ctx,
                            resume=resume)
        results.append(pruned)
        total = sum(r.metrics["train_seconds"] for r in results)
        pruned.row["chain train s"] = round(total, 3)
        pruned.metrics["chain_train_seconds"] = round(total, 3)
        return results
