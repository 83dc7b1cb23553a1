"""Open-vocabulary query benchmark: attribute queries on held-out synthetic scenes.

    .venv/bin/python benchmarks/query.py --scenes 20

Scenes come from the benchmark seed range (`iggt_ros.vlm.train_region.SEEDS['benchmark']`),
which the embedded model never saw in training. Instances and their masks come from the
renderer's ground truth, so this isolates the text-region embedder from segmentation quality;
boxes (and so the size cue) are estimated from the masked depth as a map would. Embedding goes
through `InstanceEmbedder` (with its re-embedding rules) and ranking through `answer_query`, the
code path of the `/iggt/query` service. See `iggt_ros.vlm.evaluation` for which queries count and
when they are correct.

With `--pipeline-scenes N`, N of the scenes are also written as sample bags and replayed through
the perception pipeline with the ground-truth oracle engine (`iggt-ros replay` code path): masks at
the model resolution, tracker IDs and object-map boxes; the saved query state is then asked the
same kind of queries (replayed instances are matched to scene objects by position to know the
right answer). Writes benchmarks/results/query.md and query.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scene_options import add_scene_arguments, scene_seeds  # noqa: E402
from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iggt_ros.config import QueryConfig  # noqa: E402
from iggt_ros.synthetic.sequence import make_sequence  # noqa: E402
from iggt_ros.vlm.embedder import InstanceEmbedder  # noqa: E402
from iggt_ros.vlm.evaluation import (  # noqa: E402
    KINDS,
    evaluate_instances,
    evaluate_relations,
    match_objects,
    summarize,
)
from iggt_ros.vlm.phrasings import load_phrasings  # noqa: E402
from iggt_ros.vlm.registry import make_region_encoder, make_text_encoder  # noqa: E402
from iggt_ros.vlm.synthetic_views import observations, sequence_instances  # noqa: E402
from iggt_ros.vlm.train_region import SEEDS  # noqa: E402
from iggt_ros.vlm.understanding import (  # noqa: E402
    RELATIONS,
    SUPERLATIVES,
    QueryReader,
    reader_for,
    singular,
    tokenize,
)

TRAJECTORIES = ("orbit", "walk", "pan")
SPLIT_KINDS = {"benchmark": KINDS, "validation": ("canonical", "synonym", "dev")}
"""Query kinds per scene split: tuning (validation scenes) never asks held-out phrasings."""


def held_out_words() -> frozenset[str]:
    """Every word of the held-out phrasing set (and its singular), except the attribute values themselves."""
    ps = load_phrasings("held_out")
    values = {*ps.colors, *ps.shapes, *ps.sizes}
    words = {t for table in (ps.colors, ps.shapes, ps.sizes) for ws in table.values() for w in ws
             for t in tokenize(w)}
    return frozenset({*words, *(singular(w) for w in words)} - values)


def query_outcomes(seed: int, instances, text_encoder, cfg, args) -> list:
    """The split's queries; on the benchmark split held-out phrasings are asked a second time with a
    reader whose thesaurus lists none of their words ('held_out_blind')."""
    kinds = SPLIT_KINDS[args.split]
    outcomes = evaluate_instances(seed, instances, text_encoder, cfg, seed=args.seed, kinds=kinds)
    if "held_out" in kinds:
        blind = evaluate_instances(seed, instances, text_encoder, cfg, seed=args.seed, kinds=kinds,
                                   reader=args.blind_reader)
        for o in blind:
            if o.kind == "held_out":
                o.kind = "held_out_blind"
                outcomes.append(o)
    return outcomes


def segmentation_scene(seed: int, args, cfg: QueryConfig, text_encoder, region_encoder, matrix) -> None:
    """Shape classes from the region embeddings of ground-truth-mask instances, scored per pixel."""
    from iggt_ros.synthetic.attributes import SHAPES
    from iggt_ros.vlm.segmentation import class_image, classify

    traj = TRAJECTORIES[seed % len(TRAJECTORIES)]
    seq = make_sequence(seed, num_steps=args.steps, trajectory=traj, width=args.width, height=args.height)
    instances = sequence_instances(seq, min_area_px=cfg.embed_min_area_px)
    embedder = InstanceEmbedder(region_encoder, cfg)
    for view in observations(seq.views(), instances):
        embedder.process(view)
    predicted = classify(embedder.store.vectors(), list(SHAPES), text_encoder)
    truth = {int(o.id): list(SHAPES).index(o.shape) for o in seq.scene.objects}
    for view in seq.views():
        matrix.update(class_image(view.instance_ids, predicted), class_image(view.instance_ids, truth))


def run_scene(seed: int, args, cfg: QueryConfig, text_encoder, region_encoder) -> tuple[list, dict, list]:
    traj = TRAJECTORIES[seed % len(TRAJECTORIES)]
    seq = make_sequence(seed, num_steps=args.steps, trajectory=traj, width=args.width, height=args.height)
    instances = sequence_instances(seq, min_area_px=cfg.embed_min_area_px)
    embedder = InstanceEmbedder(region_encoder, cfg)
    t0 = time.perf_counter()
    obs = observations(seq.views(), instances)
    for view in obs:
        embedder.process(view)
    embed_s = time.perf_counter() - t0
    for inst in instances:
        item = embedder.store.get(inst.id)
        inst.embedding = None if item is None else item.vector
    outcomes = query_outcomes(seed, instances, text_encoder, cfg, args)
    identity = {int(o.id): int(o.id) for o in seq.scene.objects}
    relations = evaluate_relations(seed, instances, text_encoder, seq.scene.objects, seq.world_from_base[-1],
                                   identity, cfg, seed=args.seed, per_kind=args.relations_per_kind)
    stats = {"seed": seed, "trajectory": traj, "objects": len(seq.scene.objects), "instances": len(instances),
             "views": len(obs), "regions_encoded": embedder.stats.regions_encoded,
             "embed_ms_per_view": 1e3 * embed_s / max(len(obs), 1)}
    return outcomes + relations, stats, instances


def run_pipeline_scene(seed: int, args, text_encoder, workdir: Path, seen: set[int]) -> tuple[list, dict]:
    """Sample bag -> replay (oracle engine, embedded region encoder) -> saved state -> queries.

    `seen`: the objects the cameras saw (the scene's ground-truth instances); relation answers are
    decided among them, whether or not the map's instance of each could be matched to it."""
    from iggt_ros.apps.replay import replay_bag
    from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
    from iggt_ros.config import IggtConfig
    from iggt_ros.synthetic.sequence import plan_sequence
    from iggt_ros.vlm.evaluation import label_from_scene
    from iggt_ros.vlm.state import load_query_state

    traj = TRAJECTORIES[seed % len(TRAJECTORIES)]
    spec = SampleBagSpec(seed=seed, frames=args.steps, width=args.width, height=args.height, trajectory=traj)
    write_sample_bag(workdir / f"in_{seed}", spec)
    cfg = IggtConfig().replace(**{"engine.backend": "oracle", "input.image_width": args.width,
                                  "input.image_height": args.height,
                                  "query.text_encoder": args.text_encoder, "query.region_encoder": args.region_encoder})
    t0 = time.perf_counter()
    summary = replay_bag(workdir / f"in_{seed}", workdir / f"out_{seed}", cfg, report_dir=workdir / f"report_{seed}")
    replay_s = time.perf_counter() - t0
    state = load_query_state(workdir / f"out_{seed}")
    plan = plan_sequence(seed, num_steps=args.steps, trajectory=traj, width=args.width, height=args.height)
    scene = plan.scene
    matched = label_from_scene(state.instances, scene.objects)
    outcomes = query_outcomes(seed, state.instances, text_encoder, cfg.query, args)
    outcomes += evaluate_relations(seed, state.instances, text_encoder, scene.objects, plan.world_from_base[-1],
                                   match_objects(state.instances, scene.objects), cfg.query, seed=args.seed,
                                   per_kind=args.relations_per_kind, seen=seen)
    stats = {"seed": seed, "trajectory": traj, "objects": len(scene.objects), "instances": len(state.instances),
             "matched": matched, "embedded": sum(i.embedding is not None for i in state.instances),
             "views": summary.views, "replay_s": round(replay_s, 1)}
    return outcomes, stats


PHRASING_KINDS = (*KINDS, "held_out_blind")


def split_summaries(outcomes: list) -> tuple[dict, dict]:
    """(phrasing kinds, relation kinds) summaries; relations in the vocabulary's order, each on its own row."""
    phrasing = summarize([o for o in outcomes if o.kind in PHRASING_KINDS])
    rel = [o for o in outcomes if o.kind not in PHRASING_KINDS]
    table = summarize(rel)
    order = [k for k in (*RELATIONS, *SUPERLATIVES) if k in table] + ["all"]
    relations = {k: table[k] for k in order if k in table}
    for k in (*RELATIONS, *SUPERLATIVES):
        relations.setdefault(k, {"queries": 0, "top1": float("nan"), "top3": float("nan"),
                                 "latency_median_ms": float("nan"), "latency_p95_ms": float("nan")})
    relations["all"] = relations.pop("all", table.get("all", {}))
    return phrasing, relations


def latency_check(pool: list[list], outcomes: list, cfg: QueryConfig, args, count: int = 50,
                  queries: int = 300) -> dict:
    """Query latency with `count` embedded instances in the map, with a fresh text encoder and reader
    (no cached texts; the reader's tables built first, as the node does at load): held-out, dev and
    relation queries of the benchmark, each asked once."""
    from iggt_ros.vlm.query import answer_query

    instances = []
    for k, scene in enumerate(pool):
        for inst in scene:
            if inst.embedding is None or len(instances) >= count:
                continue
            copy = dataclasses.replace(inst, id=1000 * k + inst.id,
                                       box_center=np.asarray(inst.box_center) + [4.0 * k, 0.0, 0.0])
            instances.append(copy)
    texts = list(dict.fromkeys(o.text for o in outcomes if o.kind not in ("canonical", "synonym")))
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))[:queries]]
    encoder = make_text_encoder(cfg)
    reader_for(encoder).warm()  # as the node does when its encoders load
    viewer = np.eye(4)
    lat = []
    for text in texts:
        t0 = time.perf_counter()
        answer_query(text, instances, encoder, cfg, viewer=viewer)
        lat.append((time.perf_counter() - t0) * 1e3)
    return {"instances": len(instances), "queries": len(lat), "median_ms": float(np.median(lat)),
            "p95_ms": float(np.percentile(lat, 95)), "max_ms": float(np.max(lat)), "torch_threads": args.threads}


def _table(table: dict) -> list[str]:
    lines = ["| queries | count | top-1 | top-3 | latency median (ms) | latency p95 (ms) |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, row in table.items():
        if not row:
            continue
        if row["queries"] == 0:
            lines.append(f"| {kind} | 0 | - | - | - | - |")
            continue
        lines.append(f"| {kind} | {row['queries']} | {row['top1']:.3f} | {row['top3']:.3f} | "
                     f"{row['latency_median_ms']:.2f} | {row['latency_p95_ms']:.2f} |")
    return lines


def markdown(summary: dict, meta: dict, scenes: list[dict], pipeline: dict | None = None,
             pipeline_scenes: list[dict] | None = None, relations: dict | None = None,
             pipeline_relations: dict | None = None, latency: dict | None = None,
             split: str = "benchmark") -> str:
    where = ("held-out synthetic scenes" if split == "benchmark" else "validation scenes (for tuning)")
    lines = [
        "# Open-vocabulary query benchmark",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"{where.capitalize()} (seeds {meta['seeds'][0]}..{meta['seeds'][-1]}, never used in training), "
        f"{meta['steps']} steps at {meta['width']}x{meta['height']}, trajectories orbit/walk/pan; text encoder "
        f"'{meta['text_encoder']}', region encoder '{meta['region_encoder']}'.",
        "",
        "Instances come from ground-truth masks: this isolates the embedder from segmentation. A query counts "
        "only when the objects it describes are one object or one group of identical copies; it is correct "
        "at top-k when any of them is among the k best-ranked instances.",
        "",
        "- canonical: plain words ('the small red cube'); synonym: phrasings used in training;",
        "- unseen_synonym: the caption synonyms and templates withheld from training;",
        "- dev: `iggt_ros/data/phrasings/dev.json`, the set query understanding was tuned on;",
        "- held_out: `iggt_ros/data/phrasings/held_out.json` (other synonyms, questions, commands, 'the one "
        "that is ...', word order, plurals, misspellings in 30 % of queries), never used for tuning;",
        "- held_out_blind: the same held-out queries read without any thesaurus word that occurs in the "
        "held-out set (the thesaurus was written after the held-out set by the same author, so this row "
        "is the one that measures words the reader's lists do not contain).",
        "",
        *_table(summary),
    ]
    if relations:
        lines += [
            "",
            "## Relations and superlatives, ground-truth masks",
            "",
            "Generated from the true object geometry (`iggt_ros.vlm.relation_queries`): each query has one right "
            "answer that only the relation singles out (its description matches two or more objects), by a clear "
            "margin (volumes 1.5x apart, tops 0.1 m, bearings 0.15 rad, distances 0.25 m, sides 0.12 m). 'Cube' "
            "and 'box' are not used where a box with sides within 15 % of each other would count (it looks like "
            "a cube). Directions from the robot's base_link at the end of the sequence. on_top_of: the scenes "
            "have no stacked objects, so no queries.",
            "",
            *_table(relations),
        ]
    if pipeline:
        lines += [
            "",
            f"## Through the pipeline ({len(pipeline_scenes)} of the scenes)",
            "",
            "Sample bag of the same scene replayed with the oracle engine (`iggt-ros replay`): masks at the model "
            "resolution, tracker IDs, object-map boxes, embeddings from the replay, answers from the saved query "
            "state as `iggt-ros query` gives them.",
            "",
            *_table(pipeline),
        ]
        if pipeline_relations:
            lines += ["", "Relations and superlatives through the pipeline (map boxes, tracker IDs). The right answer "
                      "is decided among every object the cameras saw (the scene's ground-truth instances); targets "
                      "and references are objects matched to a map instance (centroid within 0.35 m), so an object "
                      "the matching misses is never asked about but still decides, say, which box is the largest:",
                      "", *_table(pipeline_relations)]
        lines.append("")
        lines.append("Instances matched to scene objects: "
                     + ", ".join(f"{s['matched']}/{s['objects']}" for s in pipeline_scenes) + ".")
    if latency:
        lines += [
            "",
            f"## Latency with {latency['instances']} instances in the map",
            "",
            f"{latency['queries']} held-out, dev and relation queries, each asked once with a fresh text encoder "
            f"(no cached texts; the reader's tables built first, as the node does at load), torch threads "
            f"{latency['torch_threads']}: median {latency['median_ms']:.1f} ms, "
            f"p95 {latency['p95_ms']:.1f} ms, max {latency['max_ms']:.1f} ms.",
        ]
    enc = sum(s["regions_encoded"] for s in scenes)
    views = sum(s["views"] for s in scenes)
    lines += [
        "",
        f"Embedding: {enc} region encodings over {views} views "
        f"({np.mean([s['embed_ms_per_view'] for s in scenes]):.1f} ms per view on average, "
        "re-embedding only new or changed instances).",
        "",
        f"Machine: {meta['machine']}, torch threads {meta['threads']}; 1-minute load average "
        f"{meta['load_average'][0]} at the start and {meta['load_average'][1]} at the end (latencies include "
        "waiting for a shared CPU). Latency is the whole `answer_query` call: reading the text, text encoding "
        "(MiniLM plus the text head, on a cache miss) and ranking.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scene_arguments(ap)
    ap.add_argument("--seed", type=int, default=0, help="phrasing sampler seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--text-encoder", default="embedded")
    ap.add_argument("--region-encoder", default="embedded")
    ap.add_argument("--pipeline-scenes", type=int, default=0,
                    help="also replay this many of the scenes through the pipeline (oracle engine)")
    ap.add_argument("--relations-per-kind", type=int, default=3, help="relation queries per relation and scene")
    ap.add_argument("--segmentation-only", action="store_true",
                    help="only score shape-class segmentation (2D mIoU, mAcc) from ground-truth-mask instances")
    ap.add_argument("--latency-only", action="store_true",
                    help="only measure query latency with 50 instances (writes query_latency.json)")
    ap.add_argument("--split", choices=tuple(SPLIT_KINDS), default="benchmark",
                    help="'validation' scenes with the dev phrasings (for tuning; never held-out phrasings)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = QueryConfig(text_encoder=args.text_encoder, region_encoder=args.region_encoder)
    text_encoder, region_encoder = make_text_encoder(cfg), make_region_encoder(cfg)
    args.blind_reader = QueryReader(getattr(text_encoder, "encode_base", text_encoder.encode),
                                    exclude=held_out_words())
    seeds = scene_seeds(args, SEEDS[args.split][0])
    load_start = os.getloadavg()[0]
    if args.segmentation_only:
        from iggt_ros.synthetic.attributes import SHAPES
        from iggt_ros.vlm.segmentation import ConfusionMatrix

        matrix = ConfusionMatrix(len(SHAPES))
        for seed in seeds:
            segmentation_scene(seed, args, cfg, text_encoder, region_encoder, matrix)
        result = {"command": "python benchmarks/query.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "classes": list(SHAPES), "seeds": [seeds[0], seeds[-1]], "masks": "ground truth",
                  "miou_2d": matrix.miou(), "macc_2d": matrix.macc(),
                  "iou_per_class": dict(zip(SHAPES, matrix.iou().tolist(), strict=True)),
                  "accuracy_per_class": dict(zip(SHAPES, matrix.accuracy().tolist(), strict=True))}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "query_segmentation.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return 0
    outcomes, scenes, pool = [], [], []
    for seed in seeds:
        o, s, instances = run_scene(seed, args, cfg, text_encoder, region_encoder)
        outcomes += o
        scenes.append(s)
        pool.append(instances)
        print(f"scene {seed}: {s['instances']} instances, {len(o)} queries, "
              f"top-1 {np.mean([x.top1 for x in o]) if o else float('nan'):.3f}", flush=True)
    summary, relations = split_summaries(outcomes)
    latency = latency_check(pool, outcomes, cfg, args)
    print(f"latency with {latency['instances']} instances: median {latency['median_ms']:.1f} ms, "
          f"p95 {latency['p95_ms']:.1f} ms over {latency['queries']} queries", flush=True)
    if args.latency_only:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        latency.update(command="python benchmarks/query.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                       load_average=[round(load_start, 2), round(os.getloadavg()[0], 2)],
                       machine=f"{platform.machine()}, {os.cpu_count()} CPUs")
        (out / "query_latency.json").write_text(json.dumps(latency, indent=1))
        print(f"wrote {out / 'query_latency.json'}")
        return 0
    pipeline, pipeline_relations, pipeline_scenes = None, None, []
    if args.pipeline_scenes:
        import tempfile

        p_outcomes = []
        with tempfile.TemporaryDirectory(prefix="iggt_query_bench_") as tmp:
            for seed, instances in zip(seeds[:args.pipeline_scenes], pool, strict=False):
                o, s = run_pipeline_scene(seed, args, text_encoder, Path(tmp), {int(i.id) for i in instances})
                p_outcomes += o
                pipeline_scenes.append(s)
                print(f"pipeline scene {seed}: {s['matched']}/{s['objects']} objects matched, {len(o)} queries, "
                      f"top-1 {np.mean([x.top1 for x in o]) if o else float('nan'):.3f}", flush=True)
        pipeline, pipeline_relations = split_summaries(p_outcomes)
    meta = {
        "command": "python benchmarks/query.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": seeds, "steps": args.steps, "width": args.width, "height": args.height,
        "text_encoder": args.text_encoder, "region_encoder": args.region_encoder, "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    for title, table in (("ground-truth masks", summary), ("relations, ground-truth masks", relations),
                         ("through the pipeline", pipeline), ("relations, through the pipeline", pipeline_relations)):
        if not table:
            continue
        print(f"\n{title}")
        print(f"{'queries':<15} {'count':>6} {'top-1':>6} {'top-3':>6} {'lat med ms':>10} {'lat p95 ms':>10}")
        for kind, row in table.items():
            print(f"{kind:<15} {row['queries']:>6} {row['top1']:>6.3f} {row['top3']:>6.3f} "
                  f"{row['latency_median_ms']:>10.2f} {row['latency_p95_ms']:>10.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = [{"scene": o.scene, "kind": o.kind, "text": o.text, "targets": o.targets, "ranked": o.ranked[:3]}
                for o in outcomes if not o.top1]
    (out / "query.json").write_text(json.dumps({
        "meta": meta, "summary": summary, "relations": relations, "latency_50": latency, "scenes": scenes,
        "kinds": list(KINDS), "top1_failures": failures,
        "pipeline": {"summary": pipeline, "relations": pipeline_relations, "scenes": pipeline_scenes}
        if pipeline else None}, indent=1))
    (out / "query.md").write_text(markdown(summary, meta, scenes, pipeline, pipeline_scenes, relations,
                                           pipeline_relations, latency, args.split))
    print(f"\nwrote {out / 'query.md'} and {out / 'query.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
