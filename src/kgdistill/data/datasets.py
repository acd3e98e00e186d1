"""Where datasets come from: bundled small KGs, named benchmarks in a data folder or a checksummed download, any folder.

>>> ds = load_dataset("nations")                       # bundled inside the package
>>> ds = load_dataset("WN18RR", data_dir="../shared/data")  # a named benchmark, looked up in a data folder
>>> ds = load_dataset("path/to/my_kg")                 # any folder with train.tsv, valid.tsv, test.tsv

Named benchmarks are looked up in ``data_dir``, then in each folder of ``$KGDISTILL_DATA`` (``os.pathsep``-separated),
then in the cache (``$KGDISTILL_CACHE`` or ``~/.cache/kgdistill/datasets``). ``download=True`` fetches them from a
mirror (``data_url`` or ``$KGDISTILL_DATA_URL``) laid out as ``<mirror>/<folder>/<file>``, checking every sha256.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from kgdistill.data.triples import SPLITS, TEXT_FILES, KGDataset
from kgdistill.errors import DataError
from kgdistill.registry import normalize_name, suggest

ENV_DATA = "KGDISTILL_DATA"
ENV_CACHE = "KGDISTILL_CACHE"
ENV_URL = "KGDISTILL_DATA_URL"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DatasetStatisticsWarning(UserWarning):
    """A named dataset's loaded counts differ from its published statistics."""


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset folder with its sha256; optional files (text) may be absent."""

    name: str
    sha256: str
    required: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: canonical name, folder name in a data folder, published statistics and checksummed files."""

    name: str
    folder: str
    bundled: bool
    description: str
    entities: int
    relations: int
    train: int
    valid: int
    test: int
    files: tuple[DataFile, ...] = ()

    def counts(self) -> dict[str, int]:
        return {"entities": self.entities, "relations": self.relations,
                "train": self.train, "valid": self.valid, "test": self.test}

    @property
    def text_files(self) -> list[str]:
        return [f.name for f in self.files if f.name in TEXT_FILES.values()]


def _files(required: dict[str, str], optional: dict[str, str] | None = None) -> tuple[DataFile, ...]:
    return (tuple(DataFile(n, h) for n, h in required.items())
            + tuple(DataFile(n, h, required=False) for n, h in (optional or {}).items()))


# sha256 values: /shared/data/SHA256SUMS.txt (the bundled copies are byte-identical to the shared ones).
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("nations", "nations", True, "Nations (Kok & Domingos 2007), ConvE/pykeen split",
                14, 55, 1592, 199, 201, _files({
                    "train.tsv": "0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35fccaf82473e57",
                    "valid.tsv": "2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a52c652a7b0530",
                    "test.tsv": "3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b95ae4db770ab"})),
    DatasetSpec("kinship", "kinship", True, "Alyawarra kinship (Kok & Domingos 2007), ConvE/pykeen split",
                104, 25, 8544, 1068, 1074, _files({
                    "train.tsv": "738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da367dda689731",
                    "valid.tsv": "c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e24716be2b37f04da",
                    "test.tsv": "05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f2fe114e43d88"})),
    DatasetSpec("umls", "umls", True, "UMLS semantic network, ConvE/pykeen split; KG-BERT names and descriptions",
                135, 46, 5216, 652, 661, _files({
                    "train.tsv": "873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35",
                    "valid.tsv": "025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e",
                    "test.tsv": "a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014"}, {
                    "entity2text.tsv": "11a2812ba70680061e9dd7f14f0c1523f7578e20bcc35fe4527c9550633e30b0",
                    "entity2description.tsv": "eb3671731ee004d9b6bdd46972b43e49e4d9682d1df5b22827fc7a51aac89be3",
                    "relation2text.tsv": "25a24942e8cc6336079d53cd18030d33ffb9b4420e0060b10c8808b5ae5e3f2c"})),
    DatasetSpec("wn18rr", "WN18RR", False, "WN18RR (Dettmers et al. 2018); KG-BERT WordNet names and definitions",
                40943, 11, 86835, 3034, 3134, _files({
                    "train.tsv": "038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df",
                    "valid.tsv": "453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab",
                    "test.tsv": "0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5"}, {
                    "entity2text.tsv": "f866b4a2044262bfe0f970aa9fee1eabf9ddf993f6ba03bbfc2d634696595269",
                    "entity2description.tsv": "3f0d68dd800d16633a6d53d20e6de7fb79d564ac6ef71099147bf722cbe1d8d8",
                    "relation2text.tsv": "09dc3a9e6e4482c93da37baab01f4a3d44de8fce0f9e86a16cd1555073670743"})),
    DatasetSpec("fb15k-237", "FB15k-237", False,
                "FB15k-237 (Toutanova & Chen 2015); KG-BERT names, StAR short descriptions, Wikidata ids",
                14541, 237, 272115, 17535, 20466, _files({
                    "train.tsv": "61099230e4439f90885ca9767739e31e8e32f54736fa1c35952b27997bc7c08a",
                    "valid.tsv": "749cbe9d923bac7b9354da5614ecfed2e0220256d442c3e04a6b303db1f273d9",
                    "test.tsv": "e2e35e8e6113de220140b6f44dc71a5207b0fc6872d575e874aefe13259b655b"}, {
                    "entity2text.tsv": "c77823b20447c887b77fab4bd3da64d3e54c2e987ba2f8e6dbf97fe3177dd21c",
                    "entity2description.tsv": "cbce23e6311a40354367ac6232154bb5449e4b39a6077b84088ba86dadb8293d",
                    "relation2text.tsv": "814ddc441b0ff6b665b18fdd1802bd6363e3ff962b51b6738693e304bc1de972",
                    "entity2wikidata.tsv": "93f78ed49fcfe8d9dd7879e26b609db409e59cb8cb49aa91fa9b42fcddf6782b"})),
)}


def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The spec of a known dataset; the name is matched ignoring case and ``-``/``_``/spaces (``FB15k237``)."""
    if isinstance(name, DatasetSpec):
        return name
    norm = normalize_name(name)
    for spec in DATASETS.values():
        if norm in (normalize_name(spec.name), normalize_name(spec.folder)):
            return spec
    known = sorted(DATASETS)
    raise DataError(f"unknown dataset {name!r}; known names: {', '.join(known)}.{suggest(name, known)} "
                    "A folder path with train.tsv, valid.tsv and test.tsv also works.")


def default_cache_dir() -> Path:
    """``$KGDISTILL_CACHE`` or ``~/.cache/kgdistill/datasets``: where downloads go by default."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "kgdistill" / "datasets").expanduser()


def check_data_dir(data_dir: str | os.PathLike[str] | None) -> None:
    """A given ``data_dir`` must be a folder: skipping it would silently take the datasets from elsewhere
    (``$KGDISTILL_DATA``, the cache)."""
    if data_dir and not Path(data_dir).expanduser().is_dir():
        what = "is a file" if Path(data_dir).expanduser().exists() else "does not exist"
        raise DataError(f"--data-dir {os.fspath(data_dir)}: {what} (expected the folder holding the named datasets; "
                        f"with --download it is created)")


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """The folders searched for named datasets, in order, each with where it came from."""
    roots = [(Path(data_dir).expanduser(), "--data-dir")] if data_dir else []
    roots += [(Path(p).expanduser(), ENV_DATA) for p in os.environ.get(ENV_DATA, "").split(os.pathsep) if p]
    return roots + [(default_cache_dir(), "cache")]


def _candidates(spec: DatasetSpec, root: Path) -> list[Path]:
    found = [root / spec.folder] + ([root / spec.name] if spec.name != spec.folder else [])
    if normalize_name(root.name) in (normalize_name(spec.name), normalize_name(spec.folder)):
        found.append(root)  # --data-dir pointing at the dataset folder itself
    return found


def _has_train(folder: Path) -> bool:
    return (folder / "train.tsv").is_file() or (folder / "train.txt").is_file()


def resolve_dataset_path(name: str | DatasetSpec, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Where a named dataset is now (the bundled folder for bundled ones), or ``None`` when not found."""
    spec = get_spec(name)
    if spec.bundled:
        return Path(str(_bundled(spec)))
    for root, _ in search_roots(data_dir):
        for folder in _candidates(spec, root):
            if _has_train(folder):
                return folder
    return None


def _bundled(spec: DatasetSpec) -> Traversable:
    return importlib.resources.files("kgdistill.data").joinpath("bundled", spec.folder)


def _load_bundled(spec: DatasetSpec) -> KGDataset:
    res = _bundled(spec)
    if isinstance(res, Path):
        return KGDataset.from_folder(res, name=spec.name)
    with tempfile.TemporaryDirectory() as tmp:  # a zipped install: copy the files out first
        for item in res.iterdir():
            if item.is_file():
                (Path(tmp) / item.name).write_bytes(item.read_bytes())
        ds = KGDataset.from_folder(tmp, name=spec.name)
    ds.source = f"bundled:{spec.name}"
    return ds


def check_statistics(ds: KGDataset, spec: DatasetSpec) -> list[str]:
    """Compare loaded counts with the published ones; warn (not raise) and return the differences."""
    got = {"entities": ds.num_entities, "relations": ds.num_relations,
           **{s: int(ds.splits[s].shape[0]) for s in SPLITS}}
    diffs = [f"{k}: {got[k]} (published {v})" for k, v in spec.counts().items() if got[k] != v]
    if diffs:
        warnings.warn(f"dataset {spec.name} at {ds.source}: counts differ from the published statistics: "
                      f"{'; '.join(diffs)}", DatasetStatisticsWarning, stacklevel=3)
    return diffs


def _not_found(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> DataError:
    looked = [f"  - {', '.join(str(c) for c in _candidates(spec, root))}  ({origin})"
              for root, origin in search_roots(data_dir)]
    env = "" if os.environ.get(ENV_DATA) else f" ({ENV_DATA} is not set)"
    return DataError(
        f"dataset {spec.name!r} not found: no folder {spec.folder}/ with train.tsv, valid.tsv and test.tsv in\n"
        + "\n".join(looked)
        + f"\nTo fix: set {ENV_DATA} to a folder that holds {spec.folder}/{env}, pass --data-dir DIR, "
        f"or pass --download with --data-url URL (or set {ENV_URL}) to fetch checksummed copies into "
        f"{default_cache_dir()}.")


def load_dataset(name_or_path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
                 download: bool = False, data_url: str | None = None) -> KGDataset:
    """Load a bundled dataset, a named benchmark (data folders, cache, or download), or any folder of TSV files.

    A bare known name (``"umls"``, ``"WN18RR"``) is resolved by name; anything else that is an existing folder is
    loaded as is (write ``./umls`` to load a local folder named like a known dataset). Downloads go to ``data_dir``
    when given, else to the cache. Named datasets are checked against their published counts (a warning on mismatch).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    is_bare_name = "/" not in text and os.sep not in text and text not in (".", "..")
    known = is_bare_name and normalize_name(text) in {normalize_name(x) for s in DATASETS.values()
                                                      for x in (s.name, s.folder)}
    if not known and path.is_dir():
        return KGDataset.from_folder(path)
    if not known and not is_bare_name:
        raise DataError(f"{path}: no such folder (expected a folder with train.tsv, valid.tsv and test.tsv)")
    spec = get_spec(text)
    if spec.bundled:
        ds = _load_bundled(spec)
    else:
        if not download:
            check_data_dir(data_dir)
        folder = resolve_dataset_path(spec, data_dir)
        if folder is None:
            if not download:
                raise _not_found(spec, data_dir)
            folder = download_dataset(spec, data_url, data_dir or default_cache_dir())
        ds = KGDataset.from_folder(folder, name=spec.name)
    check_statistics(ds, spec)
    return ds


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mirror_help(spec: DatasetSpec) -> str:
    names = ", ".join(f.name for f in spec.files)
    return (f"A mirror is any http(s):// or file:// URL with one folder per dataset, as in the shared data README: "
            f"<URL>/{spec.folder}/ holding {names} (TSV, UTF-8, uncompressed; text files optional). "
            f"There is no default public mirror: pass --data-url URL or set {ENV_URL}.")


def _fetch(url: str, target: Path, expected: str, timeout: float) -> None:
    """Stream ``url`` to a temp file beside ``target``, check its sha256, then move it into place atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected:
            raise DataError(f"{target.name}: sha256 mismatch for {url}: expected {expected}, got {actual}; "
                            "the downloaded file was deleted. The mirror holds a different file.")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _is_missing(err: urllib.error.URLError) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in (404, 410)
    return isinstance(err.reason, FileNotFoundError)  # file:// mirrors


def download_dataset(spec: str | DatasetSpec, base_url: str | None = None,
                     dest_root: str | os.PathLike[str] | None = None, *,
                     timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download the files of ``spec`` from ``{base_url}/{spec.folder}/{file}`` into ``{dest_root}/{spec.folder}``.

    ``base_url`` defaults to ``$KGDISTILL_DATA_URL``, ``dest_root`` to the cache. Each file is checked against its
    sha256 before it is moved into place; files already present with the right hash are not fetched again; optional
    (text) files the mirror lacks are skipped with a warning. Returns the dataset folder.
    """
    spec = get_spec(spec)
    base_url = base_url or os.environ.get(ENV_URL)
    if not base_url:
        raise DataError(f"cannot download {spec.name!r}: no mirror URL. {_mirror_help(spec)}")
    dest = Path(dest_root or default_cache_dir()).expanduser() / spec.folder
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{dest}: cannot create the download folder ({err})") from None
    for file in spec.files:
        target = dest / file.name
        if target.is_file():
            if sha256_file(target) == file.sha256:
                continue
            warnings.warn(f"{target}: sha256 differs from the expected one; downloading it again", stacklevel=2)
        url = f"{base_url.rstrip('/')}/{spec.folder}/{file.name}"
        try:
            _fetch(url, target, file.sha256, timeout)
        except urllib.error.URLError as err:
            if _is_missing(err) and not file.required:
                warnings.warn(f"{url}: not on the mirror; skipping the optional file {file.name}", stacklevel=2)
                continue
            what = "required file missing on the mirror" if _is_missing(err) else f"download failed ({err})"
            raise DataError(f"{file.name}: {what}: {url}. {_mirror_help(spec)}") from None
        except (OSError, http.client.HTTPException) as err:  # timeouts, resets, truncated bodies, disk errors
            raise DataError(f"{file.name}: download failed from {url}: {err!r}") from None
    return dest


def verify_folder(spec: str | DatasetSpec, folder: str | os.PathLike[str]) -> dict[str, str]:
    """The sha256 status of each file of ``spec`` in ``folder``: ``ok``, ``mismatch``, ``missing`` (a required
    file) or ``absent`` (an optional file)."""
    spec, folder = get_spec(spec), Path(folder)
    status = {}
    for file in spec.files:
        path = folder / file.name
        if not path.is_file():
            status[file.name] = "missing" if file.required else "absent"
        else:
            status[file.name] = "ok" if sha256_file(path) == file.sha256 else "mismatch"
    return status


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, object]]:
    """One row per known dataset: name, kind, where it resolves now, published counts, text files available."""
    check_data_dir(data_dir)
    rows = []
    for spec in DATASETS.values():
        where = resolve_dataset_path(spec, data_dir)
        rows.append({"name": spec.name, "kind": "bundled" if spec.bundled else "external",
                     "location": str(where) if where is not None else "not found", **spec.counts(),
                     "text": bool(spec.text_files), "description": spec.description})
    return rows


__all__ = ["DATASETS", "DataFile", "DatasetSpec", "DatasetStatisticsWarning", "check_statistics",
           "default_cache_dir", "download_dataset", "get_spec", "list_datasets", "load_dataset",
           "resolve_dataset_path", "search_roots", "sha256_file", "verify_folder"]
