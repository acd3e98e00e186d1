"""The PMD paper's chain on a GPU: MPNet-12L SimKGC teacher on full WN18RR → PMD12 → PMD9 → PMD6 → PMD3
(mask rates 20 % / 10 % / 5 % / 0 %; layers 9 = [0,2,3,5,6,7,9,10,11], 6 = [1,3,5,7,9,11], 3 = [2,6,10] of the
pretrained PLM, as the PMD code initialises them), plus no-KD / logit KD / patient KD at 3 layers (the paper's
ablation). SimKGC's WN18RR settings: self-negatives, neighbour names for short descriptions, 5-hop re-ranking.

    python benchmarks/text_pmd_paper.py --device cuda --out runs/pmd-paper-wn18rr        # a GPU job
    python benchmarks/text_pmd_paper.py --plm tiny:layers=12,hidden=32 --subgraph 300 \
        --epochs 1 --teacher-steps 2 --steps 2 --device cpu --out /tmp/pmd-paper-smoke     # start check on CPU

Any further option is passed to ``benchmarks/text_pmd.py`` (later options win).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import text_pmd  # noqa: E402

PAPER = ["--dataset", "wn18rr", "--plm", "mpnet", "--grades", "9,6,3", "--mask-rates", "0.2,0.1,0.05,0",
         "--student-init", "pretrained", "--baselines", "none,logit,patient", "--epochs", "10",
         "--teacher-steps", "0", "--steps", "0", "--batch-size", "256", "--lr", "5e-5", "--max-length", "50",
         "--self-negatives", "1", "--neighbour-names", "10", "--rerank-hops", "5", "--threads", "8",
         "--eval-batch-size", "1024", "--encode-batch-size", "512"]

if __name__ == "__main__":
    sys.exit(text_pmd.main(PAPER + sys.argv[1:]))
