"""PyKEEN reference runner: per-epoch training time, peak RSS, filtered rank-based evaluation.

Copied from the peer runner ``../shared/bench/pykeen_reference.py`` (project shared benchmarks; the anchor figures
of docs/PERFORMANCE.md came from it). The only change: it also records the process CPU time (user + system) of
every epoch and of the evaluation (``epoch_cpu_seconds``, ``eval_cpu_seconds``), which stays meaningful on a
machine shared with other jobs when torch runs one thread. Training, model, loss, sampler and evaluation are
untouched.

The anchor figures of the foundation issue came from this script (PyKEEN 1.11.1, torch 2.13.0 CPU).
Install PyKEEN in a separate venv for benchmarks only: `pip install torch==2.13.0 pykeen==1.11.1`.

Usage examples:
  python bench_pykeen.py --dataset WN18RR --model TransE --epochs 3
  python bench_pykeen.py --dataset WN18RR --model TransE --epochs 3 --save m.pt
  python bench_pykeen.py --dataset WN18RR --model TransE --load m.pt --evaluate --eval-batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch

import pykeen
from pykeen.datasets.base import PathDataset
from pykeen.evaluation import RankBasedEvaluator
from pykeen.losses import MarginRankingLoss, NSSALoss
from pykeen.models import RotatE, TransE
from pykeen.sampling import BasicNegativeSampler
from pykeen.training import SLCWATrainingLoop
from pykeen.training.callbacks import TrainingCallback


def rss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class EpochTimer(TrainingCallback):
    def __init__(self):
        super().__init__()
        self.t_last = None
        self.c_last = None
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.losses: list[float] = []

    def start(self):
        self.t_last = time.perf_counter()
        self.c_last = time.process_time()

    def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
        now = time.perf_counter()
        cpu = time.process_time()
        self.cpu_times.append(cpu - self.c_last)
        self.c_last = cpu
        self.times.append(now - self.t_last)
        self.losses.append(float(epoch_loss))
        print(f"  epoch {epoch}: {now - self.t_last:.2f}s loss={epoch_loss:.5f} peakRSS={rss_mib():.0f}MiB", flush=True)
        self.t_last = now


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default=os.environ.get("KG_DATA_ROOT", "../shared/data"))
    p.add_argument("--dataset", required=True, choices=["WN18RR", "FB15k-237"])
    p.add_argument("--model", required=True, choices=["TransE", "RotatE"])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-negs", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", default="nssa", choices=["nssa", "margin"])
    p.add_argument("--margin", type=float, default=9.0)
    p.add_argument("--adv-temp", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save", default=None)
    p.add_argument("--load", default=None)
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--eval-split", default="test", choices=["test", "valid"])
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    out: dict = dict(args=vars(args), torch=torch.__version__, pykeen=pykeen.get_version(),
                     torch_num_threads=torch.get_num_threads(),
                     torch_num_interop_threads=torch.get_num_interop_threads())
    print(json.dumps(out), flush=True)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    root = os.path.join(args.data_root, args.dataset)
    ds = PathDataset(
        training_path=os.path.join(root, "train.tsv"),
        testing_path=os.path.join(root, "test.tsv"),
        validation_path=os.path.join(root, "valid.tsv"),
    )
    tf_train, tf_valid, tf_test = ds.training, ds.validation, ds.testing
    out["load_seconds"] = time.perf_counter() - t0
    out["num_entities"] = tf_train.num_entities
    out["num_relations"] = tf_train.num_relations
    out["num_triples"] = dict(train=tf_train.num_triples, valid=tf_valid.num_triples, test=tf_test.num_triples)
    out["rss_after_load_mib"] = current_rss_mib()
    print(f"loaded {args.dataset} in {out['load_seconds']:.2f}s: {out['num_entities']} ents, "
          f"{out['num_relations']} rels, {out['num_triples']}", flush=True)

    if args.loss == "nssa":
        loss = NSSALoss(margin=args.margin, adversarial_temperature=args.adv_temp)
    else:
        loss = MarginRankingLoss(margin=args.margin)
    model_cls = {"TransE": TransE, "RotatE": RotatE}[args.model]
    model = model_cls(triples_factory=tf_train, embedding_dim=args.dim, loss=loss, random_seed=args.seed)
    out["num_parameters"] = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    if args.load:
        model.load_state_dict(torch.load(args.load))
        print(f"loaded state dict from {args.load}", flush=True)

    if args.epochs > 0:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        loop = SLCWATrainingLoop(
            model=model,
            triples_factory=tf_train,
            optimizer=optimizer,
            negative_sampler=BasicNegativeSampler,
            negative_sampler_kwargs=dict(num_negs_per_pos=args.num_negs),
        )
        timer = EpochTimer()
        rss_before = rss_mib()
        t_train = time.perf_counter()
        timer.start()
        loop.train(triples_factory=tf_train, num_epochs=args.epochs, batch_size=args.batch_size,
                   use_tqdm=False, use_tqdm_batch=False, callbacks=[timer])
        out["train_total_seconds"] = time.perf_counter() - t_train
        out["epoch_seconds"] = timer.times
        out["epoch_cpu_seconds"] = timer.cpu_times
        out["epoch_losses"] = timer.losses
        out["epoch_seconds_median"] = statistics.median(timer.times)
        out["peak_rss_before_train_mib"] = rss_before
        out["peak_rss_after_train_mib"] = rss_mib()
        print(f"train: epochs={timer.times} median={out['epoch_seconds_median']:.2f}s", flush=True)
        if args.save:
            torch.save(model.state_dict(), args.save)

    if args.evaluate:
        evaluator = RankBasedEvaluator(filtered=True)
        eval_tf = tf_test if args.eval_split == "test" else tf_valid
        filter_triples = [tf_train.mapped_triples, tf_valid.mapped_triples]
        if args.eval_split == "valid":
            filter_triples = [tf_train.mapped_triples, tf_test.mapped_triples]
        rss_before = rss_mib()
        cur_before = current_rss_mib()
        t_eval = time.perf_counter()
        c_eval = time.process_time()
        res = evaluator.evaluate(model=model, mapped_triples=eval_tf.mapped_triples,
                                 additional_filter_triples=filter_triples,
                                 batch_size=args.eval_batch_size, use_tqdm=False)
        out["eval_seconds"] = time.perf_counter() - t_eval
        out["eval_cpu_seconds"] = time.process_time() - c_eval
        out["peak_rss_before_eval_mib"] = rss_before
        out["rss_current_before_eval_mib"] = cur_before
        out["peak_rss_after_eval_mib"] = rss_mib()
        metrics = {}
        for side in ["head", "tail", "both"]:
            for name in ["inverse_harmonic_mean_rank", "arithmetic_mean_rank", "hits_at_1", "hits_at_3", "hits_at_10"]:
                metrics[f"{side}.realistic.{name}"] = float(res.get_metric(f"{side}.realistic.{name}"))
        try:
            metrics["both.realistic.count"] = float(res.get_metric("both.realistic.count"))
        except Exception as e:  # noqa: BLE001
            metrics["both.realistic.count"] = f"n/a ({e.__class__.__name__})"
        out["metrics"] = metrics
        print(f"eval {args.eval_split}: {out['eval_seconds']:.1f}s MRR={metrics['both.realistic.inverse_harmonic_mean_rank']:.4f} "
              f"H@1={metrics['both.realistic.hits_at_1']:.4f} H@3={metrics['both.realistic.hits_at_3']:.4f} "
              f"H@10={metrics['both.realistic.hits_at_10']:.4f}", flush=True)

    out["peak_rss_final_mib"] = rss_mib()
    print("RESULT " + json.dumps(out), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
