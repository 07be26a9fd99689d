"""Training: the one worker loop, the TorchTrainer built from a job, checkpoints."""
