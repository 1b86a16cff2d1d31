#!/usr/bin/env python
# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Times the README's step 3: `examples/run_audio_classification.py --freeze_encoder` on 90 clips (default 3 s; the
synthetic probe task of `examples/demo_corpus.py`, 5 classes), 20 epochs (early stopping as the script's default),
a randomly initialised ViT-B MATPAC encoder.

    OMP_NUM_THREADS=1 python benchmarks/bench_frozen_finetune.py [--script path/to/run_audio_classification.py]

Prints the wall-clock and process CPU time of the whole run (data check, training, evaluation, saving) and the final
evaluation accuracy. `--script` times another copy of the script (e.g. an older version) on the same data.
"""

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from demo_corpus import build_demo_corpus  # noqa: E402

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacModel  # noqa: E402


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("bench_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the Trainer pickles the script's TrainingArguments subclass
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", default=str(ROOT / "examples" / "run_audio_classification.py"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--clips_per_class", type=int, default=18)
    parser.add_argument("--clip_seconds", type=float, default=3.0)
    parser.add_argument("--hidden_layers", type=int, default=12, help="12: ViT-B; fewer for a quick check.")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = build_demo_corpus(
            tmp, num_clips=1, num_probe_clips_per_class=args.clips_per_class, probe_duration=args.clip_seconds
        )
        encoder = Path(tmp, "encoder")
        MatpacModel(MatpacConfig(num_hidden_layers=args.hidden_layers)).save_pretrained(encoder)
        MatpacFeatureExtractor().save_pretrained(encoder)
        argv = [
            "--model_name_or_path", str(encoder), "--dataset_name", corpus.probe_dir,
            "--output_dir", str(Path(tmp, "run")), "--freeze_encoder", "--learning_rate", "1e-3",
            "--num_train_epochs", str(args.epochs), "--seed", "0", "--report_to", "none",
        ]  # fmt: skip
        script = load_script(Path(args.script))
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = script.main(argv)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{Path(args.script).name}: {args.epochs} epochs, {args.clips_per_class * 5} clips, "
        f"{args.clip_seconds:g} s each, {args.hidden_layers} layers, torch threads {torch.get_num_threads()}: wall {wall:.1f} s, "
        f"process CPU {cpu:.1f} s, eval accuracy {metrics['eval_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
