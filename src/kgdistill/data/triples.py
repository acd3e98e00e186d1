"""Triples with id maps: the one data structure every model, trainer and evaluator reads.

Entity and relation ids cover train ∪ valid ∪ test (METHODS.md §0): test triples whose entities never occur in
training are kept, as the papers keep them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
import warnings
from pathlib import Path

import torch

from kgdistill.errors import DataError


class UnseenRelationWarning(UserWarning):
    """A relation occurs in valid / test but not in train."""

SPLITS = ("train", "valid", "test")
TEXT_FILES = {"entity_names": "entity2text.tsv", "entity_descriptions": "entity2description.tsv",
              "relation_texts": "relation2text.tsv"}


def read_tsv_triples(path: Path) -> tuple[list[tuple[str, str, str]], int]:
    """Read ``head<TAB>relation<TAB>tail`` lines; blank lines are skipped.

    Returns the distinct triples (first occurrence kept) and the number of duplicate lines dropped, so that a
    repeated triple is reported rather than silently counted twice. Raises :class:`DataError` naming the file and line
    on a wrong column count, an empty field, a field with leading or trailing whitespace, or bad UTF-8. A UTF-8
    byte order mark at the start of the file is dropped.
    """
    triples: list[tuple[str, str, str]] = []
    try:
        raw = _without_bom(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected a TSV of head<TAB>relation<TAB>tail lines)") from None
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        parts = text.split("\t")
        if len(parts) != 3:
            raise DataError(
                f"{path}:{lineno}: expected 3 tab-separated fields (head, relation, tail), found {len(parts)}: "
                f"{text[:80]!r}"
            )
        if any(not p.strip() for p in parts):
            raise DataError(f"{path}:{lineno}: empty field in {text[:80]!r} (expected head, relation, tail)")
        _check_no_padding(path, lineno, zip(("head", "relation", "tail"), parts))
        triples.append((parts[0], parts[1], parts[2]))
    unique = list(dict.fromkeys(triples))  # keeps first occurrences, in file order
    return unique, len(triples) - len(unique)


def _without_bom(raw: bytes) -> bytes:
    """Drop a UTF-8 byte order mark (written by some editors and spreadsheet exports): it would otherwise become
    part of the first label, an invisible phantom entity."""
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw


def _check_no_padding(path: Path, lineno: int, fields: Iterable[tuple[str, str]]) -> None:
    """Labels are identifiers: ``'uk '`` and ``'uk'`` would be two entities. Leading or trailing whitespace is an
    error (not silently stripped: the file may mean two labels, and only its author can say which)."""
    for what, value in fields:
        if value != value.strip():
            raise DataError(f"{path}:{lineno}: the {what} {value!r} has leading or trailing whitespace (labels are "
                            f"identifiers: remove the spaces, or the file defines a second, invisible label)")


def read_tsv_map(path: Path) -> dict[str, str]:
    """Read ``id<TAB>text`` lines (``#`` header lines skipped, a UTF-8 BOM dropped); raises :class:`DataError` with
    file and line, also for an id with leading or trailing whitespace."""
    result: dict[str, str] = {}
    try:
        raw = _without_bom(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip() or line.startswith(b"#"):
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        key, sep, value = text.partition("\t")
        if not sep or not key:
            raise DataError(f"{path}:{lineno}: expected 'id<TAB>text', found {text[:80]!r}")
        _check_no_padding(path, lineno, [("id", key)])
        result[key] = value
    return result


@dataclass
class KGDataset:
    """A knowledge graph: id maps, one ``LongTensor[n, 3]`` of (head, relation, tail) ids per split, optional text.

    ``entities[i]`` is the label (file id) of entity ``i``; ``entity_names`` maps labels to readable names where a
    text file gives them.
    """

    name: str
    entities: list[str]
    relations: list[str]
    splits: dict[str, torch.Tensor]
    duplicates: dict[str, int] = field(default_factory=dict)
    entity_names: dict[str, str] = field(default_factory=dict)
    entity_descriptions: dict[str, str] = field(default_factory=dict)
    relation_texts: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.entity_to_id = {e: i for i, e in enumerate(self.entities)}
        self.relation_to_id = {r: i for i, r in enumerate(self.relations)}

    # ---- basic facts -------------------------------------------------------------------------------------------
    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def train(self) -> torch.Tensor:
        return self.splits["train"]

    @property
    def valid(self) -> torch.Tensor:
        return self.splits["valid"]

    @property
    def test(self) -> torch.Tensor:
        return self.splits["test"]

    def all_triples(self) -> torch.Tensor:
        """``LongTensor[n_train + n_valid + n_test, 3]``: the filter set of the filtered protocol."""
        return torch.cat([self.splits[s] for s in SPLITS if s in self.splits], dim=0)

    def entity_name(self, index: int) -> str:
        """Readable name of entity ``index`` (its text name where known, else its label)."""
        label = self.entities[index]
        return self.entity_names.get(label, label)

    def relation_name(self, index: int) -> str:
        label = self.relations[index]
        return self.relation_texts.get(label, label)

    def only_in_evaluation(self) -> dict[str, list[str]]:
        """Entities and relations that occur in valid / test but never in train (the model cannot learn them)."""
        train_ents = set(self.train[:, 0].tolist()) | set(self.train[:, 2].tolist())
        train_rels = set(self.train[:, 1].tolist())
        ents: set[int] = set()
        rels: set[int] = set()
        for split in ("valid", "test"):
            if split in self.splits:
                t = self.splits[split]
                ents |= (set(t[:, 0].tolist()) | set(t[:, 2].tolist())) - train_ents
                rels |= set(t[:, 1].tolist()) - train_rels
        return {"entities": [self.entities[i] for i in sorted(ents)],
                "relations": [self.relations[i] for i in sorted(rels)]}

    def statistics(self) -> dict[str, object]:
        train_ents = set(self.train[:, 0].tolist()) | set(self.train[:, 2].tolist())
        only = self.only_in_evaluation()
        unseen = {}
        for split in ("valid", "test"):
            t = self.splits[split]
            mask = torch.tensor([(h not in train_ents) or (tt not in train_ents) for h, tt in
                                 zip(t[:, 0].tolist(), t[:, 2].tolist())], dtype=torch.bool)
            unseen[split] = int(mask.sum())
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            **{f"{s}_triples": int(self.splits[s].shape[0]) for s in SPLITS},
            **{f"{s}_duplicates": self.duplicates.get(s, 0) for s in SPLITS},
            **{f"{s}_with_entity_unseen_in_train": unseen[s] for s in ("valid", "test")},
            "entities_only_in_valid_test": len(only["entities"]),
            "relations_only_in_valid_test": len(only["relations"]),
            "has_entity_names": bool(self.entity_names),
            "has_entity_descriptions": bool(self.entity_descriptions),
            "has_relation_texts": bool(self.relation_texts),
            "source": self.source,
        }

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_labeled(
        cls,
        name: str,
        labeled: Mapping[str, Iterable[tuple[str, str, str]]],
        *,
        entities: list[str] | None = None,
        relations: list[str] | None = None,
        duplicates: Mapping[str, int] | None = None,
        **text: dict[str, str],
    ) -> KGDataset:
        """Build id maps over all splits (sorted labels, so ids do not depend on file order) and id tensors."""
        labeled = {s: list(v) for s, v in labeled.items()}
        if entities is None:
            entities = sorted({x for trips in labeled.values() for h, _, t in trips for x in (h, t)})
        if relations is None:
            relations = sorted({r for trips in labeled.values() for _, r, _ in trips})
        e2i = {e: i for i, e in enumerate(entities)}
        r2i = {r: i for i, r in enumerate(relations)}
        splits = {}
        for split, trips in labeled.items():
            try:
                ids = [(e2i[h], r2i[r], e2i[t]) for h, r, t in trips]
            except KeyError as err:
                raise DataError(f"{name}/{split}: label {err.args[0]!r} is not in the id maps") from None
            splits[split] = torch.tensor(ids, dtype=torch.long).reshape(-1, 3)
        return cls(name=name, entities=list(entities), relations=list(relations), splits=splits,
                   duplicates=dict(duplicates or {}), **text)

    @classmethod
    def from_folder(cls, path: str | Path, name: str | None = None) -> KGDataset:
        """Load ``train.tsv``, ``valid.tsv``, ``test.tsv`` and the optional text files of a folder."""
        folder = Path(path)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder (expected train.tsv, valid.tsv and test.tsv inside)")
        labeled, dups = {}, {}
        for split in SPLITS:
            file = folder / f"{split}.tsv"
            if not file.exists() and (folder / f"{split}.txt").exists():
                file = folder / f"{split}.txt"
            triples, n_dup = read_tsv_triples(file)
            if not triples:
                raise DataError(f"{file}: the {split} split is empty (expected at least one triple)")
            labeled[split], dups[split] = triples, n_dup
        text = {key: read_tsv_map(folder / fname) for key, fname in TEXT_FILES.items() if (folder / fname).exists()}
        ds = cls.from_labeled(name or folder.name, labeled, duplicates=dups, **text)
        ds.source = str(folder)
        rels = ds.only_in_evaluation()["relations"]
        if rels:
            shown = ", ".join(repr(r) for r in rels[:5]) + (f" and {len(rels) - 5} more" if len(rels) > 5 else "")
            warnings.warn(f"{folder}: {len(rels)} relation(s) occur only in valid/test, never in train.tsv "
                          f"({shown}): no model can learn them", UnseenRelationWarning, stacklevel=2)
        return ds
