"""Quality part of the PyKEEN comparison (issue 2, item 9): train one model within a wall-clock budget, keep the best
model on validation MRR, report filtered test MRR / Hits@1,3,10 next to the published number.

Training and evaluation are kgdistill's own (``Trainer.train_epoch`` — the loop of ``kgdistill train`` — and
``DatasetEvaluator``, all test triples, filtered on train ∪ valid ∪ test, realistic ranks). The only addition is the
budget: epochs run until ``--epochs`` or until the next epoch would not fit in ``--budget-minutes``.

Usage:
  python benchmarks/pykeen_quality.py --name complex-n3-wn18rr --dataset wn18rr --model complex --dim 500 \\
      --training-mode 1vsall --optimizer adagrad --lr 0.1 --regularizer n3 --regularizer-weight 0.1 \\
      --batch-size 1000 --eval-every 2 --budget-minutes 60 --published-mrr 0.48
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

PUBLISHED = {
    "rotate-wn18rr": {"mrr": 0.476, "hits@1": 0.428, "hits@3": 0.492, "hits@10": 0.571,
                      "source": "Sun et al., 2019 (RotatE), Table 5"},
    "rotate-fb15k-237": {"mrr": 0.338, "hits@1": 0.241, "hits@3": 0.375, "hits@10": 0.533,
                         "source": "Sun et al., 2019 (RotatE), Table 5"},
    "complex-n3-wn18rr": {"mrr": 0.48, "hits@10": 0.57, "source": "Lacroix et al., 2018 (ComplEx-N3), Table 2"},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", default=os.environ.get("KGDISTILL_DATA", "../shared/data"))
    p.add_argument("--model", required=True)
    p.add_argument("--model-options", default="{}", help="JSON, e.g. '{\"norm\": \"complex_l1\"}'")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--training-mode", default="slcwa")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", default="nssa")
    p.add_argument("--margin", type=float, default=9.0)
    p.add_argument("--adversarial-temperature", type=float, default=1.0)
    p.add_argument("--num-negatives", type=int, default=64)
    p.add_argument("--regularizer", default="none")
    p.add_argument("--regularizer-weight", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--budget-minutes", type=float, default=60.0)
    p.add_argument("--out", default="benchmarks/out")
    args = p.parse_args()

    from kgdistill import kernels
    from kgdistill.config import ModelConfig, RunConfig, TrainingConfig
    from kgdistill.data.datasets import load_dataset
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.runs import build_model, resolve_config
    from kgdistill.training.loop import Trainer
    from kgdistill.training.memory import retain_freed_memory

    start = time.perf_counter()
    budget = args.budget_minutes * 60.0
    retained = retain_freed_memory()
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    training = TrainingConfig(training_mode=args.training_mode, epochs=args.epochs, batch_size=args.batch_size,
                              optimizer=args.optimizer, lr=args.lr, loss=args.loss, margin=args.margin,
                              adversarial_temperature=args.adversarial_temperature,
                              num_negatives=args.num_negatives, regularizer=args.regularizer,
                              regularizer_weight=args.regularizer_weight, seed=args.seed, eval_every=args.eval_every)
    config = resolve_config(RunConfig(model=ModelConfig(model=args.model, dim=args.dim,
                                                        model_options=json.loads(args.model_options)),
                                      training=training, output_dir=str(Path(args.out) / args.name)), ds)
    model = build_model(config, ds)
    evaluator = DatasetEvaluator(ds, batch_size=args.eval_batch_size)
    trainer = Trainer(model, ds, training, progress=False)
    record: dict = {"name": args.name, "args": vars(args), "config": {
        "model": vars(config.model), "training": vars(config.training)}, "kernels": kernels.available(),
        "glibc_retain_freed_memory": retained, "torch_threads": torch.get_num_threads(),
        "published": PUBLISHED.get(args.name), "history": [], "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    out_path = Path(args.out) / f"quality-{args.name}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_path.write_text(json.dumps(record, indent=2))

    best_mrr, best_state, best_epoch = -1.0, None, 0
    epoch_seconds: list[float] = []
    epoch = 0
    while epoch < args.epochs:
        elapsed = time.perf_counter() - start
        typical = max(epoch_seconds[-3:]) if epoch_seconds else 0.0
        if epoch_seconds and elapsed + typical * 1.1 > budget:
            break
        epoch += 1
        stats = trainer.train_epoch(epoch)
        epoch_seconds.append(stats["seconds"])
        entry = {"epoch": epoch, "loss": stats["loss"], "seconds": stats["seconds"]}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            t = time.perf_counter()
            valid = evaluator.evaluate(model, "valid").summary()["both"]
            entry.update(valid_mrr=valid["mrr"], valid_seconds=time.perf_counter() - t)
            if valid["mrr"] > best_mrr:
                best_mrr, best_epoch = valid["mrr"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record["history"].append(entry)
        print(json.dumps(entry), flush=True)
        save()
    # the last epochs since the last validation count too
    if record["history"] and "valid_mrr" not in record["history"][-1]:
        valid = evaluator.evaluate(model, "valid").summary()["both"]
        record["history"][-1]["valid_mrr"] = valid["mrr"]
        if valid["mrr"] > best_mrr:
            best_mrr, best_epoch, best_state = valid["mrr"], epoch, None
    if best_state is not None:
        model.load_state_dict(best_state)
    t = time.perf_counter()
    test = evaluator.evaluate(model, "test").summary()
    record.update(epochs_done=epoch, best_epoch=best_epoch, best_valid_mrr=best_mrr,
                  train_seconds=sum(epoch_seconds), wall_seconds=time.perf_counter() - start,
                  test_seconds=time.perf_counter() - t, test=test["both"], test_head=test["head"],
                  test_tail=test["tail"], finished=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    save()
    print(json.dumps({k: record[k] for k in ("name", "epochs_done", "best_epoch", "best_valid_mrr", "test",
                                               "wall_seconds")}), flush=True)


if __name__ == "__main__":
    main()
