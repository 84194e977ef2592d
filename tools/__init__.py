"""The demo, the benchmarks and the sandbox harness they share with the integration tests.

Run from the checkout's root: ``python -m tools.demo``, ``python -m tools.bench``,
``python -m tools.bench_daemon``.  Not part of the installed package.
"""
