"""Types of chkpt._chkpt, the C engine of chkpt."""
import os
from collections.abc import Iterable
from typing import Any, Final, Literal, TypeVar, final

_T = TypeVar("_T")

FORMAT_VERSION: Final[int]
DEFAULT_FREQUENCY: Final[str]
DEFAULT_MIN_OBJ_SIZE: Final[int]

_SnapshotRef = SnapshotInfo | str | bytes | os.PathLike[str] | os.PathLike[bytes]

class SnapshotError(Exception):
    """A snapshot is damaged, unreadable, or cannot be loaded."""

@final
class Checkpoint:
    """The checkpointing engine of a script run under chkpt."""

    frequency: int | Literal["auto"]
    """ms between automatic snapshots; 0 every line; -1 manual only; "auto"
    (the default) as often as the budget allows."""
    min_obj_size: int
    """bytes an object must hold to be captured; 0 every object; -1 tracked only."""
    verbosity: int
    output_dir: str
    """The store directory (absolute); set with a str or PathLike."""

    @classmethod
    def get_global_singleton(cls) -> Checkpoint:
        """The Checkpoint of the running script; AssertionError when the
        script is not run under chkpt."""
    def track(self, obj: _T, /) -> _T:
        """Always capture this object (by identity), whatever its size, even
        a function or class of the script."""
    def untrack(self, obj: object, /) -> None: ...
    def track_library(self, name: str, /) -> None:
        """Treat objects of types from this module (prefix) as salient."""
    def snapshot(self, name: str | None = None) -> SnapshotInfo | None:
        """Snapshot of the caller's variables, written by a child process:
        returns at once a SnapshotInfo that waits for it when read, false
        (path None) when nothing was written (nothing salient, or it
        failed); None when no child was started and nothing was written (the
        store is unusable, a snapshot is already being taken in this
        process, or no child could be had and nothing was salient)."""
    def wait(self) -> None:
        """Return once every snapshot taken so far is durable."""

@final
class SnapshotInfo:
    """What a snapshot is; accepted wherever a path is (os.fspath)."""

    @property
    def path(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def kind(self) -> str:
        """'manual', 'auto' (later also 'crash', 'signal')."""
    @property
    def time(self) -> float: ...
    @property
    def script(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...
    @property
    def variables(self) -> list[str]: ...
    @property
    def size(self) -> int: ...
    @property
    def meta(self) -> dict[str, Any]:
        """The whole metadata document (docs/FORMAT.md, Snapshot metadata)."""
    def __fspath__(self) -> str: ...

@final
class Unloadable:
    """Stands in for a variable that could not be rebuilt; its repr names the
    missing class and the error."""

    def __new__(cls, name: str, module: str, qualname: str,
                error: str | None = None) -> Unloadable: ...
    @property
    def name(self) -> str: ...
    @property
    def module(self) -> str:
        """Module of the class that could not be resolved."""
    @property
    def qualname(self) -> str: ...
    @property
    def error(self) -> str | None: ...

def load(snapshot: _SnapshotRef, names: Iterable[str] | str | None = None, *,
         strict: bool = False, frame: int | None = None) -> dict[str, Any]:
    """The variables of a snapshot (a SnapshotInfo, a manifest path, or a store
    directory meaning its newest snapshot). names: only those (the others'
    data is not read; KeyError for an unknown one). A variable that cannot be
    rebuilt is an Unloadable (one warning), or SnapshotError with strict=True.
    frame: for a crash snapshot, the index in meta['traceback'] of the frame
    whose locals (over its module's globals) to give; None: the failing one."""

def snapshots(dir: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None
              ) -> list[SnapshotInfo]:
    """The snapshots of a store, oldest first; dir None: the running script's
    store, else ./checkpoints. Damaged manifests are skipped with a warning."""

def main(argv: list[str], /) -> int:
    """The command line of `python -m chkpt`; returns the exit status."""
