"""Evaluation of frozen representations: linear probe and kNN."""
