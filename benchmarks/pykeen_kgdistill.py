"""kgdistill side of the PyKEEN comparison: per-epoch training time, peak RSS, filtered test evaluation.

Mirrors the peer runner ``../shared/bench/pykeen_reference.py`` (same options, same JSON keys where they mean the
same thing), so that ``benchmarks/pykeen_compare.py`` can drive both libraries alike. Training goes through
``kgdistill.training.loop.Trainer.train_epoch`` — the loop of ``kgdistill train`` — and, as ``kgdistill train``
does, asks glibc to keep freed memory (``training/memory.py``; ``--no-retain-memory`` switches it off).

Usage:
  python benchmarks/pykeen_kgdistill.py --model TransE --epochs 3 --save /tmp/m
  python benchmarks/pykeen_kgdistill.py --model TransE --load /tmp/m --evaluate --test-subset pykeen
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch


def rss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def pykeen_test_subset(dataset) -> torch.Tensor:
    """Boolean mask of the test triples PyKEEN keeps: head and tail both occur in the training triples (PyKEEN
    builds its entity ids from training only and drops the other test triples)."""
    train = dataset.train
    seen = torch.zeros(dataset.num_entities, dtype=torch.bool)
    seen[train[:, 0]] = True
    seen[train[:, 2]] = True
    test = dataset.test
    return seen[test[:, 0]] & seen[test[:, 2]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.environ.get("KG_DATA_ROOT", "../shared/data"))
    p.add_argument("--dataset", default="WN18RR")
    p.add_argument("--model", required=True, choices=["TransE", "RotatE"])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-negs", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=9.0)
    p.add_argument("--adv-temp", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save", default=None, help="folder for model.safetensors + model.json")
    p.add_argument("--load", default=None)
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--test-subset", default="all", choices=["all", "pykeen"],
                   help="all test triples (the papers) or only those PyKEEN keeps (entities seen in training)")
    p.add_argument("--no-retain-memory", action="store_true", help="do not call glibc mallopt (training/memory.py)")
    p.add_argument("--no-kernels", action="store_true", help="KGDISTILL_KERNELS=0: the pure-PyTorch paths")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    if args.no_kernels:
        os.environ["KGDISTILL_KERNELS"] = "0"
    import kgdistill
    from kgdistill import kernels
    from kgdistill.config import TrainingConfig
    from kgdistill.data.datasets import load_dataset
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.models.base import load_model, save_model
    from kgdistill.models.embedding import EmbeddingModel
    from kgdistill.training.loop import Trainer
    from kgdistill.training.memory import retain_freed_memory

    retained = False if args.no_retain_memory else retain_freed_memory()
    out: dict = dict(args=vars(args), torch=torch.__version__, kgdistill=kgdistill.__version__,
                     torch_num_threads=torch.get_num_threads(),
                     torch_num_interop_threads=torch.get_num_interop_threads(),
                     glibc_retain_freed_memory=retained, ld_preload=os.environ.get("LD_PRELOAD", ""),
                     malloc_conf=os.environ.get("MALLOC_CONF", ""))
    t0 = time.perf_counter()
    kernels_ok = kernels.available()
    out["kernels"] = kernels_ok
    out["kernel_load_seconds"] = time.perf_counter() - t0
    print(json.dumps(out), flush=True)

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset.lower(), data_dir=args.data_dir)
    out["load_seconds"] = time.perf_counter() - t0
    out["num_entities"], out["num_relations"] = ds.num_entities, ds.num_relations
    out["num_triples"] = {k: int(v.shape[0]) for k, v in ds.splits.items()}
    out["rss_after_load_mib"] = current_rss_mib()

    options = {"norm": "l2"} if args.model == "RotatE" else {}
    name = args.model.lower()
    if args.load:
        model = load_model(args.load)
    else:
        torch.manual_seed(args.seed)
        model = EmbeddingModel(name, ds.num_entities, ds.num_relations, args.dim, interaction_options=options)
    out["model_config"] = model.config()
    out["num_parameters"] = model.num_parameters()

    if args.epochs > 0:
        cfg = TrainingConfig(training_mode="slcwa", epochs=args.epochs, batch_size=args.batch_size, optimizer="adam",
                             lr=args.lr, loss="nssa", margin=args.margin, adversarial_temperature=args.adv_temp,
                             num_negatives=args.num_negs, negative_sampler="uniform", seed=args.seed, eval_every=0)
        trainer = Trainer(model, ds, cfg, progress=False)
        out["optimizer"] = type(trainer.optimizer).__module__ + "." + type(trainer.optimizer).__name__
        rss_before = rss_mib()
        times, cpu_times, losses = [], [], []
        t_train = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            c = time.process_time()
            stats = trainer.train_epoch(epoch)
            cpu_times.append(time.process_time() - c)
            times.append(stats["seconds"])
            losses.append(stats["loss"])
            print(f"  epoch {epoch}: {stats['seconds']:.2f}s loss={stats['loss']:.5f} peakRSS={rss_mib():.0f}MiB",
                  flush=True)
        out["train_total_seconds"] = time.perf_counter() - t_train
        out["epoch_seconds"], out["epoch_cpu_seconds"], out["epoch_losses"] = times, cpu_times, losses
        out["epoch_seconds_median"] = statistics.median(times)
        out["peak_rss_before_train_mib"] = rss_before
        out["peak_rss_after_train_mib"] = rss_mib()
        print(f"train: epochs={[round(t, 2) for t in times]} median={out['epoch_seconds_median']:.2f}s", flush=True)
        if args.save:
            save_model(model, args.save)

    if args.evaluate:
        test = ds.test
        if args.test_subset == "pykeen":
            test = test[pykeen_test_subset(ds)]
        rss_before, cur_before = rss_mib(), current_rss_mib()
        t_eval = time.perf_counter()
        c_eval = time.process_time()
        evaluator = DatasetEvaluator(ds, batch_size=args.eval_batch_size)  # builds the filter index: timed too
        result = evaluator.evaluate(model, triples=test)
        out["eval_seconds"] = time.perf_counter() - t_eval
        out["eval_cpu_seconds"] = time.process_time() - c_eval
        out["eval_triples"] = int(test.shape[0])
        out["peak_rss_before_eval_mib"] = rss_before
        out["rss_current_before_eval_mib"] = cur_before
        out["peak_rss_after_eval_mib"] = rss_mib()
        out["metrics"] = {side: {k: float(v) for k, v in m.items()} for side, m in result.summary().items()}
        both = out["metrics"]["both"]
        print(f"eval test ({out['eval_triples']} triples): {out['eval_seconds']:.1f}s "
              f"peakRSS={out['peak_rss_after_eval_mib']:.0f}MiB {both}", flush=True)

    out["peak_rss_final_mib"] = rss_mib()
    print("RESULT " + json.dumps(out), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
