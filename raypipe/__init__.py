"""raypipe: behaviour logs -> user segments, profiles and recommendations, on Ray.

`raypipe.Pipeline.from_config(...).run()` runs the batch job as `raypipe run` does and
`raypipe.load(output)` reads a finished run (raypipe/api.py)."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import raypipe` stays free of the config and Ray imports until they are used.
    if name in ("Pipeline", "Run", "Artifacts", "load"):
        from raypipe import api
        return getattr(api, name)
    raise AttributeError(f"module 'raypipe' has no attribute {name!r}")
