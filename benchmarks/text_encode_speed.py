"""Entity-encoding throughput of a text bi-encoder on CPU: fp32 vs bf16 autocast vs int8 dynamic quantisation.

Encodes the same entities (``[CLS] name: description [SEP]``, ``--max-length`` tokens; a random sample of the graph's
entities) with each ``encode_dtype`` of :class:`~kgdistill.text.biencoder.BiEncoder` (what evaluation, the entity cache
and serving use), ``--rounds`` times, and reports the median entities/s, the speed-up over the first row
(``fp32-unsorted``: fp32 batches in id order, the encoding before length-sorted batching) and the min / mean cosine of
each embedding to that row's. ``--step-rounds N`` also times N training steps (forward + backward + AdamW, batch
``--step-batch``) in fp32 and under bf16 autocast (``training.train_dtype``). ``--run RUN_DIR`` evaluates a trained
text run on ``--split`` with each ``encode_dtype`` (entities and queries re-encoded): the MRR change against fp32.
Writes ``--out`` (JSON) when given.

    python benchmarks/text_encode_speed.py --dataset wn18rr --entities 1024 --rounds 3 --threads 1
    python benchmarks/text_encode_speed.py --plm tiny:layers=2,hidden=32 --dataset umls --entities 64   # smoke
    python benchmarks/text_encode_speed.py --run runs/bench-text-umls-b/teacher --entities 0   # MRR change only
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="wn18rr")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--plm", default="minilm-l6")
    p.add_argument("--entities", type=int, default=256, help="encode the first N entities (0: skip the timing)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtypes", default="fp32-unsorted,fp32,bf16,int8",
                   help="encode_dtype of each row; the suffix -unsorted batches entities in their id order (as before "
                        "length-sorted batching); the first row is the baseline of the speed-ups and cosines")
    p.add_argument("--sample-seed", type=int, default=0,
                   help="the entities timed: a random sample of the graph's entities drawn with this seed")
    p.add_argument("--step-rounds", type=int, default=0, help="also time N training steps per dtype (fp32, bf16)")
    p.add_argument("--step-batch", type=int, default=32)
    p.add_argument("--run", default=None, help="a trained text run folder: its MRR with each encode_dtype")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted({f for f in line.split(":", 1)[1].split() if "bf16" in f or f.startswith("amx")
                               or f == "avx512_vnni"})
    except OSError:
        pass
    return []


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    from kgdistill.data.datasets import load_dataset
    from kgdistill.text.biencoder import BiEncoder
    from kgdistill.text.textdata import entity_base_texts, relation_texts_of

    dtypes = [d for d in a.dtypes.split(",") if d]
    mrr_rows = evaluate_run(a.run, a.split, [d for d in dtypes if not d.endswith("-unsorted")], a.batch_size) \
        if a.run else []
    ds = load_dataset(a.dataset, data_dir=a.data_dir)
    names, texts = entity_base_texts(ds)
    n = min(a.entities, len(texts))
    sample = random.Random(a.sample_seed).sample(range(len(texts)), max(n, 1))  # lengths as in the whole graph
    model = BiEncoder.from_plm(a.plm, [names[i] for i in sample], [texts[i] for i in sample], relation_texts_of(ds),
                               max_length=a.max_length, encode_batch_size=a.batch_size).eval()
    ids = list(range(n))
    rows, reference = [], None
    for variant in dtypes if n else []:
        dtype, sort = variant.removesuffix("-unsorted"), not variant.endswith("-unsorted")
        model.set_encode_dtype(dtype)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.encode_entities(ids[:min(n, a.batch_size)])  # warm-up (and, for int8, the quantised copy)
        warm = time.perf_counter() - t0
        speeds, emb = [], None
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            with torch.inference_mode():
                emb = model.encode_entities(ids, sort_by_length=sort)
            speeds.append(n / (time.perf_counter() - t0))
        assert emb is not None
        if reference is None:
            reference = emb
        cos = (emb * reference).sum(-1)
        rows.append({"encode_dtype": variant, "entities_per_s": round(statistics.median(speeds), 1),
                     "rounds": [round(s, 1) for s in speeds], "warmup_seconds": round(warm, 2),
                     "min_cosine_to_fp32": round(float(cos.min()), 6),
                     "mean_cosine_to_fp32": round(float(cos.mean()), 6)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["entities_per_s"] if rows else 1.0
    for r in rows:
        r["speedup"] = round(r["entities_per_s"] / base, 2)
    steps = time_steps(model, a) if a.step_rounds > 0 and n else []
    result = {"command": "python benchmarks/text_encode_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "plm": a.plm, "dataset": ds.name,
              "entities": n, "batch_size": a.batch_size, "max_length": a.max_length, "encode": rows,
              "train_steps": steps, "run": a.run, "mrr": mrr_rows}
    print("| encode_dtype | entities/s (median) | speed-up | min cosine to fp32 | mean cosine |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encode_dtype']} | {r['entities_per_s']} | {r['speedup']}× | {r['min_cosine_to_fp32']} | "
              f"{r['mean_cosine_to_fp32']} |")
    for s in steps:
        print(f"train step {s['train_dtype']}: median {s['seconds_per_step']} s / step")
    for r in mrr_rows:
        print(f"{a.split} {r['encode_dtype']}: MRR {r['mrr']:.4f} (change {r['mrr_change']:+.4f}), "
              f"H@1 {r['hits@1']:.4f}, H@10 {r['hits@10']:.4f}, {r['seconds']} s")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
    return 0


def evaluate_run(run_dir: str, split: str, dtypes: list[str], batch_size: int) -> list[dict]:
    """Filtered ``split`` metrics of a text run with each encode dtype (every entity and query encoded again)."""
    from kgdistill.evaluate import evaluate
    from kgdistill.runs import load_run

    run = load_run(run_dir)
    model, rows = run.model, []
    model.eval()
    for dtype in dtypes:
        model.set_encode_dtype(dtype)
        model.invalidate_cache()
        t0 = time.perf_counter()
        summary = evaluate(model, run.dataset, split, batch_size=batch_size).summary()["both"]
        rows.append({"encode_dtype": dtype, **{k: round(float(summary[k]), 5) for k in ("mrr", "hits@1", "hits@10")},
                     "seconds": round(time.perf_counter() - t0, 1)})
        rows[-1]["mrr_change"] = round(rows[-1]["mrr"] - rows[0]["mrr"], 5)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def time_steps(model, a: argparse.Namespace) -> list[dict]:  # type: ignore[no-untyped-def]
    """Median seconds of a plain SimKGC training step (forward + backward + AdamW) in fp32 and under bf16 autocast."""
    from kgdistill.text.contrastive import simkgc_logits, simkgc_loss
    from kgdistill.text.textdata import make_batch

    n = model.num_entities
    g = torch.Generator().manual_seed(0)
    triples = torch.stack([torch.randint(n, (a.step_batch,), generator=g), torch.zeros(a.step_batch, dtype=torch.long),
                           torch.randint(n, (a.step_batch,), generator=g)], dim=1)
    batch = make_batch(model.tokenizer, model.entity_texts, model.relation_texts, triples, a.max_length, False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    out = []
    for dtype in ("fp32", "bf16"):
        times = []
        for i in range(a.step_rounds + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                o = model(batch.hr_inputs, batch.tail_inputs)
                mask = torch.zeros(a.step_batch, a.step_batch, dtype=torch.bool)
                loss = simkgc_loss(simkgc_logits(o.hr.pooled, o.tail.pooled, model.inv_t, 0.02, mask), a.step_batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
        out.append({"train_dtype": dtype, "seconds_per_step": round(statistics.median(times), 3),
                    "rounds": [round(t, 3) for t in times]})
        print(json.dumps(out[-1]), flush=True)
    model.eval()
    return out


if __name__ == "__main__":
    sys.exit(main())
