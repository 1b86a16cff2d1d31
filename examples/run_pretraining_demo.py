# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The pretraining demo: builds a small corpus, pretrains on it with `run_pretraining.py`, then linear-probes the
pretrained encoder against a randomly initialised encoder of the same configuration and prints the gain.

    # `make demo`: synthetic sounds (no download), the tiny preset on CPU in minutes
    python examples/run_pretraining_demo.py --output_dir demo_output

    # real audio rendered offline from Debian packages (examples/real_audio_corpus.py; `make real-audio-debs`)
    python examples/run_pretraining_demo.py --demo_corpus real --output_dir demo_real

Every option of `run_pretraining.py` applies (except the corpus, which the demo builds); the demo's settings
(`DEMO_SETTINGS`: the tiny preset, short crops, a higher learning rate, decoding in-process with the clips kept in
memory, 3000 steps) fill in those not given. Besides `run_pretraining.py`'s outputs, `--output_dir` gets
`demo_corpus/` (built once, reused by later runs), `demo_probe/` (`run_linear_probe.py`'s folders) and
`demo_probe.json` (accuracies and the gain, mean and 95 % CI over the folds).

It imports its sibling scripts (`run_pretraining`, `run_linear_probe`, `demo_corpus`, `real_audio_corpus`), found in
its own folder when it runs as a script.
"""

import argparse
import json
import os
import shutil
import sys

import real_audio_corpus
import run_linear_probe
import run_pretraining
from accelerate import PartialState
from accelerate.logging import get_logger
from demo_corpus import DemoCorpus, build_demo_corpus


logger = get_logger(__name__)

# The demo's length and settings where the command line leaves them out. 96-frame crops run ~10x faster per step
# than 608-frame ones, so the tiny preset gets thousands of steps in a few minutes; learning rate 1e-3 for a run that
# short (the official 3e-4 is for batch 2048 over 300 epochs); no decoding worker, as an epoch of the demo corpus is a
# few steps and the DataLoader starts its workers again every epoch; the corpus decoded once and kept in memory (its
# 240 clips take under 100 MB). Their timings: benchmarks/RESULTS.md.
DEMO_MAX_STEPS = 3000
DEMO_SETTINGS = {"preset": "tiny", "crop_frames": 96, "learning_rate": 1e-3, "num_workers": 0, "audio_cache_mb": 512}
# `--demo_corpus real` (speech, notes and drums of 1-6 s, shorter than most crops): padded crops, padding masked
REAL_DEMO_SETTINGS = {**DEMO_SETTINGS, "min_clip_policy": "pad"}
REAL_DEMO_NUM_CLIPS = 600
DEMO_PROBE_CLIPS = 80  # labelled 3 s clips per class of the synthetic probe task (5 folds)
DEMO_PROBE_SEEDS = 3  # probe seeds averaged per fold (the early-stopping split of 32 clips makes one seed noisy)


def parse_args(argv=None):
    parser = run_pretraining.build_parser(description=__doc__)
    demo = parser.add_argument_group("demo")
    demo.add_argument("--demo_num_clips", type=int, default=240, help="pretraining clips of the synthetic corpus")
    demo.add_argument(
        "--demo_corpus",
        choices=("synthetic", "real", "auto"),
        default="synthetic",
        help="synthesized sounds, real audio rendered from Debian packages (examples/real_audio_corpus.py: "
        "espeak-ng voices, fluidsynth soundfonts), or real when those packages are installed",
    )
    demo.add_argument("--skip_demo_probe", action="store_true", help="skip the final linear probe")
    args = run_pretraining.parse_args(argv, parser, require_corpus=False)
    if args.dataset_name or args.dataset_dir or args.data_files:
        parser.error("the demo builds its own corpus: run examples/run_pretraining.py on yours")
    # The options given on the command line (argparse fills a namespace's missing attributes with the defaults, so a
    # namespace pre-filled with a marker keeps the marker exactly where nothing was given): the demo's settings
    # replace only the others, even where a given value equals the default.
    unset = object()
    given = parser.parse_args(argv, argparse.Namespace(**{a.dest: unset for a in parser._actions}))
    args.given_options = {name for name, value in vars(given).items() if value is not unset}
    return args


def use_real_demo_corpus(args) -> bool:
    return args.demo_corpus == "real" or (args.demo_corpus == "auto" and real_audio_corpus.is_available())


def apply_demo_settings(args):
    """The demo's settings (`DEMO_SETTINGS`, `REAL_DEMO_SETTINGS`) for the options not given on the command line, and
    its length."""
    kind = "real audio" if use_real_demo_corpus(args) else "synthetic"
    for name, value in (REAL_DEMO_SETTINGS if kind == "real audio" else DEMO_SETTINGS).items():
        if name not in args.given_options:
            setattr(args, name, value)
            logger.info(f"Demo on {kind}: --{name} {value}")
    if args.max_steps is None and args.num_epochs is None:
        args.max_steps = DEMO_MAX_STEPS
        logger.info(f"Demo: no run length given, using --max_steps {DEMO_MAX_STEPS}")


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def prepare_demo_corpus(args, state: PartialState, output_dir: str) -> DemoCorpus:
    """Builds (once, on the main process) the demo corpus in `<output_dir>/demo_corpus` and points the run at it."""
    demo_dir = os.path.join(output_dir, "demo_corpus")
    if use_real_demo_corpus(args):
        if state.is_main_process:
            real_audio_corpus.build_real_audio_corpus(demo_dir, REAL_DEMO_NUM_CLIPS, seed=args.seed)
        state.wait_for_everyone()
        built = read_json(os.path.join(demo_dir, "corpus.json"))
        tasks = {name: os.path.join(demo_dir, "tasks", name) for name in sorted(built["task_clips"])}
        demo = DemoCorpus(
            os.path.join(demo_dir, "pretrain"), "", built["pretraining_clips"], probe_tasks=tasks, kind="real audio"
        )
    else:
        marker = os.path.join(demo_dir, "corpus.json")
        wanted = {"num_clips": args.demo_num_clips, "seed": args.seed, "num_probe_clips_per_class": DEMO_PROBE_CLIPS}
        if state.is_main_process and not (os.path.isfile(marker) and read_json(marker) == wanted):
            # no clips of another corpus built here (more clips, or the real-audio one) may stay in pretrain/
            shutil.rmtree(demo_dir, ignore_errors=True)
            build_demo_corpus(
                demo_dir, num_clips=args.demo_num_clips, seed=args.seed, num_probe_clips_per_class=DEMO_PROBE_CLIPS
            )
            with open(marker, "w") as handle:
                json.dump(wanted, handle)
        state.wait_for_everyone()
        probe_dir = os.path.join(demo_dir, "probe")
        demo = DemoCorpus(
            os.path.join(demo_dir, "pretrain"),
            probe_dir,
            args.demo_num_clips,
            probe_tasks={"synthetic sounds": probe_dir},
        )
    args.dataset_dir = demo.pretrain_dir
    args.corpus_size = args.corpus_size or demo.num_clips
    args.corpus_name = args.corpus_name or f"the {demo.kind} demo corpus of examples/run_pretraining_demo.py"
    logger.info(
        f"The {demo.kind} demo corpus in {demo_dir} ({demo.num_clips} pretraining clips; probe tasks: "
        f"{', '.join(demo.probe_tasks)})"
    )
    return demo


def run_demo_probe(encoder_dir: str, demo: DemoCorpus, output_dir: str, seed: int) -> dict:
    """`run_linear_probe.py`'s cross-validation over each task's folds, for the pretrained encoder and for a randomly
    initialised encoder of the same config (`--random_init`): test accuracy, mean and 95 % CI over the folds. Each
    fold's accuracy is the mean over `DEMO_PROBE_SEEDS` probe seeds (classifier init and early-stopping split)."""
    results = {"corpus": demo.kind, "tasks": {}}
    seeds = [str(seed + offset) for offset in range(DEMO_PROBE_SEEDS)]
    for task, folder in demo.probe_tasks.items():
        results["tasks"][task] = {}
        for name, extra in (("pretrained", []), ("random_init", ["--random_init", "--init_seed", str(seed)])):
            probe_dir = os.path.join(output_dir, "demo_probe", f"{task.replace(' ', '_')}_{name}")
            probe = run_linear_probe.main(
                ["--model_name_or_path", encoder_dir, "--dataset_dir", folder, "--fold_column", "fold"]
                + ["--seeds", *seeds, "--output_dir", probe_dir, *extra]
            )
            results["tasks"][task][name] = {key: probe[key] for key in ("mean", "ci95", "n", "num_classes")}
            results["tasks"][task][name]["folds"] = probe["summarised"]  # per fold, the mean over the seeds
        # the gain over the same folds (both encoders are tested on the same clips): mean and 95 % CI over the folds
        pretrained, random_init = (results["tasks"][task][name]["folds"] for name in ("pretrained", "random_init"))
        gain = run_linear_probe.summarise([100 * (p - r) for p, r in zip(pretrained, random_init)])
        results["tasks"][task]["gain_points"] = {key: gain[key] for key in ("mean", "ci95")}
    gains = [result["gain_points"]["mean"] for result in results["tasks"].values()]
    results["mean_gain_points"] = sum(gains) / len(gains)
    return results


def print_demo_probe(results: dict):
    lines = [f"\nDemo linear probe on {results['corpus']} (accuracy, mean +- 95 % CI over the folds):"]
    for task, result in results["tasks"].items():
        pretrained, random_init = result["pretrained"], result["random_init"]
        lines.append(
            f"  {task} ({pretrained['num_classes']} classes, {pretrained['n']} folds): pretrained "
            f"{pretrained['mean']:.3f} +- {pretrained['ci95'] or 0:.3f}, random-init encoder {random_init['mean']:.3f} "
            f"+- {random_init['ci95'] or 0:.3f}; gain {result['gain_points']['mean']:+.1f} +- "
            f"{result['gain_points']['ci95'] or 0:.1f} points (paired over the folds)"
        )
    lines.append(f"  gain of pretraining: {results['mean_gain_points']:+.1f} points (mean over the tasks)")
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    output_dir = os.path.abspath(args.output_dir)
    state = PartialState()  # the processes of an `accelerate launch`, before run_pretraining's Accelerator
    run_pretraining.setup_logging()
    apply_demo_settings(args)
    demo = prepare_demo_corpus(args, state, output_dir)
    is_main_process = state.is_main_process
    status = run_pretraining.pretrain(args)
    if status == 0 and is_main_process and not args.skip_demo_probe:
        results = run_demo_probe(os.path.join(output_dir, "encoder"), demo, output_dir, args.seed)
        with open(os.path.join(output_dir, "demo_probe.json"), "w") as handle:
            json.dump(results, handle, indent=2)
        print_demo_probe(results)
    return status


if __name__ == "__main__":
    sys.exit(main())
