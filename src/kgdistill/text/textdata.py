"""Text of a KG for a bi-encoder: entity and relation strings, neighbour augmentation, tokenisation, batches.

Follows SimKGC (Wang et al., ACL 2022, "SimKGC: Simple Contrastive Knowledge Graph Completion with Pre-trained
Language Models"): an entity reads ``"name: description"``; ``(h, r)`` is the sentence pair
``[CLS] head text [SEP] relation text [SEP]``; every triple also yields ``(t, "inverse r", h)`` so that only tails are
predicted (relation id ``r + R`` stands for the inverse of ``r``); entities whose description has fewer than
``neighbour_min_words`` words are padded with up to ``neighbour_names`` names of graph neighbours (the target excluded
while training).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kgdistill.data.triples import KGDataset

_WN_NAME = re.compile(r"^_*(?P<words>.+?)_(?P<pos>NN|VB|JJ|RB|JJS|JJR|RBR|RBS|NNS)_(?P<sense>\d+)$")


def clean_text(text: str) -> str:
    """Undo the DKRL escape sequences of FB15k-237 descriptions (``\\n``, ``\\"``) and collapse whitespace."""
    text = text.replace('\\"', '"').replace("\\n", " ").replace("\\t", " ")
    return " ".join(text.split())


def parse_wn18rr_name(name: str) -> str:
    """``"__take_a_breath_VB_1"`` → ``"take a breath"``; names already in plain words pass through."""
    m = _WN_NAME.match(name.strip())
    if m:
        return m.group("words").replace("_", " ").strip()
    return name.replace("_", " ").strip() if "_" in name and " " not in name else name.strip()


def normalize_relation(label: str) -> str:
    """A readable relation text from a relation label.

    FB15k-237 paths (``/people/person/nationality``, ``/award/award_category/winners./award/award_honor/award_winner``)
    keep their last two distinct segments, most specific first (``"nationality person"``, ``"award winner award
    honor"``), as SimKGC's normalisation does; WN18RR-style labels (``_hypernym``) lose their underscores.
    """
    if label.startswith("/"):
        segments = [s.replace("_", " ").strip() for s in label.replace("./", "/").split("/") if s.strip(". ")]
        dedup: list[str] = []
        for s in segments:
            if s not in dedup[-3:]:
                dedup.append(s)
        return " ".join(reversed(dedup[-2:]))
    return " ".join(label.replace("_", " ").split())


def relation_texts_of(dataset: KGDataset, normalize_paths: bool = True) -> list[str]:
    """One text per relation id: FB15k-style paths normalised, else the dataset's relation text, else the label."""
    out = []
    for label in dataset.relations:
        if normalize_paths and label.startswith("/"):
            out.append(normalize_relation(label))
        else:
            out.append(clean_text(dataset.relation_texts.get(label) or normalize_relation(label)))
    return out


def entity_base_texts(dataset: KGDataset) -> tuple[list[str], list[str]]:
    """``(names, base texts)`` per entity id; base text = ``"name: description"`` (or the name alone)."""
    names, texts = [], []
    for label in dataset.entities:
        name = parse_wn18rr_name(clean_text(dataset.entity_names.get(label, label)))
        desc = clean_text(dataset.entity_descriptions.get(label, ""))
        names.append(name)
        texts.append(f"{name}: {desc}" if desc else name)
    return names, texts


class EntityTexts:
    """Entity strings with optional neighbour-name padding (SimKGC's text augmentation for short descriptions).

    ``base_texts[e]`` is ``"name: description"``; when ``neighbour_names > 0`` and the description part has fewer than
    ``min_words`` words, the names of up to ``neighbour_names`` training-graph neighbours are appended. ``exclude``
    removes one neighbour (the training target) so the answer is never leaked into the query.
    """

    def __init__(self, names: Sequence[str], base_texts: Sequence[str], train_triples: Tensor | None = None,
                 neighbour_names: int = 0, min_words: int = 20) -> None:
        self.names, self.base = list(names), list(base_texts)
        self.neighbour_names, self.min_words = int(neighbour_names), int(min_words)
        self.neighbours: list[list[int]] = [[] for _ in self.names]
        if self.neighbour_names > 0 and train_triples is not None:
            for h, _, t in train_triples.tolist():
                if h == t:
                    continue
                for a, b in ((h, t), (t, h)):
                    nb = self.neighbours[a]
                    if len(nb) < 4 * self.neighbour_names and b not in nb:
                        nb.append(b)
        self._short = [len(t.split(":", 1)[-1].split()) < self.min_words for t in self.base]

    def __len__(self) -> int:
        return len(self.base)

    def text(self, e: int, exclude: int | None = None) -> str:
        base = self.base[e]
        if self.neighbour_names <= 0 or not self._short[e] or not self.neighbours[e]:
            return base
        nbs = [self.names[n] for n in self.neighbours[e] if n != exclude][: self.neighbour_names]
        return f"{base} {' '.join(nbs)}" if nbs else base

    def texts(self, ids: Sequence[int], exclude: Sequence[int] | None = None) -> list[str]:
        if exclude is None:
            return [self.text(e) for e in ids]
        return [self.text(e, x) for e, x in zip(ids, exclude)]


def relation_text(relation_texts: Sequence[str], r: int) -> str:
    """Text of relation id ``r``; ids ``R..2R-1`` are the inverses ``"inverse <text>"``."""
    num = len(relation_texts)
    return relation_texts[r] if r < num else f"inverse {relation_texts[r - num]}"


def tokenize(tokenizer, first: Sequence[str], second: Sequence[str] | None = None, max_length: int = 50,
             device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Tokenise single texts or sentence pairs, truncated to ``max_length`` tokens (longest first), padded.

    Returns ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them), each
    ``LongTensor[n, L]``.
    """
    # A whitespace word is at least one token, so cutting texts to max_length words first changes nothing after
    # truncation but saves tokenising long descriptions in full.
    first = [_cut(x, max_length) for x in first]
    second = [_cut(x, max_length) for x in second] if second is not None else None
    enc = tokenizer(list(first), list(second) if second is not None else None, truncation=True,
                    max_length=max_length, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class Tokenized:
    """Texts (or text pairs) tokenised once, unpadded and truncated to ``max_length`` tokens (longest first), to be
    cut into padded batches in any order: :meth:`by_length` orders them so that a batch pads to similar lengths."""

    def __init__(self, tokenizer, first: Sequence[str], second: Sequence[str] | None = None,
                 max_length: int = 50) -> None:
        first = [_cut(x, max_length) for x in first]
        second = [_cut(x, max_length) for x in second] if second is not None else None
        enc = tokenizer(list(first), list(second) if second is not None else None, truncation=True,
                        max_length=max_length, padding=False)
        self.fields = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.fields["input_ids"])

    def by_length(self) -> list[int]:
        """Indices by increasing token length (stable: ties keep their order)."""
        ids = self.fields["input_ids"]
        return sorted(range(len(ids)), key=lambda i: len(ids[i]))

    def batch(self, rows: Sequence[int], device: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The ``rows`` right-padded to their longest: each field ``LongTensor[len(rows), L]`` on ``device``, as
        :func:`tokenize` returns them."""
        width = max(len(self.fields["input_ids"][i]) for i in rows)
        out = {}
        for key, values in self.fields.items():
            pad = self.pad_id if key == "input_ids" else 0
            out[key] = torch.tensor([values[i] + [pad] * (width - len(values[i])) for i in rows], dtype=torch.long,
                                    device=device)
        return out


def _cut(text: str, words: int) -> str:
    parts = text.split(maxsplit=words)
    return " ".join(parts[:words]) if len(parts) > words else text


def with_inverses(triples: Tensor, num_relations: int) -> Tensor:
    """``[n, 3]`` → ``[2n, 3]``: every ``(h, r, t)`` and its inverse ``(t, r + R, h)``."""
    inv = torch.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], dim=1)
    return torch.cat([triples, inv], dim=0)


class KnownTails:
    """Membership test for ``(h, r, t)`` in a triple set (training triples with inverses), vectorised.

    Codes ``(h · 2R + r) · E + t`` are kept sorted; :meth:`contains` is a ``searchsorted``.
    """

    def __init__(self, triples_with_inverses: Tensor, num_entities: int, num_relations: int) -> None:
        self.E, self.R2 = int(num_entities), 2 * int(num_relations)
        self.codes = torch.unique(self.code(triples_with_inverses[:, 0], triples_with_inverses[:, 1],
                                            triples_with_inverses[:, 2]))

    def code(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return (h * self.R2 + r) * self.E + t

    def contains(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Broadcasting ``h, r, t`` → bool tensor of their broadcast shape."""
        codes = self.code(h, r, t)
        codes_dev = self.codes.to(codes.device)
        if codes_dev.numel() == 0:
            return torch.zeros_like(codes, dtype=torch.bool)
        pos = torch.searchsorted(codes_dev, codes.reshape(-1)).clamp_(max=codes_dev.numel() - 1)
        return (codes_dev[pos] == codes.reshape(-1)).reshape(codes.shape)


@dataclass
class TextBatch:
    """One training batch: ids ``h, r, t: LongTensor[B]`` (r may be an inverse id) and tokenised inputs."""

    h: Tensor
    r: Tensor
    t: Tensor
    hr_inputs: dict[str, Tensor]
    tail_inputs: dict[str, Tensor]
    head_inputs: dict[str, Tensor] | None = None

    def to(self, device: str | torch.device) -> TextBatch:
        def mv(d: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
            return None if d is None else {k: v.to(device) for k, v in d.items()}

        return TextBatch(self.h.to(device), self.r.to(device), self.t.to(device), mv(self.hr_inputs),  # type: ignore
                         mv(self.tail_inputs), mv(self.head_inputs))  # type: ignore[arg-type]


def make_batch(tokenizer, entity_texts: EntityTexts, relation_texts: Sequence[str], triples: Tensor,
               max_length: int = 50, self_negatives: bool = True, training: bool = True) -> TextBatch:
    """Tokenise ``triples: LongTensor[B, 3]`` (relation ids may be inverse ids ``≥ R``) into a :class:`TextBatch`.

    While training, the head's neighbour list excludes the tail and vice versa (SimKGC: no answer leakage).
    """
    h, r, t = triples[:, 0].tolist(), triples[:, 1].tolist(), triples[:, 2].tolist()
    head_txt = entity_texts.texts(h, exclude=t if training else None)
    tail_txt = entity_texts.texts(t, exclude=h if training else None)
    rel_txt = [relation_text(relation_texts, x) for x in r]
    hr = tokenize(tokenizer, head_txt, rel_txt, max_length)
    tail = tokenize(tokenizer, tail_txt, None, max_length)
    head = tokenize(tokenizer, entity_texts.texts(h), None, max_length) if self_negatives else None
    return TextBatch(triples[:, 0].clone(), triples[:, 1].clone(), triples[:, 2].clone(), hr, tail, head)


def build_wordpiece_tokenizer(texts: Sequence[str], max_words: int = 2000, extra_words: Sequence[str] = ("inverse",)):
    """A small offline BERT-style WordPiece tokenizer from ``texts`` (for tests and tiny models; nothing downloaded).

    Vocabulary: ``[PAD] [UNK] [CLS] [SEP] [MASK]``, the ``max_words`` most frequent lower-cased words, every character
    seen and its ``##`` continuation, so every text tokenises without ``[UNK]``.
    """
    from collections import Counter

    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    chars: set[str] = set()
    for text in [*texts, *extra_words]:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            counts[word] += 1
            chars.update(word)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab_list = specials + sorted(chars) + [f"##{c}" for c in sorted(chars)]
    seen = set(vocab_list)
    vocab_list += [w for w, _ in counts.most_common() if w not in seen][:max_words]
    vocab = {w: i for i, w in enumerate(vocab_list)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])
