"""Pipelines of runs: stages that name earlier stages' runs, run and resumed as one."""
