"""`python -m benchmarks`: list the benchmarks; run one with `python -m benchmarks.NAME`."""

import pkgutil

import benchmarks

for mod in pkgutil.iter_modules(benchmarks.__path__):
    if not mod.name.startswith("_"):
        print(f"python -m benchmarks.{mod.name}")
