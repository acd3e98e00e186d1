"""Issue 15's options of text compression, each checked against values worked out by hand on a tiny random BERT:
MGFD reduction and rate-0 behaviour, the paper's layer choice, HRKD's learned / uniform graph and its training
triples, bf16 / int8 encoding and bf16 training steps, the controls of ``benchmarks/text_pmd.py``, and the one-line
errors for bad input (another PLM or vocabulary, grades that do not decrease, mask rates out of [0, 1), no entity
text)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from kgdistill.config import DataConfig, EvaluationConfig, load_yaml  # noqa: E402
from kgdistill.errors import ConfigError  # noqa: E402
from kgdistill.text.config import DistillConfig, TextModelConfig, TextRunConfig, TextTrainingConfig  # noqa: E402
from kgdistill.text.trainer import train_text  # noqa: E402

TINY = "tiny:layers=3,hidden=48,heads=2,intermediate=96"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def umls_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """umls with its full training graph and text, 30 valid / 30 test triples."""
    import importlib.resources

    bundled = Path(str(importlib.resources.files("kgdistill.data").joinpath("bundled", "umls")))
    folder = tmp_path_factory.mktemp("umls_small")
    for name in ("train.tsv", "entity2text.tsv", "entity2description.tsv", "relation2text.tsv"):
        shutil.copy(bundled / name, folder / name)
    for split in ("valid", "test"):
        lines = (bundled / f"{split}.tsv").read_text().splitlines()[:30]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def config(folder: Path, out: Path, steps: int = 2, distill: DistillConfig | None = None, plm: str = TINY,
           **training: object) -> TextRunConfig:
    return TextRunConfig(
        data=DataConfig(dataset=str(folder)), model=TextModelConfig(plm=plm, max_length=16),
        training=TextTrainingConfig(epochs=1, batch_size=32, lr=2e-3, warmup_steps=2, steps_per_epoch=steps,
                                    self_negatives=False, log_every=1, num_threads=1, **training),  # type: ignore
        distill=distill or DistillConfig(), evaluation=EvaluationConfig(eval_splits=["test"]), output_dir=str(out))


@pytest.fixture(scope="module")
def teacher_run(umls_small: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return train_text(config(umls_small, tmp_path_factory.mktemp("runs") / "teacher", steps=6))


def eager_teacher(run):  # type: ignore[no-untyped-def]
    from kgdistill.text.biencoder import BiEncoder

    teacher = BiEncoder(**run.model.with_args(attn_implementation="eager"))
    teacher.load_state_dict(run.model.state_dict())
    return teacher


def batch_of(model, ds, n: int = 16):  # type: ignore[no-untyped-def]
    from kgdistill.text.textdata import make_batch, with_inverses

    examples = with_inverses(ds.train, ds.num_relations)
    idx = torch.randperm(examples.shape[0], generator=torch.Generator().manual_seed(3))[:n]
    return make_batch(model.tokenizer, model.entity_texts, model.relation_texts, examples[idx], 16)


def nothing_written(folder: Path) -> bool:
    """No run was started in ``folder`` (at most the run-folder lock file exists)."""
    return not folder.exists() or {p.name for p in folder.iterdir()} <= {".kgdistill.lock"}


def known_of(ds):  # type: ignore[no-untyped-def]
    from kgdistill.text.textdata import KnownTails, with_inverses

    return KnownTails(with_inverses(ds.train, ds.num_relations), ds.num_entities, ds.num_relations)


# ---- 1. faithful options ------------------------------------------------------------------------------------------
def test_mgfd_reduction_and_unmasked_rows_by_hand() -> None:
    """Two texts, d = 2. Text 0: one masked token, student [1,0] vs teacher [0,1] → ‖f_S − f_T‖² = 2. Text 1: nothing
    masked; over its two real tokens the student's mean is [1,0], the teacher's [½,½] → [1/√2, 1/√2], distance
    (1 − 1/√2)² + ½ = 2 − √2."""
    from kgdistill.distill.text_pmd import mgfd_distance

    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], [[1.0, 0.0], [1.0, 0.0], [9.0, 9.0]]])
    t = torch.tensor([[[0.0, 1.0], [3.0, 3.0], [5.0, 5.0]], [[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    pos = torch.tensor([[True, False, False], [False, False, False]])
    real = torch.tensor([[True, True, False], [True, True, False]])
    r2 = math.sqrt(2.0)
    expected = {("sum", "all-tokens"): (2 + 2 - r2) / 2, ("mean", "all-tokens"): (2 + 2 - r2) / 4,
                ("sum", "zero"): 1.0, ("mean", "zero"): 0.5}
    for (reduction, unmasked), value in expected.items():
        got = float(mgfd_distance(s, t, pos, real, reduction, unmasked))
        assert got == pytest.approx(value, abs=1e-6), (reduction, unmasked)


def test_pmd_objective_options_on_a_tiny_model(teacher_run) -> None:  # type: ignore[no-untyped-def]
    """Same seed, same masks: ``mean`` is ``sum`` / hidden (48); at rate 0 ``zero`` gives an MGFD of exactly 0 while
    ``all-tokens`` compares every token; CE and score terms do not change."""
    from kgdistill.distill.text_pmd import PMDObjective
    from kgdistill.text.students import make_student

    teacher, ds = teacher_run.model, teacher_run.dataset
    batch = batch_of(teacher, ds)
    logs = {}
    for rate, reduction, unmasked in [(0.2, "sum", "all-tokens"), (0.2, "mean", "all-tokens"),
                                      (0.0, "sum", "all-tokens"), (0.0, "sum", "zero"), (0.0, "mean", "zero")]:
        student = make_student(teacher, [0, 2])
        cfg = TextRunConfig(distill=DistillConfig(method="pmd", mask_rate=rate, mgfd_reduction=reduction,
                                                  mgfd_unmasked=unmasked))
        obj = PMDObjective(student, teacher, cfg, known_of(ds), [0, 2])
        torch.manual_seed(0)  # the same dropout
        _, logs[rate, reduction, unmasked] = obj.loss(batch, 0)
    a, b = logs[0.2, "sum", "all-tokens"], logs[0.2, "mean", "all-tokens"]
    assert a["feature"] > 0 and b["feature"] == pytest.approx(a["feature"] / 48, rel=1e-5)
    assert b["ce"] == pytest.approx(a["ce"], rel=1e-6) and b["logit"] == pytest.approx(a["logit"], rel=1e-6)
    assert logs[0.0, "sum", "all-tokens"]["feature"] > 0
    assert logs[0.0, "sum", "zero"]["feature"] == 0.0 and logs[0.0, "mean", "zero"]["feature"] == 0.0


def test_layer_choice_by_hand(teacher_run, umls_small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kgdistill.distill.text_pmd import chain_layers
    from kgdistill.text.students import default_layers, nearest_held
    from kgdistill.text.trainer import build_text_model

    # the paper's tables on 12 layers, whatever the choice
    for choice in ("top", "paper"):
        assert default_layers(12, 6, choice) == [1, 3, 5, 7, 9, 11] and default_layers(12, 3, choice) == [2, 6, 10]
    # centred blocks ⌊(2i+1)·N/(2k)⌋ vs evenly spaced up to the top layer ⌊(i+1)·N/k⌋ − 1
    assert default_layers(6, 3, "paper") == [1, 3, 5] == default_layers(6, 3, "top")
    assert default_layers(6, 2, "paper") == [1, 4] and default_layers(6, 2, "top") == [2, 5]
    assert default_layers(6, 1, "paper") == [3] and default_layers(6, 1, "top") == [5]
    assert default_layers(12, 4, "paper") == [1, 4, 7, 10] and default_layers(12, 4, "top") == [2, 5, 8, 11]
    assert nearest_held([1, 3, 5, 7, 9, 11], [2, 6, 10]) == [0, 2, 4]  # ties to the lower: originals 1, 5, 9
    stages = [(12, 0.2), (6, 0.1), (3, 0.0)]
    # kgdistill so far: 6 = [1,3,5,7,9,11] of 12, then [1,3,5] of those = originals [3,7,11]
    assert chain_layers(stages, 12, "top") == [list(range(12)), [1, 3, 5, 7, 9, 11], [1, 3, 5]]
    assert chain_layers(stages, 12, "paper") == [list(range(12)), [1, 3, 5, 7, 9, 11], [0, 2, 4]]
    # the PMD code: every grade from the pretrained PLM, so exactly the paper's layers
    assert chain_layers(stages, 12, "paper", "pretrained", 12)[1:] == [[1, 3, 5, 7, 9, 11], [2, 6, 10]]
    assert chain_layers([(6, 0.2), (2, 0.0)], 6, "paper") == [list(range(6)), [1, 4]]
    with pytest.raises(ConfigError, match="layer_choice"):
        default_layers(6, 3, "middle")
    # the option reaches a student: 1 of the tiny teacher's 3 layers
    ds = teacher_run.dataset
    for choice, kept in (("top", [2]), ("paper", [1])):
        cfg = config(umls_small, tmp_path / choice, distill=DistillConfig(
            method="none", teacher=str(teacher_run.path), student_layers=1, layer_choice=choice))
        _, _, layer_map = build_text_model(cfg, ds)
        assert layer_map == kept


# ---- 3. HRKD ------------------------------------------------------------------------------------------------------
def test_hrkd_uniform_weights_by_hand(teacher_run) -> None:  # type: ignore[no-untyped-def]
    """Uniform: 1/|present| for each domain in the batch, 0 for the others, on every layer; no meta step."""
    from kgdistill.distill.text_hrkd import HRKDObjective
    from kgdistill.text.students import make_student

    teacher, ds = eager_teacher(teacher_run), teacher_run.dataset
    student = make_student(teacher, [0, 2])
    cfg = TextRunConfig(distill=DistillConfig(method="hrkd", hrkd_weights="uniform", hrkd_meta_every=1))
    obj = HRKDObjective(student, teacher, cfg, known_of(ds), [0, 2], holdout=ds.train)
    batch = batch_of(student, ds)
    present = sorted(set((batch.r % ds.num_relations).tolist()))
    w = obj.weights(obj.forward(student, batch, output_hidden_states=True), obj.domains(batch))
    expected = torch.zeros(2, ds.num_relations)
    expected[:, present] = 1.0 / len(present)
    assert torch.allclose(w, expected)
    before = [p.detach().clone() for p in obj.meta.parameters()]
    loss, _ = obj.loss(batch, 0)
    assert torch.isfinite(loss) and obj.after_step(batch, 0) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, obj.meta.parameters()))
    rep = obj.report()
    assert rep["hrkd_meta_steps"] == 0 and rep["hrkd_weight_change_max"] == 0.0
    assert rep["hrkd_weights_start"][0][present[0]] == pytest.approx(1.0 / 64, abs=0.02)  # probe: ≤ 64 domains


def test_hrkd_graph_moves_in_a_run_on_the_baselines_triples(teacher_run, umls_small: Path,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    """Defaults (a meta step every 5 steps, lr 1e-3): 10 steps → meta steps at steps 0 and 5; the graph's weights on
    the fixed probe move, and the run records them at start and end. The student sees every training triple
    (no hold-out by default), as the baselines do; a hold-out, when asked, is taken from every method alike."""
    n_train = teacher_run.dataset.train.shape[0]
    run = train_text(config(umls_small, tmp_path / "hrkd", steps=10,
                            distill=DistillConfig(method="hrkd", teacher=str(teacher_run.path), layers=[0, 2])))
    rep = run.metrics["objective"]
    assert rep["hrkd_meta_steps"] == 2 and rep["hrkd_weights"] == "learned"
    start, end = torch.tensor(rep["hrkd_weights_start"]), torch.tensor(rep["hrkd_weights_end"])
    assert start.shape == end.shape == (2, 46) and torch.allclose(start.sum(-1), torch.ones(2), atol=1e-4)
    # measured: max |Δw| 0.0014 and total variation 0.009 after these 2 meta steps (start weights ≈ 1/46 = 0.022)
    assert rep["hrkd_weight_change_max"] > 5e-4 and rep["hrkd_weight_change_tv"] > 3e-3
    trace = run.trace()
    assert any(r["event"] == "objective" and r["hrkd_meta_steps"] == 2 for r in trace)
    assert [r["examples"] for r in trace if r["event"] == "start"] == [2 * n_train]
    held = train_text(config(umls_small, tmp_path / "none-held", steps=1,
                             distill=DistillConfig(method="none", hrkd_holdout=0.1)))
    assert [r["examples"] for r in held.trace() if r["event"] == "start"] == [2 * (n_train - round(0.1 * n_train))]


# ---- 4. encoders --------------------------------------------------------------------------------------------------
def test_bf16_and_int8_encoding_on_a_tiny_model(teacher_run) -> None:  # type: ignore[no-untyped-def]
    from kgdistill.text.biencoder import BiEncoder

    model = BiEncoder(**teacher_run.model.with_args())
    model.load_state_dict(teacher_run.model.state_dict())
    model.eval()
    seen: list[torch.dtype] = []
    model.tail_encoder.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))
    ref = model.encode_entities()
    assert seen[-1] == torch.float32
    model.set_encode_dtype("bf16")
    assert model.entity_cache.shape[0] == 0  # the cache of another precision is dropped
    bf = model.encode_entities()
    assert seen[-1] == torch.bfloat16 and bf.dtype == torch.float32  # bf16 matmuls, fp32 embeddings out
    cos = (bf * ref).sum(-1)
    assert float(cos.min()) >= 0.999 and not torch.equal(bf, ref)
    q = model.encode_queries(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert q.dtype == torch.float32 and torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
    model.set_encode_dtype("int8")
    i8 = model.encode_entities()
    quantised = [m for m in model.inference_encoder("tail").modules()
                 if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    assert len(quantised) == 6 * 3  # every Linear of the 3 layers
    assert not torch.equal(i8, ref) and float((i8 * ref).sum(-1).min()) > 0.9
    model.train()
    assert model._int8 == {}  # training drops the quantised copy (its weights would go stale)
    with pytest.raises(ConfigError, match="encode_dtype"):
        model.set_encode_dtype("fp8")


def test_encode_and_train_dtype_reach_a_run(umls_small: Path, tmp_path: Path) -> None:
    from kgdistill.runs import load_run

    fp = train_text(config(umls_small, tmp_path / "fp32", steps=1))
    bf = train_text(replace(config(umls_small, tmp_path / "bf16", steps=1, train_dtype="bf16"),
                            model=TextModelConfig(plm=TINY, max_length=16, encode_dtype="bf16")))
    assert bf.metrics["encode_dtype"] == "bf16" and bf.metrics["train_dtype"] == "bf16"
    assert load_run(bf.path).model.encode_dtype == "bf16"  # kept in the run folder: evaluate / serve use it
    loss_fp = [r["loss"] for r in fp.trace() if r["event"] == "step"][0]
    loss_bf = [r["loss"] for r in bf.trace() if r["event"] == "step"][0]
    assert loss_bf != loss_fp and loss_bf == pytest.approx(loss_fp, rel=0.05)  # same batch, bf16 matmuls


def test_text_encode_speed_script(teacher_run, umls_small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("encode_speed", ROOT / "benchmarks" / "text_encode_speed.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    out = tmp_path / "speed.json"
    assert bench.main(["--dataset", str(umls_small), "--plm", TINY, "--entities", "16", "--rounds", "1",
                       "--max-length", "16", "--run", str(teacher_run.path), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["encode_dtype"] for r in res["encode"]] == ["fp32-unsorted", "fp32", "bf16", "int8"]
    assert res["encode"][1]["min_cosine_to_fp32"] >= 0.99999  # length-sorted batches: the same embeddings
    assert res["encode"][2]["min_cosine_to_fp32"] >= 0.999 and res["encode"][0]["speedup"] == 1.0
    assert [r["encode_dtype"] for r in res["mrr"]] == ["fp32", "bf16", "int8"]
    assert res["mrr"][0]["mrr"] == pytest.approx(teacher_run.metrics["test"]["both"]["mrr"], abs=1e-4)
    assert abs(res["mrr"][1]["mrr_change"]) < 0.02


# ---- 2. controls of benchmarks/text_pmd.py ------------------------------------------------------------------------
def _text_pmd():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("text_pmd_bench", ROOT / "benchmarks" / "text_pmd.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_text_pmd_controls_wiring(teacher_run, umls_small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bench = _text_pmd()
    common = ["--dataset", str(umls_small), "--plm", TINY, "--teacher", str(teacher_run.path), "--grades", "2",
              "--mask-rates", "0.2,0", "--steps", "2", "--max-length", "16", "--baselines", "none",
              "--eval-batch-size", "64"]
    out = tmp_path / "bench"
    assert bench.main([*common, "--controls", "all", "--budget", "total", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert set(rows) == {"teacher", "PMD3", "PMD2", "none-L2", "none-L2@PMD3", "chainNoKD3", "chainNoKD2",
                         "PMD3-b0", "PMD2-b0", "PMD3-a0", "PMD2-a0"}
    # budget total: a baseline from the teacher gets the chain's 2 stages × 2 steps, one from PMD3 the 1 stage left
    assert rows["none-L2"]["steps"] == 4 and rows["none-L2@PMD3"]["steps"] == 2
    assert all(rows[m]["steps"] == 2 for m in rows if m.startswith(("PMD", "chain")))
    pmd3 = rows["PMD3"]["run"]
    assert rows["none-L2@PMD3"]["teacher"] == pmd3 and rows["none-L2"]["teacher"] == str(teacher_run.path)
    assert rows["PMD2"]["teacher"] == pmd3  # the chain: each grade from the one before

    def distill(name: str) -> dict:  # type: ignore[type-arg]
        return load_yaml(Path(rows[name]["run"]) / "config.yaml", TextRunConfig).distill  # type: ignore

    for name, (alpha, beta) in {"PMD2": (0.1, 0.1), "chainNoKD3": (0.0, 0.0), "chainNoKD2": (0.0, 0.0),
                                "PMD2-b0": (0.1, 0.0), "PMD3-a0": (0.0, 0.1)}.items():
        d = distill(name)
        assert (d.alpha, d.beta) == (alpha, beta), name
    assert distill("chainNoKD3").mask_rate == 0.2 and distill("chainNoKD3").method == "pmd"  # masks kept
    assert distill("none-L2").layers == distill("PMD2").layers == [0, 2]  # the same kept layers
    # budget final (default): as many steps as PMD's final stage
    out2 = tmp_path / "final"
    assert bench.main([*common, "--no-pmd", "--out", str(out2)]) == 0
    rows2 = {r["model"]: r for r in json.loads((out2 / "results.json").read_text())["results"]}
    assert rows2["none-L2"]["steps"] == 2
    with pytest.raises(ConfigError, match="unknown control"):
        bench.main([*common, "--controls", "pmd-c0", "--out", str(tmp_path / "bad")])
    with pytest.raises(ConfigError, match="grades must decrease"):  # before anything trains
        bench.main([*common, "--grades", "2,2", "--mask-rates", "0.2,0.1,0", "--out", str(tmp_path / "bad2")])
    assert nothing_written(tmp_path / "bad2" / "pmd") and nothing_written(tmp_path / "bad2" / "teacher")


def test_text_pmd_stage_steps_split_the_chain(teacher_run, umls_small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--stage-steps`` gives each PMD stage its own steps; their sum must be the chain's budget (k × --steps), so
    the baselines' total budget holds; a wrong length or sum is refused before anything trains."""
    bench = _text_pmd()
    common = ["--dataset", str(umls_small), "--plm", TINY, "--teacher", str(teacher_run.path), "--grades", "2",
              "--mask-rates", "0.2,0", "--steps", "2", "--max-length", "16", "--baselines", "",
              "--eval-batch-size", "64"]
    out = tmp_path / "split"
    assert bench.main([*common, "--stage-steps", "1,3", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert (rows["PMD3"]["steps"], rows["PMD2"]["steps"]) == (1, 3)
    for bad in ("1,2", "4", "1,1,2"):
        with pytest.raises(ConfigError, match="--stage-steps"):
            bench.main([*common, "--stage-steps", bad, "--out", str(tmp_path / "bad")])
    assert nothing_written(tmp_path / "bad" / "pmd")
    from kgdistill.distill.text_pmd import run_pmd

    with pytest.raises(ConfigError, match="stage_steps needs 2 step counts"):
        run_pmd(teacher_run.path, [2], [0.2, 0.0], teacher_run.config, tmp_path / "lib", stage_steps=[0, 4])


# ---- 5. bad input -------------------------------------------------------------------------------------------------
def test_bad_input_is_one_clear_error_before_training(teacher_run, umls_small: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      capsys) -> None:
    from kgdistill import cli
    from kgdistill.text.biencoder import BiEncoder
    from kgdistill.distill.text_pmd import plan_grades
    from kgdistill.text.students import make_student
    from kgdistill.text.textdata import entity_base_texts

    teacher = str(teacher_run.path)
    # a student of a teacher of another PLM
    other = "tiny:layers=2,hidden=48,heads=2,intermediate=96"
    with pytest.raises(ConfigError, match="trained from PLM"):
        train_text(config(umls_small, tmp_path / "plm", plm=other,
                          distill=DistillConfig(method="logit", teacher=teacher, layers=[0])))
    assert nothing_written(tmp_path / "plm")
    # ... or whose pretrained layers come with another vocabulary
    ds = teacher_run.dataset
    names, texts = entity_base_texts(ds)
    foreign = BiEncoder.from_plm(TINY, names, [f"zq{i} xv{i}" for i in range(len(texts))], ["rel"] * 46)
    folder = tmp_path / "foreign-plm"
    foreign.tail_encoder.save_pretrained(folder)
    foreign.tokenizer.save_pretrained(folder)
    with pytest.raises(ConfigError, match="another vocabulary"):
        make_student(teacher_run.model, [0], init="pretrained", plm=str(folder))
    # grades that do not decrease, mask rates out of [0, 1)
    with pytest.raises(ConfigError, match="grades must decrease"):
        plan_grades(3, [2, 2], [0.2, 0.1, 0.0])
    with pytest.raises(ConfigError, match="grades must decrease"):
        plan_grades(3, [1, 2], [0.2, 0.1, 0.0])
    with pytest.raises(ConfigError, match="must not grow"):
        plan_grades(3, [4, 2], [0.2, 0.1, 0.0])
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"out of \[0, 1\)"):
            plan_grades(3, [2], [0.2, bad])
        with pytest.raises(ConfigError, match=r"mask_rate must be in \[0, 1\)"):
            train_text(config(umls_small, tmp_path / f"rate{bad}",
                              distill=DistillConfig(method="pmd", teacher=teacher, layers=[0], mask_rate=bad)))
        assert nothing_written(tmp_path / f"rate{bad}")
    # the CLI: one line on stderr, exit code 2, no stage trained
    common = ["--plm", TINY, "--max-length", "16", "--steps-per-epoch", "1", "--dataset", str(umls_small)]
    capsys.readouterr()  # what came before (save_pretrained's progress bar)
    code = cli.main(["text-distill", "--method", "pmd", "--teacher", teacher, "--grades", "2,3", "--mask-rates",
                     "0.2,0.1,0", *common, "--out", str(tmp_path / "chain")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "grades must decrease" in err and "\n" not in err
    assert nothing_written(tmp_path / "chain")
    # a dataset without entity text files
    bare = tmp_path / "bare"
    bare.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(umls_small / f"{split}.tsv", bare / f"{split}.tsv")
    code = cli.main(["text-train", *common, "--dataset", str(bare), "--out", str(tmp_path / "bare-run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no entity text" in err and "\n" not in err
    assert nothing_written(tmp_path / "bare-run")


def test_length_sorted_encoding_keeps_input_order_and_values(teacher_run) -> None:  # type: ignore[no-untyped-def]
    from kgdistill.text.textdata import Tokenized, tokenize

    model = teacher_run.model.eval()
    texts = ["a", "a b c d e f g h", "a b", "a b c d", "a b"]
    tokens = Tokenized(model.tokenizer, texts, None, 48)
    assert tokens.by_length() == [0, 2, 4, 3, 1]  # by token length; ties keep their order
    for rows in ([0, 1, 2, 3, 4], [1, 3]):  # a batch padded as tokenize() pads the same texts
        expected = tokenize(model.tokenizer, [texts[i] for i in rows], None, 48)
        got = tokens.batch(rows)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    pairs = Tokenized(model.tokenizer, texts, texts[::-1], 6)
    expected = tokenize(model.tokenizer, texts, texts[::-1], 6)
    assert all(torch.equal(pairs.batch(range(5))[k], expected[k]) for k in expected)
    captured: list[int] = []
    hook = model.tail_encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: captured.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    ids = list(range(model.num_entities))[::-1]  # any order of ids comes back in that order
    plain = model.encode_entities(ids, batch_size=4, sort_by_length=False)
    padded_plain = sum(captured)
    captured.clear()
    sorted_ = model.encode_entities(ids, batch_size=4)
    hook.remove()
    assert torch.allclose(sorted_, plain, atol=1e-5)
    assert sum(captured) < padded_plain  # fewer padded positions when similar lengths share a batch
    h, r = torch.tensor([3, 0, 5, 1]), torch.tensor([0, 1, 2, 0])
    assert torch.allclose(model.encode_queries(h, r), model.encode_queries(h, r, sort_by_length=False), atol=1e-5)


def test_text_full_eval_script(teacher_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("full_eval", ROOT / "benchmarks" / "text_full_eval.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    out = tmp_path / "full.json"
    assert bench.main([str(teacher_run.path), "--dtypes", "fp32,bf16", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["encode_dtype"], r["entities_cached"]) for r in rows] == [
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    assert rows[0]["mrr"] == pytest.approx(teacher_run.metrics["test"]["both"]["mrr"], abs=1e-4)
    assert rows[1]["mrr"] == rows[0]["mrr"] and abs(rows[2]["mrr"] - rows[0]["mrr"]) < 0.02
