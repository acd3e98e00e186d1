"""Dataset resolution: bundled, named (data folders, env, cache, checksummed download), folders, malformed files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.resources
import os
import threading
from pathlib import Path

import pytest

from kgdistill.data import datasets as D
from kgdistill.data.datasets import DataFile, DatasetSpec, DatasetStatisticsWarning
from kgdistill.data.triples import KGDataset
from kgdistill.errors import DataError


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's cache, mirror or data folders unless it sets them."""
    monkeypatch.setenv("KGDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KGDISTILL_DATA", raising=False)
    monkeypatch.delenv("KGDISTILL_DATA_URL", raising=False)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def write_kg(folder: Path, train: str = "a\tr\tb\nb\tr\tc\n", valid: str = "a\tr\tc\n",
             test: str = "c\tr\ta\n") -> Path:
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        write(folder / f"{split}.tsv", text)
    return folder


# ---- bundled ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, counts", [
    ("nations", (14, 55, 1592, 199, 201)),
    ("kinship", (104, 25, 8544, 1068, 1074)),
    ("umls", (135, 46, 5216, 652, 661)),
])
def test_bundled_datasets_load_with_published_counts(name, counts, recwarn):
    ds = D.load_dataset(name)
    got = (ds.num_entities, ds.num_relations, *(int(ds.splits[s].shape[0]) for s in ("train", "valid", "test")))
    assert got == counts
    assert ds.name == name and ds.duplicates == {"train": 0, "valid": 0, "test": 0}
    assert not [w for w in recwarn if issubclass(w.category, DatasetStatisticsWarning)]
    assert D.verify_folder(name, D.resolve_dataset_path(name)) == {f.name: "ok" for f in D.get_spec(name).files}


def test_bundled_files_are_package_resources():
    root = importlib.resources.files("kgdistill.data").joinpath("bundled")
    for name in ("nations", "kinship", "umls"):
        assert root.joinpath(name, "train.tsv").is_file() and root.joinpath(name, "SOURCE.md").is_file()


def test_umls_has_text():
    ds = D.load_dataset("UMLS")
    assert len(ds.entity_names) == 135 and len(ds.entity_descriptions) == 135 and len(ds.relation_texts) == 46
    assert ds.entity_names["acquired_abnormality"] == "acquired abnormality"
    assert ds.relation_name(ds.relation_to_id["adjacent_to"]) == "adjacent to"


# ---- names ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias, canonical", [
    ("WN18RR", "wn18rr"), ("wn18rr", "wn18rr"), ("wn_18rr", "wn18rr"), ("fb15k237", "fb15k-237"),
    ("FB15k-237", "fb15k-237"), ("FB15K_237", "fb15k-237"), ("Nations", "nations"),
])
def test_name_lookup_ignores_case_and_separators(alias, canonical):
    assert D.get_spec(alias).name == canonical


def test_unknown_name_lists_known_names_and_suggests():
    with pytest.raises(DataError) as err:
        D.load_dataset("wn18r")
    msg = str(err.value)
    assert "'wn18r'" in msg and "Did you mean 'wn18rr'" in msg
    assert all(n in msg for n in ("nations", "kinship", "umls", "wn18rr", "fb15k-237"))


def test_specs_are_consistent():
    for spec in D.DATASETS.values():
        required = [f.name for f in spec.files if f.required]
        assert required == ["train.tsv", "valid.tsv", "test.tsv"]
        assert all(len(f.sha256) == 64 for f in spec.files)
    assert {f.name: f.required for f in D.get_spec("fb15k-237").files}["entity2wikidata.tsv"] is False


# ---- named datasets in data folders -----------------------------------------------------------------------------
def test_wn18rr_loads_from_data_dir(shared_data_dir, recwarn):
    ds = D.load_dataset("WN18RR", data_dir=shared_data_dir)
    assert (ds.num_entities, ds.num_relations) == (40943, 11)
    assert [int(ds.splits[s].shape[0]) for s in ("train", "valid", "test")] == [86835, 3034, 3134]
    assert len(ds.entity_names) == 40943 and len(ds.entity_descriptions) == 40943 and len(ds.relation_texts) == 11
    assert ds.name == "wn18rr" and ds.source == str(shared_data_dir / "WN18RR")
    assert not [w for w in recwarn if issubclass(w.category, DatasetStatisticsWarning)]


def test_named_dataset_resolves_from_env_paths(shared_data_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KGDISTILL_DATA", os.pathsep.join([str(tmp_path / "absent"), str(empty), str(shared_data_dir)]))
    assert D.resolve_dataset_path("fb15k237") == shared_data_dir / "FB15k-237"
    assert D.resolve_dataset_path("wn18rr", data_dir=empty) == shared_data_dir / "WN18RR"
    rows = {r["name"]: r for r in D.list_datasets()}
    assert rows["fb15k-237"]["location"] == str(shared_data_dir / "FB15k-237") and rows["fb15k-237"]["text"]
    assert rows["nations"]["kind"] == "bundled" and rows["nations"]["train"] == 1592


def test_data_dir_comes_first_and_lowercase_folder_is_accepted(shared_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KGDISTILL_DATA", str(shared_data_dir))
    write_kg(tmp_path / "mine" / "wn18rr")
    with pytest.warns(DatasetStatisticsWarning, match="entities: 3 \\(published 40943\\)"):
        ds = D.load_dataset("WN18RR", data_dir=tmp_path / "mine")
    assert ds.source == str(tmp_path / "mine" / "wn18rr") and ds.num_entities == 3


def test_cache_is_searched_last(tmp_path):
    write_kg(tmp_path / "cache" / "FB15k-237")
    assert D.resolve_dataset_path("fb15k-237") == tmp_path / "cache" / "FB15k-237"


def test_not_found_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KGDISTILL_DATA", str(tmp_path / "envdata"))
    (tmp_path / "dd").mkdir()  # a --data-dir that does not exist is its own error (test_hardening)
    with pytest.raises(DataError) as err:
        D.load_dataset("fb15k-237", data_dir=tmp_path / "dd")
    msg = str(err.value)
    for needle in (str(tmp_path / "dd" / "FB15k-237"), str(tmp_path / "envdata" / "FB15k-237"),
                   str(tmp_path / "cache" / "FB15k-237"), "KGDISTILL_DATA", "--data-dir", "--download",
                   "--data-url", "KGDISTILL_DATA_URL"):
        assert needle in msg
    assert D.list_datasets()[-1]["location"] == "not found"


def test_folder_path_loads_any_kg(tmp_path):
    ds = D.load_dataset(str(write_kg(tmp_path / "my_kg")))
    assert ds.name == "my_kg" and ds.num_entities == 3
    local = D.load_dataset(str(write_kg(tmp_path / "umls")))  # a path, not the bundled name
    assert local.num_entities == 3 and local.source == str(tmp_path / "umls")
    with pytest.raises(DataError, match="no such folder"):
        D.load_dataset(str(tmp_path / "nope"))


# ---- download ---------------------------------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP mirror on 127.0.0.1 serving ``tmp_path/mirror``; ``requests`` lists the paths asked for."""
    root = tmp_path / "mirror"
    root.mkdir()
    requests: list[str] = []

    class Counting(_Handler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root, requests
    server.shutdown()
    server.server_close()
    thread.join(5)


TOY = {"train.tsv": "a\tr\tb\nb\tr\tc\nc\ts\ta\n", "valid.tsv": "a\ts\tc\n", "test.tsv": "b\ts\ta\n",
       "entity2text.tsv": "a\tAlpha\nb\tBeta\nc\tGamma\n"}


def toy_spec(**override: str) -> DatasetSpec:
    sha = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in TOY.items()} | override
    files = tuple(DataFile(n, sha[n], required=n in ("train.tsv", "valid.tsv", "test.tsv")) for n in TOY)
    return DatasetSpec("toy", "Toy", False, "a toy", 3, 2, 3, 1, 1, files)


def publish(root: Path, names=tuple(TOY)) -> None:
    for n in names:
        write(root / "Toy" / n, TOY[n])


def test_download_verifies_and_places_files(mirror, tmp_path):
    url, root, requests = mirror
    publish(root)
    folder = D.download_dataset(toy_spec(), url, tmp_path / "dest")
    assert folder == tmp_path / "dest" / "Toy"
    assert sorted(p.name for p in folder.iterdir()) == sorted(TOY)  # no temp files left
    assert D.verify_folder(toy_spec(), folder) == {n: "ok" for n in TOY}
    assert sorted(requests) == sorted(f"/Toy/{n}" for n in TOY)
    assert KGDataset.from_folder(folder).entity_names["a"] == "Alpha"


def test_checksum_mismatch_deletes_file_and_names_hashes(mirror, tmp_path):
    url, root, _ = mirror
    publish(root)
    write(root / "Toy" / "valid.tsv", "a\ts\tb\n")  # tampered
    expected = toy_spec().files[1].sha256
    actual = hashlib.sha256(b"a\ts\tb\n").hexdigest()
    with pytest.raises(DataError) as err:
        D.download_dataset(toy_spec(), url, tmp_path / "dest")
    msg = str(err.value)
    assert "valid.tsv" in msg and expected in msg and actual in msg
    assert sorted(p.name for p in (tmp_path / "dest" / "Toy").iterdir()) == ["train.tsv"]


def test_present_files_are_not_downloaded_again(mirror, tmp_path):
    url, root, requests = mirror
    publish(root)
    D.download_dataset(toy_spec(), url, tmp_path / "dest")
    n = len(requests)
    D.download_dataset(toy_spec(), url, tmp_path / "dest")
    assert len(requests) == n
    write(tmp_path / "dest" / "Toy" / "test.tsv", "corrupted\n")
    with pytest.warns(UserWarning, match="downloading it again"):
        D.download_dataset(toy_spec(), url, tmp_path / "dest")
    assert requests[n:] == ["/Toy/test.tsv"]
    assert D.verify_folder(toy_spec(), tmp_path / "dest" / "Toy")["test.tsv"] == "ok"


def test_missing_optional_file_is_skipped_required_file_fails(mirror, tmp_path):
    url, root, _ = mirror
    publish(root, ("train.tsv", "valid.tsv", "test.tsv"))
    with pytest.warns(UserWarning, match="entity2text.tsv"):
        folder = D.download_dataset(toy_spec(), url, tmp_path / "dest")
    assert D.verify_folder(toy_spec(), folder)["entity2text.tsv"] == "absent"
    (root / "Toy" / "test.tsv").unlink()
    with pytest.raises(DataError, match="test.tsv: required file missing"):
        D.download_dataset(toy_spec(), url, tmp_path / "dest2")


def test_load_dataset_downloads_named_dataset_from_env_url(mirror, tmp_path, monkeypatch):
    url, root, _ = mirror
    publish(root)
    monkeypatch.setitem(D.DATASETS, "toy", toy_spec())
    with pytest.raises(DataError, match="not found"):
        D.load_dataset("toy")
    ds = D.load_dataset("toy", data_dir=tmp_path / "dd", download=True, data_url=url)  # data_dir gets the download
    assert ds.source == str(tmp_path / "dd" / "Toy") and ds.num_entities == 3
    monkeypatch.setenv("KGDISTILL_DATA_URL", url)
    ds = D.load_dataset("TOY", download=True)  # no data_dir: the cache gets it
    assert ds.source == str(tmp_path / "cache" / "Toy") and ds.entity_names["c"] == "Gamma"


def test_download_without_url_explains_mirror_layout(tmp_path):
    with pytest.raises(DataError) as err:
        D.load_dataset("wn18rr", download=True)
    msg = str(err.value)
    assert "no mirror URL" in msg and "/WN18RR/" in msg and "train.tsv" in msg and "KGDISTILL_DATA_URL" in msg
    assert not (tmp_path / "cache").exists()


def test_network_error_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="download failed"):
        D.download_dataset(toy_spec(), "http://127.0.0.1:9/", tmp_path / "dest", timeout=5)


# ---- malformed files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("train, where, what", [
    ("a\tr\tb\na\tr\n", "train.tsv:2", "expected 3 tab-separated fields"),
    ("a\tr\tb\n\na\tr\tb\tc\n", "train.tsv:3", "found 4"),
    ("a\tr\tb\nc\t\td\n", "train.tsv:2", "empty field"),
    (b"a\tr\tb\nb\tr\t\xff\xfe\n", "train.tsv:2", "not valid UTF-8"),
])
def test_malformed_files_name_file_and_line(tmp_path, train, where, what):
    write_kg(tmp_path / "kg")
    write(tmp_path / "kg" / "train.tsv", train)
    with pytest.raises(DataError) as err:
        D.load_dataset(str(tmp_path / "kg"))
    assert where in str(err.value) and what in str(err.value)


def test_empty_split_is_an_error(tmp_path):
    write_kg(tmp_path / "kg", valid="\n\n")
    with pytest.raises(DataError, match="valid.tsv: the valid split is empty"):
        D.load_dataset(str(tmp_path / "kg"))


def test_duplicates_are_counted(tmp_path):
    ds = D.load_dataset(str(write_kg(tmp_path / "kg", train="a\tr\tb\nb\tr\tc\na\tr\tb\na\tr\tb\n")))
    assert ds.duplicates == {"train": 2, "valid": 0, "test": 0}
    assert ds.train.shape == (2, 3)


def test_tiny_kg_fixture(tiny_kg):
    assert (tiny_kg.num_entities, tiny_kg.num_relations) == (12, 3)
    assert [int(tiny_kg.splits[s].shape[0]) for s in ("train", "valid", "test")] == [63, 11, 10]
    assert set(tiny_kg.train[:, [0, 2]].flatten().tolist()) == set(range(12))
