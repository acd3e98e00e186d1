"""Students by layer selection: keep some transformer layers of a teacher (or of the pretrained PLM).

PMD (AAAI 2024) keeps the hidden size and drops layers: 12 → 9 ``[0,2,3,5,6,7,9,10,11]`` → 6 ``[1,3,5,7,9,11]`` →
3 ``[2,6,10]``; its code initialises each grade from the *pretrained* PLM's layers, which is offered as
``init="pretrained"``; the default ``init="teacher"`` copies the selected layers of the (fine-tuned) teacher.
Embeddings (and anything outside ``encoder.layer``, e.g. MPNet's relative attention bias) are copied whole.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from kgdistill.errors import ConfigError
from kgdistill.text import plm as plm_mod
from kgdistill.text.biencoder import BiEncoder

PAPER_LAYERS_12 = {12: list(range(12)), 9: [0, 2, 3, 5, 6, 7, 9, 10, 11], 6: [1, 3, 5, 7, 9, 11], 3: [2, 6, 10]}
_LAYER_KEY = re.compile(r"^(?P<pre>(?:.*\.)?encoder\.layer\.)(?P<idx>\d+)(?P<post>\..*)$")


LAYER_CHOICES = ("top", "paper")


def default_layers(num_layers: int, keep: int, choice: str = "top") -> list[int]:
    """Layers kept when going from ``num_layers`` to ``keep``: the PMD paper's choice from 12 layers, otherwise

    * ``choice="top"``: evenly spaced ending at the top layer (``6 → 4``: ``[0, 2, 3, 5]``, ``6 → 3``: ``[1, 3, 5]``,
      ``6 → 2``: ``[2, 5]``, ``6 → 1``: ``[5]``);
    * ``choice="paper"``: the centre of each of ``keep`` equal blocks, ``⌊(i + ½)·N/k⌋`` (the upper middle of an
      even block), which is the rule behind the paper's 12 → 6 ``[1,3,5,7,9,11]`` and 12 → 3 ``[2,6,10]``
      (``6 → 4``: ``[0, 2, 3, 5]``, ``6 → 3``: ``[1, 3, 5]``, ``6 → 2``: ``[1, 4]``, ``6 → 1``: ``[3]``).
    """
    if choice not in LAYER_CHOICES:
        raise ConfigError(f"layer_choice must be one of {', '.join(LAYER_CHOICES)}, got {choice!r}")
    if not 1 <= keep <= num_layers:
        raise ConfigError(f"cannot keep {keep} of {num_layers} layers")
    if num_layers == 12 and keep in PAPER_LAYERS_12:
        return list(PAPER_LAYERS_12[keep])
    if choice == "paper":
        return [(2 * i + 1) * num_layers // (2 * keep) for i in range(keep)]
    return [(i + 1) * num_layers // keep - 1 for i in range(keep)]


def nearest_held(held: list[int], targets: list[int]) -> list[int]:
    """Positions in ``held`` (the original-model layers a teacher grade holds, increasing) of the layers nearest to
    ``targets`` (original-model layers), ties to the lower, each position used once: how a grade initialised from
    its teacher approximates layers counted on the chain's original model (``held = [1,3,5,7,9,11]``,
    ``targets = [2,6,10]`` → ``[0, 2, 4]``, i.e. original layers ``[1, 5, 9]``)."""
    if len(targets) > len(held):
        raise ConfigError(f"cannot keep {len(targets)} of {len(held)} layers")
    free, out = list(range(len(held))), []
    for k, t in enumerate(targets):
        # leave enough positions above for the targets still to place, keep the order increasing
        lo = out[-1] + 1 if out else 0
        hi = len(held) - (len(targets) - k)
        cand = [p for p in free if lo <= p <= hi]
        best = min(cand, key=lambda p: (abs(held[p] - t), held[p]))
        out.append(best)
        free.remove(best)
    return out


def check_same_plm(teacher: BiEncoder, plm: str | None) -> None:
    """A student keeps its teacher's PLM and vocabulary: one-line error when ``plm`` (the run's ``model.plm``)
    names another PLM than the teacher's (:func:`make_student` checks the vocabulary of a pretrained init)."""
    if not plm:
        return
    teacher_plm = str(teacher.config().get("plm_name") or "")
    asked = _plm_key(plm)
    if teacher_plm and asked != _plm_key(teacher_plm):
        raise ConfigError(f"the teacher was trained from PLM {teacher_plm!r}, the student asks for {plm!r}: a student "
                          f"keeps its teacher's PLM and vocabulary (pass --plm {teacher_plm} or another teacher)")


def _plm_key(name: str) -> str:
    try:
        return plm_mod.resolve_plm(name).name
    except ConfigError:
        return name


def check_layers(layers: list[int], num_layers: int) -> list[int]:
    layers = [int(x) for x in layers]
    if not layers:
        raise ConfigError("layer selection is empty")
    bad = [x for x in layers if not 0 <= x < num_layers]
    if bad:
        raise ConfigError(f"layers {bad} out of range: the source has layers 0..{num_layers - 1}")
    if sorted(set(layers)) != layers:
        raise ConfigError(f"layers must be increasing and distinct, got {layers}")
    return layers


def layer_state(state: dict[str, torch.Tensor], layers: list[int]) -> dict[str, torch.Tensor]:
    """Renumber ``...encoder.layer.<j>...`` keys: student layer ``i`` takes source layer ``layers[i]``; other
    layers are dropped, every non-layer key is kept."""
    position = {j: i for i, j in enumerate(layers)}
    out = {}
    for key, value in state.items():
        m = _LAYER_KEY.match(key)
        if m is None:
            out[key] = value
        elif int(m.group("idx")) in position:
            out[f"{m.group('pre')}{position[int(m.group('idx'))]}{m.group('post')}"] = value
    return out


def select_layers(encoder: nn.Module, layers: list[int]) -> nn.Module:
    """A new encoder holding copies of ``layers`` of ``encoder`` (same hidden size, embeddings copied)."""
    layers = check_layers(layers, len(plm_mod.encoder_layers(encoder)))
    cfg = {**plm_mod.plm_config_dict(encoder), "num_hidden_layers": len(layers)}
    new = plm_mod.encoder_from_config(cfg, getattr(encoder.config, "_attn_implementation", "sdpa") or "sdpa")
    new.load_state_dict(layer_state(encoder.state_dict(), layers))
    return new


def make_student(teacher: BiEncoder, layers: list[int], init: str = "teacher", plm: str | None = None,
                 **changes: Any) -> BiEncoder:
    """A bi-encoder with ``len(layers)`` layers per encoder, texts and options of ``teacher``.

    ``init="teacher"``: layer ``i`` of each encoder copies ``teacher`` layer ``layers[i]`` (embeddings and the
    temperature too). ``init="pretrained"``: copies layer ``layers[i]`` of the pretrained PLM (``plm`` or the
    teacher's own PLM name), as the PMD code does; the temperature restarts at its initial value.
    """
    if init not in ("teacher", "pretrained"):
        raise ConfigError(f"student init must be 'teacher' or 'pretrained', got {init!r}")
    args = teacher.config()
    cfg = dict(args["plm_config"])
    if init == "teacher":
        layers = check_layers(layers, teacher.num_layers)
        hr_state, tail_state = teacher.hr_encoder.state_dict(), teacher.tail_encoder.state_dict()
    else:
        name = plm or args.get("plm_name") or ""
        spec = plm_mod.resolve_plm(name)
        if spec.path is None:
            raise ConfigError(f"init='pretrained' needs a pretrained PLM; the teacher's is {name!r}")
        tok, enc = plm_mod.load_pretrained(spec.path)
        if dict(tok.get_vocab()) != dict(teacher.tokenizer.get_vocab()):
            raise ConfigError(f"PLM {name!r} has another vocabulary than the teacher's tokenizer: its layers cannot "
                              f"initialise a student of this teacher")
        layers = check_layers(layers, len(plm_mod.encoder_layers(enc)))
        if plm_mod.plm_config_dict(enc)["hidden_size"] != cfg["hidden_size"]:
            raise ConfigError(f"PLM {name!r} has another hidden size than the teacher")
        cfg = plm_mod.plm_config_dict(enc)
        hr_state = tail_state = enc.state_dict()
    cfg["num_hidden_layers"] = len(layers)
    student = BiEncoder(**{**args, "plm_config": cfg, **changes})
    student.hr_encoder.load_state_dict(layer_state(hr_state, layers))
    student.tail_encoder.load_state_dict(layer_state(tail_state, layers))
    student.train_triples.copy_(teacher.train_triples)
    if init == "teacher":
        with torch.no_grad():
            student.log_inv_t.copy_(teacher.log_inv_t)
    return student
