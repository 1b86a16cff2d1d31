"""Worker for test_pretraining_model.py::test_two_processes_match_one_process_on_the_concatenated_batch.

Launched once by the test with `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo) for every variant named on
the command line. For each variant, every process builds the same tiny MatpacForPreTraining and the same full batch,
masking noise and attention mask, takes its own part of the batch (halves, or 3 + 1 clips), runs two training steps
(forward, backward, update_teachers, SGD step) and saves the gradients of the first step, the center after each step
and the final teachers to `<out_dir>/<variant>-rank<i>.pt`.

The single-process reference in the test runs the same two steps on the whole batch; the two must agree.
"""

import sys

import torch
from accelerate import Accelerator
from test_pretraining_model import ddp_reference_setup


def run_variant(accelerator: Accelerator, out_dir: str, variant: str):
    model, batches, noises, attention_masks, rank0_clips = ddp_reference_setup(variant)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    rank, world_size = accelerator.process_index, accelerator.num_processes
    assert world_size == 2
    record = {"centers": [], "grads": None}
    for step, (batch, noise, attention_mask) in enumerate(zip(batches, noises, attention_masks)):
        local = slice(0, rank0_clips) if rank == 0 else slice(rank0_clips, batch.shape[0])
        local_mask = attention_mask[local] if attention_mask is not None else None
        outputs = model(batch[local], attention_mask=local_mask, step=step, noise=noise[local])
        accelerator.backward(outputs.loss)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.update_teachers(step)
        if step == 0:
            record["grads"] = {n: p.grad.clone() for n, p in unwrapped.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
        record["centers"].append(unwrapped.center.clone())
    record["teacher_state"] = {
        k: v.clone() for k, v in accelerator.unwrap_model(model).state_dict().items() if k.startswith("teacher")
    }
    torch.save(record, f"{out_dir}/{variant}-rank{rank}.pt")
    accelerator.wait_for_everyone()
    model = optimizer = None  # free the DDP reducer (it holds the process group) while both processes are here
    accelerator.free_memory()


def main(out_dir: str, variants: list[str]):
    accelerator = Accelerator()
    for variant in variants:
        run_variant(accelerator, out_dir, variant)
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
