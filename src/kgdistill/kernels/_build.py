"""Compile the C++ kernels at first use, cache the shared library, load it with ctypes.

The library is built with the system C++ compiler (``$CXX``, else ``g++``/``c++``/``clang++``) for the CPU at hand
(``-march=native``) and cached under ``$KGDISTILL_KERNEL_CACHE`` (default ``~/.cache/kgdistill/kernels``), keyed by
a hash of the source, the flags, the compiler and the CPU, so a home folder shared by different machines never loads
a binary built for another CPU. Several processes may build at once: each writes a private file and renames it.
Any failure (no compiler, a compile error, an unloadable library) is reported once as a warning and leaves
:func:`load` returning None, and every caller then takes its pure-PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from kgdistill.kernels._source import SOURCE, VERSION

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_error: str | None = None

_BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno"]
# Tried in order: the first variant that compiles and loads wins.
_VARIANTS = [
    ["-march=native", "-mprefer-vector-width=512", "-fopenmp"],
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native"],
    [],
]

c_int, c_i64, c_f, c_p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {
    "kg_version": ([], c_int),
    "kg_max_threads": ([], c_int),
    "kg_all_pairs": ([c_int, c_p, c_i64, c_i64, c_p, c_i64, c_i64, c_i64, c_p, c_int], None),
    "kg_group_by_entity": ([c_p, c_i64, c_i64, c_p, c_p], None),
    "kg_corrupt_fwd": ([c_int, c_p, c_p, c_i64, c_p, c_i64, c_i64, c_p, c_p, c_i64, c_i64, c_i64, c_p, c_p, c_int],
                       None),
    "kg_corrupt_bwd": ([c_int, c_p, c_p, c_i64, c_p, c_i64, c_i64, c_p, c_p, c_i64, c_i64, c_i64, c_i64, c_p, c_p,
                        c_p, c_p, c_p, c_p, c_p, c_int], None),
}


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
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
        probe = tempfile.NamedTemporaryFile(dir=folder, delete=True)
        probe.close()
        if _trusted(folder):
            return folder
    except OSError:
        pass
    if _private_dir is None or not _private_dir.is_dir():
        _private_dir = Path(tempfile.mkdtemp(prefix="kgdistill-kernels-"))
    return _private_dir


def _load_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if lib.kg_version() != VERSION:
        raise OSError(f"{path}: kernel version {lib.kg_version()} != {VERSION}")
    return lib


def _build(cxx: str, folder: Path) -> tuple[ctypes.CDLL | None, str]:
    src_bytes = SOURCE.encode()
    ident = _compiler_version(cxx) + _cpu_identity() + platform.machine()
    errors = []
    for extra in _VARIANTS:
        flags = [*_BASE_FLAGS, *extra, f"-DKG_VERSION={VERSION}"]
        key = hashlib.sha256(src_bytes + " ".join([cxx, *flags]).encode() + ident.encode()).hexdigest()[:20]
        target = folder / f"kgdistill_kernels_{key}.so"
        if target.exists() and not _trusted(target):
            errors.append(f"{target}: not loaded (writable by others, or not ours); rebuilding it")
            try:
                target.unlink()
            except OSError:
                continue
        if target.exists():
            try:
                return _load_library(target), ""
            except OSError as err:  # corrupt or foreign file: rebuild it
                errors.append(f"load {target.name}: {err}")
        fd, tmp_src = tempfile.mkstemp(suffix=".cpp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(src_bytes)
        tmp_out = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            proc = subprocess.run([cxx, *flags, tmp_src, "-o", tmp_out], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                errors.append(f"{' '.join(extra) or 'plain'}: {proc.stderr.strip()[-400:]}")
                continue
            os.replace(tmp_out, target)
            return _load_library(target), ""
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(f"{' '.join(extra) or 'plain'}: {err}")
        finally:
            for leftover in (tmp_src, tmp_out):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
    return None, "; ".join(errors)


def load() -> ctypes.CDLL | None:
    """The kernel library, built on first call; None (after one warning) when it cannot be built or loaded."""
    global _lib, _tried, _error
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        import torch  # noqa: F401  (loads torch's libgomp first, so that the kernels share its OpenMP runtime)

        cxx = _compiler()
        if cxx is None:
            _error = "no C++ compiler found (set $CXX)"
        else:
            try:
                _lib, _error = _build(cxx, _writable_dir())
                _error = _error or None
            except OSError as err:
                _lib, _error = None, str(err)
        if _lib is None:
            warnings.warn(f"kgdistill: CPU kernels unavailable, using the PyTorch paths ({_error})", RuntimeWarning,
                          stacklevel=3)
        _tried = True
        return _lib


def load_error() -> str | None:
    """Why :func:`load` returned None (None when the library loaded or was never tried)."""
    return _error
