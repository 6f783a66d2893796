"""`boom plan --config RUN.yaml [--cluster cluster.yaml] [--gpu-memory 80GiB] [--tokens-per-second N]`:
what a run will ask for, whether it fits and what it costs, before anything is submitted.

A dry run: it validates the config, reads row counts from the bag manifests (or the corpus), the
model's shape from its config.json, and the node types from cluster.yaml; it starts no Ray,
imports no torch and trains nothing. The estimates are boom_ray/plan/estimate.py's.
"""

from __future__ import annotations

import argparse

from boom_ray.cli.common import add_config_arguments, config_from_args
from boom_ray.config import ConfigError, parse_size
from boom_ray.plan.estimate import (DEFAULT_GPU, TrainShape, activation_bytes, default_tokens_per_second,
                                    largest_fitting_mini_batch, memory_estimate, missing_resources,
                                    nodes_for_workers, steps_and_tokens, with_mini_batch, workers_per_node)
from boom_ray.train.ds_config import (accumulation_steps, check_mini_batch_size, deepspeed_config, load_user_config,
                                      precision_of)

HELP = "dry run: resources, nodes, steps, per-GPU memory and GPU-hours of a run, before submitting it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--cluster", metavar="cluster.yaml", help="Ray cluster-launcher YAML whose node types to size")
    p.add_argument("--gpu-memory", metavar="SIZE", help="memory per GPU, e.g. 80GiB (default: the training "
                   "node type's GPU, else 80GiB)")
    p.add_argument("--tokens-per-second", type=float, metavar="N", help="training tokens/s per GPU (default: "
                   "40%% of the GPU's bf16 peak FLOPs over the model's FLOPs per token)")
    p.add_argument("--model-config", metavar="PATH", help="config.json (or its folder) of the model, where "
                   "model.name_or_path is a hub id that cannot be read here")
    p.add_argument("--corpus-rows", type=int, metavar="N", help="assume N corpus rows (one task) when the corpus "
                   "cannot be read from here")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _res(r: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in r.items()) + "}"


def _stage_resources(cfg, node_types, files: int | None) -> tuple[list[str], dict[str, float]]:
    """Lines of the per-stage resources table, and one training worker's resources."""
    from boom_ray.plan.inputs import PlanError  # lazy: pyarrow; boom --help stays instant
    from boom_ray.sweep.space import trial_resources  # lazy: pyarrow; boom --help stays instant
    from boom_ray.train.launch import bags_to_train, resources_per_worker  # lazy: pyarrow; --help stays instant

    t, e, m, s = cfg.train, cfg.eval, cfg.merge, cfg.sweep
    bags = bags_to_train(cfg)
    worker = resources_per_worker(t)
    memory = m.memory or 2 * m.memory_budget
    trial = {k.upper(): v for k, v in trial_resources(cfg).items()}
    lines = ["stage    asks for",
             f"bag      {cfg.bagging.num_cpus:g} CPU per source file task "
             f"({files if files is not None else '?'} files)",
             f"train    {t.num_workers} workers x {_res(worker)} per bag; {len(bags)} bags at once = "
             f"{t.num_workers * len(bags)} workers",
             f"merge    {m.num_cpus:g} CPU and {_gib(memory)} memory per merge ({len(m.merges)} merges, one at a time)",
             f"eval     {e.num_encoders} encoders x {_res({'CPU': e.encoder_cpus, 'GPU': e.encoder_gpus})}",
             f"sweep    {_res(trial)} per trial, {s.num_samples} trials, "
             f"{s.max_concurrent or 'unbounded'} at once"]
    if node_types is None:
        return lines, worker
    missing = missing_resources(worker, node_types)
    counts = nodes_for_workers(worker, t.num_workers * len(bags), node_types)
    if missing or not any(c.workers_per_node for c in counts):
        keys = [{"CPU": "train.cpus_per_worker", "GPU": "train.gpus_per_worker"}.get(k, k) for k in missing]
        raise PlanError(f"{' / '.join(keys) or 'train.cpus_per_worker / train.gpus_per_worker'}: no node type of the "
                        f"cluster can hold one training worker {_res(worker)} (node types: "
                        + ", ".join(f"{n.name} {_res(n.resources)}" for n in node_types) + ")")
    lines.append("nodes to train every bag at once (the autoscaler starts them; min_workers 0):")
    for c in counts:
        if not c.workers_per_node:
            lines.append(f"  {c.node_type:<14} cannot hold one training worker")
        else:
            over = "" if c.within_max else " (more than its max_workers: bags will wait their turn)"
            lines.append(f"  {c.node_type:<14} {c.workers_per_node} workers per node -> {c.nodes} nodes{over}")
    holders = [n.name for n in node_types if not missing_resources(trial, [n])]
    lines.append(f"sweep trials fit on: {', '.join(holders)}" if holders else
                 f"sweep trials fit on: no node type (sweep.trial_cpus / eval.encoder_gpus ask for {_res(trial)}; "
                 "boom sweep will stop before its first trial)")
    return lines, worker


def _train_shape(cfg):
    from boom_ray.model.settings import resolve_model_config  # lazy: pyarrow; boom --help stays instant

    t = cfg.train
    check_mini_batch_size(t)
    per_rank = t.global_batch_size // t.num_workers
    user = load_user_config(t.deepspeed_config) if t.deepspeed_config else None
    ds = deepspeed_config(t, world_size=t.num_workers, micro_batch_per_rank=max(1, per_rank), on_gpu=t.use_gpu,
                          user=user)
    model = resolve_model_config(cfg.model.name_or_path, cfg.model)
    shape = TrainShape(per_rank, t.group_size, model.max_query_length, model.max_doc_length, precision_of(ds),
                       int(ds.get("zero_optimization", {}).get("stage", 0)), t.num_workers,
                       t.gradient_checkpointing, t.mini_batch_size, accumulation_steps(ds))
    return shape, accumulation_steps(ds)


def _memory_table(shape, train, gpu_bytes: float, gpu_label: str) -> list[str]:
    columns = [("as configured" + (f" (mini-batches of {train.mini_batch_size})" if train.mini_batch_size
                                   else " (no mini-batches)"), train)]
    if train.mini_batch_size:
        columns.append(("without mini-batches", with_mini_batch(train, None)))
    else:  # the largest that fits; where the whole batch fits, an eighth of it, to compare
        m = largest_fitting_mini_batch(shape, train, gpu_bytes) or 1
        if m == train.rows:
            m = max(d for d in range(1, max(1, train.rows // 8) + 1) if train.rows % d == 0)
        columns.append((f"with mini-batches of {m}", with_mini_batch(train, m)))
    estimates = [(name, memory_estimate(shape, t)) for name, t in columns]
    lines = [f"per-{'GPU' if gpu_label else 'worker'} memory: ZeRO {train.zero_stage}, {train.world} ranks, "
             f"{train.precision}, "
             f"{train.rows} rows x (1 query + {train.group} passages) of <= {max(train.query_len, train.doc_len)} "
             f"tokens per rank, gradient checkpointing {'on' if train.checkpointing else 'off'}",
             f"{'':<14}" + "".join(f"{name:>36}" for name, _ in estimates)]
    for part in estimates[0][1].parts:
        lines.append(f"{part:<14}" + "".join(f"{_gib(e.parts[part]):>36}" for _, e in estimates))
    lines.append(f"{'total':<14}" + "".join(f"{_gib(e.total):>36}" for _, e in estimates))
    if gpu_label:
        lines.append(f"{'fits':<14}" + "".join(f"{'yes' if e.fits(gpu_bytes) else 'NO':>36}" for _, e in estimates))
        lines.append(f"fits: total <= 90 % of one GPU of {gpu_label}")
    seq = max(train.query_len, train.doc_len)
    other = activation_bytes(shape, train.precision, train.tokens(), seq, not train.checkpointing)
    lines.append(f"activations of the whole per-rank batch with gradient checkpointing "
                 f"{'off' if train.checkpointing else 'on'}: {_gib(other)}")
    return lines


def run(args: argparse.Namespace) -> int:
    import numpy as np  # lazy: numpy; boom --help stays instant

    from boom_ray.plan import inputs  # lazy: pyarrow; boom --help stays instant
    from boom_ray.train.batch_plan import plan_batches  # lazy: numpy; boom --help stays instant
    from boom_ray.train.launch import bags_to_train  # lazy: pyarrow; boom --help stays instant

    cfg = config_from_args(args)
    try:
        gpu_memory = parse_size(args.gpu_memory) if args.gpu_memory else None
    except ValueError as exc:
        raise ConfigError(f"--gpu-memory: {exc}") from None
    shape = inputs.load_model_shape(cfg.model.name_or_path, args.model_config)
    node_types = inputs.read_node_types(args.cluster) if args.cluster else None
    train, accumulation = _train_shape(cfg)
    print(f"boom plan: {args.config}")
    print(f"model {shape.name}: {shape.family}, {shape.params / 1e6:,.1f} M parameters, hidden {shape.hidden} x "
          f"{shape.layers} layers")
    bags = bags_to_train(cfg)
    try:
        rows = inputs.bag_rows(cfg, bags, args.corpus_rows)
    except (OSError, ConfigError, inputs.PlanError) as exc:
        if isinstance(exc, inputs.PlanError) and str(exc).startswith("train.bags"):
            raise
        print(f"note: cannot read the corpus for row counts ({exc}); pass --corpus-rows N for steps and cost")
        rows = {}
    files = next((len(r.counts) for r in rows.values() if r.source == "corpus"), None)

    stage_lines, worker = _stage_resources(cfg, node_types, files)
    print("\n" + "\n".join(stage_lines))

    gpu_name, gpu_label = DEFAULT_GPU, "80 GiB (default)"
    train_node = next((n for n in node_types or [] if workers_per_node(worker, n)), None)
    if gpu_memory is None and train_node is not None and train_node.gpu_memory and cfg.train.use_gpu:
        gpu_memory, gpu_name = train_node.gpu_memory, train_node.gpu or DEFAULT_GPU
        gpu_label = f"{_gib(gpu_memory)} ({train_node.gpu} on {train_node.name})"
    elif gpu_memory is not None:
        gpu_label = _gib(gpu_memory)
        gpu_name = train_node.gpu if train_node is not None and train_node.gpu else DEFAULT_GPU
    on_gpu = cfg.train.use_gpu or args.gpu_memory is not None
    gpu_memory = gpu_memory or 80 * 2**30
    print("\n" + "\n".join(_memory_table(shape, train, gpu_memory, gpu_label if on_gpu else "")))
    if not on_gpu and not args.tokens_per_second:
        print("\na CPU run (train.use_gpu: false): pass --tokens-per-second N for its cost")
        return 0

    tps = args.tokens_per_second or default_tokens_per_second(shape, train, gpu_name)
    source = "--tokens-per-second" if args.tokens_per_second else f"default: 40 % MFU on {gpu_name}"
    print(f"\nthroughput {tps:,.0f} tokens/s per GPU ({source})")
    if not rows:
        return 0
    print(f"{'bag':<10} {'rows':>12} {'from':<14} {'steps':>8} {'tokens (padded)':>18} {'GPU-hours':>10} "
          f"{'wall hours':>10}")
    total_h = 0.0
    for bag, r in rows.items():
        try:
            plan = plan_batches({t: np.arange(n) for t, n in r.counts.items()}, r.types, cfg.train.global_batch_size,
                                cfg.train.seed, world_size=cfg.train.num_workers)
        except ValueError as exc:
            raise ConfigError(f"train.global_batch_size: {exc}") from None
        steps, tokens = steps_and_tokens(train, len(plan.batches), plan.rows_used, epochs=cfg.train.epochs,
                                         accumulation=accumulation, max_steps=cfg.train.max_steps)
        hours = tokens / tps / 3600
        total_h += hours
        print(f"{bag:<10} {sum(r.counts.values()):>12,} {r.source:<14} {steps:>8,} {tokens:>18,} {hours:>10,.1f} "
              f"{hours / cfg.train.num_workers:>10,.2f}")
    print(f"{'all bags':<10} {'':>12} {'':<14} {'':>8} {'':>18} {total_h:>10,.1f}")
    return 0
