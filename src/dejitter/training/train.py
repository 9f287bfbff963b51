"""Training the network: a dataset of synthetic pairs, Adam on the MSE of the shifts.

The loop is resumable (a checkpoint after every epoch), writes its metrics per epoch to CSV,
shows a progress bar, and runs on a GPU when there is one, on the CPU otherwise.
``dejitter-train`` is its command line; the workflow's ``train`` target calls the same functions.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..files import atomic_path
from ..preprocessing import normalise
from ..readers import read_scan
from ..reconstruction.projectors import default_device
from ..registration.network import DejitterNet, input_factor, load_model, read_card, save_model
from .data import TrainingConditions, pairs_from_aligned_scan, synthetic_pairs

__all__ = ["make_dataset", "write_dataset", "read_dataset", "train", "covered_amplitude", "main"]

log = logging.getLogger("dejitter")


def _one_scan(args):
    seed, conditions, input_size, aligned_path = args
    torch.set_num_threads(1)  # the pool provides the parallelism
    if aligned_path is None:
        pairs, targets, info = synthetic_pairs(seed, conditions, input_size)
    else:
        scan = read_scan(aligned_path, normalised=False)
        line_integrals = normalise(scan.data, scan.flats, scan.darks, path=aligned_path)
        pairs, targets = pairs_from_aligned_scan(line_integrals, np.deg2rad(scan.theta_deg), seed, conditions,
                                                 input_size)
        info = {"aligned_scan": str(aligned_path), "n_angles": len(scan.theta_deg)}
    return pairs.astype(np.float16), targets, seed, info


def make_dataset(seeds, *, conditions=None, input_size=64, processes=None, progress=True, aligned_scans=(),
                 aligned_repeats=4):
    """Synthesise training pairs for the given scan seeds, and from the user's aligned scans.

    Parameters
    ----------
    seeds : iterable of int
        One synthetic scan per seed (:func:`dejitter.training.data.synthetic_pairs`).
    aligned_scans : sequence of path
        Aligned scans of the beamline's own samples (any format :func:`dejitter.readers.read_scan`
        reads with flats and darks); each gives ``aligned_repeats`` jittered copies.

    Returns
    -------
    dict
        ``pairs`` (N, 2, S, S) float16, ``targets`` (N, 2) float32, ``scan`` (N,) seed of each pair,
        ``info`` list of per-scan conditions, ``conditions`` the ranges they were drawn from.
    """
    conditions = TrainingConditions() if conditions is None else conditions
    jobs = [(int(s), conditions, input_size, None) for s in seeds]
    first_seed = max([int(s) for s in seeds], default=-1) + 1
    jobs += [(first_seed + k, conditions, input_size, str(path))
             for k, path in enumerate(p for p in aligned_scans for _ in range(aligned_repeats))]
    processes = processes or max(1, multiprocessing.cpu_count())
    pairs, targets, scans, info = [], [], [], []
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for p, t, seed, i in tqdm(pool.imap(_one_scan, jobs), total=len(jobs), desc="training scans",
                                  disable=not progress):
            pairs.append(p)
            targets.append(t)
            scans.append(np.full(len(t), seed))
            info.append(dict(i, seed=seed))
    return {"pairs": np.concatenate(pairs), "targets": np.concatenate(targets),
            "scan": np.concatenate(scans), "info": info, "conditions": dict(conditions)}


def write_dataset(path, dataset):
    """Write a dataset to HDF5 (atomically), with its conditions as attributes."""
    import json

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        pairs = dataset["pairs"]
        # Chunks of 256 pairs (a few batches) for training reads; a small dataset is one chunk.
        f.create_dataset("pairs", data=pairs, chunks=(max(1, min(256, len(pairs))),) + pairs.shape[1:])
        f.create_dataset("targets", data=dataset["targets"])
        f.create_dataset("scan", data=dataset["scan"])
        f.attrs["conditions"] = json.dumps(dataset["conditions"])
        f.attrs["info"] = json.dumps(dataset["info"])


def read_dataset(path):
    """Read a dataset written by :func:`write_dataset`."""
    import json

    with h5py.File(path, "r") as f:
        return {"pairs": f["pairs"][()], "targets": f["targets"][()], "scan": f["scan"][()],
                "conditions": json.loads(f.attrs["conditions"]), "info": json.loads(f.attrs["info"])}


def _augment(pairs, targets, generator):
    """Random flips of rows and columns; a flip negates the matching shift component."""
    flip_x = torch.rand(len(pairs), generator=generator) < 0.5
    flip_y = torch.rand(len(pairs), generator=generator) < 0.5
    pairs = torch.where(flip_x[:, None, None, None], pairs.flip(-1), pairs)
    pairs = torch.where(flip_y[:, None, None, None], pairs.flip(-2), pairs)
    sign = torch.stack([1 - 2 * flip_x.float(), 1 - 2 * flip_y.float()], 1)
    return pairs, targets * sign


def _evaluate(model, pairs, targets, device, batch_size=256):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            x = torch.from_numpy(pairs[start:start + batch_size].astype(np.float32)).to(device)
            y = torch.from_numpy(targets[start:start + batch_size]).to(device)
            total += float(((model(x) - y) ** 2).sum(1).sum())
    return total / max(1, len(pairs))


def train(dataset, *, checkpoint, metrics_csv, epochs=20, batch_size=64, lr=1e-3, val_fraction=0.1,
          input_size=64, seed=0, device=None, time_budget_s=None, progress=True, init_model=None):
    """Train :class:`DejitterNet` with Adam on the MSE of the shifts.

    Parameters
    ----------
    dataset : dict
        From :func:`make_dataset` or :func:`read_dataset`.
    checkpoint : path
        Written after every epoch; training resumes from it when it exists.
    metrics_csv : path
        One row per epoch: ``epoch, train_mse, val_mse, lr, seconds`` (MSE in px^2 of the input).
    epochs, batch_size, lr : training schedule (cosine decay of ``lr`` over ``epochs``).
    val_fraction : float
        Share of *scans* (not pairs) held out for validation.
    time_budget_s : float, optional
        Stop after the epoch that passes this wall time (the schedule is shortened to match).
    init_model : path, optional
        A model file (with its card) whose weights training starts from: fine-tuning a trained
        network on new conditions, which needs far fewer pairs than training from scratch.  Its
        input size and reference mode must match the dataset's.

    Returns
    -------
    model : DejitterNet
    history : list of dict
        One row per epoch; with ``init_model``, a first row for epoch 0 holds the starting
        weights' validation MSE on this dataset (its train MSE is NaN).
    """
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    scans = np.unique(dataset["scan"])
    rng = np.random.default_rng(seed)
    val_scans = rng.choice(scans, max(1, int(round(len(scans) * val_fraction))), replace=False)
    is_val = np.isin(dataset["scan"], val_scans)
    train_pairs = torch.from_numpy(dataset["pairs"][~is_val])
    train_targets = torch.from_numpy(dataset["targets"][~is_val])
    val_pairs, val_targets = dataset["pairs"][is_val], dataset["targets"][is_val]

    model = DejitterNet(input_size, references=dataset["conditions"].get("references", "leave_out"))
    if init_model is not None:
        _start_from(model, init_model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history, start_epoch = [], 0
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start_epoch = int(state["epoch"])
        history = _read_history(metrics_csv)
        log.info("resuming from %s at epoch %d", checkpoint, start_epoch)
    elif init_model is not None:
        history = [{"epoch": 0, "train_mse": float("nan"), "val_mse": _evaluate(model, val_pairs, val_targets, device),
                    "lr": lr, "seconds": 0.0}]
        _write_history(metrics_csv, history)
        log.info("starting from %s: validation %.3f px^2", init_model, history[0]["val_mse"])
    started = time.time()
    schedule_end = epochs
    for epoch in range(start_epoch, epochs):
        model.train()
        order = torch.randperm(len(train_pairs), generator=generator)
        total, count = 0.0, 0
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   mininterval=5)
        for start in bar:
            idx = order[start:start + batch_size]
            x, y = _augment(train_pairs[idx].float(), train_targets[idx], generator)
            x, y = x.to(device), y.to(device)
            loss = ((model(x) - y) ** 2).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(mse=f"{total / count:.3f}")
        scheduler.step()
        row = {"epoch": epoch + 1, "train_mse": total / max(count, 1),
               "val_mse": _evaluate(model, val_pairs, val_targets, device),
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - started, 1)}
        history.append(row)
        _write_history(metrics_csv, history)
        with atomic_path(checkpoint) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                        "epoch": epoch + 1}, tmp)
        log.info("epoch %d: train %.3f, validation %.3f px^2", row["epoch"], row["train_mse"], row["val_mse"])
        if time_budget_s and epoch == start_epoch:
            # From the first epoch's time, the epochs the budget affords: the cosine schedule is
            # shortened to end there (annealed), rather than cut off at a high learning rate.
            elapsed = time.time() - started
            affordable = epoch + 1 + int(max(0.0, time_budget_s - elapsed) // max(elapsed, 1e-9))
            if affordable < min(epochs, scheduler.T_max):
                schedule_end = scheduler.T_max = max(affordable, epoch + 1)
                log.info("time budget: the schedule ends after epoch %d", schedule_end)
        over_budget = bool(time_budget_s) and time.time() - started > time_budget_s
        if epoch + 1 < epochs and (epoch + 1 >= schedule_end or over_budget):
            log.info("time budget reached after epoch %d", epoch + 1)
            break
    return model.cpu().eval(), history


def _start_from(model, init_model):
    """Load ``init_model``'s weights into ``model`` (checksum checked), refusing another geometry."""
    start, _ = load_model(init_model)
    if (start.input_size, start.references) != (model.input_size, model.references):
        raise ValueError(f"{init_model} reads {start.input_size} px pairs with {start.references} references; "
                         f"the dataset has {model.input_size} px and {model.references}: train from scratch")
    model.load_state_dict(start.state_dict())


def _write_history(path, history):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _read_history(path):
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def covered_amplitude(dataset, input_size):
    """The jitter the training targets cover, in pixels of the training scans (for the card).

    The 99.9th percentile of ``|dx|, |dy|`` over all pairs, not the drawn amplitude: targets are
    jitter modulo rigid motion, which reaches a little beyond it, and a percentile keeps a few
    extreme pairs from widening the range.  Estimates beyond it are flagged at inference.
    """
    c = dataset["conditions"]
    network_px = float(np.percentile(np.abs(dataset["targets"]), 99.9))
    return network_px * c["binning"] * input_factor((c["size"] / c["binning"],), input_size)


def main(argv=None):
    """Command line: synthesise a dataset (or read one) and train a model with its card."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="HDF5 dataset; created when absent")
    parser.add_argument("--scans", type=int, default=400, help="synthetic scans when creating the dataset")
    parser.add_argument("--aligned", nargs="*", default=[], help="aligned scans of your own samples to add")
    parser.add_argument("--out", required=True, help="model file to write (.pt; the card goes beside it)")
    parser.add_argument("--workdir", default=None, help="checkpoint and metrics folder (default: beside --out)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds of training at most")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--init-model", default=None, help="model file to fine-tune (default: from scratch)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.dataset).exists():
        write_dataset(args.dataset, make_dataset(range(args.scans), conditions=TrainingConditions(),
                                                 input_size=args.input_size, aligned_scans=args.aligned))
    dataset = read_dataset(args.dataset)
    workdir = Path(args.workdir or Path(args.out).parent)
    workdir.mkdir(parents=True, exist_ok=True)
    model, history = train(dataset, checkpoint=workdir / "checkpoint.pt", metrics_csv=workdir / "metrics.csv",
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           input_size=args.input_size, time_budget_s=args.time_budget,
                           init_model=args.init_model or None)
    trained = [row for row in history if row["epoch"] > 0]
    card = {
        "architecture": "DejitterNet: 7x7/2 conv, max-pool, residual stages 64/128/256 (2 basic blocks, /2 each), "
                        "GroupNorm(1, C), global average pool, linear to (dx, dy)",
        "training_data": {"synthetic_scans": len(dataset["info"]), "pairs": int(len(dataset["targets"])),
                          "conditions": dataset["conditions"]},
        "hyperparameters": {"optimizer": "Adam", "lr": args.lr, "schedule": "cosine", "batch_size": args.batch_size,
                            "epochs_run": len(trained), "epochs_planned": args.epochs, "augmentation": "flips"},
        "validation_mse_px2_network_input": trained[-1]["val_mse"] if trained else None,
        "trained_amplitude_px_input": covered_amplitude(dataset, args.input_size),
        "history": trained,
        "torch_version": torch.__version__,
    }
    if args.init_model:
        parent = read_card(args.init_model)
        card["initialised_from"] = {"file": Path(args.init_model).name, "sha256": parent["sha256"],
                                    "validation_mse_px2_network_input": history[0]["val_mse"]}
    save_model(model, args.out, card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
