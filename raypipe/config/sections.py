"""The config's sections: one frozen dataclass per stage, with commented defaults, validated
in `__post_init__`. `raypipe.config` composes them into `PipelineConfig`."""
from __future__ import annotations

from dataclasses import dataclass, field

from raypipe.schema import EVENT_TYPES

SOURCES = ("synthetic", "events", "amazon-p5", "recbole", "online-retail")
USER_REPRS = ("encoder", "pooled", "text")
STRATEGIES = ("vector", "segment", "blend", "multi")
# `multi` is asked for by name: it searches the index once per interest (up to
# profiles.top_interests times per user), and on the public datasets it is no better than
# `vector` or `blend` (docs/results.md).
DEFAULT_STRATEGIES = ("vector", "segment", "blend")
INDEXES = ("auto", "flat", "ivf")


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 5000          # planted users
    items: int = 2000          # catalogue size
    events: int = 120_000      # rows in the behaviour log
    segments: int = 8          # latent segments, each with its own category taste
    seed: int = 0
    segment_skew: float = 0.0  # segment s gets users in proportion to (s + 1) ** -skew
    focus: float = 0.75        # share of its views in its own category (lower: overlapping)

    def __post_init__(self):
        for name in ("users", "items", "events", "segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic.{name}={getattr(self, name)} should be >= 1")
        if self.segment_skew < 0 or not 0 < self.focus <= 0.85:
            raise ValueError(f"synthetic.segment_skew={self.segment_skew} should be >= 0 and "
                             f"focus={self.focus} in (0, 0.85]")


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "synthetic"    # one of SOURCES
    input: str | None = None   # events file/folder/URI, or the dataset folder for public formats
    items: str | None = None   # item catalogue for kind=events
    # Canonical column -> column name in the input files (kind=events only).
    columns: dict = field(default_factory=dict)
    # Catalogue columns joined into the item text when no `text` column exists.
    text_columns: tuple = ("title", "category", "brand")

    def __post_init__(self):
        if self.kind not in SOURCES:
            raise ValueError(f"source.kind={self.kind!r} should be one of {SOURCES}")
        if self.kind in ("events", "amazon-p5", "recbole", "online-retail") and not self.input:
            raise ValueError(f"source.kind={self.kind!r} needs an input path (--input)")
        if self.kind == "events" and not self.items:
            raise ValueError("source.kind='events' needs an item catalogue (--items)")
        object.__setattr__(self, "text_columns", tuple(self.text_columns))


@dataclass(frozen=True)
class CleanConfig:
    strict: bool = False       # stop at the first bad row instead of quarantining it


@dataclass(frozen=True)
class SequenceConfig:
    max_length: int = 50       # keep each user's last N events
    min_length: int = 1        # users with fewer (distinct, if dedup_items) items are set aside
    dedup_items: bool = False  # keep only the first event per (user, item), as in purchase logs
    num_partitions: int = 0    # hash partitions for grouping; 0 = from the cluster's CPUs

    def __post_init__(self):
        if self.max_length < 1 or self.min_length < 1:
            raise ValueError(f"sequences.max_length={self.max_length} and min_length="
                             f"{self.min_length} should be >= 1")


@dataclass(frozen=True)
class EmbedConfig:
    model: str | None = None   # Hugging Face id or local path; None = shipped MiniLM-L6
    device: str | None = None  # None = cuda when available, else cpu
    # fp32 | bf16 | fp16 (GPU) | int8 (CPU) | auto: fp16 on GPUs; on CPUs bf16 with native
    # bf16 instructions, else int8 when its vectors on a sample of the texts being embedded
    # reach mean cosine 0.99 to fp32 (SmoothQuant calibration, vectors/quantize.py), else
    # fp32. The choice and the sample's cosine are in the manifest.
    precision: str = "auto"
    calibration_texts: int = 768  # texts sampled to calibrate int8 (2/3) and judge it (1/3)
    batch_size: int = 128      # texts per forward pass
    max_length: int = 64       # tokens per item text
    sequence_max_length: int = 256  # tokens per rendered sequence (user_repr=text)
    cpus_per_actor: int = 2    # CPU actors: torch threads each; actors = cluster CPUs // this
    max_actors: int = 0        # cap on the actor pool; 0 = as many as resources allow

    def __post_init__(self):
        from raypipe.vectors.embed import PRECISIONS
        if self.precision not in PRECISIONS:
            raise ValueError(f"embed.precision={self.precision!r}; expected one of {PRECISIONS}")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError(f"embed.batch_size={self.batch_size} should be >= 1 and "
                             f"embed.max_length={self.max_length} >= 8")


@dataclass(frozen=True)
class UserConfig:
    # Weight of each event type when pooling a history; later stages reuse it for interests.
    event_weights: dict = field(default_factory=lambda: {
        "view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0})
    half_life: float = 10.0    # recency decay, in events counted back from the latest

    def __post_init__(self):
        unknown = set(self.event_weights) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"user.event_weights has unknown event types {sorted(unknown)}")
        if self.half_life <= 0:
            raise ValueError(f"user.half_life={self.half_life} should be > 0")


@dataclass(frozen=True)
class EncoderConfig:
    """The sequence encoder (encoder.py) and its training (jobs/training.py)."""
    dim: int = 64              # hidden size; user and item vectors live in this space
    layers: int = 2            # Transformer blocks
    heads: int = 2
    # The latest events the encoder reads (0: all of sequences.max_length); `raypipe tune`
    # searches it below sequences.max_length without re-making the sequences.
    max_length: int = 0
    dropout: float = 0.5       # on embeddings, attention and feed-forward: sparse data overfits
    text: bool = True          # items start from their frozen text vectors through an adaptor
    item_ids: bool = True      # plus a learned vector per item id (text=False: id-only SASRec)
    # Training only, with both: the share of items whose id vector is left out at each step,
    # so that the text adaptor alone also ranks well (items without events have only it).
    id_dropout: float = 0.0
    epochs: int = 200          # at most; early stopping usually ends training well before
    patience: int = 3          # epochs without a better validation NDCG@10 before stopping
    # Training time budget: no epoch starts after this many minutes of training (over
    # resumptions); the best epoch so far is kept. 0: none.
    max_minutes: float = 0.0
    # Users held out for validation (a seeded hash of the id): early stopping, the choice
    # below and the weights of `blend`; the others also train on their last item.
    validation_share: float = 0.2
    # Keep the trained encoder only where it beats pooled text vectors (no training) on
    # those validation users, each alone and with co-occurrence blended in
    # (recommend/choice.py); false: always keep it.
    compare_pooled: bool = True
    batch_size: int = 64       # users per step (all their positions are trained at once)
    lr: float = 3e-3           # AdamW
    weight_decay: float = 0.0
    temperature: float = 0.07  # > 0: cosine scores divided by it; 0: plain dot product
    loss: str = "auto"         # full softmax, sampled softmax, or auto (full up to 100k items)
    negatives: int = 4096      # shared uniform negatives per step for the sampled loss
    num_workers: int = 1       # Ray Train workers; results do not depend on it
    use_gpu: bool | None = None  # None: one GPU per worker when the cluster has GPUs
    cpus_per_worker: int = 0   # torch threads per CPU worker; 0 = cluster CPUs / workers
    seed: int = 0
    storage: str | None = None  # Ray Train run storage (checkpoints); None = <output>.train

    def __post_init__(self):
        if self.loss not in ("auto", "full", "sampled"):
            raise ValueError(f"encoder.loss={self.loss!r} should be 'auto', 'full' or 'sampled'")
        if not (self.text or self.item_ids):
            raise ValueError("encoder.text and encoder.item_ids are both false: items would "
                             "have no representation")
        if self.dim % self.heads:
            raise ValueError(f"encoder.dim={self.dim} should be a multiple of "
                             f"encoder.heads={self.heads}")
        if self.max_length < 0:
            raise ValueError(f"encoder.max_length={self.max_length} should be >= 0 (0: "
                             "sequences.max_length)")
        for name in ("dim", "layers", "heads", "epochs", "patience", "batch_size",
                     "negatives", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder.{name}={getattr(self, name)} should be >= 1")
        if not 0.0 < self.validation_share <= 1.0:
            raise ValueError(f"encoder.validation_share={self.validation_share} should be in "
                             "(0, 1]")
        if self.temperature < 0:
            raise ValueError(f"encoder.temperature={self.temperature} should be > 0 (cosine "
                             "scores divided by it) or 0 (plain dot product)")
        if self.max_minutes < 0:
            raise ValueError(f"encoder.max_minutes={self.max_minutes} should be >= 0 "
                             f"(0: no budget)")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.id_dropout < 1.0) or self.lr <= 0:
            raise ValueError(f"encoder.dropout={self.dropout} and encoder.id_dropout="
                             f"{self.id_dropout} should be in [0, 1) and encoder.lr={self.lr} > 0")


@dataclass(frozen=True)
class ItemGroupConfig:
    # Product groups: K-means over the item vectors (the same engine as the segments), named
    # from their distinctive terms; in items.parquet, the report and `max_per_group`.
    n_groups: int = 16         # 0: no item groups
    seed: int = 0
    top_terms: int = 5

    def __post_init__(self):
        if self.n_groups < 0:
            raise ValueError(f"item_groups.n_groups={self.n_groups} should be >= 0")


@dataclass(frozen=True)
class ProfileConfig:
    top_interests: int = 3     # interest segments kept per user
    top_items: int = 10        # most frequent items kept per segment
    top_terms: int = 10        # distinctive terms kept per segment


@dataclass(frozen=True)
class RecommendConfig:
    k: int = 20                # recommendations per user and strategy
    strategies: tuple = DEFAULT_STRATEGIES
    exclude_purchased: bool = True
    # `blend` = vector score + blend_segment x segment score + blend_cooccurrence x
    # co-occurrence score. None: fitted on the validation users (encoder.validation_share)
    # to the best NDCG@10 over a grid that includes 0, so a signal is mixed in only where it
    # helps there (blend.py); a number fixes the weight.
    blend_segment: float | None = None
    blend_cooccurrence: float | None = None
    # Item-to-item co-occurrence (cooccur.py): b follows a when it comes within `window`
    # events after a; a user's scores come from their `recent` latest items; each item
    # keeps its `top` most frequent followers.
    cooccurrence_window: int = 3
    cooccurrence_recent: int = 3
    cooccurrence_top: int = 100
    # `vector` queries with the user's recent intent: pooled item vectors with this recency
    # half-life (in events), much shorter than user.half_life, which shapes the long-term
    # vector used for segments. On amazon-beauty, half-life 1 gives Recall@10 0.057, 10 gives
    # 0.039 (docs/results.md). Ignored for user_repr=text, which queries with its own vector.
    query_half_life: float = 1.0
    # The item index `vector` retrieval searches: `flat` (exact), `ivf` (inverted file:
    # ivf_lists clusters of items, ivf_probe of them searched per query), or `auto`: flat
    # below ivf_min_items items, ivf from there. The run measures IVF's recall against exact
    # search on a sample of users (manifest: outputs.index).
    # At most this many items of one item group in a user's list (0: no limit): diversity.
    max_per_group: int = 0
    # Each recommendation's reason and evidence (recommend/explain.py): `reason`, `because`
    # (cited history items), `because_weights` and `explanation` columns and fields.
    explain: bool = True
    # Encoder users' `vector` evidence: occlude each of the last this many events (one
    # encoder pass per event and user, so off by default); 0: those carry no evidence.
    explain_occlusion: int = 0
    index: str = "auto"
    ivf_min_items: int = 50_000
    ivf_lists: int = 0         # 0: 4 x sqrt(items)
    ivf_probe: int = 32

    def __post_init__(self):
        object.__setattr__(self, "strategies", tuple(self.strategies))
        bad = set(self.strategies) - set(STRATEGIES)
        if bad or self.k < 1 or self.query_half_life <= 0:
            raise ValueError(f"recommend: strategies={self.strategies} (allowed {STRATEGIES}), "
                             f"k={self.k} >= 1, query_half_life={self.query_half_life} > 0")
        for name in ("blend_segment", "blend_cooccurrence"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"recommend.{name}={getattr(self, name)} should be >= 0, or "
                                 "null to fit it on the validation users")
        for name in ("cooccurrence_window", "cooccurrence_recent", "cooccurrence_top"):
            if getattr(self, name) < 1:
                raise ValueError(f"recommend.{name}={getattr(self, name)} should be >= 1")
        if self.index not in INDEXES or self.ivf_min_items < 1 or self.ivf_lists < 0 or \
                self.ivf_probe < 1 or self.max_per_group < 0:
            raise ValueError(f"recommend: index={self.index!r} (one of {INDEXES}), "
                             f"ivf_min_items={self.ivf_min_items} >= 1, "
                             f"ivf_lists={self.ivf_lists} >= 0, ivf_probe={self.ivf_probe} >= 1, "
                             f"max_per_group={self.max_per_group} >= 0")
