from chkpt._chkpt import (
    Checkpoint as Checkpoint,
    SnapshotError as SnapshotError,
    SnapshotInfo as SnapshotInfo,
    Unloadable as Unloadable,
    load as load,
    snapshots as snapshots,
)

__all__ = [
    "Checkpoint",
    "SnapshotError",
    "SnapshotInfo",
    "Unloadable",
    "load",
    "snapshots",
]
__version__: str
