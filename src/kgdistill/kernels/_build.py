"""Compile the C++ kernels at first use with ``torch.utils.cpp_extension``, cache the library, load its operators.

The library (:mod:`kgdistill.kernels._source`: the kernels and their ``TORCH_LIBRARY`` registration) is built by
``torch.utils.cpp_extension.load`` (ninja and the C++ compiler torch uses: ``$CXX``, else ``c++``) for the CPU at hand
(``-march=native``) and cached under ``$KGDISTILL_KERNEL_CACHE`` (default ``~/.cache/kgdistill/kernels``), keyed by a
hash of the source, the flags, the compiler, torch, Python and the CPU, so a home folder shared by different machines
never loads a binary built for another CPU or torch. The cache is used only when it is ours alone (owner, not
group/world-writable; else a private ``mkdtemp`` folder of this process). Each build runs in its own fresh folder
inside it and the finished library is renamed into place, so several processes may build at once and a killed build
leaves no lock behind. A cached library is loaded with ``torch.ops.load_library`` (no compiler, no ninja needed).
Any failure (no compiler, no ninja, a compile error, an unloadable library) is reported once as a warning and leaves
:func:`load` returning None, and every caller then takes its pure-PyTorch path.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from kgdistill.kernels._source import SOURCE, VERSION

_lock = threading.Lock()
_lib: str | None = None
_tried = False
_error: str | None = None

_BASE_FLAGS = ["-O3", "-fno-math-errno"]
# Tried in order: the first variant that compiles and loads wins.
_VARIANTS = [
    ["-march=native", "-mprefer-vector-width=512", "-fopenmp"],
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native"],
    [],
]


def _compiler() -> str | None:
    """The compiler ``torch.utils.cpp_extension`` will call (``$CXX``, else ``c++``), when it exists."""
    name = os.environ.get("CXX") or "c++"
    return name if shutil.which(name) else None


def _ninja_dir() -> str | None:
    """Folder holding the ``ninja`` of the ``ninja`` wheel (a dependency) when ``ninja`` is not on ``PATH`` (a venv
    used without activating it); None when it is on ``PATH`` or not installed."""
    if shutil.which("ninja"):
        return None
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return None
    folder = getattr(ninja, "BIN_DIR", None)
    return folder if folder and shutil.which("ninja", path=folder) else None


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cache_dir() -> Path:
    env = os.environ.get("KGDISTILL_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kgdistill" / "kernels"


_private_dir: Path | None = None


def _trusted(path: Path) -> bool:
    """Only this user can have written ``path``: owned by us, not writable by group or others. A cached library
    in a folder someone else can write to could be theirs, and loading it runs their code."""
    if not hasattr(os, "getuid"):
        return True
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _writable_dir() -> Path:
    """The kernel cache (:func:`cache_dir`) when it is ours alone and writable; otherwise a private folder made for
    this process (``mkdtemp``: random name, mode 0700), never a predictable shared path in the temp folder."""
    global _private_dir
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=folder, delete=True):
            pass
        if _trusted(folder):
            return folder
    except OSError:
        pass
    if _private_dir is None or not _private_dir.is_dir():
        _private_dir = Path(tempfile.mkdtemp(prefix="kgdistill-kernels-"))
    return _private_dir


def _key(cxx: str, extra: list[str]) -> str:
    import torch

    flags = [*_BASE_FLAGS, *extra, f"-DKG_VERSION={VERSION}"]
    ident = (_compiler_version(cxx) + _cpu_identity() + platform.machine() + torch.__version__
             + str(torch.version.git_version) + sys.version)
    return hashlib.sha256(SOURCE.encode() + " ".join([cxx, *flags]).encode() + ident.encode()).hexdigest()[:20]


def _compile(name: str, extra: list[str], folder: Path, target: Path) -> None:
    """Build ``name`` in a fresh private folder under ``folder`` and rename the library to ``target``; the build also
    loads it (``is_python_module=False``: ``torch.ops.load_library``)."""
    from torch.utils import cpp_extension

    build_dir = Path(tempfile.mkdtemp(prefix=f"{name}.build.", dir=folder))
    path_before = os.environ.get("PATH")
    ninja_dir = _ninja_dir()
    try:
        source = build_dir / "kgdistill_kernels.cpp"
        source.write_text(SOURCE, encoding="utf-8")
        if ninja_dir is not None:  # only for this build (cpp_extension runs the ninja on PATH)
            os.environ["PATH"] = ninja_dir + os.pathsep + (path_before or "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cpp_extension's notes on compiler versions: a failure raises anyway
            built = cpp_extension.load(name, [str(source)], extra_cflags=[*_BASE_FLAGS, *extra, f"-DKG_VERSION={VERSION}"],
                                       extra_ldflags=["-fopenmp"] if "-fopenmp" in extra else [],
                                       build_directory=str(build_dir), verbose=False, is_python_module=False)
        try:
            os.chmod(built, 0o755)  # whatever the umask: a group-writable library would never be trusted again
            os.replace(built, target)
        except OSError:
            pass  # loaded already (from the build folder); the next process builds again
    finally:
        if ninja_dir is not None:
            if path_before is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = path_before
        shutil.rmtree(build_dir, ignore_errors=True)


def _build(cxx: str, folder: Path) -> tuple[str | None, str]:
    import torch

    errors = []
    for extra in _VARIANTS:
        name = f"kgdistill_kernels_{_key(cxx, extra)}"
        target = folder / f"{name}.so"
        if target.exists() and not _trusted(target):
            errors.append(f"{target}: not loaded (writable by others, or not ours); rebuilding it")
            try:
                target.unlink()
            except OSError:
                continue
        if target.exists():
            try:
                torch.ops.load_library(str(target))
                return str(target), ""
            except OSError as err:  # corrupt or foreign file: rebuild it
                errors.append(f"load {target.name}: {err}")
        if not shutil.which("ninja") and _ninja_dir() is None:
            errors.append("ninja not found (pip install ninja)")
            break
        try:
            _compile(name, extra, folder, target)
            return str(target), ""
        except Exception as err:  # noqa: BLE001  (a compile error is a RuntimeError carrying the compiler's output)
            errors.append(f"{' '.join(extra) or 'plain'}: {str(err).strip()[-400:]}")
    return None, "; ".join(errors)


def load() -> str | None:
    """Path of the loaded kernel library (its operators registered under ``torch.ops.kgdistill``), built on first
    call; None (after one warning) when it cannot be built or loaded."""
    global _lib, _tried, _error
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        cxx = _compiler()
        if cxx is None:
            _error = "no C++ compiler found (set $CXX)"
        else:
            try:
                _lib, _error = _build(cxx, _writable_dir())
                _error = _error or None
            except OSError as err:
                _lib, _error = None, str(err)
        if _lib is not None:
            from kgdistill.kernels import _ops

            _ops.register()
        else:
            warnings.warn(f"kgdistill: CPU kernels unavailable, using the PyTorch paths ({_error})", RuntimeWarning,
                          stacklevel=3)
        _tried = True
        return _lib


def load_error() -> str | None:
    """Why :func:`load` returned None (None when the library loaded or was never tried)."""
    return _error
