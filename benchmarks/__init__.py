"""Benchmark programs: ``python -m benchmarks.<name> --help`` from the repository root.

Each prints a table measured side by side in one run and appends it, with the command, machine and
date, to ``benchmarks/RESULTS.md`` (``--results``/``--no-append``). Data sets are read under the
data-set root (``$CRACK_DATA_ROOT``, ``../shared/data`` when unset: :mod:`contract.data_root`).
"""
