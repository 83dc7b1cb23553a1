"""`iggt-ros train`: train the tiny model on synthetic scenes, or fine-tune a model on a dataset folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.train.batch import TrainBatch
from iggt_ros.train.losses import LossWeights
from iggt_ros.train.trainer import TrainConfig, Trainer, start_instance_features_centered

PRESETS = {"tiny": IggtModelConfig.tiny, "tiny_fine": IggtModelConfig.tiny_fine,
           "tiny_fine_image": IggtModelConfig.tiny_fine_image, "tiny_wide_image": IggtModelConfig.tiny_wide_image,
           "official": IggtModelConfig.official}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/tiny", help="output folder: checkpoints, log, curves, weights")
    parser.add_argument("--model", default="tiny",
                        help="'tiny', 'tiny_fine', 'tiny_fine_image', 'tiny_wide_image', 'official', or a JSON file "
                             "with an IggtModelConfig")
    parser.add_argument("--init", default=None,
                        help="start from these weights (.safetensors/.pt/.pth), e.g. the official checkpoint")
    parser.add_argument("--transfer", default=None,
                        help="start from the weights of another design (e.g. the embedded tiny model for tiny_fine): "
                             "tensors that fit are copied, the patch kernel and position table converted")
    parser.add_argument("--data", default=None,
                        help="dataset folder of scenes (see iggt_ros/train/README.md); default: synthetic scenes")
    parser.add_argument("--cache", default=None,
                        help="window cache folder (`python -m iggt_ros.train.cache`): train on it with on-the-fly "
                             "augmentation instead of rendering scenes")
    parser.add_argument("--size", default=None, metavar="HxW",
                        help="input size, multiples of 28 (default: the model's own, else 336x504)")
    parser.add_argument("--small-size", default=None, metavar="HxW",
                        help="train at this smaller size first (synthetic scenes), then at --size")
    parser.add_argument("--small-until", type=float, default=0.0,
                        help="fraction of --steps trained at --small-size")
    parser.add_argument("--recolour", type=float, default=0.0, metavar="P",
                        help="with --cache: share of windows whose instances each get new colours")
    parser.add_argument("--frames", default="2:8", metavar="MIN:MAX", help="frames per window")
    parser.add_argument("--domain", default="train", choices=["train", "none"],
                        help="look of the synthetic scenes: 'train' randomises textures, shapes, lights, lenses and "
                             "image effects; 'none' renders the plain default look")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=1,
                        help="windows per step over all processes (under torchrun each trains on its share)")
    parser.add_argument("--micro-batch", type=int, default=0,
                        help="windows per forward/backward pass, gradients accumulated (0: a process's whole share); "
                             "1 gives the same weights with any number of processes")
    parser.add_argument("--lr-backbone", type=float, default=5e-4)
    parser.add_argument("--lr-heads", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1024, help="pixels per window for the contrastive loss")
    parser.add_argument("--instance-weight", type=float, default=1.0,
                        help="weight of the contrastive instance loss relative to the geometry losses")
    parser.add_argument("--pull", type=float, default=2.0,
                        help="final pull weight of the contrastive loss (the paper's 2.0; push is 1.0, margin 1.0)")
    parser.add_argument("--pull-ramp", type=float, default=0.3,
                        help="fraction of training over which the pull weight rises from 0 to --pull")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--cpu-limit", type=float, default=None,
                        help="stop after the run has used this many CPU seconds (over resumed invocations)")
    parser.add_argument("--budget-marks", default="", metavar="S1,S2,...",
                        help="CPU-second budgets at which to keep the weights (OUT/budget_<minutes>m.safetensors)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--prefetch", type=int, default=0,
                        help="worker processes rendering batches ahead (0 = render in the training loop)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def _model_config(name: str) -> IggtModelConfig:
    if name in PRESETS:
        return PRESETS[name]()
    return IggtModelConfig.from_json(Path(name))


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _input_size(args: argparse.Namespace, config: IggtModelConfig) -> tuple[int, int]:
    if args.size:
        return _hw(args.size)
    if "input_hw" in config.extra:
        return tuple(config.extra["input_hw"])
    return 336, 504


def build_trainer(args: argparse.Namespace) -> Trainer:
    """Model, window source and trainer from the command line."""
    config = _model_config(args.model)
    height, width = _input_size(args, config)
    if height % config.size_multiple or width % config.size_multiple:
        raise SystemExit(f"--size must be multiples of {config.size_multiple}, got {height}x{width}")
    min_frames, max_frames = (int(v) for v in args.frames.split(":"))
    if args.recolour and not args.cache:
        raise SystemExit("--recolour varies cached windows: give --cache DIR too (render one with "
                         "`python -m iggt_ros.train.cache --out DIR --windows N`)")
    if not 0.0 <= args.recolour <= 1.0:
        raise SystemExit(f"--recolour is a share of windows, from 0 to 1; got {args.recolour}")
    torch.manual_seed(args.seed)
    model = Iggt(config)
    if args.init:
        from iggt_ros.model.checkpoint import load_weights

        load_weights(model, args.init)
    if args.transfer:
        from iggt_ros.model.transfer import transfer_weights

        print(f"warm start from {args.transfer}: {transfer_weights(model, args.transfer).describe()}")
    if args.cache:
        from iggt_ros.train.cache import Augment, CachedWindowSource

        source = CachedWindowSource(args.cache, height, width, min_frames, max_frames, seed=args.seed,
                                    augment=Augment(recolour=args.recolour))
    elif args.data:
        from iggt_ros.train.dataset import FolderWindowSource

        source = FolderWindowSource(args.data, height, width, min_frames, max_frames, seed=args.seed)
    else:
        from iggt_ros.train.scenes import Curriculum, SyntheticWindowSource

        curriculum = Curriculum(min_frames=min_frames, end_max_frames=max_frames,
                                start_max_frames=min(max_frames, max(min_frames, 4)))
        source = SyntheticWindowSource(height, width, seed=args.seed, curriculum=curriculum,
                                       domain=None if args.domain == "none" else args.domain,
                                       small_size=_hw(args.small_size) if args.small_size else None,
                                       small_until=args.small_until)
    train_config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, micro_batch=args.micro_batch, lr_backbone=args.lr_backbone,
        lr_heads=args.lr_heads,
        weight_decay=args.weight_decay, warmup_steps=args.warmup, checkpoint_every=args.checkpoint_every,
        time_limit_s=args.time_limit, cpu_limit_s=args.cpu_limit,
        budget_marks_s=tuple(float(v) for v in args.budget_marks.split(",") if v.strip()),
        threads=args.threads, prefetch=args.prefetch, device=args.device, seed=args.seed,
        loss=LossWeights(samples=args.samples, instance=args.instance_weight, pull=args.pull,
                        pull_ramp=args.pull_ramp),
    )
    if not args.init and not args.transfer:
        start_instance_features_centered(model, TrainBatch.stack(source.batch(0, 1, 0.0)).images)
    model.config.extra = {**model.config.extra, "input_hw": [height, width],
                          "train_data": args.cache or args.data or "synthetic", "train_seed": args.seed}
    return Trainer(model, source, train_config, args.out)


def run(args: argparse.Namespace) -> int:
    trainer = build_trainer(args)
    if args.resume and trainer.resume():
        print(f"resuming from {trainer.checkpoint_path} at step {trainer.step}")
    if trainer.context.is_main:
        (Path(args.out) / "args.json").write_text(json.dumps(vars(args), indent=2) + "\n")
    step = trainer.run()
    if trainer.context.is_main:
        print(f"stopped at step {step}; weights in {Path(args.out) / 'model.safetensors'}")
    return 0
