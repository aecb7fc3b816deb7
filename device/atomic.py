"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder; and the guard
that every write to a file a user named goes through.

SD cards lose power; a reader must see either the old file or the complete new one.

The guard (`check_output_path`) is the one rule for user-named outputs: only regular files are
replaced (atomically); a symbolic link is neither followed nor replaced; a folder, a socket or a
block device is refused; an existing regular file is replaced only when the caller says so (the
CLI's `--force`); a FIFO or a character device (a pipe, /dev/null, a terminal) may be written
*into* when the command streams its output (`output_stream`), never replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from device.errors import AffectboxError

OutputKind = Literal["new", "replace", "stream"]


class OutputPathError(AffectboxError):
    """A user-named output path that must not be written (or replaced) as asked."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_path(path: str | Path, *, overwrite: bool, streams: bool = False) -> OutputKind:
    """What writing to `path` would do: "new", "replace" (an existing regular file) or "stream"
    (write into a FIFO or character device; only when `streams`); OutputPathError otherwise."""
    target = Path(path)
    if "\0" in str(target):
        raise OutputPathError(f"{str(target)!r}: a path must not contain a NUL character")
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return "new"
    except OSError as exc:
        raise OutputPathError(f"{target}: cannot check the output path ({exc.strerror or exc})") from None
    mode = info.st_mode
    if stat.S_ISREG(mode):
        if not overwrite:
            raise OutputPathError(f"{target}: exists; refusing to overwrite it (give --force to replace it)")
        return "replace"
    if stat.S_ISLNK(mode):
        raise OutputPathError(f"{target}: is a symbolic link; refusing to write through or replace it "
                              "(name the real file)")
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        if streams:
            return "stream"
        raise OutputPathError(f"{target}: is a {'FIFO' if stat.S_ISFIFO(mode) else 'device'}, not a regular file; "
                              "refusing to replace it")
    kind = "a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a block device" if stat.S_ISBLK(mode) else "not a regular file"
    raise OutputPathError(f"{target}: is {kind}; refusing to write to it")


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: int = 0o644, *, overwrite: bool = True) -> Iterator[IO[str]]:
    """Open a text stream that replaces `path` only if the block completes without error.

    `path` must be absent or a regular file (check_output_path): a symlink, FIFO or device there is
    refused, never replaced; with `overwrite=False` an existing file is refused too.
    """
    target = Path(path)
    check_output_path(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        check_output_path(target, overwrite=overwrite)  # nothing swapped in meanwhile
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def output_stream(path: str | Path, mode: int = 0o600, *, overwrite: bool) -> Iterator[IO[str]]:
    """A command's user-named output: a regular file written atomically (as atomic_writer), or the
    FIFO or character device already there written into (a pipe, /dev/null); OSError while writing
    becomes one line naming the path."""
    target = Path(path)
    try:
        if check_output_path(target, overwrite=overwrite, streams=True) == "stream":
            fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if not (stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISCHR(os.fstat(fd).st_mode)):
                os.close(fd)
                raise OutputPathError(f"{target}: changed while it was opened; refusing to write to it")
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                yield handle
        else:
            with atomic_writer(target, mode, overwrite=overwrite) as handle:
                yield handle
    except OSError as exc:
        raise OutputPathError(f"{target}: cannot write the output ({exc.strerror or exc}); "
                              "nothing was replaced") from None


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644, *, overwrite: bool = True) -> None:
    with atomic_writer(path, mode, overwrite=overwrite) as handle:
        handle.write(text)
