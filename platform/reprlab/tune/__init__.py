"""Ray Tune sweeps: search spaces from tune_spaces/*.yaml, and the Tuner that runs them."""
