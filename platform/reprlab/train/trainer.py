"""The fit phase: a prepared run's TorchTrainer (its batch source's and monitors' Ray datasets,
workers and CPU budget from `scaling`, checkpoints under the run's folder), fitted."""

from __future__ import annotations

from functools import partial

import ray
import ray.train
from ray.train.torch import TorchTrainer

from reprlab.data.pipeline import ingest_options
from reprlab.runs import checkpoint_root
from reprlab.tracking.mlflow import RankZeroLogger
from reprlab.train.loop import WorkerPlan, train_loop_per_worker
from reprlab.train.monitors import EpochMonitors
from reprlab.train.prepare import PreparedRun
from reprlab.train.sources import batch_source
from reprlab.train.sources.base import GenDataset
from reprlab.train.worker_session import TrainSession


class EpochLogger(ray.train.UserCallback):
    """Records each epoch's metrics (world rank 0's) in the MLflow run once Ray Train has
    persisted that epoch's checkpoint: a worker group restarted after a failure repeats only
    epochs that were never recorded, so every epoch is in the run exactly once."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        self.run_id, self.tracking_uri = run_id, tracking_uri

    def after_report(
        self,
        run_context: object,
        metrics: list[dict[str, float]],
        checkpoint: ray.train.Checkpoint | None,
    ) -> None:
        epoch = metrics[0]
        RankZeroLogger(self.run_id, self.tracking_uri, rank=0).log(epoch, step=int(epoch["epoch"]))


def build_trainer(
    prepared: PreparedRun,
    plan: WorkerPlan,
    datasets: dict[str, GenDataset],
    callbacks: list[ray.train.UserCallback] | None = None,
) -> TorchTrainer:
    """The TorchTrainer of `plan` over `datasets`; a restart with the same run name resumes from
    the latest checkpoint in `prepared.checkpoints`, as does a worker group Train restarts after
    a failure (up to `scaling.max_failures` times)."""
    scaling = prepared.job.scaling
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan},
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=None if scaling.use_gpu else {"CPU": scaling.cpus_per_worker},
            placement_strategy=scaling.placement.upper(),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(
            execution_options=ingest_options(prepared.job.data.data_cpus)
        ),
        run_config=ray.train.RunConfig(
            name=prepared.run_name,
            storage_path=checkpoint_root(prepared.job),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            callbacks=callbacks or [],
        ),
    )


def fit(
    prepared: PreparedRun,
    *,
    tracking_uri: str,
    run_id: str | None = None,
    progress: ray.actor.ActorHandle | None = None,
    callbacks: list[ray.train.UserCallback] | None = None,
    session: TrainSession | None = None,
    epoch_constants: dict[str, float] | None = None,
) -> ray.train.Result:
    """Train the prepared job on the running Ray (metrics to MLflow run `run_id` when given,
    progress to the `progress` board, the loop run through `session`: Ray Train's by default, with
    `epoch_constants` added to each); the batch source's helpers are released afterwards."""
    session = session or TrainSession()
    if run_id is not None:  # first: a Tune scheduler may stop the trial in its own callback
        callbacks = [EpochLogger(run_id, tracking_uri), *(callbacks or [])]
    job, dataset = prepared.job, prepared.dataset
    source = batch_source(job, dataset)
    monitors = EpochMonitors(job, dataset)
    try:
        first_epoch = partial(session.first_epoch, prepared.checkpoints)
        datasets = source.ray_datasets(first_epoch) | monitors.ray_datasets()
        plan = WorkerPlan(
            job=job,
            source=source,
            monitors=monitors,
            in_chans=dataset.in_chans,
            num_classes=dataset.num_classes,
            progress=progress,
            session=session,
            epoch_constants=epoch_constants or {},
            start=prepared.start,
        )
        return build_trainer(prepared, plan, datasets, callbacks).fit()
    finally:
        source.close()
