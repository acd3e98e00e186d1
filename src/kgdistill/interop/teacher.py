"""``--teacher`` accepting a PyKEEN result folder: imported once into ``OUT/teacher-pykeen`` (a normal run folder)."""

from __future__ import annotations

from pathlib import Path

from kgdistill.errors import ConfigError

IMPORTED = "teacher-pykeen"


def teacher_folder(teacher: str, dataset: str | None, out: str | Path, resume: bool = False,
                   trust_pickle: bool = False) -> str:
    """``teacher`` itself for a kgdistill run folder; for a PyKEEN result folder the run folder it is imported into
    (``OUT/teacher-pykeen``, reused when it already holds the import, e.g. with ``--resume``). Importing unpickles
    the PyKEEN folder, so it needs ``trust_pickle`` (``--trust-pickle``); reusing an import does not."""
    from kgdistill.interop.pykeen import is_pykeen_folder

    if not is_pykeen_folder(teacher):
        if dataset is not None:
            raise ConfigError("--dataset applies only to a PyKEEN --teacher folder (a run folder names its dataset)")
        return teacher
    if dataset is None:
        raise ConfigError(f"--teacher {teacher}: a PyKEEN result folder; give --dataset NAME (the kgdistill "
                          f"dataset whose ids it is mapped onto)")
    target = Path(out) / IMPORTED
    if (target / "model.json").exists():
        return str(target)
    from kgdistill.interop.pykeen import import_pykeen

    import_pykeen(teacher, dataset, target, trust_pickle=trust_pickle)
    return str(target)
