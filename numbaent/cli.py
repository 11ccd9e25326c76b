"""The ``numbaent`` command line: ``numbaent score`` and ``numbaent info``.

``numbaent score LOGITS`` reads logits from a ``.npy`` file (memory-mapped, so files larger
than memory work) or a ``.npz`` file (arrays taken by name: ``logits``, and ``labels`` /
``teacher_logits`` when present and not given separately; an uncompressed ``.npz`` member is
memory-mapped too, a compressed one is read whole). Rows are scored in chunks with
:func:`numbaent.score`; the chunks' exact ``SummaryState`` sums are merged, so the summary is
bit-identical to the summary of all rows in one piece, whatever ``--chunk-rows`` is.
``-o OUT.npz`` / ``-o OUT.parquet`` writes the per-row arrays, through a temporary file in the
same directory that is renamed into place only when everything succeeded.

``numbaent score --hidden H --weight W [--bias B]`` scores the logits ``H @ W.T + B`` instead, with
:func:`numbaent.linear_score` on each row chunk of the hidden states (which makes the chunk's
logits class chunk by class chunk and never holds them); a teacher is ``--teacher-hidden TH
--teacher-weight TW [--teacher-bias TB]``. The row chunks, the summary, ``-o``, the progress line
and the report are those of the logits path (one loop serves both: ``_run_score``); a ``--hidden``
``.npz`` carries ``weight``, ``bias``, ``labels`` and the teacher's arrays along by name.

``numbaent info`` prints versions, the backends with the reasons they are (un)available, the
Numba thread count, and the CUDA device name when the cuda backend is available.

Errors are reported as one line, ``numbaent: error: <message>``, on stderr with exit status 2; they
name the user's files (the ``-o`` path, never the temporary file). SIGINT, SIGTERM and SIGHUP stop
a command with one line, ``numbaent: interrupted (SIGTERM)``, and exit status 128 + the signal
number (130, 143, 129), the temporary output file removed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import mmap
import os
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _validate
from ._summary import DEFAULT_BINS, DEFAULT_TOP_K, SummaryState, check_top_k

__all__ = ["main", "load_array", "CliError"]

PROG = "numbaent"
#: default chunk size target, in bytes of logits (plus teacher logits) per chunk
CHUNK_BYTES = 256 * 2**20
#: per-row fields of ``numbaent.Scores`` (used when the object is not a dataclass)
SCORE_FIELDS = ("logsumexp", "entropy", "argmax", "confidence", "margin", "cross_entropy",
                "correct", "rank", "brier", "kl_divergence")  # fmt: skip
#: names tried, in order, for each input taken from a ``.npz``
NPZ_NAMES = {
    "logits": ("logits",),
    "labels": ("labels",),
    "teacher": ("teacher_logits", "logits"),
    "hidden": ("hidden",),
    "weight": ("weight",),
    "bias": ("bias",),
    "teacher_hidden": ("teacher_hidden", "hidden"),
    "teacher_weight": ("teacher_weight", "weight"),
    "teacher_bias": ("teacher_bias", "bias"),
}

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class CliError(Exception):
    """An error reported to the user as ``numbaent: error: <message>`` (exit status 2)."""


# --------------------------------------------------------------------------------------------------
# input files
# --------------------------------------------------------------------------------------------------


class _PageDropper:
    """Keeps the resident set of a memory-mapped input small: after a chunk of rows is scored its
    pages are released from this process (``MADV_DONTNEED``; they stay in the page cache, so this
    costs no I/O), and the next chunk is announced to the kernel (``MADV_WILLNEED``) so its
    read-ahead overlaps the scoring. Without this the RSS grows to the size of the file."""

    def __init__(self, arr: np.ndarray | None):
        self.mm = None
        base = arr
        while base is not None:
            mm = getattr(base, "_mmap", None)
            if isinstance(mm, mmap.mmap):
                self.mm = mm
                break
            base = getattr(base, "base", None)
        if self.mm is not None:
            self.start = np.frombuffer(self.mm, np.uint8).__array_interface__["data"][0]
            self.size = len(self.mm)
            self.page = mmap.PAGESIZE
            self._advise(getattr(mmap, "MADV_SEQUENTIAL", None), 0, self.size)

    def _advise(self, option, lo: int, hi: int) -> None:
        if self.mm is None or option is None:
            return
        lo = max(0, (lo // self.page) * self.page)
        hi = min(self.size, hi)
        if hi > lo:
            try:
                self.mm.madvise(option, lo, hi - lo)
            except (OSError, ValueError):  # advisory only
                pass

    def _offset(self, view: np.ndarray) -> tuple[int, int]:
        lo = view.__array_interface__["data"][0] - self.start
        return lo, lo + view.nbytes

    def done(self, view: np.ndarray) -> None:
        if self.mm is not None and view.size:
            lo, hi = self._offset(view)
            self._advise(getattr(mmap, "MADV_DONTNEED", None), lo, (hi // self.page) * self.page)

    def next(self, view: np.ndarray) -> None:
        # (MADV_POPULATE_READ from a helper thread was tried: slower on 2 cores, higher RSS)
        if self.mm is not None and view.size:
            lo, hi = self._offset(view)
            self._advise(getattr(mmap, "MADV_WILLNEED", None), lo, hi)


def _sniff(path: Path) -> str:
    """Return ``"npy"`` or ``"npz"`` from the file's magic bytes (the extension is not trusted)."""
    if path.is_dir():
        raise CliError(f"{path}: is a directory")
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head[:4] in _ZIP_MAGIC:
        return "npz"
    raise CliError(f"{path}: not a .npy or .npz file")


def _read_header(f, where: str, available: int) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, header length) of the ``.npy`` data at ``f``'s position,
    with the shape checked before any NumPy arithmetic sees it: no negative dimension, and no
    more bytes than the ``available`` ones (so no product that overflows, and no NumPy warning
    ahead of the error). ``where`` names the file (and member) in errors."""
    start = f.tell()
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    elif version == (3, 0) and hasattr(np.lib.format, "_read_array_header"):
        shape, fortran, dtype = np.lib.format._read_array_header(f, version)
    else:
        raise CliError(f"{where}: unsupported .npy format version {version}")
    header = f.tell() - start
    if any(d < 0 for d in shape):
        raise CliError(f"{where}: corrupt .npy header: negative dimension in shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: exact, whatever the shape
    if nbytes > available - header:
        raise CliError(
            f"{where}: truncated or corrupt: its header's shape {shape} of {dtype} needs "
            f"{nbytes:,} bytes of data, there are {max(0, available - header):,}"
        )
    return shape, fortran, dtype, header


def _check_dtype(dtype: np.dtype, where: str) -> None:
    """Reject an object array from its header, before its data is touched."""
    if dtype.hasobject:
        raise CliError(f"{where}: object arrays are not supported")


def _is_raw_bf16(dtype: np.dtype) -> bool:
    """NumPy saves a bfloat16 array with the header descr '<V2' (a 2-byte void): read it back."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.names is None


def _as_bf16(arr: np.ndarray, spec: str) -> np.ndarray:
    """A view of a raw ``|V2`` array (a bfloat16 ``.npy``) as ``ml_dtypes.bfloat16`` (no copy)."""
    try:
        import ml_dtypes
    except ImportError:
        raise CliError(
            f"{spec}: a bfloat16 .npy (raw |V2) needs ml_dtypes to be read (pip install ml_dtypes)"
        ) from None
    return arr.view(ml_dtypes.bfloat16)


def _check_role(arr: np.ndarray, spec: str, role: str) -> None:
    """``score``'s inputs: logits and teacher logits of a floating dtype numbaent computes with,
    integer labels; the error names the file (``spec``) and the dtype."""
    dtype = arr.dtype
    if role == "labels":
        if dtype.kind not in "iu":
            raise CliError(
                f"{spec}: dtype {dtype} is not supported for labels (supported: integer dtypes)"
            )
        return
    if not _validate.is_float_dtype(dtype.newbyteorder("=")):
        # the floating dtypes numbaent computes with that a .npy can hold (not bfloat16)
        supported = ", ".join(sorted(str(d) for d in _validate._FLOATS if d.kind == "f"))
        raise CliError(
            f"{spec}: dtype {dtype} is not supported for {role} (supported: {supported}, bfloat16)"
        )


def _mmap_npz_member(zf: zipfile.ZipFile, path: Path, member: str) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npy`` member of a zip file; None if that is not possible
    (compressed or encrypted: ``np.load`` reads it whole). The member's header is checked first
    either way (see ``_read_header``)."""
    info = zf.getinfo(member)
    if info.flag_bits & 0x1:  # encrypted: np.load gives its own error
        return None
    where = f"{path}[{member[:-4]}]"
    try:
        m = zf.open(member)
    except (NotImplementedError, RuntimeError):  # a compression zipfile cannot read
        return None
    with m:
        shape, fortran, dtype, header = _read_header(m, where, info.file_size)
    _check_dtype(dtype, where)
    if info.compress_type != zipfile.ZIP_STORED:  # compressed: read whole by np.load
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    offset = info.header_offset + 30 + name_len + extra_len + header
    nbytes = math.prod(shape) * dtype.itemsize
    if header + nbytes != info.file_size:
        return None
    if nbytes == 0:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    return np.memmap(
        path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset
    )


def _npz_members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _load_npz(path: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        arr = _mmap_npz_member(zf, path, name + ".npy")
    if arr is None:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[name]
    return arr


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        _, _, dtype, _ = _read_header(f, str(path), os.fstat(f.fileno()).st_size)
    _check_dtype(dtype, str(path))
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _split_spec(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``FILE.npz:NAME`` -> (FILE.npz, NAME) when FILE.npz is a file and the whole spec is not."""
    path = Path(spec)
    if not path.exists() and ":" in str(spec):
        base, _, explicit = str(spec).rpartition(":")
        if base and explicit and Path(base).is_file():
            return Path(base), explicit
    return path, None


def load_array(spec: str | os.PathLike[str], role: str = "logits") -> np.ndarray:
    """Load one input array.

    ``spec`` is a ``.npy`` file (memory-mapped read-only), a ``.npz`` file (the array named
    after ``role``: see ``NPZ_NAMES``; a ``.npz`` holding a single array gives that array), or
    ``FILE.npz:NAME`` to pick the array ``NAME`` explicitly. Problems raise :class:`CliError`
    or ``OSError``.
    """
    return load_located(*locate(spec, role))


def load_located(path: Path, kind: str, name: str) -> np.ndarray:
    """Load the array that :func:`locate` found."""
    try:
        return _load_npy(path) if kind == "npy" else _load_npz(path, name)
    except zipfile.BadZipFile as e:
        raise CliError(f"{path}: not a readable .npz file ({e})") from None
    except (ValueError, EOFError) as e:
        raise CliError(f"{path}: cannot read ({_one_line(e)})") from None


def locate(spec: str | os.PathLike[str], role: str = "logits") -> tuple[Path, str, str]:
    """(path, "npy" or "npz", the member's name or "") of the array ``spec`` names for ``role``
    (see :func:`load_array`); the name is what the report shows as FILE.npz:NAME."""
    path, name = _split_spec(spec)
    if not path.exists():
        raise CliError(f"{spec}: no such file")
    kind = _sniff(path)
    if kind == "npy":
        if name is not None:
            raise CliError(f"{spec}: ':NAME' only applies to .npz files")
        return path, kind, ""
    try:
        members = _npz_members(path)
    except zipfile.BadZipFile as e:
        raise CliError(f"{path}: not a readable .npz file ({e})") from None
    if name is None:
        for cand in NPZ_NAMES.get(role, (role,)):
            if cand in members:
                return path, kind, cand
        if len(members) == 1:
            return path, kind, members[0]
        wanted = " or ".join(repr(c) for c in NPZ_NAMES.get(role, (role,)))
        have = ", ".join(repr(m) for m in members) or "none"
        raise CliError(f"{path}: no array named {wanted} (arrays: {have})")
    if name not in members:
        have = ", ".join(repr(m) for m in members) or "none"
        raise CliError(f"{path}: no array named {name!r} (arrays: {have})")
    return path, kind, name


# --------------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# stop signals
# --------------------------------------------------------------------------------------------------


class Interrupted(BaseException):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived while a command ran. A BaseException, as
    KeyboardInterrupt is: no ``except Exception`` swallows it, and the cleanup on the way out
    (removing the temporary output file) runs. ``main`` reports it as one line on stderr and
    exits with status 128 + the signal number (130, 143, 129)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


class _StopSignals:
    """The one handler of the stop signals: each raises :class:`Interrupted` in the main thread
    (SIGINT included, which Python would turn into KeyboardInterrupt).

    Inside :meth:`deferred` a signal is only noted, and raised when the block is done: creating,
    renaming and removing the temporary output file are never cut in half. (A flag, not a blocked
    signal mask: the mask is per thread, and the signal may reach one of Numba's threads.)"""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.signals = [s for s in (getattr(signal, n, None) for n in self.NAMES) if s is not None]
        self.depth = 0
        self.pending: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth:
            if self.pending is None:
                self.pending = signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the stop signals while the block runs (main thread only: elsewhere Python
        cannot install handlers), then put the previous handlers back."""
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                prev = signal.getsignal(sig)
                signal.signal(sig, self._handler)
                old[sig] = signal.SIG_DFL if prev is None else prev
        self.pending = None
        try:
            yield
        finally:
            for sig, prev in old.items():
                signal.signal(sig, prev)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


_SIGNALS = _StopSignals()


def _interrupted(e: Interrupted) -> int:
    print(f"{PROG}: interrupted ({e.name})", file=sys.stderr)
    return 128 + e.signum


# --------------------------------------------------------------------------------------------------
# output files
# --------------------------------------------------------------------------------------------------


def _score_arrays(scores: Any, n_rows: int) -> dict[str, np.ndarray]:
    """The per-row arrays of a ``Scores`` object (its public fields of shape ``(n_rows,)``)."""
    if dataclasses.is_dataclass(scores):
        names: Iterable[str] = (f.name for f in dataclasses.fields(scores))
    else:
        names = SCORE_FIELDS
    out = {}
    for n in names:
        v = getattr(scores, n, None)
        if n.startswith("_") or v is None:
            continue
        a = np.asarray(v)
        if a.shape == (n_rows,):
            out[n] = a
    return out


class _Writer:
    """Collects per-row arrays chunk by chunk and writes ``.npz`` or ``.parquet`` atomically.

    Everything goes to a hidden temporary file next to ``path``, renamed into place by
    :meth:`commit`. Errors name ``path`` (the user's ``-o``), never the temporary file: an
    ``OSError`` of the file system (disk full, read-only directory, ...) becomes a
    :class:`CliError`. Creating, renaming and removing the temporary file hold the stop signals
    back (see ``_StopSignals``), so an interrupted run leaves no file behind."""

    def __init__(self, path: Path, n_rows: int, batch_shape: tuple[int, ...]):
        self.path = path
        self.n_rows = n_rows
        self.batch_shape = batch_shape
        self.kind = path.suffix.lower()
        self.tmp: Path | None = None
        if self.kind not in (".npz", ".parquet"):
            raise CliError(f"{path}: output must end in .npz or .parquet")
        if self.kind == ".parquet":
            try:
                import pyarrow  # noqa: F401
                import pyarrow.parquet  # noqa: F401
            except ImportError:
                raise CliError("writing .parquet needs pyarrow (pip install pyarrow)") from None
        parent = path.parent
        if not parent.is_dir():
            raise CliError(f"{path}: directory {str(parent)!r} does not exist")
        if path.is_dir():
            raise CliError(f"{path}: is a directory")
        self.arrays: dict[str, np.ndarray] = {}
        self._pq_writer = None
        self._pos = 0

    def open(self) -> None:
        """Create the temporary file. (Not in ``__init__``: a signal that arrived meanwhile is
        raised on the way out, and the caller must hold the writer then, to discard it.)"""
        with _SIGNALS.deferred(), self._os_errors("create"):
            fd, tmp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            os.close(fd)
            self.tmp = Path(tmp)

    @contextlib.contextmanager
    def _os_errors(self, doing: str) -> Iterator[None]:
        """An OSError of the block as a CliError that names the output path."""
        try:
            yield
        except OSError as e:
            reason = e.strerror or _one_line(e)
            if self.tmp is not None:  # a message of a library may name the temporary file
                reason = reason.replace(str(self.tmp), str(self.path))
            if e.errno == errno.ENOSPC and "space" not in reason.lower():
                reason += f" ({os.strerror(errno.ENOSPC)})"
            raise CliError(f"{self.path}: cannot {doing} the output file: {reason}") from None

    def add(self, rows: dict[str, np.ndarray]) -> None:
        n = None
        for name, a in rows.items():
            a = a.reshape(-1)
            n = a.shape[0] if n is None else n
            if self.kind == ".npz":
                if name not in self.arrays:
                    self.arrays[name] = np.empty(self.n_rows, dtype=a.dtype)
                self.arrays[name][self._pos : self._pos + a.shape[0]] = a
        if self.kind == ".parquet" and rows:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({k: v.reshape(-1) for k, v in rows.items()})
            with self._os_errors("write"):
                if self._pq_writer is None:
                    self._pq_writer = pq.ParquetWriter(str(self.tmp), table.schema)
                self._pq_writer.write_table(table)
        self._pos += n or 0

    def commit(self) -> None:
        with self._os_errors("write"):
            if self.kind == ".npz":
                with open(self.tmp, "wb") as f:
                    arrays = {k: v.reshape(self.batch_shape) for k, v in self.arrays.items()}
                    np.savez(f, **arrays)
            else:
                if self._pq_writer is None:
                    raise CliError("no per-row arrays to write")
                self._pq_writer.close()
                self._pq_writer = None
            umask = os.umask(0)
            os.umask(umask)
            with _SIGNALS.deferred():
                os.chmod(self.tmp, 0o666 & ~umask)
                os.replace(self.tmp, self.path)
                self.tmp = None

    def discard(self) -> None:
        """Remove the temporary file (idempotent; errors on the way out are not reported)."""
        with _SIGNALS.deferred():
            if self._pq_writer is not None:
                try:
                    self._pq_writer.close()
                except Exception:
                    pass
                self._pq_writer = None
            if self.tmp is not None:
                try:
                    self.tmp.unlink()
                except OSError:
                    pass
                self.tmp = None


# --------------------------------------------------------------------------------------------------
# progress bar (stderr, only when it is a terminal)
# --------------------------------------------------------------------------------------------------


class _Progress:
    """One status line on stderr (a terminal only): rows done, rate, GB/s of input, elapsed, ETA.
    Before the first chunk it says that a first run compiles the kernels (Numba caches them)."""

    def __init__(self, total: int, enabled: bool, row_bytes: int = 0, stream=None, clock=None):
        self.total = total
        self.enabled = enabled and total > 0
        self.active = False
        self.row_bytes = row_bytes
        self.stream = sys.stderr if stream is None else stream
        self.clock = time.monotonic if clock is None else clock
        self.t0 = self.clock()
        self._last = -1.0

    def _write(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self.active = True

    def start(self) -> None:
        if self.enabled:
            self._write("scoring the first chunk (a first run compiles the kernels: ~10-30 s)")

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        width = 24
        frac = done / self.total
        bar = "#" * int(frac * width)
        el = max(now - self.t0, 1e-9)
        rate = done / el
        eta = (self.total - done) / rate if rate > 0 else math.inf
        self._write(
            f"[{bar:<{width}}] {done:,}/{self.total:,} rows {frac:6.1%}  {rate:,.0f} rows/s  "
            f"{rate * self.row_bytes / 1e9:.2f} GB/s  {_clock(el)} elapsed  ETA {_clock(eta)}"
        )

    def close(self) -> None:
        if self.active:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.active = False


def _clock(seconds: float) -> str:
    """h:mm:ss or m:ss; '?' when unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------


def _units(base: float | None) -> str:
    if base is None or base == math.e:
        return "nats"
    if base == 2:
        return "bits"
    if base == 10:
        return "hartleys"
    return f"log base {base:g}"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.6g}"


def _table(rows: Sequence[tuple[str, ...]], indent: str = "") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    if math.isfinite(f):
        return f
    # null is "not computed"; a computed NaN or infinity is a string (JSON has no such numbers)
    return "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")


def _parse_base(text: str) -> float | None:
    if text.strip().lower() == "e":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid base {text!r} (a number, or 'e')") from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _parse_top_k(text: str) -> tuple[int, ...]:
    """``--top-k 1,5`` -> (1, 5): comma-separated positive integers."""
    try:
        return check_top_k([int(t) for t in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid top-k {text!r} (comma-separated positive integers, e.g. 1,5)"
        ) from None


def _summary_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as JSON values (``top_k_accuracy``: an object keyed by k)."""
    doc = {}
    for k, v in summary.items():
        if isinstance(v, dict):
            doc[k] = {str(kk): _json_value(vv) for kk, vv in v.items()}
        else:
            doc[k] = _json_value(v)
    return doc


def _summary_rows(summary: dict[str, Any], units: str, bins: int) -> list[tuple[str, str, str]]:
    """The table's rows of the summary: key, value, unit (or what the value is of)."""
    in_units = ("cross_entropy", "entropy", "kl_divergence", "sequence_log_likelihood")
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict):  # top_k_accuracy: one row per k
            rows.extend((k, _fmt(a), f"k={kk}") for kk, a in v.items())
        elif v is not None and k in in_units:
            rows.append((k, _fmt(v), units))
        elif v is not None and k in ("ece", "mce"):
            rows.append((k, _fmt(v), f"{bins} bins"))
        else:
            rows.append((k, _fmt(v), ""))
    return rows


def _raise_on_nan(
    scores: Any, start: int, batch_shape: tuple[int, ...], path: str, why: str
) -> None:
    """--nan-policy raise: the first non-ignored row of this chunk whose statistics are NaN."""
    bad = np.isnan(np.asarray(scores.entropy, np.float64))
    if scores.ignored is not None:
        bad &= ~np.asarray(scores.ignored, bool)
    if bad.any():
        row = start + int(np.argmax(bad))
        raise CliError(
            _validate.nan_row(path, _validate.row_name(row, batch_shape)).args[0]
            + f" ({why}; --nan-policy propagate counts such rows)"
        )


def _sequence_summary(seq: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """Means over the sequences (those with at least one token for the per-token means)."""
    if count == 0:
        return {"sequences": 0, "sequence_log_likelihood": None, "sequence_perplexity": None,
                "greedy_sequences": None}  # fmt: skip
    has = seq["tokens"] > 0
    with np.errstate(invalid="ignore"):
        ppl = float(np.mean(seq["perplexity"][has])) if has.any() else math.nan
    return {
        "sequences": count,
        "sequence_log_likelihood": float(np.mean(seq["log_likelihood"])),
        "sequence_perplexity": ppl,  # the mean of the per-sequence perplexities (HF evaluate's)
        "greedy_sequences": float(np.mean(seq["greedy"])),
    }


class _Inputs:
    """The score command's input arrays, loaded by role (see ``NPZ_NAMES``), and what was read:
    ``arrays`` maps each role to FILE or FILE.npz:NAME (the report's), ``specs`` holds the user's
    paths (the ``-o`` check)."""

    def __init__(self) -> None:
        self.arrays: dict[str, str] = {}
        self.specs: list[str] = []

    def load(self, spec: str | None, role: str) -> np.ndarray | None:
        if spec is None:
            return None
        path, kind, name = locate(spec, role)
        arr = load_located(path, kind, name)
        if role != "labels" and _is_raw_bf16(arr.dtype):
            arr = _as_bf16(arr, spec)
        _check_role(arr, spec, role)
        self.arrays[role] = f"{path}:{name}" if name else str(path)
        self.specs.append(spec)
        return arr

    def carried(
        self, spec: str, have: dict[str, np.ndarray | None], names: dict[str, tuple[str, ...]]
    ) -> dict[str, np.ndarray | None]:
        """``have`` with the arrays a ``.npz`` input carries along (unless FILE.npz:NAME was
        given): each role of ``names`` that ``have`` lacks, from the first member named so."""
        if _sniff_quiet(spec) == "npz":
            members = _npz_members(Path(spec))
            for role, cands in names.items():
                member = next((c for c in cands if c in members), None)
                if have.get(role) is None and member is not None:
                    have[role] = self.load(f"{spec}:{member}", role)
        return have


@dataclasses.dataclass
class _Job:
    """What the score command scores in row chunks: logits, or hidden states whose logits
    :func:`numbaent.linear_score` makes class chunk by class chunk; and how the report names it."""

    source: str  # "logits" or "hidden": the JSON context's "source", the role of the rows
    spec: str  # the user's path of the rows (the table's first line, NaN errors)
    shape: tuple[int, ...]  # of the rows' array: (..., C) logits or (..., d) hidden states
    dtype: np.dtype  # of the rows' array
    n_classes: int
    streams: list[np.ndarray]  # the (n, .) arrays read in row chunks: the rows, the teacher's
    labels: np.ndarray | None  # in the batch shape
    teacher: bool
    score: Any  # score(chunks of the streams, labels chunk or None) -> Scores
    chunk_row_bytes: int  # bytes per row that the default chunk size counts
    nan_why: str  # what a NaN row means, for --nan-policy raise
    noun: str = "logits"  # the rows, in messages
    last: str = "C"  # the name of their last axis

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[:-1]


def _check_labels_shape(labels: np.ndarray | None, batch_shape: tuple[int, ...], of: str) -> None:
    if labels is not None and labels.shape != batch_shape:
        raise CliError(f"labels shape {labels.shape} does not match {of} (expected {batch_shape})")


def _check_label_range(
    labels: np.ndarray, n_classes: int, ignore_index: int, batch: tuple[int, ...], spec: str
) -> None:
    """Every label in [0, C) or ``ignore_index``, checked before any row is scored (a bad label
    far down a large file fails at once, naming its row in the whole file)."""
    step = 1 << 22
    for start in range(0, labels.shape[0], step):
        y = np.asarray(labels[start : start + step])
        bad = np.flatnonzero((y != ignore_index) & ((y < 0) | (y >= n_classes)))
        if bad.size:
            i = int(bad[0])
            row = _validate.row_name(start + i, batch)
            raise CliError(
                _validate.label_out_of_range(spec, int(y[i]), row, n_classes, ignore_index).args[0]
            )


def _logits_job(args: argparse.Namespace, inputs: _Inputs) -> _Job:
    import numbaent

    logits = inputs.load(args.logits, "logits")
    have = {
        "labels": inputs.load(args.labels, "labels"),
        "teacher": inputs.load(args.teacher, "teacher"),
    }
    # a .npz input may carry its labels / teacher logits along (unless FILE.npz:NAME was given)
    have = inputs.carried(
        args.logits, have, {"labels": ("labels",), "teacher": ("teacher_logits",)}
    )
    labels, teacher = have["labels"], have["teacher"]
    if logits.ndim < 2:
        raise CliError(
            f"{args.logits}: logits must be rows x classes (2-D, or more batch axes first); got "
            f"shape {logits.shape}: one row of C classes is shape (1, C)"
        )
    batch_shape, n_classes = logits.shape[:-1], logits.shape[-1]
    _check_labels_shape(labels, batch_shape, f"logits shape {logits.shape}")
    if teacher is not None and teacher.shape != logits.shape:
        raise CliError(
            f"teacher logits shape {teacher.shape} does not match logits shape {logits.shape}"
        )
    n = math.prod(batch_shape)
    streams = [a.reshape(n, n_classes) for a in (logits, teacher) if a is not None]

    def score(chunks: list[np.ndarray], lab: np.ndarray | None) -> Any:
        return numbaent.score(
            chunks[0],
            lab,
            teacher_logits=chunks[1] if teacher is not None else None,
            temperature=args.temperature,
            ignore_index=args.ignore_index,
            base=args.base,
            backend=args.backend,
        )

    return _Job(
        source="logits",
        spec=args.logits,
        shape=logits.shape,
        dtype=logits.dtype,
        n_classes=n_classes,
        streams=streams,
        labels=labels,
        teacher=teacher is not None,
        score=score,
        chunk_row_bytes=n_classes * sum(a.dtype.itemsize for a in streams),
        nan_why="a NaN or +inf logit, or only -inf",
    )


#: the inputs of the hidden-state path besides --hidden, by role (also the args' attributes)
HIDDEN_ROLES = ("weight", "bias", "labels", "teacher_hidden", "teacher_weight", "teacher_bias")
#: every role, in the order the report lists what was read
_ROLES = ("logits", "hidden", "weight", "bias", "labels", "teacher", *HIDDEN_ROLES[3:])
#: the option of each of them, in messages
_OPTION = {r: "--" + r.replace("_", "-") for r in ("hidden", "teacher", *HIDDEN_ROLES)}


def _check_head(
    inputs: _Inputs, h: np.ndarray, w: np.ndarray, b: np.ndarray | None, who: str = ""
) -> None:
    """A model's hidden states (..., d), weight (V, d) and bias (V,) fit; errors name the files
    (``who``: "" for the model, "teacher_" for the teacher)."""
    name = {r: inputs.arrays.get(who + r) for r in ("hidden", "weight", "bias")}
    what = "teacher " if who else ""
    if h.ndim < 2:
        raise CliError(
            f"{name['hidden']}: {what}hidden states must be rows x d (2-D, or more batch axes "
            f"first); got shape {h.shape}: one row of d values is shape (1, d)"
        )
    if w.ndim != 2:
        raise CliError(f"{name['weight']}: {what}weight must be 2-D (V, d); got shape {w.shape}")
    if w.shape[1] != h.shape[-1]:
        raise CliError(
            f"{name['weight']}: {what}weight shape {w.shape} does not match {what}hidden states "
            f"{name['hidden']} of shape {h.shape}: the last dimensions (d) must match"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise CliError(
            f"{name['bias']}: {what}bias shape {b.shape} does not match {what}weight "
            f"{name['weight']} of shape {w.shape} (expected ({w.shape[0]},))"
        )


def _hidden_job(args: argparse.Namespace, inputs: _Inputs) -> _Job:
    import numbaent

    hidden = inputs.load(args.hidden, "hidden")
    have = {role: inputs.load(getattr(args, role), role) for role in HIDDEN_ROLES}
    if args.teacher_hidden is not None:  # the teacher's own .npz may carry its weight and bias
        names = {
            "teacher_weight": ("teacher_weight", "weight"),
            "teacher_bias": ("teacher_bias", "bias"),
        }
        have = inputs.carried(args.teacher_hidden, have, names)
    own = HIDDEN_ROLES if args.teacher_hidden is None else HIDDEN_ROLES[:3]
    have = inputs.carried(args.hidden, have, {role: (role,) for role in own})
    have["hidden"] = hidden
    needs_of = {"hidden": "weight", "teacher_hidden": "teacher_weight",
                "teacher_weight": "teacher_hidden", "teacher_bias": "teacher_hidden"}  # fmt: skip
    for role, needs in needs_of.items():
        got = have[role]
        if got is not None and have[needs] is None:
            raise CliError(
                f"{_OPTION[role]} {inputs.arrays[role]} needs {_OPTION[needs]}"
                + (" (the output layer's weight, V x d)" if needs.endswith("weight") else "")
            )
    weight, bias, labels = have["weight"], have["bias"], have["labels"]
    th, tw, tb = have["teacher_hidden"], have["teacher_weight"], have["teacher_bias"]
    _check_head(inputs, hidden, weight, bias)
    batch_shape, n_classes = hidden.shape[:-1], weight.shape[0]
    _check_labels_shape(labels, batch_shape, f"hidden states shape {hidden.shape}")
    if th is not None:
        _check_head(inputs, th, tw, tb, "teacher_")
        if th.shape[:-1] != batch_shape:
            raise CliError(
                f"{inputs.arrays['teacher_hidden']}: teacher hidden states shape {th.shape} does "
                f"not match hidden states {inputs.arrays['hidden']} of shape {hidden.shape} "
                f"(expected the batch shape {batch_shape}, then the teacher's d)"
            )
        if tw.shape[0] != n_classes:
            raise CliError(
                f"{inputs.arrays['teacher_weight']}: teacher weight shape {tw.shape} does not "
                f"match weight {inputs.arrays['weight']} of shape {weight.shape}: the number of "
                "classes (V) must match"
            )
    n = math.prod(batch_shape)
    streams = [a.reshape(n, a.shape[-1]) for a in (hidden, th) if a is not None]
    item = _validate.math_dtype(hidden, weight, bias, th, tw, tb).itemsize
    logit_bytes = n_classes * item * len(streams)  # the logits (and the teacher's) of a row
    hidden_bytes = sum(a.shape[1] * a.dtype.itemsize for a in streams)
    # backend "cuda" copies the weights to the device in every chunk's call: chunks counted by
    # the hidden states' bytes alone (far more rows), so that copy is spread over more rows
    cuda = (args.backend if args.backend is not None else numbaent.get_backend()) == "cuda"

    def score(chunks: list[np.ndarray], lab: np.ndarray | None) -> Any:
        return numbaent.linear_score(
            chunks[0],
            weight,
            lab,
            bias=bias,
            teacher=None if th is None else (chunks[1], tw, tb),
            temperature=args.temperature,
            ignore_index=args.ignore_index,
            base=args.base,
            backend=args.backend,
        )

    return _Job(
        source="hidden",
        spec=args.hidden,
        shape=hidden.shape,
        dtype=hidden.dtype,
        n_classes=n_classes,
        streams=streams,
        labels=labels,
        teacher=th is not None,
        score=score,
        chunk_row_bytes=hidden_bytes if cuda else max(logit_bytes, hidden_bytes),
        nan_why="its logits have a NaN or +inf, or only -inf: a NaN or infinity in the hidden "
        "states, weight or bias",
        noun="hidden states",
        last="d",
    )


def _check_sources(args: argparse.Namespace) -> None:
    """Logits or hidden states, and the options of the one given; before any file is read."""
    if args.logits is not None and args.hidden is not None:
        raise CliError(
            f"{args.logits} and --hidden {args.hidden}: give the logits (LOGITS) or the hidden "
            "states (--hidden, with --weight), not both"
        )
    if args.hidden is None:
        for role in HIDDEN_ROLES:
            if role != "labels" and getattr(args, role) is not None:
                raise CliError(
                    f"{_OPTION[role]} {getattr(args, role)}: applies to hidden states (--hidden), "
                    f"not to logits {args.logits}"
                )
    elif args.teacher is not None:
        raise CliError(
            f"--teacher {args.teacher}: with --hidden the teacher is given by its hidden states "
            "and weight (--teacher-hidden, --teacher-weight[, --teacher-bias]), not its logits"
        )


def _cmd_score(args: argparse.Namespace) -> int:
    _validate.check_temperature(args.temperature)  # before any file is read or created
    _check_sources(args)
    inputs = _Inputs()
    job = _hidden_job(args, inputs) if args.hidden is not None else _logits_job(args, inputs)
    return _run_score(args, job, inputs)


def _run_score(args: argparse.Namespace, job: _Job, inputs: _Inputs) -> int:
    """Score ``job``'s rows in chunks (their exact ``SummaryState`` sums merged), write the
    per-row (or per-sequence) arrays of ``-o``, and print the report: the same for logits and for
    hidden states."""
    batch_shape = job.batch_shape
    arrays = {r: inputs.arrays[r] for r in _ROLES if r in inputs.arrays}  # in a fixed order
    n = math.prod(batch_shape)
    flat_labels = None if job.labels is None else job.labels.reshape(n)
    if args.chunk_rows is not None:
        chunk = args.chunk_rows
    else:
        chunk = max(1, CHUNK_BYTES // max(1, job.chunk_row_bytes))

    seq_len = 0
    if args.sequences:
        if job.labels is None or len(job.shape) < 3:
            got = "no labels" if job.labels is None else f"labels {job.labels.shape}"
            raise CliError(
                f"--sequences needs {job.noun} of shape (..., T, {job.last}) and labels of shape "
                f"(..., T); got {job.noun} {job.shape} and {got}"
            )
        seq_len = batch_shape[-1]
        chunk = max(seq_len, chunk // max(seq_len, 1) * seq_len)  # whole sequences per chunk
    n_seq = n // seq_len if seq_len else 0
    seqs: dict[str, list] = {}
    per_seq: dict[str, np.ndarray] = {}
    if flat_labels is not None:
        _check_label_range(flat_labels, job.n_classes, args.ignore_index, batch_shape,
                           arrays["labels"])  # fmt: skip

    row_bytes = sum(a.shape[1] * a.dtype.itemsize for a in job.streams)
    in_bytes = row_bytes + (0 if job.labels is None else job.labels.dtype.itemsize)  # for GB/s
    progress = _Progress(n, not args.no_progress and sys.stderr.isatty(), row_bytes=in_bytes)
    state = SummaryState()  # exact sums: the summary does not depend on --chunk-rows
    writer = None
    try:
        if args.output:
            if args.sequences:
                writer = _Writer(Path(args.output), n_seq, batch_shape[:-1])
            else:
                writer = _Writer(Path(args.output), n, batch_shape)
            writer.open()
            for inp in inputs.specs:
                if _same_file(inp, args.output):
                    raise CliError(f"{args.output}: output would overwrite input {inp}")
        droppers = [_PageDropper(a) for a in job.streams]
        progress.start()
        for start in range(0, max(n, 1), chunk):
            stop = min(start + chunk, n)
            for d, a in zip(droppers, job.streams, strict=True):
                d.next(a[stop : min(stop + chunk, n)])
            lab = None if flat_labels is None else np.asarray(flat_labels[start:stop])
            scores = job.score([np.asarray(a[start:stop]) for a in job.streams], lab)
            if args.nan_policy == "raise":
                _raise_on_nan(scores, start, batch_shape, job.spec, job.nan_why)
            state = state.merge(scores.summary_state(top_k=args.top_k, bins=args.bins))
            if args.sequences and stop > start:
                k = (stop - start) // seq_len
                per_seq = scores.sequences(lengths=np.full(k, seq_len)).as_dict()
                for name, a in per_seq.items():
                    seqs.setdefault(name, []).append(a)
            if writer is not None:
                rows = per_seq if args.sequences else _score_arrays(scores, stop - start)
                writer.add(rows)
            for d, a in zip(droppers, job.streams, strict=True):
                d.done(a[start:stop])
            progress.update(stop)
        summary = state.result()
        if writer is not None:
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        progress.close()

    if args.sequences:
        summary.update(_sequence_summary({k: np.concatenate(v) for k, v in seqs.items()}, n_seq))
    units = _units(args.base)
    logits_shape = (*batch_shape, job.n_classes)
    context = {
        "units": units,
        "base": args.base,
        "temperature": args.temperature,
        "kl": "teacher || model" if job.teacher else None,
        "source": job.source,
        "arrays": arrays,
        "shape": list(logits_shape),
    }
    if job.source != "logits":
        context["hidden_shape"] = list(job.shape)
    context.update(dtype=str(job.dtype), top_k=list(args.top_k), bins=args.bins)
    if args.json:
        doc = _summary_json(summary)
        doc["context"] = {k: _json_value(v) if k == "base" else v for k, v in context.items()}
        print(json.dumps(doc, indent=2))
        return 0
    head = f"{job.spec}: {' x '.join(map(str, job.shape))} {job.dtype}"
    if job.source != "logits":
        head += f" {job.noun} -> {' x '.join(map(str, logits_shape))} logits"
    # what was read: members of the rows' own .npz by name (where the name says the role), other
    # files by role and path
    first = arrays[job.source]
    own = first.rpartition(":")[0] if ":" in first else first

    def named(role: str, spec: str) -> str:
        member = spec[len(own) + 1 :] if spec.startswith(own + ":") else None
        if member is not None and (role == job.source or member == NPZ_NAMES[role][0]):
            return member
        return f"{role} {spec}"

    used = [named(r, spec) for r, spec in arrays.items() if r != job.source or spec != own]
    print(head + (f" ({', '.join(used)})" if used else ""))
    rows = _summary_rows(summary, units, args.bins)
    rows.append(("units", units, "" if args.base is None else f"base {args.base:g}"))
    if job.teacher:
        rows.append(("kl", "KL(teacher || model)", f"temperature {args.temperature:g}"))
    print(_table(rows, indent="  "))
    if args.output:
        print(f"per-row arrays written to {args.output}")
    return 0


def _sniff_quiet(spec: str) -> str | None:
    try:
        return _sniff(Path(spec))
    except (OSError, CliError):
        return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(_split_spec(a)[0], b)
    except OSError:
        return False


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numbaent
    from numbaent._threads import describe, numba  # numba, its threading layer set up first

    info: dict[str, Any] = {
        "numbaent": getattr(numbaent, "__version__", "unknown"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _safe(describe),  # the layer in use, e.g. "tbb (fork-safe, ...)"
        "default_backend": _safe(lambda: numbaent.get_backend()),
    }
    backends = numbaent.backends()
    cuda_device = None
    cuda = backends.get("cuda")
    if cuda is not None and getattr(cuda, "available", False):
        cuda_device = _cuda_device_name()
    info["cuda_device"] = cuda_device

    if args.json:
        info["backends"] = {
            name: {
                "available": bool(getattr(b, "available", False)),
                "reason": str(getattr(b, "reason", "") or ""),
                "detail": str(getattr(b, "detail", "") or ""),
            }
            for name, b in backends.items()
        }
        print(json.dumps(info, indent=2))
        return 0

    rows = [(k, "-" if v is None else str(v)) for k, v in info.items()]
    print(_table(rows))
    print()
    print("backends:")
    brows = [("name", "available", "reason / detail")]
    for name, b in backends.items():
        reason = str(getattr(b, "reason", "") or "")
        detail = str(getattr(b, "detail", "") or "")
        text = "; ".join(t for t in (reason, detail) if t) or "-"
        brows.append((name, "yes" if getattr(b, "available", False) else "no", _one_line(text)))
    print(_table(brows, indent="  "))
    return 0


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # informational only
        return f"unknown ({_one_line(e)})"


def _cuda_device_name() -> str:
    """Name of the current CUDA device; only called when the cuda backend says it is available."""
    try:
        from numba import cuda

        dev = cuda.get_current_device()
        name = dev.name
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        return f"{name} (id {dev.id}, compute capability {dev.compute_capability})"
    except Exception as e:
        return f"unknown ({_one_line(e)})"


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def _one_line(e: BaseException | str) -> str:
    if isinstance(e, KeyError) and len(e.args) == 1:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__ if isinstance(e, BaseException) else ""
    return lines[0] + (" ..." if len(lines) > 1 else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Row-wise entropy, cross-entropy and KL divergence of logits.",
    )
    try:
        import numbaent

        version = getattr(numbaent, "__version__", "unknown")
    except Exception:  # pragma: no cover - the package failed to import
        version = "unknown"
    p.add_argument("--version", action="version", version=f"%(prog)s {version}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "score",
        help="score logits against labels and/or teacher logits",
        description=(
            "Score logits (rows x classes; any leading batch axes) with numbaent.score, in row "
            "chunks, and print the summary. Inputs are .npy (memory-mapped) or .npz files; from "
            "a .npz the arrays 'logits', 'labels' and 'teacher_logits' are taken by name "
            "(FILE.npz:NAME takes just the array NAME). Means are over the rows whose label is not "
            "--ignore-index. With --hidden H --weight W instead of LOGITS, the logits are "
            "H @ W.T (+ --bias), scored by numbaent.linear_score without ever being held; from "
            "a --hidden .npz the arrays 'weight', 'bias', 'labels', 'teacher_hidden', "
            "'teacher_weight' and 'teacher_bias' are taken by name."
        ),
    )
    s.add_argument("logits", metavar="LOGITS", nargs="?", help="logits, .npy or .npz")
    s.add_argument("--labels", metavar="L", help="integer class labels, .npy or .npz")
    s.add_argument("--teacher", metavar="T", help="teacher logits for the KL divergence")
    h = s.add_argument_group(
        "scores from hidden states (instead of LOGITS)",
        "the logits hidden @ weight.T + bias, made chunk by chunk (numbaent.linear_score)",
    )
    h.add_argument("--hidden", metavar="H", help="last hidden states (..., d), .npy or .npz")
    h.add_argument("--weight", metavar="W", help="the output layer's weight (V, d)")
    h.add_argument("--bias", metavar="B", help="its bias (V,)")
    h.add_argument("--teacher-hidden", metavar="TH", help="the teacher's hidden states (..., d')")
    h.add_argument("--teacher-weight", metavar="TW", help="the teacher's weight (V, d')")
    h.add_argument("--teacher-bias", metavar="TB", help="the teacher's bias (V,)")
    s.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="t",
        help="softmax temperature T: the model's (and the teacher's) distribution is "
        "softmax(logits / T) (default 1)",
    )
    s.add_argument(
        "--base",
        type=_parse_base,
        default=None,
        metavar="b",
        help="logarithm base: 2 for bits, 'e' (default) for nats",
    )
    s.add_argument(
        "--ignore-index",
        type=int,
        default=-100,
        metavar="i",
        help="label value of rows to leave out of the means (default -100)",
    )
    s.add_argument(
        "--top-k",
        type=_parse_top_k,
        default=DEFAULT_TOP_K,
        metavar="K,...",
        help="the k of the summary's top_k_accuracy (rank of the label < k), comma-separated "
        "(default 1,5)",
    )
    s.add_argument(
        "--bins",
        type=_positive_int,
        default=DEFAULT_BINS,
        metavar="n",
        help="equal-width confidence bins over [0, 1] of the calibration errors ece and mce "
        "(default 15)",
    )
    s.add_argument(
        "--backend",
        default=None,
        metavar="name",
        help="auto, cpu, cuda or numpy (default: NUMBAENT_BACKEND, else auto)",
    )
    s.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=None,
        metavar="n",
        help="rows per chunk (default: about 256 MB of logits per chunk; with --hidden, of "
        "the logits they make, or of the hidden states where those are larger or with "
        "--backend cuda)",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON, with a 'context' object (null: not computed; a NaN or "
        'infinite value is the string "NaN" / "Infinity")',
    )
    s.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write per-row arrays (per-sequence ones with --sequences) to OUT.npz, or "
        "OUT.parquet (needs pyarrow)",
    )
    s.add_argument(
        "--nan-policy",
        choices=("propagate", "raise"),
        default="propagate",
        help="propagate (default): rows whose statistics are NaN are counted (nan_rows) and left "
        "out of the means; raise: stop with an error naming the first such row",
    )
    s.add_argument(
        "--sequences",
        action="store_true",
        help="per-sequence results for (..., T, C) logits and (..., T) labels: the last batch "
        "axis is the sequence (log-likelihood, tokens, perplexity, greedy; see "
        "Scores.sequences); chunks hold whole sequences",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.set_defaults(func=_cmd_score, usage_error=s.error)

    i = sub.add_parser(
        "info",
        help="versions, backends, threads, CUDA device",
        description="Show versions, backends (with the reason each is or is not available), "
        "Numba's thread count, and the CUDA device when the cuda backend is available.",
    )
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=_cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``numbaent`` command line; returns the exit status (0 ok, 2 error, 128 + the
    signal number when SIGINT, SIGTERM or SIGHUP interrupted it: 130, 143, 129)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "score" and args.logits is None and args.hidden is None:
        args.usage_error("the following arguments are required: LOGITS (or --hidden H --weight W)")
    try:
        with _SIGNALS.installed():
            return int(args.func(args) or 0)
    except Interrupted as e:
        return _interrupted(e)
    except KeyboardInterrupt:  # SIGINT where the handler could not be installed (not main thread)
        return _interrupted(Interrupted(signal.SIGINT))
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error worth a message
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except CliError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError, IndexError, KeyError, RuntimeError, MemoryError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"{PROG}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
