"""chkpt: automatic checkpointing for Python scripts.

Run a script under it with ``python -m chkpt script.py args``; see the README.
The engine is the C extension ``chkpt._chkpt``; this file only re-exports it.
"""
from chkpt._chkpt import (
    Checkpoint,
    SnapshotError,
    SnapshotInfo,
    Unloadable,
    load,
    snapshots,
)

__all__ = [
    "Checkpoint",
    "SnapshotError",
    "SnapshotInfo",
    "Unloadable",
    "load",
    "snapshots",
]
__version__ = "0.1.0"
