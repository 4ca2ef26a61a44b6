"""The optimisation loop every training stage shares: seeded endless batches, AdamW with warm-up and cosine decay,
gradient clipping, a stop on the first non-finite loss, progress events and a tidy log.

A stage is a `StepLoss`: ``step(images: Tensor[B, 3, H, W], targets, generator) -> {term: scalar loss}``; the loop
sums the terms, and logs each of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from bmbench.data.coco import CocoInstanceDataset, collate
from bmbench.device import synchronize
from bmbench.errors import BmbenchError
from bmbench.results import EventHook, emit

StepLoss = Callable[[Tensor, list[dict[str, Any]], torch.Generator], dict[str, Tensor]]
Batch = tuple[Tensor, list[dict[str, Any]]]


class NonFiniteLossError(BmbenchError):
    """A loss term or the gradient norm became NaN or infinite: the run stops and says where."""


def training_batches(dataset: CocoInstanceDataset, *, batch_size: int, seed: int) -> Iterator[Batch]:
    """Endless shuffled batches; the order and flips come from `seed` alone, so a run repeats exactly."""
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=collate,
        num_workers=0,
        drop_last=len(dataset) >= batch_size,
    )
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def to_device(images: Tensor, targets: list[dict[str, Any]], device: torch.device) -> Batch:
    """Move a batch's images and the tensors the losses read (boxes, labels, masks) to `device`."""
    moved = [{**t, **{k: t[k].to(device) for k in ("boxes", "labels", "masks")}} for t in targets]
    return images.to(device), moved


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up from 1/1000 over `warmup` steps, then cosine decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return 1e-3 + (1 - 1e-3) * step / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


ESTIMATE_AFTER = 5  # steps after which a stage reports its estimated time left


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _check_finite(names: list[str], values: list[float], *, stage: str, it: int, iters: int, lr: float) -> None:
    for name, value in zip(names, values, strict=True):
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"{stage} training stopped at iteration {it}/{iters}: loss term {name!r} is {value} "
                f"(lr {lr:.3g}); try a lower --lr"
            )


def optimise(
    step: StepLoss,
    parameters: list[nn.Parameter],
    batches: Iterator[Batch],
    *,
    stage: str,
    iters: int,
    lr: float,
    device: torch.device,
    seed: int,
    warmup_iters: int = 50,
    weight_decay: float = 1e-4,
    clip_norm: float = 5.0,
    log_every: int = 10,
    events: EventHook | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run `iters` AdamW steps of `step` on `batches` (warm-up: at most a quarter of the steps).

    Returns (log rows: stage, iter, lr, loss_<term>..., loss_total, images_per_s — each the mean of the last
    `log_every` steps — and timing: seconds, images_per_s). `seed` drives the generator passed to `step`. A
    non-finite loss term or gradient norm raises NonFiniteLossError naming the stage, iteration and term.
    `events` receives, under the name `stage`: start (total steps), advance after each step (data: loss), log
    with each log row, end. `on_step(it)` runs after each step (e.g. to save a snapshot).
    """
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(min(warmup_iters, iters // 4), iters))
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    window: list[list[float]] = []
    images_seen = window_images = 0
    started = window_started = time.perf_counter()
    emit(events, stage, "start", total=iters)
    for it in range(1, iters + 1):
        images, targets = to_device(*next(batches), device)
        losses = step(images, targets, generator)
        total = sum(losses.values())
        names = [*losses, "total"]
        values = torch.stack([*(v.detach().float() for v in losses.values()), total.detach().float()]).tolist()
        _check_finite(names, values, stage=stage, it=it, iters=iters, lr=scheduler.get_last_lr()[0])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, clip_norm))
        _check_finite(["gradient norm"], [norm], stage=stage, it=it, iters=iters, lr=scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        images_seen += len(images)
        window_images += len(images)
        window.append(values)
        if on_step is not None:
            on_step(it)
        emit(events, stage, "advance", completed=it, total=iters, data={"loss": values[-1]})
        if it == ESTIMATE_AFTER and iters > 2 * ESTIMATE_AFTER:
            pace = (time.perf_counter() - started) / it
            left = pace * (iters - it)
            message = f"{stage}: {iters} steps, about {_duration(left)} left at the first {it} steps' pace"
            emit(events, stage, "note", completed=it, total=iters, message=message, data={"eta_s": left})
        if it % log_every == 0 or it == iters:
            synchronize(device)
            now = time.perf_counter()
            mean = [sum(col) / len(window) for col in zip(*window, strict=True)]
            rows.append(
                {
                    "stage": stage,
                    "iter": it,
                    "lr": optimizer.param_groups[0]["lr"],
                    **{f"loss_{name}": v for name, v in zip(names, mean, strict=True)},
                    "images_per_s": window_images / max(now - window_started, 1e-9),
                }
            )
            window, window_images, window_started = [], 0, now
            emit(events, stage, "log", completed=it, total=iters, data=rows[-1])
    synchronize(device)
    seconds = time.perf_counter() - started
    emit(events, stage, "end", completed=iters, total=iters, data={"seconds": seconds})
    return rows, {"seconds": seconds, "images_per_s": images_seen / max(seconds, 1e-9)}
