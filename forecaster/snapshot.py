"""State files of the stream: an append-only log of checksummed segments, one writer at a time.

A state file is ``LOG_MAGIC`` followed by segments. Each segment is ``SEGMENT`` (4 bytes), the
payload's length (8 bytes, little-endian), its SHA-256 (32 bytes) and the payload: a dict of
tensors and plain data (str, int, float, bool, None, lists and dicts of them) serialised with
``torch.save`` and read back with ``torch.load(weights_only=True)``, so a crafted file cannot run
code. The first segment is a *base* (every series); each later one a *delta* (the series that
changed since the segment before it, and the ids removed). So a snapshot costs what changed, not
every series: :func:`append_delta` adds one segment to the end and syncs it.

Crash safety:
- A base is written to a temporary file in the same folder, synced, then renamed over the
  target (and the folder synced): a crash mid-write leaves the previous file whole.
- A delta is appended after the last good segment and synced; a failed append is cut off again.
  A segment that a crash left incomplete at the end of the file (short, or its checksum wrong) is
  ignored by :func:`read_log` (the state is the one before it) and cut off by the next append.
  A damaged segment anywhere else, a flipped bit, or a foreign file is refused, never loaded.
- When the deltas outgrow the base, :class:`Compactor` merges the file's segments into one base
  in a background thread (from the file, not from the live tables, so the stream goes on); the
  deltas appended meanwhile are copied after it before it is renamed over the file.

One writer: :class:`StateLock` takes an advisory lock (``fcntl.flock``) on ``PATH.lock`` and keeps
it while the stream runs; a second process (or a second stream in this process) asking for it is
refused with the holder's pid. Temporary files that a killed writer left behind are removed only
by the lock's holder.

The single-payload files of format 3 (``MAGIC``, a hex checksum, the payload) are still read.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import struct
import tempfile
import threading
import weakref
import zipfile
import atexit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

__all__ = ["MAGIC", "LOG_MAGIC", "SnapshotError", "StateLockedError", "LogReplacedError", "StateLock", "LogInfo", "write_base",
           "append_delta", "read_log", "encode", "Compactor", "write_snapshot", "read_snapshot"]

MAGIC = b"gru-forecaster-snapshot\n"  # format 3: one payload, read only
LOG_MAGIC = b"gru-forecaster-state-log 1\n"
SEGMENT = b"SEG\x01"
_HEAD = len(SEGMENT) + 8 + 32


class SnapshotError(ValueError):
    """A state file that cannot be read or written (missing, damaged, foreign, locked, a disk
    fault); the message is one line."""


class StateLockedError(SnapshotError):
    """The state file's lock is held by another writer."""


class LogReplacedError(SnapshotError):
    """The log is not the file its writer last wrote (replaced or cut short): write a base instead."""


# ---- the lock ------------------------------------------------------------------------------------

_HELD: dict[str, "weakref.ref[StateLock]"] = {}  # resolved lock paths this process holds -> holder
_HELD_GUARD = threading.Lock()


class StateLock:
    """An exclusive advisory lock on state file ``path`` (the file ``PATH.lock`` beside it, which
    holds the holder's pid), taken without waiting.

    Raises:
        StateLockedError: another process or another stream of this process holds it; the message
            names the holder's pid.
    """

    def __init__(self, path: str | os.PathLike):
        import fcntl

        self.path = real_path(path)  # a symbolic link to a state file locks (and writes) the file it names
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        key = str(self.lock_path)
        with _HELD_GUARD:
            other = _HELD.get(key)
            if other is not None and other() is not None:
                raise StateLockedError(f"state file {str(self.path)!r} is in use by another stream of this process "
                                       f"(pid {os.getpid()}): close() that one first; one writer per state file")
            try:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                # O_NOFOLLOW: a symbolic link planted at the lock's name is refused, not written through
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                why = "a symbolic link, refused" if e.errno == errno.ELOOP else (e.strerror or str(e))
                raise SnapshotError(f"cannot lock state file {str(self.path)!r}: {str(self.lock_path)!r}: {why}") \
                    from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    who = f"pid {holder}" if holder else "another process"
                    raise StateLockedError(f"state file {str(self.path)!r} is in use by another stream ({who}, "
                                           f"lock {str(self.lock_path)!r}); stop it first, or use another state "
                                           "file: two writers would lose each other's series") from None
                raise SnapshotError(f"cannot lock state file {str(self.path)!r}: {e.strerror or e}") from None
            try:  # the holder's pid, for the refusal of the next writer (best effort: a full disk may refuse it)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass
            self._fd: int | None = fd
            self._key = key
            _HELD[key] = weakref.ref(self)
        self._finalizer = weakref.finalize(self, StateLock._close, fd, key)

    @staticmethod
    def _close(fd: int, key: str) -> None:
        with _HELD_GUARD:
            ref = _HELD.get(key)
            if ref is not None and (ref() is None or getattr(ref(), "_fd", None) == fd):
                del _HELD[key]
        try:
            os.close(fd)  # closing the descriptor drops the flock
        except OSError:
            pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The lock file stays; it is unlocked."""
        if self._fd is not None:
            self._finalizer()
            self._fd = None

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def real_path(path: str | os.PathLike) -> Path:
    """``path`` with every symbolic link resolved (also when the file does not exist yet)."""
    return Path(os.path.realpath(path))


def _check_lock(lock: StateLock | None, path: Path) -> None:
    if lock is None or not lock.held or lock.path != real_path(path):
        raise SnapshotError(f"writing state file {str(path)!r} needs its StateLock")


# ---- segments ------------------------------------------------------------------------------------

def encode(payload: dict) -> bytes:
    """A payload (tensors and plain data) as ``torch.save`` bytes."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _segment(data: bytes) -> bytes:
    return SEGMENT + struct.pack("<Q", len(data)) + hashlib.sha256(data).digest()


class _HashingWriter:
    """A file's ``write`` that also hashes and counts what passes (``torch.save`` streams a large
    base into the file through it, without a copy of the payload in memory)."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def _write_log_file(f, payload: dict) -> int:
    """Write ``LOG_MAGIC`` and one base segment of ``payload`` to the new file ``f`` (streamed:
    the header is filled in after the payload), synced; returns the bytes written and the
    payload's SHA-256."""
    f.write(LOG_MAGIC)
    f.write(b"\0" * _HEAD)
    w = _HashingWriter(f)
    torch.save(payload, w)
    f.flush()
    digest = w.sha.digest()
    f.seek(len(LOG_MAGIC))
    f.write(SEGMENT + struct.pack("<Q", w.n) + digest)
    f.flush()
    os.fsync(f.fileno())
    return len(LOG_MAGIC) + _HEAD + w.n, digest


class _Reader:
    """A read-only file over a memoryview (``torch.load`` reads a segment without copying it)."""

    def __init__(self, view: memoryview):
        self.view, self.pos = view, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        out = bytes(self.view[self.pos:end])
        self.pos = end
        return out

    def readinto(self, b) -> int:
        n = min(len(b), len(self.view) - self.pos)
        b[:n] = self.view[self.pos:self.pos + n]
        self.pos += n
        return n

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else len(self.view) + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


@dataclass
class LogInfo:
    """Where a state file stands, as its writer knows it: ``size`` is the end of its last good
    segment (an append starts there), ``base_bytes`` / ``delta_bytes`` the bytes of its base and of
    the deltas after it, ``appendable`` False for a file deltas cannot go to (format 3)."""

    path: Path
    size: int
    base_bytes: int
    delta_bytes: int = 0
    segments: int = 1
    inode: tuple[int, int] = (0, 0)
    appendable: bool = True
    torn_bytes: int = 0  # bytes after the last good segment (an interrupted append), ignored
    notes: list[str] = field(default_factory=list)
    # what the next delta names as the segment it follows ("after"): the base's "log_id", then each delta's
    # SHA-256 (hex); a segment spliced in from another file breaks the chain and is refused
    chain: str = ""


def _inode(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _fsync_dir(folder: Path) -> None:
    try:  # make a rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _mkstemp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``: ``NAME.<8 random characters>.tmp``."""
    return tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)


def remove_stale(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files of ``path`` that a killed writer or compaction left behind (only
    the lock's holder calls this). Only ``NAME.<8 random characters>.tmp`` matches: the state
    file ``shop`` never touches ``shop.eu``'s. Returns their names."""
    path = Path(path)
    own = re.compile(re.escape(path.name) + r"\.[a-z0-9_]{8}\.tmp")
    gone = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return gone
    for entry in entries:
        if own.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                gone.append(entry.name)
            except OSError:
                pass
    return gone


def _disk_error(path: Path, what: str, e: OSError) -> SnapshotError:
    return SnapshotError(f"{what} state file {str(path)!r} failed: {e.strerror or e} (errno {e.errno}); the last good "
                         "snapshot is kept as it was")


def write_base(path: str | os.PathLike, payload: dict, lock: StateLock) -> LogInfo:
    """Replace ``path`` atomically with a log holding one base segment of ``payload``.

    Raises:
        SnapshotError: ``lock`` is not this file's, or the disk refused (full, read-only): the file
            that was there is untouched.
    """
    path = Path(path)
    _check_lock(lock, path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        fd, tmp = _mkstemp(path)
        log_id = payload.get("log_id") or os.urandom(16).hex()
        with os.fdopen(fd, "wb") as f:
            size, _ = _write_log_file(f, {**payload, "log_id": log_id})
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
        return LogInfo(path, size, size, inode=_inode(os.stat(path)), chain=log_id)
    except OSError as e:
        raise _disk_error(path, "writing", e) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def append_delta(info: LogInfo, payload: dict, lock: StateLock) -> LogInfo:
    """Append one delta segment of ``payload`` to the log ``info`` describes and sync it.

    Raises:
        SnapshotError: the file is not the one ``info`` describes (replaced or shrunk by someone
            else), or the disk refused; the segments before are untouched either way (a partial
            append is cut off again).
    """
    path = info.path
    _check_lock(lock, path)
    data = encode({**payload, "after": info.chain})  # the segment it follows: no splicing
    head = _segment(data)
    seg = head + data
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise _disk_error(path, "appending to", e) from None
    try:
        st = os.fstat(fd)
        if _inode(st) != info.inode or st.st_size < info.size or (st.st_size > info.size
                                                                   and _whole_segment_at(fd, info.size, st.st_size)):
            # replaced, cut short, or grown by a whole segment of another writer (a second name for the
            # file, such as a hard link): not an interrupted append of ours to cut off
            raise LogReplacedError(f"state file {str(path)!r} was replaced, cut short or written by someone else "
                                   "since this stream last wrote or read it")
        try:
            if st.st_size > info.size:  # an interrupted append (ours, or before a crash): cut it off
                os.ftruncate(fd, info.size)
            written = os.pwrite(fd, seg, info.size)
            while written < len(seg):
                written += os.pwrite(fd, seg[written:], info.size + written)
            os.fsync(fd)
        except BaseException as e:  # a disk fault, or an interrupt mid-write: cut the partial segment off
            try:
                os.ftruncate(fd, info.size)
                os.fsync(fd)
            except OSError:
                pass  # the torn tail is ignored by read_log and cut off by the next append
            if isinstance(e, OSError):
                raise _disk_error(path, "appending to", e) from None
            raise
    finally:
        os.close(fd)
    return LogInfo(path, info.size + len(seg), info.base_bytes, info.delta_bytes + len(seg), info.segments + 1,
                   info.inode, chain=head[12:].hex())


def _whole_segment_at(fd: int, pos: int, size: int) -> bool:
    head = os.pread(fd, _HEAD, pos)
    if len(head) < _HEAD or head[:4] != SEGMENT:
        return False
    end = pos + _HEAD + struct.unpack("<Q", head[4:12])[0]
    return end <= size and hashlib.sha256(os.pread(fd, end - pos - _HEAD, pos + _HEAD)).digest() == head[12:]


def check_zip(source, size: int, where: str, error=None) -> None:
    """Refuse what ``torch.load`` would inflate: ``torch.save`` writes a zip archive of *stored*
    (uncompressed) entries, so an archive with compressed entries, or entries larger in all than
    the archive, is not one of ours (a 1 MB file of deflated zeros would become gigabytes)."""
    error = error or SnapshotError
    try:
        with zipfile.ZipFile(source) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise error(f"{where} is not a torch zip archive ({type(e).__name__})") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos) or sum(i.file_size for i in infos) > size:
        raise error(f"{where} holds compressed or oversized entries (torch.save writes neither): refused")


def _load_payload(data, where: str) -> dict:
    view = memoryview(data)
    check_zip(_Reader(view), len(view), where)
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else _Reader(view)
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything the unpickler refuses is a foreign file
        raise SnapshotError(f"{where} is not a readable snapshot: {type(e).__name__}") from None
    if not isinstance(payload, dict):
        raise SnapshotError(f"{where} is not a readable snapshot (not a dict)")
    return payload


def _later_segment(raw: bytes, start: int) -> bool:
    """Whether a whole segment (marker, length, matching checksum) starts anywhere from ``start``.
    The hashing is bounded (4x the bytes searched): a tail crafted of many overlapping headers
    counts as damage rather than costing quadratic time (a crash leaves at most one header)."""
    budget = 4 * len(raw) + (1 << 20)
    pos = raw.find(SEGMENT, start)
    while pos >= 0:
        head = raw[pos:pos + _HEAD]
        if len(head) == _HEAD:
            end = pos + _HEAD + struct.unpack("<Q", head[4:12])[0]
            if end <= len(raw):
                budget -= end - pos
                if budget < 0 or hashlib.sha256(raw[pos + _HEAD:end]).digest() == head[12:]:
                    return True
        pos = raw.find(SEGMENT, pos + 1)
    return False


def read_log(path: str | os.PathLike, upto: int | None = None) -> tuple[list[dict], LogInfo]:
    """Read a state file: its payloads (base first, then the deltas in order) and its
    :class:`LogInfo`. ``upto``: read only the first ``upto`` bytes (a compaction's view).

    An incomplete or damaged last segment (an interrupted append) is left out and noted in
    ``LogInfo.notes``; anything else that is not a whole good file raises :class:`SnapshotError`
    (one line) for a missing, truncated, damaged or foreign file.
    """
    path = Path(path)
    where = f"state file {str(path)!r}"
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SnapshotError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise SnapshotError(f"{where} is a folder, not a snapshot") from None
    except OSError as e:
        raise SnapshotError(f"cannot read {where}: {e.strerror or e}") from None
    try:
        with f:
            st = os.fstat(f.fileno())
            return _read_segments(f, where, path, st, st.st_size if upto is None else min(upto, st.st_size))
    except OSError as e:
        raise SnapshotError(f"cannot read {where}: {e.strerror or e}") from None


def _read_segments(f, where: str, path: Path, st: os.stat_result, size: int) -> tuple[list[dict], LogInfo]:
    head = f.read(max(len(MAGIC), len(LOG_MAGIC)))
    if head.startswith(MAGIC):  # format 3: MAGIC, hex digest, newline, one payload
        f.seek(0)
        rest = f.read(size)[len(MAGIC):]
        nl = rest.find(b"\n")
        digest, data = rest[:nl], rest[nl + 1:]
        if nl != 64 or hashlib.sha256(data).hexdigest().encode() != digest:
            raise SnapshotError(f"{where} is damaged (checksum mismatch): restore a backup or delete it to start the "
                                "series from zero")
        return [_load_payload(data, where)], LogInfo(path, size, size, inode=_inode(st), appendable=False)
    if not head.startswith(LOG_MAGIC):
        if head.startswith(b"PK"):  # a plain torch.save zip: the snapshots of gru-forecaster before 2026-11-27
            raise SnapshotError(f"{where} is a snapshot of an older gru-forecaster (no checksum); delete it to start "
                                "the series from zero (or restore them from their history)")
        raise SnapshotError(f"{where} is not a readable snapshot (not written by save_state)")
    payloads, pos, notes = [], len(LOG_MAGIC), []
    base_bytes = delta_bytes = 0
    chain = ""
    while pos < size:
        f.seek(pos)
        head = f.read(min(_HEAD, size - pos))
        length = struct.unpack("<Q", head[4:12])[0] if len(head) == _HEAD and head[:4] == SEGMENT else -1
        end = pos + _HEAD + length
        whole = 0 <= length and end <= size
        if whole:
            data = bytearray(length)
            whole = f.readinto(data) == length and hashlib.sha256(data).digest() == head[12:]
        if not whole:
            # an append that a crash interrupted is the last thing in the file (the next append cuts it
            # off first); a bad segment with a good one after it is damage
            if payloads:
                f.seek(pos)
                if _later_segment(f.read(size - pos), 1):
                    raise SnapshotError(f"{where} is damaged at byte {pos} (segment {len(payloads)}): restore a "
                                        "backup, or delete it to start the series from zero")
            if not payloads:
                raise SnapshotError(f"{where} is damaged (its base segment is incomplete or its checksum does not "
                                    "match): restore a backup or delete it to start the series from zero")
            notes.append(f"{where}: {size - pos} bytes after byte {pos} are an interrupted write, ignored (the "
                         "state is that of the snapshot before it)")
            break
        payload = _load_payload(data, where)
        del data
        if payloads and payload.get("after") != chain:
            raise SnapshotError(f"{where} is damaged at byte {pos}: segment {len(payloads)} does not follow the one "
                                "before it (pieces of other files?): restore a backup, or delete it")
        payloads.append(payload)
        chain = head[12:].hex() if len(payloads) > 1 else str(payload.get("log_id", ""))
        if len(payloads) == 1:
            base_bytes = end
        else:
            delta_bytes += end - pos
        pos = end
    if not payloads:
        raise SnapshotError(f"{where} is damaged (no segment): restore a backup or delete it")
    return payloads, LogInfo(path, pos, base_bytes, delta_bytes, len(payloads), _inode(st),
                             torn_bytes=size - pos, notes=notes, chain=chain)


# ---- compaction ----------------------------------------------------------------------------------

_RUNNING: "weakref.WeakSet[Compactor]" = weakref.WeakSet()


@atexit.register
def _stop_compactions() -> None:
    """At exit, stop every compaction and wait for it: a thread inside torch when the interpreter
    goes down aborts the process."""
    for c in list(_RUNNING):
        c.cancel()


class Compactor:
    """Merges a log's segments into one base in a background thread, from the file (the live
    tables are not read, so the stream goes on meanwhile), into a temporary file beside it.

    ``merge`` turns the list of payloads into one base payload. :meth:`finish` (called by the
    writer, under its lock, once :attr:`done`) copies the segments appended since the start after
    the new base, syncs and renames it over the log."""

    def __init__(self, info: LogInfo, lock: StateLock, merge: Callable[[list[dict]], dict]):
        self.info, self.lock, self.merge = info, lock, merge
        self.upto = info.size
        self.tmp: Path | None = None
        self.base_bytes = 0
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="state-compaction", daemon=True)
        _RUNNING.add(self)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        path = self.info.path
        try:
            payloads, _ = read_log(path, upto=self.upto)
            if self._cancel.is_set():
                return
            # the merged base takes the chain of the last segment it holds: the deltas appended after
            # it meanwhile name that one, and follow the new base as they followed it
            merged = {**self.merge(payloads), "log_id": self.info.chain}
            del payloads
            if self._cancel.is_set():
                return
            fd, tmp = _mkstemp(path)
            self.tmp = Path(tmp)
            with os.fdopen(fd, "wb") as f:
                self.base_bytes, _ = _write_log_file(f, merged)
        except BaseException as e:  # noqa: BLE001 - reported by finish(); the log itself is untouched
            self.error = e

    def wait(self) -> None:
        """Block until the merge has finished (or failed)."""
        self._thread.join()

    def cancel(self) -> None:
        """Stop (waiting for the thread) and remove the temporary file."""
        self._cancel.set()
        self._thread.join()
        self._discard()

    def _discard(self) -> None:
        if self.tmp is not None:
            try:
                self.tmp.unlink()
            except OSError:
                pass
            self.tmp = None

    def finish(self, info: LogInfo) -> LogInfo:
        """Put the compacted file in place of the log ``info`` describes (which may have grown by
        deltas since the start); returns its new :class:`LogInfo`.

        Raises:
            SnapshotError: the compaction failed or the disk refused; the log is untouched."""
        self._thread.join()
        path = info.path
        _check_lock(self.lock, path)
        try:
            if self.error is not None or self.tmp is None:
                e = self.error
                raise SnapshotError(f"compacting state file {str(path)!r} failed: {type(e).__name__}: {e}")
            if info.inode != self.info.inode or info.size < self.upto or info.path != self.info.path:
                raise SnapshotError(f"state file {str(path)!r} was rewritten during its compaction; the compaction "
                                    "is dropped")
            with open(path, "rb") as src:
                if _inode(os.fstat(src.fileno())) != self.info.inode:
                    raise SnapshotError(f"state file {str(path)!r} was replaced during its compaction; the compaction "
                                        "is dropped")
                src.seek(self.upto)
                tail = src.read(info.size - self.upto)
            fd = os.open(self.tmp, os.O_WRONLY | os.O_APPEND)  # no O_CREAT: a vanished temporary is a failure
            with os.fdopen(fd, "ab") as f:
                f.write(tail)
                f.flush()
                os.fsync(f.fileno())
            os.replace(self.tmp, path)
            self.tmp = None
            _fsync_dir(path.parent)
        except OSError as e:
            raise _disk_error(path, "compacting", e) from None
        finally:
            self._discard()
        return LogInfo(path, self.base_bytes + len(tail), self.base_bytes, len(tail),
                       1 + info.segments - self.info.segments, _inode(os.stat(path)), chain=info.chain)


# ---- one payload (the tests' and the library's plain use) -----------------------------------------

def write_snapshot(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (tensors and plain data only) to ``path`` atomically, as a log of one base
    segment, taking ``path``'s lock for the duration."""
    with StateLock(path) as lock:
        write_base(path, payload, lock)


def read_snapshot(path: str | os.PathLike) -> dict:
    """The base payload of a state file holding no deltas (a file of :func:`write_snapshot`)."""
    payloads, _ = read_log(path)
    if len(payloads) != 1:
        raise SnapshotError(f"state file {str(path)!r} holds {len(payloads) - 1} deltas; read it with read_log")
    return payloads[0]
