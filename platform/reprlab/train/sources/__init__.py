"""Batch sources by name; a method declares the one it trains on (`Method.batch_source`)."""

from __future__ import annotations

from reprlab.config import JobConfig
from reprlab.data.handle import DatasetHandle
from reprlab.methods import method_class
from reprlab.train.sources.base import BatchSource
from reprlab.train.sources.episodes import EpisodeSource
from reprlab.train.sources.m_per_class import MPerClassSource
from reprlab.train.sources.semi import LabelledUnlabelledSource
from reprlab.train.sources.views import TwoViewSource

SOURCES: dict[str, type[BatchSource]] = {
    "two_views": TwoViewSource,
    "episodes": EpisodeSource,
    "labelled_unlabelled": LabelledUnlabelledSource,
    "m_per_class": MPerClassSource,
}


def batch_source(job: JobConfig, dataset: DatasetHandle) -> BatchSource:
    """The source the job's method trains on, over `dataset`."""
    return SOURCES[method_class(job.method).batch_source](job, dataset)


__all__ = [
    "SOURCES",
    "BatchSource",
    "EpisodeSource",
    "LabelledUnlabelledSource",
    "MPerClassSource",
    "TwoViewSource",
    "batch_source",
]
