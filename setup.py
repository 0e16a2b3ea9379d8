# Build of the C extension chkpt._chkpt. Configuration lives in pyproject.toml;
# this file only describes the extension (sources, libraries, warnings).
import os
from glob import glob

from setuptools import Extension, setup

cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-missing-field-initializers", "-D_GNU_SOURCE"]
if os.environ.get("CHKPT_WERROR"):
    cflags.append("-Werror")
extra = os.environ.get("CHKPT_EXTRA_CFLAGS", "").split()
ldextra = os.environ.get("CHKPT_EXTRA_LDFLAGS", "").split()

# src/ has a folder per part (src/chkpt.h says which may call which); each
# part includes the others' headers by name.
parts = ["src"] + sorted(d for d in glob("src/*") if os.path.isdir(d))

setup(
    ext_modules=[
        Extension(
            "chkpt._chkpt",
            sources=sorted(glob("src/*.c") + glob("src/*/*.c")),
            depends=sorted(glob("src/*.h") + glob("src/*/*.h")),
            include_dirs=parts,
            libraries=["xxhash", "zstd"],
            extra_compile_args=cflags + extra,
            extra_link_args=ldextra,
        )
    ],
)
