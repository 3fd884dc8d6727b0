"""Helpers of the benchmark scripts that compare mlpot with MACE and SchNetPack.

The orchestrating modules (``common``, ``datasets``, ``training``, ``report``, ``plots``) run in
mlpot's environment. The modules in ``bench.workers`` run in the environment of the package
they measure, started as ``python -m bench.workers.NAME`` with ``scripts/`` on ``PYTHONPATH``,
and import nothing from mlpot unless they measure mlpot.
"""
