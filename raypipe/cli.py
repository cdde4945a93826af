"""`raypipe run | tune | generate | serve | forget | report | segments export | segments sweep`: the
command line."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from raypipe.config import SOURCES, KMeansConfig, SyntheticConfig, apply_overrides, load_config
from raypipe import commands
from raypipe.run.lock import OutputLocked


def _run_parser(sub):
    p = sub.add_parser("run", help="run the batch pipeline")
    _pipeline_args(p)
    p.add_argument("--force", action="store_true",
                   help="redo every stage, even those an earlier run of the same settings "
                        "finished (kept in <output>.stages)")
    return p


def _tune_parser(sub):
    from raypipe.jobs.tune import TuneSettings
    d = TuneSettings()
    p = sub.add_parser("tune", help="search the encoder's settings with Ray Tune (ASHA), "
                       "scored on the validation users; writes a config `run` takes")
    _pipeline_args(p)
    p.add_argument("--trials", type=int, default=d.trials, help="settings tried")
    p.add_argument("--space", help="YAML search space (default: config/space.py's)")
    p.add_argument("--grace-epochs", type=int, default=d.grace_epochs,
                   help="ASHA stops no trial before this many epochs")
    p.add_argument("--reduction", type=int, default=d.reduction,
                   help="ASHA keeps about 1 in this many trials at each rung")
    p.add_argument("--cpus-per-trial", type=int, default=d.cpus_per_trial,
                   help="torch threads of a CPU trial; trials at once = CPUs / this")
    p.add_argument("--seed", type=int, default=d.seed, help="of the random search")
    p.add_argument("--out", help="results folder (default: <output>.tune)")
    return p


def _pipeline_args(p) -> None:
    """The flags `run` and `tune` share: the input, the output, the config."""
    p.add_argument("--source", choices=SOURCES, help="input format (default: synthetic)")
    p.add_argument("--input", help="events file/folder/URI, or the public dataset's folder")
    p.add_argument("--items", help="item catalogue file/folder/URI (--source events)")
    p.add_argument("--output", help="artifact folder or URI (default: ./artifacts)")
    p.add_argument("--config", help="YAML file with the config's sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. kmeans.n_clusters=8 (repeatable)")
    p.add_argument("--holdout", choices=["none", "last"],
                   help="'last': leave-one-out evaluation, metrics.json written")
    p.add_argument("--strict", action="store_true", help="stop at the first bad row")
    p.add_argument("--address", help="Ray cluster address ('auto' on a cluster node)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--verbose", action="store_true",
                   help="Ray Data's and Ray Train's INFO lines on the console too (always in "
                        "the Ray session's log files)")


def _generate_parser(sub):
    p = sub.add_parser("generate", help="write a synthetic behaviour log with planted segments")
    d = SyntheticConfig()
    p.add_argument("--users", type=int, default=d.users)
    p.add_argument("--items", type=int, default=d.items)
    p.add_argument("--events", type=int, default=None,
                   help="rows in the log (default: 24 per user)")
    p.add_argument("--segments", type=int, default=d.segments)
    p.add_argument("--segment-skew", type=float, default=d.segment_skew,
                   help="segment sizes fall as (rank)^-skew (0: equal sizes)")
    p.add_argument("--focus", type=float, default=d.focus,
                   help="share of a segment's views in its own category (lower: overlapping)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", required=True, help="folder for events/items/users.parquet")
    return p


def _serve_parser(sub):
    p = sub.add_parser("serve", help="serve profiles and recommendations over HTTP (Ray Serve)")
    p.add_argument("--artifacts", required=True, help="the batch job's output folder or URI")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--allow-anonymous", action="store_true",
                   help="serve without an API key on a non-loopback --host (otherwise refused)")
    p.add_argument("--front-door", choices=("auto", "haproxy", "proxy"), default="auto",
                   help="what answers on --port: HAProxy over the replicas' own ports "
                        "(auto: where it runs and an API key is set), or Serve's proxy")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a serve.app.ServeArgs field, e.g. max_events=200 (repeatable)")
    p.add_argument("--address", help="Ray cluster address ('auto' on a cluster node)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    return p


def _forget_parser(sub):
    p = sub.add_parser("forget", help="remove one user from every table of a finished run")
    p.add_argument("--user", required=True, action="append",
                   help="the user's id as in the input logs (repeatable)")
    p.add_argument("--artifacts", required=True, help="the batch job's output folder or URI")
    return p


def _report_parser(sub):
    p = sub.add_parser("report", help="write report.html explaining a run's segments")
    p.add_argument("--artifacts", required=True, help="the batch job's output folder or URI")
    p.add_argument("--out", help="where to write the page (default: <artifacts>/report.html)")
    return p


def _segments_parser(sub):
    p = sub.add_parser("segments", help="work with a run's segments")
    ops = p.add_subparsers(dest="segments_command", required=True)
    e = ops.add_parser("export", help="write the users of one segment (CSV or Parquet)")
    e.add_argument("--segment", type=int, required=True, help="the segment id")
    e.add_argument("--out", required=True, help="a .csv or .parquet file (path or URI)")
    e.add_argument("--artifacts", default="artifacts", help="the run (default: ./artifacts)")
    e.add_argument("--min-confidence", type=float, default=0.0,
                   help="leave out users less sure of their segment (0-1)")
    e.add_argument("--level", type=int, default=None,
                   help="a level of the segment hierarchy (its number of segments; default "
                        "the main level, kmeans.n_clusters)")
    d = KMeansConfig()
    s = ops.add_parser("sweep", help="score K-means at every K of a range on a run's user "
                       "vectors, and say which K kmeans.n_clusters=auto would choose")
    s.add_argument("--artifacts", default="artifacts", help="the run (default: ./artifacts)")
    s.add_argument("--k-min", type=int, default=d.sweep_k_min)
    s.add_argument("--k-max", type=int, default=d.sweep_k_max)
    s.add_argument("--resamples", type=int, default=d.sweep_resamples)
    s.add_argument("--sample", type=int, default=d.sweep_sample, help="user vectors fitted on")
    s.add_argument("--min-stability", type=float, default=d.min_stability)
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--out", help="also write the sweep table here (.csv or .parquet)")
    s.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    s.add_argument("--num-cpus", type=int, help="CPUs for a local Ray")
    return p


def config_from_args(args):
    """Flags -> PipelineConfig: defaults, then --config, then the source flags, then --set
    and the other flags."""
    cfg = load_config(args.config)
    source = {k: v for k, v in (("kind", args.source), ("input", args.input),
                                ("items", args.items)) if v}
    if args.input and not args.source and cfg.source.kind == "synthetic":
        source["kind"] = "events"
    if source:
        cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, **source))
    overrides = list(args.set)
    for flag, key in ((args.output, "output"), (args.holdout, "eval.holdout"),
                      (args.address, "address"), (args.num_cpus, "num_cpus")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    if args.strict:
        overrides.append("clean.strict=true")
    return apply_overrides(cfg, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_run_parser, _tune_parser, _generate_parser, _serve_parser, _forget_parser, _report_parser,
                _segments_parser):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Stage progress comes from raypipe's own log lines; these are chatter at INFO.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("tensorboardX.summary").setLevel(logging.ERROR)   # Tune: "@" renamed
    if getattr(args, "verbose", False):
        os.environ["RAYPIPE_VERBOSE"] = "1"          # read by jobs/runtime.py
    try:
        if args.command == "report":
            from raypipe.readouts.report import write
            print(f"raypipe: wrote {write(args.artifacts, args.out)}")
            return 0
        if args.command == "segments":
            return commands.export(args) if args.segments_command == "export" else \
                commands.sweep(args)
        return getattr(commands, args.command)(args)
    except OutputLocked as exc:        # another writer holds the output: try again later
        print(f"raypipe: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (ValueError, FileNotFoundError) as exc:
        print(f"raypipe: error: {exc}", file=sys.stderr)
        return 2


EXIT_LOCKED = 75                       # EX_TEMPFAIL: the output is locked by another writer


if __name__ == "__main__":
    sys.exit(main())
