"""The training loop: one plain function, no ray, mlflow or typer.

`train(spec, reporter)` builds the model, loaders and optimiser from their spec
sections, trains for the scheduled steps, evaluates after every epoch and tells the
reporter. State is saved at epoch ends, every checkpoint.every_steps, and whenever the
reporter asks (a preemption notice); a run resumed mid-epoch replays that epoch's sample
order from the batch after the checkpoint (after an elastic resize: from the same share of the
epoch, see `resumed_batch`). The global batch and the peak lr follow the current number of
workers. When torch.distributed is initialised (Ray Train, torchrun) it trains with DDP and
reduces validation metrics over every worker.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from resplat.data import build_loader
from resplat.models import resnet
from resplat.train.reporting import EpochReport, Progress, Reporter, StepCheckpoint
from resplat.train.schedule import Plateau, lr_factor, plan_steps

PROGRESS_EVERY_S = 0.5


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device(scaling, local_rank: int = 0) -> torch.device:
    if scaling.use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("scaling.use_gpu is true but this worker sees no CUDA device")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def create_model(model_spec, scaling, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Return (model to train, the bare model whose state is saved)."""
    model = resnet(**model_spec.model_dump())
    if scaling.sync_batchnorm and _world()[1] > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last if scaling.channels_last else None)
    bare = model
    if _world()[1] > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if scaling.compile:
        model = torch.compile(model)
    return model, bare


def create_loaders(data_spec, *, batch_size: int, seed: int, device: torch.device, channels_last: bool):
    distributed = _world()[1] > 1
    common = {
        "pipeline": data_spec.pipeline,
        "resolution": data_spec.resolution,
        "batch_size": batch_size,
        "num_workers": data_spec.loader_workers,
        "distributed": distributed,
        "seed": seed,
        "device": device,
        "channels_last": channels_last,
    }
    train_loader = build_loader(
        data_spec.train, train=True, order=data_spec.order, os_cache=data_spec.os_cache, **common
    )
    val_loader = build_loader(data_spec.val, train=False, **common)
    return train_loader, val_loader


def create_optimizer(optim_spec, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=optim_spec.momentum,
        nesterov=optim_spec.nesterov and optim_spec.momentum > 0,
        weight_decay=optim_spec.weight_decay,
    )


def autocast(scaling, device: torch.device):
    if scaling.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if scaling.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def evaluate(model: nn.Module, loader, scaling, device: torch.device) -> dict[str, float]:
    """Top-1/top-5 error counts over the whole validation set (summed over workers)."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    with torch.no_grad(), autocast(scaling, device):
        for images, labels in loader:
            logits = model(images).float()
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top5 == labels[:, None]
            sums += torch.stack([
                nn.functional.cross_entropy(logits, labels, reduction="sum").double(),
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                torch.tensor(float(labels.numel()), dtype=torch.float64, device=device),
            ])
    if _world()[1] > 1:
        dist.all_reduce(sums)
    loss, top1, top5, count = sums.tolist()
    count = max(count, 1.0)
    return {"val_loss": loss / count, "val_top1": top1 / count, "val_top5": top5 / count, "val_images": count}


def _sum_over_workers(value: float, device: torch.device) -> float:
    if _world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def capture_rng() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def resumed_batch(epoch_step: int, saved_steps_per_epoch: int, steps_per_epoch: int) -> int:
    """The batch of its epoch a resumed run starts at. After an elastic resize an epoch has another
    number of steps and the workers read other shards, so a mid-epoch position cannot be replayed
    batch for batch: the run keeps the share of the epoch already done (rounded down, so it never
    skips past the epoch's end) and reads the rest of the epoch in the new world's order. Starting
    the epoch over would train twice on its first part; jumping to the next would leave the epoch
    without its evaluation."""
    if saved_steps_per_epoch == steps_per_epoch:
        return epoch_step
    return epoch_step * steps_per_epoch // saved_steps_per_epoch


def train(spec, reporter: Reporter, *, resume: dict[str, Any] | None = None, local_rank: int = 0) -> dict[str, float]:
    """Train `spec` (a JobSpec whose data sources are .beton files); return the last epoch's metrics.

    `resume` is a checkpoint state saved by an earlier run of the same spec.
    """
    rank, world = _world()
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    device = pick_device(spec.scaling, local_rank)
    model, bare_model = create_model(spec.model, spec.scaling, device)
    train_loader, val_loader = create_loaders(
        spec.data,
        batch_size=spec.optim.batch_size,
        seed=spec.seed,
        device=device,
        channels_last=spec.scaling.channels_last,
    )
    torch.set_num_threads(spec.scaling.cpus_per_worker)  # FFCV sets it to its own thread count
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has fewer images per worker than optim.batch_size {spec.optim.batch_size}"
        )
    plan = plan_steps(spec.schedule, steps_per_epoch)
    epochs = -(-plan.total_steps // steps_per_epoch)
    peak_lr = spec.peak_lr(world)  # the global batch, and with it the lr rule, follow the current workers
    optimizer = create_optimizer(spec.optim, model, peak_lr)
    plateau = Plateau.of(spec.schedule)  # moves the lr only for schedule.kind plateau

    def lr_at(step: int) -> float:
        return lr_factor(plan, step) * plateau.factor

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    scaler = torch.amp.GradScaler(device.type, enabled=spec.scaling.precision == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.optim.label_smoothing)

    def snapshot(epochs_done: int, epoch_step: int) -> dict[str, Any]:
        return {
            "model": bare_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "plateau": plateau.state_dict(),
            "epoch": epochs_done,
            "epoch_step": epoch_step,  # steps done in epoch `epochs_done + 1`; 0 at an epoch's end
            "global_step": step,
            "steps_per_epoch": steps_per_epoch,  # at this world size: a resumed run of another size maps by it
            "world_size": world,
            "rng": capture_rng(),
            "seed": spec.seed,
        }

    start_epoch, step, skip = 0, 0, 0
    if resume is not None:
        bare_model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        plateau.load_state_dict(resume.get("plateau", {}))
        start_epoch, step = resume["epoch"], resume["global_step"]
        skip = resumed_batch(resume.get("epoch_step", 0), resume.get("steps_per_epoch", steps_per_epoch),
                             steps_per_epoch)
        skip = min(skip, max(0, plan.total_steps - start_epoch * steps_per_epoch - 1))  # a max_steps epoch's end
        restore_rng(resume["rng"])
        train_loader.next_epoch = start_epoch
        train_loader.skip_batches = skip
    # `step` counts the optimiser steps taken (it only grows, across resizes too); the schedule runs
    # on the position in this world size's epochs. The two differ by a constant after an elastic resize.
    position = start_epoch * steps_per_epoch + skip
    offset = step - position
    if resume is not None:
        scheduler.last_epoch = position
        scheduler.base_lrs = [peak_lr] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["initial_lr"], group["lr"] = peak_lr, peak_lr * lr_at(position)

    every_steps = spec.checkpoint.every_steps
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, last_shown, t0 = 0, 0.0, time.perf_counter()
        # Data wait: time from the end of one step to the start of the next (the loader's turn).
        step_end, window_start, window_step, data_wait = t0, t0, skip, 0.0
        steps_this_epoch = min(steps_per_epoch, plan.total_steps - epoch * steps_per_epoch)
        save_at_epoch_end = preempted_at_epoch_end = False
        for i, (images, labels) in enumerate(train_loader, start=skip):
            if i >= steps_this_epoch:
                break
            data_wait += time.perf_counter() - step_end
            with autocast(spec.scaling, device):
                logits = model(images)
                loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            seen += labels.numel()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            now = step_end = time.perf_counter()
            if now - last_shown > PROGRESS_EVERY_S or i + 1 == steps_this_epoch:
                last_shown = now
                window = max(now - window_start, 1e-9)
                reporter.progress(Progress(
                    epoch=epoch + 1, epochs=epochs, step=i + 1, steps_per_epoch=steps_this_epoch,
                    global_step=step, total_steps=plan.total_steps + offset, loss=loss.item(),
                    images_per_sec=seen * world / max(now - t0, 1e-9),
                    worker_images_per_sec=seen / max(now - t0, 1e-9),
                    step_seconds=window / max(i + 1 - window_step, 1),
                    data_wait_fraction=min(data_wait / window, 1.0),
                    lr=optimizer.param_groups[0]["lr"],
                ))
                window_start, window_step, data_wait = now, i + 1, 0.0
            # Every worker asks at every step: under Ray the question is a collective.
            preempted = reporter.checkpoint_requested(step)
            if preempted or (every_steps and step % every_steps == 0):
                if i + 1 == steps_this_epoch:
                    save_at_epoch_end = True  # the epoch's own checkpoint comes in a moment
                    preempted_at_epoch_end = preempted
                else:
                    reporter.step_checkpoint(StepCheckpoint(
                        epoch=epoch + 1, step=i + 1, global_step=step,
                        state=snapshot(epoch, i + 1) if rank == 0 else None,
                        preemption=preempted, metrics=metrics,
                    ))
        steps_run, skip = steps_this_epoch - skip, 0
        train_seconds = time.perf_counter() - t0
        reporter.progress(Progress(
            epoch=epoch + 1, epochs=epochs, step=steps_this_epoch, steps_per_epoch=steps_this_epoch,
            global_step=step, total_steps=plan.total_steps + offset, loss=loss.item(),
            images_per_sec=seen * world / max(train_seconds, 1e-9), phase="val",
            worker_images_per_sec=seen / max(train_seconds, 1e-9), lr=optimizer.param_groups[0]["lr"],
        ))
        metrics = {
            "train_loss": _sum_over_workers(loss_sum.item(), device) / max(1, steps_run * world),
            "train_images": _sum_over_workers(seen, device),
            "train_top1": _sum_over_workers(correct.item(), device) / max(1, _sum_over_workers(seen, device)),
            "train_images_per_sec": _sum_over_workers(seen / max(train_seconds, 1e-9), device),
            "lr": optimizer.param_groups[0]["lr"],
            **evaluate(bare_model, val_loader, spec.scaling, device),  # no DDP: shards may differ by one
        }
        if spec.schedule.kind == "plateau" and plateau.update(metrics):
            for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base_lr * lr_at(scheduler.last_epoch)  # from the next step on, not one step late
        final = epoch + 1 == epochs
        due = final or save_at_epoch_end or (epoch + 1) % spec.checkpoint.every_epochs == 0
        state = snapshot(epoch + 1, 0) if rank == 0 and due else None
        reporter.epoch_end(EpochReport(epoch=epoch + 1, global_step=step, metrics=metrics, state=state, final=final,
                                       preemption=preempted_at_epoch_end))
    return metrics
