"""PyKEEN interoperability check (issue 17 #3): metrics agree on both sides, and a PyKEEN teacher distils.

1. For each of TransE, DistMult, ComplEx, RotatE: train with PyKEEN's pipeline on PyKEEN's own Nations (dim, epochs
   as given; PyKEEN's defaults otherwise), evaluate it with PyKEEN (filtered against train ∪ valid ∪ test, realistic
   ranks), import the saved folder with ``kgdistill.interop.pykeen.import_pykeen`` and compare kgdistill's test
   MRR / Hits@10 of the imported run.
2. Distil the imported RotatE teacher with ``kd`` and ``scratch`` into dim ``--student-dim``, convert the KD student
   back with ``to_pykeen`` and evaluate it with PyKEEN's evaluator: the same figures as kgdistill's.

Usage (needs the pykeen extra; about 4 minutes on one CPU thread):
  python benchmarks/pykeen_interop.py --out /tmp/pykeen-interop --dim 32 --epochs 100 --student-dim 8
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="work folder (replaced)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--student-dim", type=int, default=8)
    p.add_argument("--models", default="TransE,DistMult,ComplEx,RotatE")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.getLogger("pykeen").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    from pykeen.datasets import Nations
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.pipeline import pipeline

    import kgdistill
    from kgdistill.interop.pykeen import import_pykeen, to_pykeen

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data = Nations()
    rows = []

    def pykeen_metrics(m: dict) -> dict:
        return {"mrr": m["both.realistic.inverse_harmonic_mean_rank"], "hits@10": m["both.realistic.hits_at_10"]}

    for name in args.models.split(","):
        start = time.perf_counter()
        result = pipeline(dataset=data, model=name, model_kwargs={"embedding_dim": args.dim},
                          training_kwargs={"num_epochs": args.epochs, "use_tqdm": False},
                          evaluation_kwargs={"use_tqdm": False, "additional_filter_triples": [
                              data.training.mapped_triples, data.validation.mapped_triples]}, random_seed=0)
        result.save_to_directory(out / f"pykeen-{name}")
        run = import_pykeen(out / f"pykeen-{name}", "nations", out / f"run-{name}")
        ours = run.metrics["test"]["both"]
        row = {"model": name, "seconds": round(time.perf_counter() - start, 1),
               "pykeen": pykeen_metrics(result.metric_results.to_flat_dict()),
               "kgdistill": {"mrr": ours["mrr"], "hits@10": ours["hits@10"]}}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "RotatE" in args.models.split(","):
        teacher = out / "run-RotatE"
        table = {}
        for method in ("kd", "scratch"):
            report = kgdistill.distill(method, teacher, out / method, dims=[args.student_dim])
            table[method] = report.results[0].path
            print(report.table(), flush=True)
        student = kgdistill.load(table["kd"])
        model = to_pykeen(student)
        ds = student.dataset
        res = RankBasedEvaluator().evaluate(model, ds.splits["test"], use_tqdm=False, batch_size=256,
                                            additional_filter_triples=[ds.splits["train"], ds.splits["valid"]])
        row = {"model": f"kd-{args.student_dim} student back in PyKEEN ({type(model).__name__})",
               "pykeen": pykeen_metrics(res.to_flat_dict()),
               "kgdistill": {k: student.metrics["test"]["both"][k] for k in ("mrr", "hits@10")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
