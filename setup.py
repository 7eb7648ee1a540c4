"""Native extensions: Cython sources in _native/, built as gateway._ext.<name>.

Each extension has a pure-Python twin in the package; gateway.native decides at import
which one runs. Set SMIMEGATE_BUILD_NO_EXTENSIONS=1 to install without compiling.
"""

import os

from setuptools import Extension, setup

NATIVE_MODULES = ["canon", "mimescan", "certcache"]


def extensions() -> list[Extension]:
    if os.environ.get("SMIMEGATE_BUILD_NO_EXTENSIONS") == "1":
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(f"gateway._ext.{name}", [f"_native/{name}.pyx"], extra_compile_args=["-O2"])
        for name in NATIVE_MODULES
    ]
    return cythonize(exts, language_level=3, compiler_directives={"boundscheck": False})


setup(ext_modules=extensions())
