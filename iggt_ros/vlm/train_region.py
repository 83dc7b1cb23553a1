"""Training of the embedded text-region model on synthetic renders.

    python -m iggt_ros.vlm.train_region --out-dir runs/region --minutes 12 \\
        --export iggt_ros/data/region_encoder.safetensors

Data: masked crops of every object in short rendered sequences of the training seeds (disjoint
from the benchmark and test seeds, see `SEEDS`), at several resolutions and trajectories.
Objective (both directions of InfoNCE with multi-positive targets): in a batch, each crop gets
one caption naming a random subset of its attributes with a random phrasing; a caption is a
positive for every crop it fits. A second term contrasts each crop with one phrasing of every
full (colour, shape, size) description, so rare distinctions such as size get negatives in every
step. MiniLM stays frozen; its sentence embeddings of the caption bank are computed once, and
are jittered with noise during training so the text head stays smooth between known phrasings.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iggt_ros.synthetic.attributes import COLORS, SHAPES, SIZES
from iggt_ros.synthetic.sequence import make_sequence
from iggt_ros.vlm.captions import Caption, caption_bank
from iggt_ros.vlm.crop import crop_region, resize_square
from iggt_ros.vlm.region_net import (
    NUM_EXTRA,
    SPACE,
    RegionNet,
    RegionNetConfig,
    TextHead,
    mean_color,
    normalize_crops,
    size_features,
)
from iggt_ros.vlm.synthetic_views import sequence_instances

SEEDS = {
    "train": (20000, 29999),
    "validation": (30000, 30099),
    "benchmark": (40000, 40099),
    "test": (41000, 41099),
}
"""Seed ranges (inclusive) of the synthetic scenes; training uses only the first range."""

COLOR_LIST, SHAPE_LIST, SIZE_LIST = list(COLORS), list(SHAPES), list(SIZES)
RESOLUTIONS = [(252, 168), (336, 224), (504, 336)]
TRAJECTORIES = ["orbit", "walk", "pan"]


@dataclass
class CropSet:
    crops: np.ndarray   # [N,4,S,S] uint8
    extra: np.ndarray   # [N,7] float32
    attrs: np.ndarray   # [N,3] int64 (colour, shape, size indices)
    scene: np.ndarray   # [N] int64 seed

    def __len__(self) -> int:
        return len(self.attrs)


def render_crops(seeds: list[int], side: int, per_object: int = 3, min_area_px: int = 60,
                 num_steps: int = 24, log=print) -> CropSet:
    """Crops of every object of every seed's sequence, from up to `per_object` views each."""
    crops, extra, attrs, scenes = [], [], [], []
    t0 = time.time()
    for n, seed in enumerate(seeds):
        rng = np.random.default_rng([seed, 7])
        width, height = RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
        traj = TRAJECTORIES[int(rng.integers(len(TRAJECTORIES)))]
        seq = make_sequence(seed, num_steps=num_steps, trajectory=traj, width=width, height=height)
        instances = {i.id: i for i in sequence_instances(seq, min_area_px=min_area_px)}
        per_id: dict[int, list[tuple[int, int]]] = {}
        views = seq.views()
        for vi, view in enumerate(views):
            counts = np.bincount(view.instance_ids.ravel().astype(np.int64))
            for iid in np.nonzero(counts >= min_area_px)[0]:
                if iid:
                    per_id.setdefault(int(iid), []).append((vi, int(counts[iid])))
        for iid, seen in per_id.items():
            obj = seq.scene.object(iid)
            pick = rng.choice(len(seen), size=min(per_object, len(seen)), replace=False)
            for k in pick:
                view = views[seen[k][0]]
                region = crop_region(view.rgb, view.instance_ids == iid, box_size_m=instances[iid].box_size)
                rgb, mask = resize_square(region.rgb, region.mask, side)
                crops.append(np.concatenate([rgb.transpose(2, 0, 1), mask[None]], 0))
                extra.append(np.concatenate([mean_color(region.rgb, region.mask), size_features(region.box_size_m)]))
                attrs.append([COLOR_LIST.index(obj.color_name), SHAPE_LIST.index(obj.shape),
                              SIZE_LIST.index(obj.size_name)])
                scenes.append(seed)
        if (n + 1) % 50 == 0:
            log(f"rendered {n + 1}/{len(seeds)} scenes, {len(attrs)} crops, {time.time() - t0:.0f} s")
    return CropSet(np.round(np.stack(crops) * 255).astype(np.uint8), np.stack(extra).astype(np.float32),
                   np.asarray(attrs, np.int64), np.asarray(scenes, np.int64))


class CaptionTable:
    """The caption bank with MiniLM embeddings, indexed by the attributes each caption names."""

    def __init__(self, captions: list[Caption], base: np.ndarray):
        self.captions = captions
        self.base = torch.from_numpy(base)
        self.by_key: dict[tuple, list[int]] = {}
        for i, cap in enumerate(captions):
            self.by_key.setdefault(cap.key, []).append(i)
        c = [COLOR_LIST.index(x.color) if x.color else -1 for x in captions]
        s = [SHAPE_LIST.index(x.shape) if x.shape else -1 for x in captions]
        z = [SIZE_LIST.index(x.size) if x.size else -1 for x in captions]
        self.constraints = torch.tensor([c, s, z], dtype=torch.int64).T  # [M,3], -1 = free

    def sample_for(self, attrs: np.ndarray, rng: random.Random) -> torch.Tensor:
        """One caption index per crop, naming a random attribute subset of that crop."""
        patterns = [(1, 1, 1)] * 4 + [(1, 1, 0)] * 3 + [(0, 1, 1), (1, 0, 1), (1, 0, 0), (0, 1, 0)]
        out = []
        for c, s, z in attrs:
            pc, ps, pz = rng.choice(patterns)
            key = (COLOR_LIST[c] if pc else None, SHAPE_LIST[s] if ps else None, SIZE_LIST[z] if pz else None)
            out.append(rng.choice(self.by_key[key]))
        return torch.tensor(out, dtype=torch.int64)

    def full_keys(self) -> list[tuple[int, int, int]]:
        return [(c, s, z) for c in range(len(COLOR_LIST)) for s in range(len(SHAPE_LIST))
                for z in range(len(SIZE_LIST))]

    def sample_full(self, rng: random.Random) -> torch.Tensor:
        """One random phrasing of every full (colour, shape, size) description, in full_keys order."""
        return torch.tensor([rng.choice(self.by_key[(COLOR_LIST[c], SHAPE_LIST[s], SIZE_LIST[z])])
                             for c, s, z in self.full_keys()], dtype=torch.int64)


def fits(constraints: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """[M,N] bool: caption m (constraints [M,3], -1 free) fits crop n (attrs [N,3])."""
    c = constraints[:, None, :]
    return ((c < 0) | (c == attrs[None, :, :])).all(dim=2)


def augment(crops: torch.Tensor, extra: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, brightness changes (applied to the mean colour too), box-size noise and inflation, size dropout."""
    b = crops.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    crops = torch.where(flip[:, None, None, None], crops.flip(3), crops)
    gain = torch.exp(torch.randn(b, 1, generator=gen) * 0.08)
    crops = torch.cat([(crops[:, :3] * gain[:, :, None, None]).clamp(0, 1), crops[:, 3:]], 1)
    extra = extra.clone()
    extra[:, :3] = (extra[:, :3] * gain).clamp(0, 1)
    known = extra[:, 6:7] > 0
    # Map boxes are noisier than these: yaw errors inflate the horizontal extents, points add jitter.
    inflate = torch.log(1.0 + 0.35 * torch.rand(b, 1, generator=gen))
    extra[:, 4:6] = extra[:, 4:6] + inflate * known
    extra[:, 3:6] = extra[:, 3:6] + torch.randn(b, 3, generator=gen) * 0.1 * known
    drop = torch.rand(b, 1, generator=gen) < 0.1
    extra[:, 3:] = torch.where(drop, torch.zeros_like(extra[:, 3:]), extra[:, 3:])
    return crops, extra


def jitter(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Unit vectors perturbed by Gaussian noise and renormalised."""
    if sigma <= 0:
        return x
    return F.normalize(x + sigma * torch.randn(x.shape, generator=gen), dim=1)


def soft_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the uniform distribution over each row's positives."""
    target = positives.float() / positives.float().sum(dim=1, keepdim=True).clamp(min=1)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def evaluate(region: RegionNet, head: TextHead, table: CaptionTable, data: CropSet) -> dict[str, float]:
    """Full-description retrieval accuracy per scene: for each object, does its caption rank it first?"""
    region.eval()
    head.eval()
    with torch.no_grad():
        crops = normalize_crops(torch.from_numpy(data.crops).float() / 255.0)
        emb = torch.cat([region(crops[i:i + 256], torch.from_numpy(data.extra[i:i + 256]))
                         for i in range(0, len(data), 256)])
        keys = table.full_keys()
        rng = random.Random(0)
        text = head(table.base[table.sample_full(rng)])
        key_index = {k: i for i, k in enumerate(keys)}
        correct = total = 0
        cls_correct = 0
        for seed in np.unique(data.scene):
            idx = np.nonzero(data.scene == seed)[0]
            a = data.attrs[idx]
            sims = emb[idx] @ text.T  # crops x keys
            pred = sims.argmax(dim=1).numpy()
            cls_correct += sum(int(keys[p] == tuple(x)) for p, x in zip(pred, a, strict=True))
            for key in {tuple(x) for x in a}:
                s = sims[:, key_index[key]].numpy()
                total += 1
                correct += int(tuple(a[int(np.argmax(s))]) == key)
    region.train()
    head.train()
    return {"crop_retrieval_top1": correct / max(total, 1), "crop_classification": cls_correct / len(data)}


def export(path: Path, region: RegionNet, head: TextHead, cfg: RegionNetConfig, meta: dict) -> None:
    from safetensors.torch import save_file

    state = {f"region.{k}": v.detach().contiguous() for k, v in region.state_dict().items()}
    state.update({f"text.{k}": v.detach().contiguous() for k, v in head.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"config": cfg.to_json(), "space": SPACE,
                                          "training": json.dumps(meta)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True, help="crop cache, checkpoints and log")
    ap.add_argument("--train-scenes", type=int, default=400)
    ap.add_argument("--val-scenes", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=12.0, help="training time budget (rendering excluded)")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-noise", type=float, default=0.06,
                    help="Gaussian noise added to MiniLM caption embeddings (smooths the text head, so unseen "
                         "phrasings generalise better)")
    ap.add_argument("--export", default="", help="write the final weights here (safetensors)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    cfg = RegionNetConfig()
    t_start = time.time()
    train_lo = SEEDS["train"][0]
    val_lo = SEEDS["validation"][0]
    cache = out / f"crops_v2_{args.train_scenes}_{args.val_scenes}_{cfg.crop_side}.npz"
    if cache.is_file():
        d = np.load(cache)
        train = CropSet(d["tc"], d["te"], d["ta"], d["ts"])
        val = CropSet(d["vc"], d["ve"], d["va"], d["vs"])
        log(f"loaded crop cache {cache}")
    else:
        train = render_crops(list(range(train_lo, train_lo + args.train_scenes)), cfg.crop_side, log=log)
        val = render_crops(list(range(val_lo, val_lo + args.val_scenes)), cfg.crop_side, per_object=2, log=log)
        np.savez(cache, tc=train.crops, te=train.extra, ta=train.attrs, ts=train.scene,
                 vc=val.crops, ve=val.extra, va=val.attrs, vs=val.scene)
    t_data = time.time() - t_start
    log(f"data: {len(train)} training crops, {len(val)} validation crops ({t_data:.0f} s)")

    from iggt_ros.vlm.embedded import load_minilm

    minilm = load_minilm()
    captions = caption_bank(COLOR_LIST, SHAPE_LIST, SIZE_LIST, per_key=24, seed=args.seed)
    base = minilm.encode([c.text for c in captions], batch_size=128, convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False).astype(np.float32)
    table = CaptionTable(captions, base)
    log(f"caption bank: {len(captions)} captions embedded ({time.time() - t_start - t_data:.0f} s)")

    region, head = RegionNet(cfg), TextHead(cfg)
    logit_scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    params = list(region.parameters()) + list(head.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)
    all_crops = torch.from_numpy(train.crops)
    all_extra = torch.from_numpy(train.extra)
    all_attrs = torch.from_numpy(train.attrs)
    full_keys = torch.tensor(table.full_keys(), dtype=torch.int64)
    budget = args.minutes * 60
    t_train = time.time()
    step, metrics = 0, {}
    while step < args.max_steps:
        elapsed = time.time() - t_train
        if elapsed > budget:
            break
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * min(elapsed / budget, 1.0)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(train), (args.batch,), generator=gen)
        crops, extra = augment(all_crops[idx].float() / 255.0, all_extra[idx], gen)
        attrs = all_attrs[idx]
        r = region(normalize_crops(crops), extra)
        cap_idx = table.sample_for(attrs.numpy(), rng)
        t = head(jitter(table.base[cap_idx], args.text_noise, gen))
        scale = logit_scale.exp().clamp(max=100)
        pos = fits(table.constraints[cap_idx], attrs)  # captions x crops
        logits = scale * t @ r.T
        loss_batch = 0.5 * (soft_ce(logits, pos) + soft_ce(logits.T, pos.T))
        full_t = head(jitter(table.base[table.sample_full(rng)], args.text_noise, gen))
        full_pos = (full_keys[None, :, :] == attrs[:, None, :]).all(dim=2)  # crops x keys
        loss_full = soft_ce(scale * r @ full_t.T, full_pos)
        loss = loss_batch + loss_full
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"step {step} loss {loss.item():.3f} (batch {loss_batch.item():.3f}, full {loss_full.item():.3f}) "
                f"scale {scale.item():.1f} lr {lr:.2e} {(time.time() - t_train) / step:.2f} s/step")
        if step % 400 == 0:
            metrics = evaluate(region, head, table, val)
            log(f"step {step} validation {metrics}")
            export(out / "checkpoint.safetensors", region, head, cfg, {"step": step})
    metrics = evaluate(region, head, table, val)
    wall = time.time() - t_start
    meta = {
        "steps": step, "batch": args.batch, "lr": args.lr, "train_scenes": args.train_scenes,
        "train_seeds": [train_lo, train_lo + args.train_scenes - 1],
        "validation_seeds": [val_lo, val_lo + args.val_scenes - 1], "train_crops": len(train),
        "validation": metrics, "wall_time_s": round(wall, 1), "data_time_s": round(t_data, 1),
        "threads": args.threads, "num_extra": NUM_EXTRA, "text_noise": args.text_noise,
    }
    log(f"done: {json.dumps(meta)}")
    export(out / "final.safetensors", region, head, cfg, meta)
    if args.export:
        export(Path(args.export), region, head, cfg, meta)
        log(f"exported {args.export}")
    (out / "summary.json").write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
