"""Every fast path of the similarities equals the plain broadcast formula, values and gradients.

Fast paths: the compiled kernels of :mod:`kgdistill.kernels` (the operators ``torch.ops.kgdistill.*``: all-pairs
L1 / complex L1 without autograd, per-query candidates, corruption scores from the table and ids), torch's fused Adam
and the matrix-product paths of dot / L2. Each operator also passes ``torch.library.opcheck``.
The reference is always ``Similarity.pairwise`` on broadcast tensors (or ``torch.optim.Adam``), computed with the
kernels switched off.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from kgdistill import kernels
from kgdistill.losses import SelfAdversarialLoss
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.models.similarity import similarities
from kgdistill.training.optim import make_optimizer
from kgdistill.training.steps import negative_sampling_scores

SIMS = ["dot", "l1", "l2", "complex_l1"]
DIMS = [6, 32, 37 * 2, 256]  # below / at / off / well above the 16-lane vector width
TOL = {"rtol": 1e-5, "atol": 2e-5}


def _sim(name: str):
    return similarities.get(name)()


def _leaf(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).requires_grad_(True)


def _reference(fn, *inputs: torch.Tensor, grad_out: torch.Tensor):
    """Value and input gradients of ``fn`` with the kernels off."""
    with kernels.disabled():
        out = fn(*inputs)
        grads = torch.autograd.grad(out, inputs, grad_out)
    return out.detach(), grads


def _fast(fn, *inputs: torch.Tensor, grad_out: torch.Tensor):
    out = fn(*inputs)
    if not out.requires_grad:
        return out.detach(), None
    return out.detach(), torch.autograd.grad(out, inputs, grad_out)


def test_kernels_build_here() -> None:
    """The compiled kernels must be available wherever tests run with a C++ compiler, so that the fast paths are what
    is tested (a machine without one, e.g. a bare CI image, tests the PyTorch fallback)."""
    from kgdistill.kernels import _build

    if os.environ.get("KGDISTILL_KERNELS", "1").lower() in ("0", "off", "false", "no"):
        pytest.skip("kernels switched off by KGDISTILL_KERNELS")
    if _build._compiler() is None and not kernels.available():
        pytest.skip("no C++ compiler here: the PyTorch fallback is what runs")
    assert kernels.available(), kernels.load_error()


# ---- shared candidates e[k, D] -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SIMS)
@pytest.mark.parametrize("dim", DIMS)
def test_all_pairs_equals_broadcast(name: str, dim: int) -> None:
    sim = _sim(name)
    q, e = _leaf(13, dim, seed=1), _leaf(29, dim, seed=2)
    g = torch.randn(13, 29, generator=torch.Generator().manual_seed(3))
    expected, expected_grads = _reference(lambda a, b: sim.pairwise(a[:, None, :], b[None, :, :]), q, e, grad_out=g)
    # with autograd (training, e.g. 1vsAll)
    value, grads = _fast(sim.all_pairs, q, e, grad_out=g)
    torch.testing.assert_close(value, expected, **TOL)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **TOL)
    # without autograd (evaluation: the L1 / complex-L1 kernels, the L2 matrix product)
    with torch.no_grad():
        torch.testing.assert_close(sim.all_pairs(q, e), expected, **TOL)
    with torch.inference_mode():
        torch.testing.assert_close(sim.candidates(q.detach(), e.detach()), expected, **TOL)


def test_chunked_all_pairs_under_autograd_keeps_no_chunk_temporaries(monkeypatch) -> None:
    """Past the broadcast budget the chunks are recomputed in backward: the tensors saved for backward are the
    inputs, never ``chunk × k × D`` temporaries; first and second derivatives equal the plain formula's (complex
    L1, RotatE's distance, is the similarity on this path; L1 and L2 use ``cdist`` under autograd)."""
    from kgdistill.models import similarity

    monkeypatch.setattr(similarity, "BROADCAST_BUDGET", 64 * 8)  # 4 queries a chunk at k = 8, D = 16
    monkeypatch.setattr(similarity, "CHECKPOINT_BUDGET", 1000)  # 10 × 8 × 16 = 1280 elements: recomputed
    sim = _sim("complex_l1")
    q, e = _leaf(10, 16, seed=1).double(), _leaf(8, 16, seed=2).double()
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with kernels.disabled(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sim.all_pairs(q, e)
    assert saved and max(saved) <= 10 * 16, saved  # plain broadcast saves 4 × 8 × 16 = 512-element chunks
    expected = sim.pairwise(q[:, None, :], e[None, :, :])
    torch.testing.assert_close(out, expected)
    for value in (out, expected):
        gq, ge = torch.autograd.grad(value.pow(2).sum(), [q, e], create_graph=True)
        value.grads = torch.autograd.grad(gq.pow(2).sum() + ge.sum(), [q, e])  # type: ignore[attr-defined]
    for got, want in zip(out.grads, expected.grads):  # type: ignore[attr-defined]
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["l1", "complex_l1"])
def test_all_pairs_kernel_tiles_and_strides(name: str) -> None:
    """Query / entity counts around the kernel's 4 × 6 tiles and 48-row blocks, and non-contiguous rows."""
    sim = _sim(name)
    for n, k in [(1, 1), (3, 5), (4, 6), (5, 7), (9, 49), (17, 100)]:
        q = torch.randn(n, 2 * 40)[:, ::2]  # row stride 80, column stride 2
        e = torch.randn(k, 48)[:, 4:44]  # row stride 48
        with torch.no_grad():
            got = sim.all_pairs(q, e)
        torch.testing.assert_close(got, sim.pairwise(q[:, None, :], e[None, :, :]), **TOL)


def test_all_pairs_kernel_is_used_without_grad() -> None:
    if not kernels.available():
        pytest.skip("kernels unavailable")
    q, e = torch.randn(5, 16), torch.randn(7, 16)
    assert kernels.all_pairs("l1", q, e) is not None
    assert kernels.all_pairs("l1", q.requires_grad_(), e) is None  # autograd needed: PyTorch path
    assert kernels.all_pairs("l1", q.double(), e.double()) is None
    assert kernels.all_pairs("l2", q, e) is None  # a matrix product already


# ---- per-query candidates e[n, k, D] -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SIMS)
@pytest.mark.parametrize("dim", DIMS)
def test_per_query_equals_broadcast(name: str, dim: int) -> None:
    sim = _sim(name)
    q, e = _leaf(11, dim, seed=4), _leaf(11, 9, dim, seed=5)
    g = torch.randn(11, 9, generator=torch.Generator().manual_seed(6))
    expected, expected_grads = _reference(lambda a, b: sim.pairwise(a[:, None, :], b), q, e, grad_out=g)
    value, grads = _fast(sim.per_query, q, e, grad_out=g)
    torch.testing.assert_close(value, expected, **TOL)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **TOL)
    with torch.no_grad():
        torch.testing.assert_close(sim.candidates(q, e), expected, **TOL)


@pytest.mark.parametrize("name", ["l1", "l2", "complex_l1"])
def test_per_query_ties_and_zero_distance(name: str) -> None:
    """Candidates equal to the query (distance 0) and coordinates that tie: the gradient conventions of torch
    (sign(0) = 0 for |x|, a zero gradient for a zero L2 norm) are kept."""
    sim = _sim(name)
    q = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    e = torch.stack([torch.stack([q[0].detach(), torch.tensor([0.5, 0.0, 2.0, 3.0])]),
                     torch.stack([torch.ones(4), torch.tensor([1.0, 2.0, 1.0, 0.0])])]).requires_grad_(True)
    g = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    expected, expected_grads = _reference(lambda a, b: sim.pairwise(a[:, None, :], b), q, e, grad_out=g)
    value, grads = _fast(sim.per_query, q, e, grad_out=g)
    torch.testing.assert_close(value, expected, **TOL)
    if name != "complex_l1":  # complex L1 has a 1e-12 floor under its sqrt: no singular point
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, **TOL)
    for got, want in zip(grads, expected_grads):
        assert torch.isfinite(got).all() and torch.isfinite(want).all()


# ---- corruption scores from the table and ids ----------------------------------------------------------------------
def _corruption_reference(sim, q_head, q_tail, table, ids, num_head, corrupt_head):
    cand = table[ids]  # [B, K, D]: the broadcast formula on the gathered rows
    head = sim.pairwise(q_head[:, None, :], cand)
    tail = sim.pairwise(q_tail[:, None, :], cand)
    if corrupt_head is None:
        corrupt_head = torch.arange(ids.shape[1])[None, :] < num_head
    return torch.where(corrupt_head, head, tail)


@pytest.mark.parametrize("name", SIMS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("layout", ["fixed", "mask", "all_head", "all_tail"])
def test_corruption_scores_equal_broadcast(name: str, dim: int, layout: str) -> None:
    sim = _sim(name)
    b, k, num_entities = 12, 10, 23
    q_head, q_tail, table = _leaf(b, dim, seed=7), _leaf(b, dim, seed=8), _leaf(num_entities, dim, seed=9)
    gen = torch.Generator().manual_seed(10)
    ids = torch.randint(num_entities, (b, k), generator=gen)
    ids[0, :3] = 4  # repeated entities in one row and across rows
    ids[1, :] = 4
    num_head, mask = {"fixed": (4, None), "all_head": (k, None), "all_tail": (0, None),
                      "mask": (0, torch.rand(b, k, generator=gen) < 0.5)}[layout]
    g = torch.randn(b, k, generator=gen)

    expected, expected_grads = _reference(
        lambda qh, qt, w: _corruption_reference(sim, qh, qt, w, ids, num_head, mask), q_head, q_tail, table,
        grad_out=g)
    with kernels.disabled():  # the PyTorch branch of corruption_scores is the old code: the same values
        plain, plain_grads = _fast(lambda qh, qt, w: sim.corruption_scores(qh, qt, w, ids, num_head, mask),
                                   q_head, q_tail, table, grad_out=g)
    value, grads = _fast(lambda qh, qt, w: sim.corruption_scores(qh, qt, w, ids, num_head, mask),
                         q_head, q_tail, table, grad_out=g)
    for v in (plain, value):
        torch.testing.assert_close(v, expected, **TOL)
    for gs in (plain_grads, grads):
        for got, want in zip(gs, expected_grads):
            torch.testing.assert_close(got, want, **TOL)
    with torch.no_grad():
        torch.testing.assert_close(sim.corruption_scores(q_head, q_tail, table, ids, num_head, mask), expected, **TOL)


def test_corruption_scores_falls_back_on_bad_ids() -> None:
    sim = _sim("l1")
    q, table = torch.randn(2, 8), torch.randn(5, 8)
    with pytest.raises(IndexError):
        sim.corruption_scores(q, q, table, torch.tensor([[0, 5]]).expand(2, 2), 1)
    with pytest.raises(IndexError):
        sim.corruption_scores(q, q, table, torch.tensor([[0, -7]]).expand(2, 2), 1)


@pytest.mark.parametrize("scorer", ["kernel", "pytorch", "unused"])
def test_gather_rows_merges_into_one_dense_gradient(scorer: str) -> None:
    """gather_rows' scored table, used by corruption_scores (the kernel operator or the PyTorch lookups) or not used
    at all: the table gets the same dense gradient as from two plain lookups, whatever the order autograd runs in."""
    if scorer == "kernel" and not kernels.available():
        pytest.skip("kernels unavailable")
    table = _leaf(30, 16, seed=11)
    anchors = torch.randint(30, (2, 8), generator=torch.Generator().manual_seed(12))
    ids = torch.randint(30, (8, 5), generator=torch.Generator().manual_seed(13))
    sim = _sim("l1")

    def loss_of(merge: bool, only_negatives: bool = False) -> torch.Tensor:
        table.grad = None
        rows, scored = kernels.gather_rows(table, anchors) if merge else (F.embedding(anchors, table), table)
        q_tail, q_head = rows[0] * 1.5, rows[1] - 0.25
        with kernels.use(scorer == "kernel"):
            neg = sim.corruption_scores(q_head, q_tail, scored, ids, 2, None)
        if scorer == "unused":
            neg = neg.detach()
        loss = neg.square().sum() if only_negatives else neg.sum() + sim.pairwise(q_tail, rows[1]).sum()
        if scorer == "unused" and only_negatives:
            loss = loss + rows.sum()
        loss.backward()
        return table.grad

    for only_negatives in (False, True):
        expected = loss_of(False, only_negatives).clone()
        got = loss_of(True, only_negatives)
        assert got.layout == torch.strided
        torch.testing.assert_close(got, expected, **TOL)
    with torch.no_grad():
        rows, scored = kernels.gather_rows(table, anchors)
    assert scored is table and not rows.requires_grad


# ---- the operators: torch.library.opcheck, autograd --------------------------------------------------------------
def _ops_or_skip():
    if not kernels.available():
        pytest.skip("kernels unavailable")
    return torch.ops.kgdistill


@pytest.mark.parametrize("kind", ["l1", "complex_l1"])
@pytest.mark.parametrize("grad", [False, True])
def test_opcheck_all_pairs(kind: str, grad: bool) -> None:
    ops = _ops_or_skip()
    q, e = torch.randn(5, 34, requires_grad=grad), torch.randn(7, 34, requires_grad=grad)
    torch.library.opcheck(ops.all_pairs, (q, e, kernels.KINDS[kind]))
    torch.library.opcheck(ops.all_pairs, (torch.randn(9, 64)[:, ::2], torch.randn(3, 32), kernels.KINDS[kind]))


@pytest.mark.parametrize("kind", SIMS)
@pytest.mark.parametrize("layout", ["fixed", "mask"])
@pytest.mark.parametrize("grad", [False, True])
def test_opcheck_corruption_scores(kind: str, layout: str, grad: bool) -> None:
    ops = _ops_or_skip()
    gen = torch.Generator().manual_seed(21)
    b, k, e, d = 6, 5, 11, 34
    q_head, q_tail = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
    table = torch.randn(e, d, generator=gen)
    for t in (q_head, q_tail, table):
        t.requires_grad_(grad)
    ids = torch.randint(e, (b, k), generator=gen)
    mask = torch.rand(b, k, generator=gen) < 0.5 if layout == "mask" else None
    torch.library.opcheck(ops.corruption_scores, (q_head, q_tail, table, ids, mask, kernels.KINDS[kind], 2))
    scores, offsets, order = ops.corruption_scores(q_head.detach(), q_tail.detach(), table.detach(), ids, mask,
                                                   kernels.KINDS[kind], 2)
    grad_out = torch.randn(b, k, generator=gen)
    torch.library.opcheck(ops.corruption_scores_backward,
                          (grad_out, q_head.detach(), q_tail.detach(), table.detach(), offsets, order, mask, scores,
                           kernels.KINDS[kind], 2))


@pytest.mark.parametrize("kind", ["l1", "complex_l1"])
def test_all_pairs_operator_gradient_equals_broadcast(kind: str) -> None:
    """The all-pairs operator is differentiable (a chunked PyTorch backward) with the broadcast formula's gradients,
    although kernels.all_pairs only uses it without autograd."""
    ops = _ops_or_skip()
    sim = _sim(kind)
    q, e = _leaf(13, 38, seed=15), _leaf(29, 38, seed=16)
    e.data[3] = q.data[2]  # a zero distance: sign(0) = 0, the 1e-12 floor
    g = torch.randn(13, 29, generator=torch.Generator().manual_seed(17))
    expected, expected_grads = _reference(lambda a, b: sim.pairwise(a[:, None, :], b[None, :, :]), q, e, grad_out=g)
    value, grads = _fast(lambda a, b: ops.all_pairs(a, b, kernels.KINDS[kind]), q, e, grad_out=g)
    torch.testing.assert_close(value, expected, **TOL)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **TOL)


def test_operators_refuse_bad_input_with_a_message() -> None:
    ops = _ops_or_skip()
    q, table = torch.randn(2, 8), torch.randn(5, 8)
    with pytest.raises(IndexError, match="out of range"):
        ops.corruption_scores(q, q, table, torch.tensor([[0, 5], [1, 2]]), None, 1, 1)
    with pytest.raises(RuntimeError, match="float32"):
        ops.all_pairs(q.double(), table.double(), 1)
    with pytest.raises(RuntimeError, match="even"):
        ops.all_pairs(torch.randn(2, 7), torch.randn(3, 7), 3)


@pytest.mark.parametrize("model_name,options,reciprocal", [
    ("transe", {}, False), ("transe", {"p": 2}, False), ("rotate", {}, False), ("rotate", {"norm": "l2"}, True),
    ("complex", {}, False), ("distmult", {}, True), ("simple", {}, False)])
@pytest.mark.parametrize("bernoulli", [False, True])
def test_negative_sampling_step_equals_plain_path(model_name: str, options: dict, reciprocal: bool,
                                                  bernoulli: bool) -> None:
    """The training step (anchor rows, positives, negatives from the table, loss with a row regulariser): same
    loss and parameter gradients with the kernels on and off."""
    num_entities, num_relations, dim, b, k = 40, 5, 8, 16, 6
    gen = torch.Generator().manual_seed(14)
    batch = torch.stack([torch.randint(num_entities, (b,), generator=gen),
                         torch.randint(num_relations, (b,), generator=gen),
                         torch.randint(num_entities, (b,), generator=gen)], 1)
    ids = torch.randint(num_entities, (b, k), generator=gen)
    mask = torch.rand(b, k, generator=gen) < 0.4 if bernoulli else None
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model = EmbeddingModel(model_name, num_entities, num_relations, dim, reciprocal=reciprocal,
                               interaction_options=options)
        previous = kernels.set_enabled(on)
        try:
            pos, neg, rows = negative_sampling_scores(model, batch, ids, mask, k // 2)
            loss = SelfAdversarialLoss()(pos, neg) + 0.01 * sum((x * x).sum() for x, _ in rows)
            loss.backward()
        finally:
            kernels.set_enabled(previous)
        assert model.entity.grad.layout == torch.strided
        results.append((loss.detach(), model.entity.grad, model.relation.grad))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, **TOL)


# ---- Adam ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_is_torch_fused_adam_and_follows_the_unfused_trajectory(weight_decay: float, name: str) -> None:
    """``adam`` / ``adamw`` are torch's fused optimisers on CPU (the hand-written kernel is gone): the same
    parameters and state as torch's multi-tensor implementation, and checkpoints move freely between the two."""
    torch.manual_seed(0)
    init = [torch.randn(70, 33), torch.randn(4, 33), torch.randn(5)]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    ref = [torch.nn.Parameter(x.clone()) for x in init]
    opt = make_optimizer(name, ours, 1e-2, weight_decay)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    assert type(opt) is cls and opt.defaults["fused"] is True
    ref_opt = cls(ref, lr=1e-2, weight_decay=weight_decay, foreach=True)
    for step in range(25):
        grads = [torch.randn_like(x) for x in init]
        if step % 5 == 3:
            grads[1] = None  # a parameter without gradient this step: left alone, as by torch
        for params in (ours, ref):
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.clone()
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-5, atol=1e-6)
    for p, r in zip(ours, ref):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[p][key], ref_opt.state[r][key], rtol=1e-5, atol=1e-6)
    ref_opt.load_state_dict(opt.state_dict())
    opt.load_state_dict(ref_opt.state_dict())


def test_optimizers_off_cpu_and_cuda_are_not_fused() -> None:
    meta = [torch.nn.Parameter(torch.empty(3, 2, device="meta"))]
    assert make_optimizer("adam", meta, 1e-2).defaults["fused"] is None
    assert make_optimizer("adagrad", [torch.nn.Parameter(torch.zeros(3))], 0.1).defaults.get("fused") in (None, False)
