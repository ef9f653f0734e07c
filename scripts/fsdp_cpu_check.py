#!/usr/bin/env python
"""Data-parallel and sharded training of Hydra on two CPU processes (gloo): the loss and the update of one batch.

One optimizer step (SGD, learning rate 1, no clipping) of a tiny HydraForMaskedLM on 16 examples that score different
numbers of tokens, in these ways:
  single  one process, the Trainer with batch 16 (the reference);
  ddp     the Trainer under `torchrun --nproc_per_node 2 --use_cpu`, batch 8 per process (DistributedDataParallel);
  fsdp    the same with `--fsdp full_shard`. The script reports what the Trainer really built: accelerate shards only
          on accelerators, and on CPU keeps DistributedType.MULTI_CPU and wraps the model in DDP (exit status 3);
  fsdp2   PyTorch's own FSDP2 (`fully_shard`) on the CPU processes, one unit per module class in the model's
          `_no_split_modules` (HydraLayer) plus the root, with the Trainer's loss contract written out: the scored
          token count of the step summed over the processes is `num_items_in_batch`, and the loss is multiplied by
          the number of processes because the gradient reduction averages them.
Each writes its logged loss and its updated weights; the parameter change of each parallel run (minus the gradient)
must equal the reference's to `--tolerance` of the largest entry, and the losses must agree to the same relative
tolerance. Exit status: 0 when all agree, 1 when one differs, 2 when a run fails (its output is printed), 3 when the
Trainer did not shard under --fsdp (the run is still compared).

    python scripts/fsdp_cpu_check.py [--modes ddp fsdp fsdp2] [--output_dir DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

EXAMPLES = 16
VOCAB = 120


def tiny_model():
    """The same randomly initialized tiny masked LM in every process (seeded)."""
    from configuration_hydra import HydraConfig
    from modeling_hydra import HydraForMaskedLM

    torch.manual_seed(0)
    config = HydraConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, d_state=8, headdim=8, ngroups=2,
                         chunk_size=8, hidden_dropout_prob=0.0)
    return HydraForMaskedLM(config)


def examples():
    """EXAMPLES sequences of 2-13 tokens; about 40% of the tokens scored, none in every 5th example."""
    g = torch.Generator().manual_seed(1)
    data = []
    for i in range(EXAMPLES):
        n = int(torch.randint(2, 14, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (n,), generator=g)
        scored = torch.rand(n, generator=g) < (0.0 if i % 5 == 0 else 0.4)
        data.append({"input_ids": ids.tolist(),
                     "labels": torch.randint(0, VOCAB, (n,), generator=g).masked_fill(~scored, -100).tolist()})
    return data


def collate(batch):
    """Right-pads ids with 0 and labels with -100."""
    width = max(len(e["input_ids"]) for e in batch)
    pad = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows])  # noqa: E731
    return {"input_ids": pad([e["input_ids"] for e in batch], 0),
            "attention_mask": pad([[1] * len(e["input_ids"]) for e in batch], 0),
            "labels": pad([e["labels"] for e in batch], -100)}


def train_one_step(mode, output_dir):
    """Runs in each process: one Trainer step, then the main process writes loss.json and weights.pt."""
    from transformers import Trainer, TrainingArguments

    parallel = mode != "single"
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=EXAMPLES // 2 if parallel else EXAMPLES,
        max_steps=1, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        fsdp="full_shard" if mode == "fsdp" else "", ddp_backend="gloo" if parallel else None)
    trainer = Trainer(model=tiny_model(), args=args, train_dataset=examples(), data_collator=collate)
    if parallel and args.world_size != 2:
        raise RuntimeError(f"expected 2 processes, the Trainer sees world_size={args.world_size}")
    trainer.train()
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # the full weights (gathered under FSDP)
    if trainer.is_world_process_zero():
        loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
        record = {"loss": loss, "wrapper": type(trainer.model_wrapped).__name__,
                  "distributed_type": str(trainer.accelerator.distributed_type),
                  "sharded_units": sharded_units(trainer.model_wrapped)}
        write_result(output_dir, record, state)


def sharded_units(model):
    """The class names of the modules FSDP (1 or 2) manages, outermost first."""
    names = []
    for module in model.modules():
        name = type(module).__name__
        if name == "FullyShardedDataParallel":
            names.append(f"FSDP({type(module.module).__name__})")
        elif name.startswith("FSDP") and name not in names:  # FSDP2 swaps the class for FSDP<original class>
            names.append(name)
    return names


def write_result(output_dir, record, state):
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "loss.json").write_text(json.dumps(record))
    torch.save({k: v.detach().cpu() for k, v in state.items()}, Path(output_dir) / "weights.pt")


def fsdp2_one_step(output_dir):
    """Runs in each process: one step of PyTorch FSDP2 with the Trainer's loss contract done by hand."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        model = tiny_model()
        for module in [m for m in model.modules() if type(m).__name__ in model._no_split_modules]:
            fully_shard(module)
        fully_shard(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        batch = collate(examples()[rank * EXAMPLES // world:(rank + 1) * EXAMPLES // world])
        num_items_in_batch = batch["labels"].ne(-100).sum()
        dist.all_reduce(num_items_in_batch)  # the Trainer's average_tokens_across_devices
        loss = model(**batch, num_items_in_batch=num_items_in_batch).loss * world  # the reduction averages
        loss.backward()
        optimizer.step()
        logged = loss.detach().clone()
        dist.all_reduce(logged)  # the Trainer logs the mean of the processes' losses
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            record = {"loss": logged.item() / world, "wrapper": type(model).__name__,
                      "distributed_type": "torch FSDP2 (fully_shard)", "sharded_units": sharded_units(model)}
            write_result(output_dir, record, state)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(mode, output_dir):
    """Runs `mode` in fresh processes; returns (completed process, loss record or None)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    worker = [str(Path(__file__).resolve()), "--worker", mode, "--output_dir", str(output_dir)]
    if mode == "single":
        command = [sys.executable, *worker]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *worker]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    record = output_dir / "loss.json"
    return completed, (json.loads(record.read_text()) if completed.returncode == 0 and record.exists() else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=["ddp", "fsdp", "fsdp2"], default=["ddp", "fsdp", "fsdp2"])
    parser.add_argument("--output_dir", type=Path, default=None, help="where the runs write (default: a temp dir)")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--worker", choices=["single", "ddp", "fsdp", "fsdp2"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "fsdp2":
        fsdp2_one_step(args.output_dir)
        return 0
    if args.worker:
        train_one_step(args.worker, args.output_dir)
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        root = args.output_dir or Path(scratch)
        initial = {k: v.detach().clone() for k, v in tiny_model().state_dict().items()}
        results, status = {}, 0
        for mode in ["single", *args.modes]:
            completed, record = launch(mode, root / mode)
            if record is None:
                print(f"{mode}: FAILED (exit {completed.returncode})\n{completed.stdout[-4000:]}\n"
                      f"{completed.stderr[-6000:]}")
                status = 2
                continue
            weights = torch.load(root / mode / "weights.pt")
            results[mode] = (record, {k: initial[k] - weights[k] for k in initial if k in weights})
        if "single" not in results:
            return 2
        reference_loss, reference_step = results["single"][0]["loss"], results["single"][1]
        scale = max(v.abs().max().item() for v in reference_step.values())
        print(f"single: loss {reference_loss:.6f}, largest update {scale:.3e}")
        for mode in args.modes:
            if mode not in results:
                continue
            record, step = results[mode]
            missing = sorted(reference_step.keys() - step.keys())
            error = max((step[k] - reference_step[k]).abs().max().item() for k in reference_step if k in step) / scale
            loss_error = abs(record["loss"] - reference_loss) / reference_loss
            ok = not missing and error <= args.tolerance and loss_error <= args.tolerance
            print(f"{mode}: loss {record['loss']:.6f} (relative difference {loss_error:.1e}), update difference "
                  f"{error:.1e} of the largest{', missing ' + str(missing) if missing else ''}: "
                  f"{'OK' if ok else 'DIFFERENT'}; {record['distributed_type']}, model {record['wrapper']}, sharded "
                  f"units {record['sharded_units'] or 'none'}")
            if not ok:
                status = max(status, 1)
            elif mode == "fsdp" and not record["sharded_units"]:
                print("fsdp: the Trainer did not shard: accelerate applies its FSDP plugin only to accelerator "
                      "processes; on CPU it stays MULTI_CPU and wraps the model in DistributedDataParallel.")
                status = max(status, 3)
        return status


if __name__ == "__main__":
    sys.exit(main())
