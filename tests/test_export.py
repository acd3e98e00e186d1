"""Export to one artifact file and load it back: exact round trip (float32), stated error bounds (float16, int8),
sparse storage of pruned models, loading without the training data, the generic exporter fallback, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kgdistill import runs
from kgdistill.cli import main
from kgdistill.config import DataConfig, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from kgdistill.data.datasets import load_dataset
from kgdistill.errors import KGDistillError
from kgdistill.export import ArtifactError, decode_tensor, encode_tensor, export_run, load_artifact, read_metadata
from kgdistill.models.base import KGCModel, load_model, model_classes, save_model
from kgdistill.registry import normalize_name


def train_tiny(out: Path, model: str = "distmult", dim: int = 16, epochs: int = 4) -> Path:
    """A few epochs on the bundled nations KG (14 entities, 55 relations): well under a second."""
    config = RunConfig(data=DataConfig(dataset="nations"), model=ModelConfig(model=model, dim=dim),
                       training=TrainingConfig(training_mode="1vsall", optimizer="adagrad", lr=0.1, epochs=epochs,
                                               batch_size=256, eval_every=2, num_threads=1),
                       evaluation=EvaluationConfig(eval_splits=["valid", "test"]), output_dir=str(out), progress=False)
    return runs.train(config).path


def prune(run_dir: Path, out: Path, fraction: float = 0.9, seed: int = 0) -> Path:
    """Copy of a run whose entity table has ``fraction`` of its rows zeroed and whose relation table has
    ``fraction`` of its values zeroed (row-wise and element-wise pruning, as MetaSD-style students have)."""
    shutil.copytree(run_dir, out)
    model = load_model(out)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ent, rel = model.entity, model.relation
        ent[torch.randperm(ent.shape[0], generator=g)[: int(fraction * ent.shape[0])]] = 0.0
        flat = rel.view(-1)
        flat[torch.randperm(flat.numel(), generator=g)[: int(fraction * flat.numel())]] = 0.0
    save_model(model, out)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "method": "metasd"}))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def pruned_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prune(run_dir, tmp_path_factory.mktemp("export") / "pruned")


def all_scores(model: KGCModel) -> dict[str, torch.Tensor]:
    """Every tail score (all entities × all relation rows incl. reciprocal ones), head scores and triple scores."""
    e, rows = model.num_entities, model.relation.shape[0]  # type: ignore[attr-defined]
    h, r = torch.cartesian_prod(torch.arange(e), torch.arange(rows)).unbind(1)
    hr = torch.cartesian_prod(torch.arange(e), torch.arange(model.num_relations)).unbind(1)
    with torch.inference_mode():
        return {"tail": model.score_t(h, r), "head": model.score_h(hr[1], hr[0]),
                "hrt": model.score_hrt(torch.stack([hr[0], hr[1], hr[0].flip(0)], 1))}


def test_float32_round_trip_gives_identical_scores(run_dir: Path, tmp_path: Path) -> None:
    path = export_run(run_dir, tmp_path / "a.safetensors")
    art = load_artifact(path)
    original = load_model(run_dir)
    for key, value in all_scores(original).items():
        assert torch.equal(all_scores(art.model)[key], value), key
    dataset = load_dataset("nations")
    assert art.entities == dataset.entities and art.relations == dataset.relations
    assert art.entity_names == [dataset.entity_name(i) for i in range(dataset.num_entities)]
    assert torch.equal(art.known.long(), dataset.all_triples())
    assert art.meta["metrics"] == json.loads((run_dir / "metrics.json").read_text())
    assert art.meta["quantization"]["max_abs_score_error"] == 0.0
    assert art.summary()["parameters"]["total"] == original.num_parameters()


def quantisation_bound(model: KGCModel, dtype: str) -> torch.Tensor:
    """Rigorous bound on |Δ score_t| of DistMult, ``s = Σ_i h_i r_i t_i``, when every value x is stored with an
    error of at most e(x): int8 with per-row scale, e = max|row| / 254; float16, e = 2⁻¹¹ |x| (+ 2⁻²⁵ subnormal).
    Then |Δs| ≤ Σ_i (|h_i| + e_h)(|r_i| + e_r)(|t_i| + e_t) − |h_i| |r_i| |t_i|, plus 1e-5 float32 rounding slack."""
    def err(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().double()
        if dtype == "int8":
            return x.abs().amax(1, keepdim=True).expand_as(x) / 254.0
        return x.abs() * 2.0 ** -11 + 2.0 ** -25

    ent, rel = model.entity.detach().double(), model.relation.detach().double()  # type: ignore[attr-defined]
    a_e, a_r = ent.abs() + err(ent), rel.abs() + err(rel)
    upper = torch.einsum("hd,rd,td->hrt", a_e, a_r, a_e)
    exact = torch.einsum("hd,rd,td->hrt", ent.abs(), rel.abs(), ent.abs())
    return (upper - exact + 1e-5).reshape(-1, ent.shape[0])


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_quantised_scores_within_the_stated_bound(run_dir: Path, tmp_path: Path, dtype: str) -> None:
    path = export_run(run_dir, tmp_path / f"{dtype}.safetensors", dtype)
    original, art = load_model(run_dir), load_artifact(path)
    diff = (all_scores(art.model)["tail"] - all_scores(original)["tail"]).abs().double()
    bound = quantisation_bound(original, dtype)
    assert bool((diff <= bound).all()), float((diff - bound).max())
    assert float(diff.max()) > 0  # it did quantise
    q = read_metadata(path)["quantization"]
    assert q["split"] == "test" and abs(q["mrr_change"]) < 0.05
    assert q["mrr_change"] == pytest.approx(q[f"mrr_{dtype}"] - q["mrr_float32"])
    stored = {v["stored"] for v in read_metadata(path)["tensors"].values()}
    assert stored == {dtype}
    assert path.stat().st_size < export_run(run_dir, tmp_path / "f32.safetensors").stat().st_size


def test_codec_layouts_round_trip() -> None:
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(50, 8, generator=g)
    row_sparse = dense.clone()
    row_sparse[5:] = 0
    elem_sparse = dense * (torch.rand(50, 8, generator=g) < 0.05)
    for t, layout in ((dense, "dense"), (row_sparse, "rows"), (elem_sparse, "csr")):
        parts, info = encode_tensor(t, "float32", quantize=False)
        assert info["layout"] == layout
        assert torch.equal(decode_tensor(parts, info), t)
        parts, info = encode_tensor(t, "int8", quantize=True)
        back = decode_tensor(parts, info)
        assert bool((back[t == 0] == 0).all())  # zeros stay exact zeros
        assert bool(((back - t).abs() <= t.abs().amax(1, keepdim=True) / 254 + 1e-7).all())
    ids = torch.arange(6).reshape(2, 3)
    parts, info = encode_tensor(ids, "int8", quantize=True)
    assert torch.equal(decode_tensor(parts, info), ids)


def test_pruned_model_is_stored_sparse_and_exact(run_dir: Path, pruned_dir: Path, tmp_path: Path) -> None:
    dense_path = export_run(run_dir, tmp_path / "dense.safetensors", include_known=False)
    path = export_run(pruned_dir, tmp_path / "pruned.safetensors", include_known=False)
    tensors = read_metadata(path)["tensors"]
    assert tensors["entity"]["layout"] == "rows" and tensors["relation"]["layout"] == "csr"
    pruned, art = load_model(pruned_dir), load_artifact(path)
    for key, value in all_scores(pruned).items():
        assert torch.equal(all_scores(art.model)[key], value), key
    assert art.model.num_parameters(nonzero=True) == pruned.num_parameters(nonzero=True)
    weights = lambda p: sum(v["bytes"] for v in read_metadata(p)["tensors"].values())  # noqa: E731
    assert weights(path) < 0.25 * weights(dense_path)
    assert art.meta["method"] == "metasd"
    art8 = load_artifact(export_run(pruned_dir, tmp_path / "pruned8.safetensors", "int8", include_known=False))
    assert art8.model.num_parameters(nonzero=True) <= pruned.num_parameters(nonzero=True)


def test_load_needs_no_training_data(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = export_run(run_dir, tmp_path)  # an existing folder: named after the run
    assert path.name == "run-float32.safetensors"
    moved = tmp_path / "elsewhere" / "model.safetensors"
    moved.parent.mkdir()
    shutil.move(path, moved)

    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the training data was read")

    monkeypatch.setattr("kgdistill.data.datasets.load_dataset", no_data)
    monkeypatch.setattr("kgdistill.runs.load_dataset", no_data)
    art = load_artifact(moved)
    top = art.predict("ngo", head="USA", k=3)  # names are case-insensitive
    assert [p.rank for p in top] == [1, 2, 3] and any(p.known for p in top)
    hidden = art.predict("ngo", head="usa", k=14, exclude_known=True)
    assert hidden and not any(p.known for p in hidden)
    with pytest.raises(KGDistillError, match="Close matches"):
        art.entity_id("usaa")


def test_export_without_the_dataset(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = (copy / "config.yaml").read_text().replace("dataset: nations", f"dataset: {tmp_path / 'gone'}")
    (copy / "config.yaml").write_text(cfg)
    path = export_run(copy, tmp_path / "a.safetensors", "int8")
    meta = read_metadata(path)
    assert "mrr_change" not in meta["quantization"] and "dataset not available" in meta["notes"][0]
    assert load_artifact(path).known is None


class GenericModel(KGCModel):
    """Not an embedding model: a linear map with a buffer and cached 'encodings' (as text models have)."""

    registry_name = "test-generic"
    uses_entity_text = True

    def __init__(self, num_entities: int, num_relations: int, dim: int = 4) -> None:
        super().__init__()
        self.num_entities, self.num_relations, self.dim = num_entities, num_relations, dim
        self.proj = nn.Linear(dim, dim)
        self.rel = nn.Embedding(num_relations, dim)
        self.register_buffer("temperature", torch.tensor(0.5))
        self.cache = torch.randn(num_entities, dim, generator=torch.Generator().manual_seed(0))  # "encodings"

    def config(self) -> dict[str, Any]:
        return {"num_entities": self.num_entities, "num_relations": self.num_relations, "dim": self.dim}

    def export_extras(self) -> dict[str, torch.Tensor]:
        return {"entity_encodings": self.cache}

    def import_extras(self, extras: dict[str, torch.Tensor]) -> None:
        self.cache = extras["entity_encodings"]

    def score_t(self, h: torch.Tensor, r: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        q = self.proj(self.cache[h] + self.rel(r))
        return q @ self.cache.T / self.temperature

    def score_h(self, r: torch.Tensor, t: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        return self.score_t(t, r)

    def score_hrt(self, hrt: torch.Tensor) -> torch.Tensor:
        return self.score_t(hrt[:, 0], hrt[:, 1]).gather(1, hrt[:, 2:]).squeeze(1)


@pytest.fixture
def generic_class() -> Iterator[type[GenericModel]]:
    """Registers :class:`GenericModel` for one test only (a registry meta-test must not see it)."""
    model_classes.register("test-generic")(GenericModel)
    yield GenericModel
    model_classes._items.pop("test-generic", None)
    model_classes._canonical.pop(normalize_name("test-generic"), None)


def test_generic_exporter_fallback(run_dir: Path, tmp_path: Path, generic_class: type[GenericModel]) -> None:
    copy = tmp_path / "generic"
    shutil.copytree(run_dir, copy)
    model = GenericModel(14, 55)
    save_model(model, copy)
    path = export_run(copy, tmp_path / "g.safetensors", "float16")
    art = load_artifact(path)
    assert isinstance(art.model, GenericModel)
    # the encodings come from the artifact (float16-rounded), not from a fresh model
    assert torch.equal(art.model.cache, model.cache.half().float()) and not torch.equal(art.model.cache, model.cache)
    assert float(art.model.temperature) == 0.5
    assert art.meta["extras"]["entity_encodings"]["stored"] == "float16"
    assert len(art.entity_descriptions) == 14  # text models get the entity text (empty for nations)
    h, r = torch.arange(14), torch.arange(14)
    with torch.inference_mode():
        assert torch.allclose(art.model.score_t(h, r), model.score_t(h, r), atol=0.05, rtol=0.01)


def test_errors_are_clear(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such artifact"):
        load_artifact(tmp_path / "missing.safetensors")
    with pytest.raises(ArtifactError, match="export it first"):
        load_artifact(run_dir)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ArtifactError, match="not a kgdistill artifact"):
        load_artifact(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="not a kgdistill artifact"):
        load_artifact(tmp_path / "junk.safetensors")
    with pytest.raises(KGDistillError, match="dtype must be one of"):
        export_run(run_dir, tmp_path / "x.safetensors", "int4")
    with pytest.raises(KGDistillError, match="not a finished run folder"):
        export_run(tmp_path, tmp_path / "x.safetensors")


def test_cli_export_and_load(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a8.safetensors"
    assert main(["export", str(run_dir), str(out), "--dtype", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "int8: test MRR" in printed and "change" in printed and "entity" in printed
    assert main(["load", str(out), "--head", "usa", "--relation", "ngo", "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "(usa, ngo, ?)" in printed and "non-zero parameters" in printed
    assert main(["load", str(tmp_path / "nothing")]) == 2
    assert "no such artifact" in capsys.readouterr().err
    assert main(["load", str(out), "--head", "usaa", "--relation", "ngo"]) == 2
    assert "Close matches" in capsys.readouterr().err


def test_an_artifact_file_is_marked_as_one_and_an_older_file_still_loads(run_dir: Path, tmp_path: Path) -> None:
    """The one-file format and the hf folder format have their own format names (one shadowed the other once, so
    files were written as "kgdistill-hf" and a file written before could not be read)."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from kgdistill.artifact import FORMAT, HF_FORMAT

    assert (FORMAT, HF_FORMAT) == ("kgdistill-artifact", "kgdistill-hf")
    art = export_run(run_dir, tmp_path / "a.safetensors")
    with safe_open(str(art), framework="pt") as f:
        header = f.metadata()
    assert header["format"] == "kgdistill-artifact"
    save_file(load_file(str(art)), str(tmp_path / "old.safetensors"), metadata=header)  # as older kgdistill wrote it
    assert load_artifact(tmp_path / "old.safetensors").entities == load_artifact(art).entities
    meta = _json.loads(header["meta"])
    save_file(load_file(str(art)), str(tmp_path / "hf.safetensors"), metadata={**header, "format": "kgdistill-hf"})
    with pytest.raises(ArtifactError, match="not a kgdistill artifact"):
        load_artifact(tmp_path / "hf.safetensors")
    assert meta["model_class"] == "embedding"
