"""What each `raypipe` command does once its flags are parsed (cli.py parses them): one
function per command, named after it."""
from __future__ import annotations

import sys

from raypipe.config import SyntheticConfig


def generate(args) -> int:
    from raypipe.events.synthetic import generate
    cfg = SyntheticConfig(users=args.users, items=args.items, segments=args.segments,
                          events=args.events or 24 * args.users, seed=args.seed,
                          segment_skew=args.segment_skew, focus=args.focus)
    paths = generate(cfg, args.out)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def export(args) -> int:
    from raypipe.readouts.export import segment_users, write
    users = segment_users(args.artifacts, args.segment, args.min_confidence, args.level)
    write(users, args.out)
    at = f" at level {args.level}" if args.level else ""
    print(f"raypipe: wrote {users.num_rows} users of segment {args.segment}{at} to {args.out}")
    return 0


def sweep(args) -> int:
    from raypipe.jobs import runtime
    from raypipe.jobs.segments import sweep_table, sweep_users
    from raypipe.readouts.export import write
    from raypipe.segments.sweep import SweepConfig
    cfg = SweepConfig(args.k_min, args.k_max, args.resamples, args.sample, args.min_stability,
                      seed=args.seed)
    runtime.start(args.address, args.num_cpus)
    result = sweep_users(args.artifacts, cfg)
    table = sweep_table(result)
    print(table.drop_columns(["chosen"]).to_pandas().round(4).to_string(index=False))
    print(f"raypipe: {result['trials']} fits on {result['sample_rows']:,} users in "
          f"{result['seconds']:.1f} s; rule: {result['rule']}: K = {result['chosen_k']} "
          f"(--set kmeans.n_clusters={result['chosen_k']})")
    if args.out:
        write(table, args.out)
        print(f"raypipe: wrote {args.out}")
    return 0


def forget(args) -> int:
    from raypipe.run.forget import forget
    for user in args.user:
        removed = forget(args.artifacts, user)
        print(f"raypipe: forgot a user in {args.artifacts}: "
              + ", ".join(f"{n} rows from {t}" for t, n in sorted(removed.items())))
    print("raypipe: running services load the new version when their artifacts setting is "
          "re-applied (see README, Serving); remove the user from the input logs too")
    return 0


def serve(args) -> int:
    import os
    import time

    import yaml
    from ray import serve

    from raypipe.jobs import runtime
    from serve import frontdoor
    from serve.app import ServeArgs, app_builder
    fields = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in ServeArgs.model_fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                             f"{sorted(ServeArgs.model_fields)}")
        fields[key] = yaml.safe_load(value)
    if args.allow_anonymous:
        fields["allow_anonymous"] = True
    serve_args = ServeArgs(artifacts=args.artifacts, **fields)
    from serve.api import check_exposure, read_api_key
    api_key = read_api_key(serve_args.api_key_env, serve_args.api_key_file_env)
    try:                  # before anything starts: no key on an open address is refused
        door = frontdoor.choose(args.front_door, api_key is not None or
                                serve_args.allow_anonymous)
        check_exposure(api_key, "0.0.0.0" if door.exposes_replicas else args.host,
                       serve_args.allow_anonymous)
    except (PermissionError, ValueError) as exc:
        print(f"raypipe: error: {exc}", file=sys.stderr)
        return 2
    frontdoor.use_env(door)
    runtime.start(args.address, args.num_cpus)
    serve.start(http_options={"host": args.host, "port": args.port})
    try:
        try:
            app = app_builder(serve_args)
        except PermissionError as exc:          # no key on an open address
            print(f"raypipe: error: {exc}", file=sys.stderr)
            serve.shutdown()
            return 2
        serve.run(app, name="raypipe", route_prefix="/")
        direct = os.environ.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "30000")
        print(f"raypipe: serving {args.artifacts} at http://{args.host}:{args.port} "
              f"(API docs at /docs) through {door.note}; each replica also answers on its "
              f"own port from {direct} up; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("raypipe: stopping the service", file=sys.stderr)
        serve.shutdown()
    return 0


def tune(args) -> int:
    from raypipe.config.space import load_space
    from raypipe.cli import config_from_args
    from raypipe.jobs.tune import METRIC, TuneSettings
    from raypipe.jobs.tune import tune as search
    settings = TuneSettings(trials=args.trials, space=load_space(args.space),
                            grace_epochs=args.grace_epochs, reduction=args.reduction,
                            cpus_per_trial=args.cpus_per_trial, seed=args.seed,
                            folder=args.out)
    result = search(config_from_args(args), settings)
    for row in result["rows"]:
        score = "-" if row[METRIC] is None else f"{row[METRIC]:.4f}"
        params = " ".join(f"{k.partition('.')[2]}={_short(v)}" for k, v in row["params"].items())
        print(f"{row['trial']:>16} {score:>7} {row['epochs'] or 0:>3} ep "
              f"{row['stopped'] or '':<11} {params}")
    best = result["best"]
    print(f"raypipe: {result['trials']} trials in {result['seconds']:.0f} s; best "
          f"{best['trial']}: validation NDCG@10 {best[METRIC]:.4f} at epoch "
          f"{best['best_epoch']} (the starting settings: "
          f"{_score(result['start_point'], METRIC)}); wrote {result['config']} and "
          f"trials.csv; `raypipe run --config {result['config']}` trains it")
    return 0


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _score(row, metric: str) -> str:
    return "-" if not row or row[metric] is None else f"{row[metric]:.4f}"


def run(args) -> int:
    from raypipe.events.clean import BadRowError
    from raypipe.jobs.runtime import unwrap
    from raypipe.cli import config_from_args
    from raypipe.pipeline import run as run_pipeline
    from raypipe.readouts.summary import render
    cfg = config_from_args(args)
    try:
        manifest = run_pipeline(cfg, force=args.force)
    except Exception as exc:  # a bad row inside a Ray task arrives wrapped
        bad = unwrap(exc, BadRowError)
        if bad is None:
            raise
        print(f"raypipe: error: {bad}", file=sys.stderr)
        return 2
    print(render(manifest))
    return 0
