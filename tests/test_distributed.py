"""Two processes (gloo, CPU) under torchrun: sharded evaluation, data-parallel training, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgdistill.cli import main, strip_nproc
from kgdistill.distributed import shard_bounds

TRAIN = ["train", "--dataset", "nations", "--model", "complex", "--dim", "16", "--training-mode", "1vsall",
         "--optimizer", "adagrad", "--lr", "0.1", "--regularizer", "n3", "--regularizer-weight", "0.005",
         "--epochs", "6", "--batch-size", "256", "--eval-every", "3", "--patience", "0", "--progress", "false"]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "kgdistill.cli", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_shard_bounds_cover_everything_once() -> None:
    for n in (0, 1, 5, 10, 11):
        for world in (1, 2, 3):
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def test_strip_nproc() -> None:
    assert strip_nproc(["train", "--nproc", "2", "--epochs", "3", "--nproc=4"]) == ["train", "--epochs", "3"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "single"
    torch.set_num_threads(1)
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("grad_sync", ["dense", "sparse"])
def test_two_process_training_matches_one_process(single_run: Path, tmp_path: Path, grad_sync: str) -> None:
    out = tmp_path / "two"
    proc = torchrun([*TRAIN, "--grad-sync", grad_sync, "--out", str(out)])
    assert proc.stdout.count("run folder:") == 1  # only rank 0 prints
    one = json.loads((single_run / "metrics.json").read_text())["test"]["both"]
    two = json.loads((out / "metrics.json").read_text())["test"]["both"]
    # 1vsAll has no sampling: the averaged gradients of two half batches equal the full batch's gradient,
    # up to float summation order
    assert two["mrr"] == pytest.approx(one["mrr"], abs=0.01)
    assert json.loads((out / "meta.json").read_text())["processes"] == 2


GRAD_SYNC_SCRIPT = '''
import json, sys
import torch
import torch.distributed as dist
from kgdistill.config import TrainingConfig
from kgdistill.data.datasets import load_dataset
from kgdistill.data.triples import KGDataset
from kgdistill.distributed import GradSync, init_distributed
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.loop import Trainer

torch.set_num_threads(1)
ctx = init_distributed("cpu")
ds = load_dataset("kinship")  # 104 entities: a batch of 8 triples × 2 negatives per rank touches a fraction of them
small = KGDataset(ds.name, ds.entities, ds.relations, {**ds.splits, "train": ds.train[:96]})
res, params, ddp_wrapped = {}, {}, []
original = torch.nn.parallel.DistributedDataParallel.__init__

def init(self, *args, **kwargs):
    ddp_wrapped.append(1)
    original(self, *args, **kwargs)

torch.nn.parallel.DistributedDataParallel.__init__ = init
for mode in ("dense", "sparse", "auto"):
    torch.manual_seed(0)
    model = EmbeddingModel("transe", ds.num_entities, ds.num_relations, 16)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = TrainingConfig(epochs=2, batch_size=16, num_negatives=2, lr=0.01, grad_sync=mode, regularizer="l2",
                         regularizer_weight=0.01, max_grad_norm=1.0)
    trainer = Trainer(model, small, cfg, ctx=ctx)
    trainer.fit()
    params[mode] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res[f"{mode}_ddp"] = len(ddp_wrapped)
    res[f"{mode}_stats"] = trainer.grad_sync.stats if trainer.grad_sync is not None else None
res["moved"] = max(float((params["dense"][k] - start[k]).abs().max()) for k in start)
for mode in ("sparse", "auto"):
    res[f"{mode}_diff"] = max(float((params[mode][k] - params["dense"][k]).abs().max()) for k in start)
flat = torch.cat([v.reshape(-1) for v in params["sparse"].values()])
parts = [torch.empty_like(flat) for _ in range(ctx.world_size)]
dist.all_gather(parts, flat)
res["ranks_equal"] = all(torch.equal(parts[0], p) for p in parts)

# the exchange itself against a dense all-reduce: rows touched on one rank, on both, on none
g = torch.Generator().manual_seed(ctx.rank)
grad = torch.randn(50, 3, generator=g)
grad[torch.rand(50, generator=g) < 0.6] = 0.0
ref = grad.clone()
dist.all_reduce(ref)
ref /= ctx.world_size
for name, kwargs in (("sparse", dict(mode="sparse")),
                     ("auto_sparse", dict(mode="auto", min_table_numel=0, max_ratio=1.0)),
                     ("auto_dense", dict(mode="auto", min_table_numel=0, max_ratio=0.1))):
    table, bias, unused = (torch.nn.Parameter(torch.zeros(*s)) for s in ((50, 3), (3,), (4, 3)))
    table.grad, bias.grad = grad.clone(), torch.full((3,), float(ctx.rank))
    sync = GradSync([table, bias, unused], ctx, **kwargs)
    sync()
    res[name] = {"diff": float((table.grad - ref).abs().max()), "bias": bias.grad.tolist(),
                 "unused": unused.grad is None, "stats": sync.stats}
if ctx.is_main:
    json.dump(res, open(sys.argv[1], "w"))
'''


def _run_two_ranks(script_text: str, tmp_path: Path) -> dict:
    """Run ``script_text SCRIPT RESULT`` on 2 gloo ranks under torchrun; the JSON its rank 0 wrote to RESULT."""
    script, result = tmp_path / "two_ranks.py", tmp_path / "result.json"
    script.write_text(script_text)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(result)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(result.read_text())


def test_sparse_gradient_exchange_equals_dense(tmp_path: Path) -> None:
    """``grad_sync`` sparse and auto train to the parameters of DDP's dense all-reduce (sLCWA with an L2
    regulariser and gradient clipping, Adam), without DDP; the ranks stay bitwise equal; the exchange alone equals a
    dense all-reduce mean with rows touched on one rank, on both or on none."""
    r = _run_two_ranks(GRAD_SYNC_SCRIPT, tmp_path)
    assert r["moved"] > 1e-3
    assert r["sparse_diff"] <= 1e-5 and r["auto_diff"] <= 1e-5, r
    assert r["ranks_equal"]
    assert (r["dense_ddp"], r["sparse_ddp"], r["auto_ddp"]) == (1, 1, 1)  # only the dense run wrapped DDP
    sparse = r["sparse_stats"]
    assert sparse["steps"] == 12 and sparse["sparse"] == 24 and sparse["dense"] == 0  # entity + relation tables
    assert 0 < sparse["rows_sent"] < sparse["rows_total"] / 2  # only touched rows travelled
    assert r["auto_stats"]["sparse"] == r["auto_stats"]["dense"] == 0  # small tables: all-reduced with the rest
    for name in ("sparse", "auto_sparse", "auto_dense"):
        assert r[name]["diff"] <= 1e-6 and r[name]["bias"] == [0.5] * 3 and r[name]["unused"], (name, r[name])
    assert r["auto_sparse"]["stats"]["sparse"] == 1 and r["auto_dense"]["stats"]["dense"] == 1


def test_sharded_evaluation_equals_single_process(single_run: Path, tmp_path: Path) -> None:
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    assert main(["evaluate", str(single_run), "--split", "valid", "test", "--per-relation",
                 "--json", str(single)]) == 0
    torchrun(["evaluate", str(single_run), "--split", "valid", "test", "--per-relation", "--json", str(sharded)])
    assert json.loads(sharded.read_text()) == json.loads(single.read_text())


def test_two_process_slcwa_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "slcwa"
    args = ["train", "--dataset", "nations", "--model", "transe", "--dim", "16", "--epochs", "2", "--batch-size",
            "256", "--num-negatives", "8", "--lr", "0.01", "--margin", "6", "--eval-every", "0", "--progress",
            "false", "--out", str(out)]
    torchrun(args)
    torchrun(["train", "--resume", str(out), "--epochs", "4"])
    epochs = [json.loads(line)["epoch"] for line in (out / "trace.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4]
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert len(ckpt["sample_generators"]) == 2 and ckpt["state"]["epoch"] == 4


FAILING_RANK_SCRIPT = '''
import os, sys
from kgdistill.cli import main
from kgdistill.errors import KGDistillError
from kgdistill.training import loop

original = loop.Trainer.train_epoch

def train_epoch(self, epoch):
    if epoch == 2 and os.environ["RANK"] == "1":
        raise KGDistillError("simulated failure on this rank")
    return original(self, epoch)

loop.Trainer.train_epoch = train_epoch
sys.exit(main(sys.argv[1:]))
'''


def test_a_failing_rank_stops_the_job_with_a_clear_message(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
           *TRAIN, "--epochs", "4", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode != 0
    assert "rank 1: error: simulated failure on this rank" in proc.stderr


# ---- distillation (kgdistill.distill) under torchrun ----------------------------------------------------------------
INTERRUPT_SCRIPT = '''
import sys
from kgdistill.cli import main
from kgdistill.errors import KGDistillError
from kgdistill.training import loop

original = loop.Trainer.train_epoch

def train_epoch(self, epoch):  # every rank stops at the same point, as after a Ctrl-C or a lost machine
    if epoch == 2 and self.run_dir is not None and self.run_dir.name == sys.argv[1]:
        raise KGDistillError("simulated interruption")
    return original(self, epoch)

loop.Trainer.train_epoch = train_epoch
sys.exit(main(sys.argv[2:]))
'''


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "trace.jsonl").read_text().splitlines()]


def test_two_process_iterde_resumes_each_stage(single_run: Path, tmp_path: Path) -> None:
    """``distill --nproc 2`` (an IterDE chain 16→8→4) is interrupted in its second step, then ``--resume``: the
    finished step is kept as it is, the second continues from its epoch-1 checkpoint; the result is close to one
    process's (1vsAll draws nothing per rank)."""
    out = tmp_path / "iterde"
    args = ["distill", "--method", "iterde", "--teacher", str(single_run), "--dims", "8", "4", "--epochs", "3",
            "--eval-every", "1", "--out", str(out)]
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), "iterde-8-4", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "simulated interruption" in proc.stderr
    first, second = out / "iterde-16-8", out / "iterde-8-4"
    assert (first / "metrics.json").exists() and not (second / "metrics.json").exists()
    assert torch.load(second / "checkpoints" / "last.pt", weights_only=False)["state"]["epoch"] == 1
    first_ckpt = (first / "checkpoints" / "last.pt").read_bytes()

    proc = subprocess.run([sys.executable, "-m", "kgdistill.cli", *args, "--resume", "--nproc", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run folders under") == 1  # only rank 0 prints
    assert (first / "checkpoints" / "last.pt").read_bytes() == first_ckpt  # the finished step was not retrained
    assert [e["event"] for e in _events(first)].count("resume") == 0
    events = _events(second)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert [e["epoch"] for e in events if e["event"] == "resume"] == [1]
    assert [e["epoch"] for e in events if e["event"] == "distill"] == [1, 2, 3]
    ckpt = torch.load(second / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 3 and len(ckpt["sample_generators"]) == 2
    meta = json.loads((second / "meta.json").read_text())
    assert meta["processes"] == 2 and meta["resumed"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert [r["row"] for r in summary["rows"]] == ["teacher", "iterde-16-8", "iterde-8-4"]
    assert summary["processes"] == 2

    from kgdistill.distill import distill

    one = distill("iterde", single_run, tmp_path / "one", dims=[8, 4], epochs=3, eval_every=1,
                  with_teacher_row=False)
    assert summary["rows"][-1]["MRR"] == pytest.approx(one.rows[-1]["MRR"], abs=0.02)


API_SCRIPT = '''
import json, sys
from pathlib import Path
import torch
from kgdistill.distill import distill

from kgdistill.distributed import GradSync

wrapped = []
original = torch.nn.parallel.DistributedDataParallel.__init__
original_sync = GradSync.__init__

def init(self, module, *args, **kwargs):  # what each stage hands to DDP: parameter count of the wrapped module
    wrapped.append(sum(p.numel() for p in module.parameters() if p.requires_grad))
    original(self, module, *args, **kwargs)

def init_sync(self, params, *args, **kwargs):  # or to the sparse / auto gradient exchange
    original_sync(self, params, *args, **kwargs)
    wrapped.append(sum(p.numel() for p in [*self.tables, *self.others]))

torch.nn.parallel.DistributedDataParallel.__init__ = init
GradSync.__init__ = init_sync
teacher, out = sys.argv[1], Path(sys.argv[2])
common = dict(epochs=2, eval_every=1, with_teacher_row=False)
rows = {"kd": distill("kd", teacher, out / "kd", dims=[8], **common).rows,
        "dualde": distill("dualde", teacher, out / "dualde", dims=[8], num_negatives=4, **common).rows,
        "metasd": distill("metasd", teacher, out / "metasd", sparsity=0.8, **common).rows}
(out / f"rank{torch.distributed.get_rank()}.json").write_text(json.dumps({"wrapped": wrapped, "rows": rows}))
'''


def test_two_process_kd_dualde_metasd(single_run: Path, tmp_path: Path) -> None:
    """KD, DualDE (teacher trained in stage 2) and MetaSD in one 2-process job through the Python API: DDP (or the
    sparse / auto gradient exchange) synchronises the student (and DualDE's stage-2 teacher), never a frozen
    teacher; the MetaSD mask agrees on both ranks."""
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(single_run), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["rows"] == ranks[1]["rows"]  # every rank returns rank 0's report
    rows = 14 + 2 * 55  # nations: entities + relations with their reciprocals; complex: 2 reals per dimension
    student, teacher = 2 * 8 * rows, 2 * 16 * rows
    # kd: the student alone; dualde stage 1: student + evaluation module (a, b); stage 2: + the trained teacher and
    # its own module; metasd: the dense model it prunes (the teacher's weights, trained)
    assert ranks[0]["wrapped"] == [student, student + 2, student + teacher + 4, teacher]
    for folder in ("kd/kd-8", "dualde/dualde-8-stage1", "dualde/dualde-8-stage2", "metasd/metasd-16-s0.8"):
        for name in ("config.yaml", "distill.yaml", "trace.jsonl", "metrics.json", "model.safetensors",
                     "checkpoints/last.pt"):
            assert (tmp_path / folder / name).exists(), (folder, name)
        assert json.loads((tmp_path / folder / "meta.json").read_text())["processes"] == 2
    masks = [e for e in _events(tmp_path / "metasd" / "metasd-16-s0.8") if e["event"] == "mask"]
    assert [m["epoch"] for m in masks] == [1, 2] and all(m["rank_mismatch"] == 0 for m in masks)
    pruned = ranks[0]["rows"]["metasd"][-1]  # coordinate pruning (the default): 3 of 16 coordinates, a dense model
    assert pruned["nonzero"] == pruned["params"] == 2 * 3 * rows


# ---- text bi-encoders (kgdistill.text) under torchrun ---------------------------------------------------------------
CONTRASTIVE_SCRIPT = '''
import json, sys
import torch
from torch.nn.parallel import DistributedDataParallel
from kgdistill.data.datasets import load_dataset
from kgdistill.distributed import all_gather_objects, init_distributed, shard_bounds
from kgdistill.text.biencoder import BiEncoder
from kgdistill.text.config import TextRunConfig, TextTrainingConfig
from kgdistill.text.objective import Objective
from kgdistill.text.textdata import KnownTails, entity_base_texts, make_batch, relation_texts_of, with_inverses

torch.set_num_threads(1)
ctx = init_distributed("cpu")
ds = load_dataset("umls")
names, texts = entity_base_texts(ds)
model = BiEncoder.from_plm("tiny:layers=1,hidden=16,heads=2,intermediate=32", names, texts, relation_texts_of(ds),
                           ds.train, seed=0, max_length=16)
model.eval()  # no dropout: the one- and two-process computations see the same network
examples = with_inverses(ds.train, ds.num_relations)
known = KnownTails(examples, ds.num_entities, ds.num_relations)
same = (examples[:, 2] == examples[0, 2]).nonzero().flatten()
# a global batch of 10: two examples of one tail on each rank (false negatives across ranks), 6 others
ids = torch.cat([same[:2], torch.arange(100, 106), same[2:4]])
config = TextRunConfig(training=TextTrainingConfig(pre_batch=0, self_negatives=True))
params = [p for p in model.parameters() if p.requires_grad]


def batch_of(rows):
    return make_batch(model.tokenizer, model.entity_texts, model.relation_texts, examples[rows], 16, True)


one = Objective(model, None, config, known)  # a single process's loss of the whole global batch
loss1 = one.ce(one.forward(model, batch_of(ids)), batch_of(ids))
loss1.backward()
grads1 = [p.grad.clone() for p in params]
model.zero_grad(set_to_none=True)

obj = Objective(model, None, config, known, ctx=ctx)
obj.student_module = DistributedDataParallel(model)
lo, hi = shard_bounds(ids.shape[0], ctx.rank, ctx.world_size)
local = batch_of(ids[lo:hi])
out = obj.forward(model, local)
logits, columns, offset = obj.contrastive_logits(out, local)
loss = obj.ce(out, local)
loss.backward()  # DDP averages the ranks' gradients
diff = max(float((p.grad - g).abs().max()) for p, g in zip(params, grads1))
scale = max(float(g.abs().max()) for g in grads1)
losses = all_gather_objects(float(loss), ctx)
if ctx.is_main:
    json.dump({"logits": list(logits.shape), "columns": list(columns.shape), "offset": offset, "losses": losses,
               "loss1": float(loss1), "grad_diff": diff, "grad_scale": scale,
               "masked_across": int(obj.global_batch(local).mask[:2, 8:].sum())}, open(sys.argv[1], "w"))
'''


def test_contrastive_batch_spans_the_ranks(tmp_path: Path) -> None:
    """Two ranks × 5 queries: each rank's logits are [5, 10 + 1] (every rank's tails + the self-negative), the
    false-negative mask holds across ranks, the mean of the ranks' losses is the one-process loss of the 10, and the
    DDP-averaged gradient equals the one-process gradient (it reaches the embeddings computed on the other rank)."""
    pytest.importorskip("transformers")
    r = _run_two_ranks(CONTRASTIVE_SCRIPT, tmp_path)
    assert r["logits"] == [5, 11] and r["columns"] == [5, 10] and r["offset"] == 0
    assert r["masked_across"] == 4  # rank 0's two queries × rank 1's two tails of the same entity
    assert sum(r["losses"]) / 2 == pytest.approx(r["loss1"], rel=1e-5)
    assert r["grad_diff"] <= 1e-5 * max(1.0, r["grad_scale"]), r


def test_two_process_text_training_writes_one_run_folder(tmp_path: Path) -> None:
    """``text-train --nproc 2`` on a umls subset: rank 0 writes the folder; the final (sharded) evaluation gives
    the metrics of a one-process evaluation of the saved model."""
    pytest.importorskip("transformers")
    import importlib.resources
    import shutil

    from kgdistill.evaluate import evaluate
    from kgdistill.runs import load_run
    from kgdistill.text import biencoder  # noqa: F401  (registers the model class)

    bundled = Path(str(importlib.resources.files("kgdistill.data").joinpath("bundled", "umls")))
    data = tmp_path / "umls_small"
    data.mkdir()
    for name in ("train.tsv", "entity2text.tsv", "entity2description.tsv", "relation2text.tsv"):
        shutil.copy(bundled / name, data / name)
    for split in ("valid", "test"):
        (data / f"{split}.tsv").write_text("\n".join((bundled / f"{split}.tsv").read_text().splitlines()[:40]) + "\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "kgdistill.cli", "text-train", "--nproc", "2", "--dataset",
                           str(data), "--plm", "tiny:layers=2,hidden=32,heads=2,intermediate=64", "--max-length", "20",
                           "--epochs", "2", "--batch-size", "32", "--steps-per-epoch", "3", "--lr", "2e-3",
                           "--warmup-steps", "2", "--pre-batch", "1", "--log-every", "1", "--eval-splits", "test",
                           "--out", str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # only rank 0 prints
    for name in ("config.yaml", "entities.tsv", "trace.jsonl", "checkpoints/last.pt",
                 "model.safetensors", "metrics.json", "meta.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "meta.json").read_text())["processes"] == 2
    events = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]  # written once, by rank 0
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    metrics = json.loads((out / "metrics.json").read_text())["test"]["both"]
    run = load_run(out)
    single = evaluate(run.model, run.dataset, "test").summary()["both"]
    for key in ("mrr", "hits@1", "hits@10"):
        assert metrics[key] == pytest.approx(single[key], abs=1e-6), key
