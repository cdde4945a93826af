"""The Python face of the CLI: run the batch job and read what it made, from a notebook, an
orchestrator task or a `ray job submit` entrypoint.

    import raypipe
    run = raypipe.Pipeline.from_config("job.yaml", source={"kind": "recbole",
                                       "input": "data/amazon-scientific"},
                                       overrides=["kmeans.n_clusters=auto"]).run()
    run.manifest["kmeans"], run.tables["profiles"]      # the manifest, table locations
    art = raypipe.load(run.output)
    art.table("segments").to_pandas(), art.service().recommend("u1", 10, "blend")

`Pipeline(cfg).run()` is exactly `raypipe run`: the same config (defaults, file, source,
overrides, in that order), the same stages, the same manifest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyarrow as pa

from raypipe.config import PipelineConfig, apply_overrides, from_dict, load_config


@dataclass(frozen=True)
class Run:
    """A finished run: its output folder, manifest and each table's location."""
    output: str
    manifest: dict
    tables: dict


class Pipeline:
    """The batch job for one config."""

    def __init__(self, config: PipelineConfig):
        self.config = config

    @classmethod
    def from_config(cls, config: str | dict | PipelineConfig | None = None,
                    source: dict | None = None, overrides: list[str] = (),
                    **fields) -> "Pipeline":
        """A YAML path, a nested dict or a PipelineConfig (None: the defaults); then
        `source` fields (kind, input, items), `key=value` overrides as `--set` takes them,
        and top-level fields (output="...", num_cpus=2)."""
        if isinstance(config, PipelineConfig):
            cfg = config
        elif isinstance(config, dict):
            cfg = from_dict(PipelineConfig, config)
        else:
            cfg = load_config(config)
        if source:
            cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, **source))
        cfg = apply_overrides(cfg, list(overrides))
        return cls(dataclasses.replace(cfg, **fields) if fields else cfg)

    def run(self, force: bool = False) -> Run:
        """Run (or resume) every stage -> the Run; `force` redoes the finished stages."""
        from raypipe.pipeline import run
        from raypipe.run.versions import current_run
        manifest = run(self.config, force=force)
        folder = current_run(self.config.output)
        return Run(self.config.output, manifest,
                   {name: f"{folder}/{name}.parquet" for name in manifest["tables"]})


class Artifacts:
    """A finished run's outputs (a local folder or a pyarrow.fs URI), read on demand."""

    def __init__(self, output: str):
        from raypipe.run.artifacts import read_manifest
        self.output, self.manifest = output, read_manifest(output)

    @property
    def tables(self) -> list[str]:
        return sorted(self.manifest["tables"])

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        if name not in self.manifest["tables"]:
            raise ValueError(f"no table {name!r} in {self.output}: it has {self.tables}")
        from raypipe.run.artifacts import Folder
        from raypipe.run.versions import current_run
        return Folder(current_run(self.output)).read(name, columns)

    def service(self):
        """The ProfileService over these artifacts (what `raypipe serve` deploys)."""
        from serve.service import ProfileService
        return ProfileService(self.output)


def load(output: str) -> Artifacts:
    return Artifacts(output)
