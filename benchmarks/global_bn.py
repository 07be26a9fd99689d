"""What global batch norm and the conv4's memory layout cost a CPU training step: the
quickstart's SimCLR module on 2 gloo workers (1 thread each, its local half of the batch, both
views), one optimiser step timed with each kind of batch norm and layout, in one command.

    .venv/bin/python benchmarks/global_bn.py [jobs/quickstart.yaml] [--steps 12]

Rows: per-worker BatchNorm (no statistics cross the workers), reprlab's GlobalBatchNorm, the
same with the conv4's weights in NCHW instead of channels-last (reprlab's layout before), and
the global statistics written as elementwise autograd ops (reprlab's implementation before
GlobalBatchNorm, kept as a baseline). Prints the median step of each and its ratio to
per-worker BatchNorm.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reprlab.augment.ops import float_images
from reprlab.config import load_job
from reprlab.data.handle import DatasetHandle
from reprlab.models.norm import GlobalBatchNorm, global_batch_norm
from reprlab.train.build import make_method
from reprlab.train.optim import make_optimizer


class _SumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class ElementwiseGlobalBatchNorm(_BatchNorm):
    """Global statistics through an all-reduce of per-channel sums, normalised in autograd
    elementwise ops (running statistics left out: they do not change the step's cost much)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype)
        stats = _SumWithGrad.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        mean = stats[:channels] / stats[-1]
        var = stats[channels : 2 * channels] / stats[-1] - mean * mean
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _swap(module: nn.Module, kind: type[_BatchNorm]) -> None:
    for name, child in module.named_children():
        if isinstance(child, GlobalBatchNorm):
            setattr(module, name, kind(child.num_features, child.eps, child.momentum))
        else:
            _swap(child, kind)


def _worker(rank: int, port: int, job_path: str, steps: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    job = load_job(job_path)
    dataset = DatasetHandle.open_or_ingest(job.data.dataset)
    images = torch.from_numpy(dataset.read(job.data.train_split)[0])
    policy = job.data.augment.at_size(job.data.image_size)
    local = job.data.batch_size // 2
    generator = torch.Generator().manual_seed(rank)
    view1, view2 = policy.view_pair(images[rank * local : (rank + 1) * local], generator)
    batch = float_images({"view1": view1, "view2": view2})
    channels_last, nchw = torch.channels_last, torch.contiguous_format
    for name, kind, layout in [
        ("per-worker BatchNorm", None, channels_last),
        ("GlobalBatchNorm", GlobalBatchNorm, channels_last),
        ("GlobalBatchNorm, NCHW weights (before)", GlobalBatchNorm, nchw),
        ("elementwise global BN, NCHW (before)", ElementwiseGlobalBatchNorm, nchw),
    ]:
        torch.manual_seed(job.seed)
        method = make_method(job, dataset.in_chans).to(memory_format=layout)
        if kind is not None:
            global_batch_norm(method, use_gpu=False)
            if kind is not GlobalBatchNorm:
                _swap(method, kind)
        model = nn.parallel.DistributedDataParallel(method)
        optimizer = make_optimizer(job, method)
        times = []
        for _ in range(steps + 2):
            dist.barrier()
            started = time.perf_counter()
            loss = model(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        if rank == 0:
            queue.put((name, statistics.median(times[2:])))
    if rank == 0:
        queue.put(None)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    DatasetHandle.open_or_ingest(load_job(args.job).data.dataset)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    workers = [
        context.Process(target=_worker, args=(rank, port, args.job, args.steps, queue))
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    rows = list(iter(queue.get, None))
    for worker in workers:
        worker.join()
    baseline = rows[0][1]
    print(f"| batch norm (2 gloo workers, {args.job}) | median step | vs per-worker BN |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.0f} ms | {seconds / baseline:.2f}x |")


if __name__ == "__main__":
    main()
