"""How a vector gets its segments, flat or hierarchical, and the `centroids` table that holds
them. Knows nothing about Ray. The batch job (profiles, the items' segments, blend's
validation) and the service all assign through `Segmentation`, so they cannot disagree.

`centroids` rows: (level, segment, parent, main, vector), one per node of every level,
`level` being the number of segments at that level, `parent` the node's segment at the next
coarser level (null at the coarsest) and `main` true at the level of the `segment` column. A flat run has one level. Artifacts written before
the hierarchy have no `level` column: they read as one level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.arrays import to_arrow, to_numpy
from raypipe.segments.shard import assign


@dataclass(frozen=True)
class Segmentation:
    """Nearest leaf, then that leaf's node at every level. Flat K-means is one level whose
    leaves are its centroids."""
    nodes: tuple              # per level (ascending), (k_level, d) float32 centroids
    paths: np.ndarray         # (m, n_levels) int32: each leaf's node at every level
    main: int                 # index of the level the `segment` column is at

    @classmethod
    def flat(cls, centroids: np.ndarray) -> "Segmentation":
        k = len(centroids)
        return cls((np.asarray(centroids, np.float32),), np.arange(k, dtype=np.int32)[:, None], 0)

    @property
    def levels(self) -> tuple:
        return tuple(len(n) for n in self.nodes)

    @property
    def centroids(self) -> np.ndarray:
        return self.nodes[self.main]

    @property
    def leaves(self) -> np.ndarray:
        return self.nodes[-1]

    @property
    def leaf_segments(self) -> np.ndarray:
        """(m,) each leaf's segment: a vector's segment is its nearest leaf's."""
        return self.paths[:, self.main]

    @property
    def n_segments(self) -> int:
        return len(self.centroids)

    @property
    def hierarchical(self) -> bool:
        return len(self.nodes) > 1

    def parents(self, level: int) -> np.ndarray:
        """(k_level,) each node's segment at the next coarser level; -1 at the coarsest."""
        j = self.levels.index(level)
        out = np.full(level, -1, np.int32)
        if j:
            out[self.paths[:, j]] = self.paths[:, j - 1]
        return out

    def nearest(self, x: np.ndarray):
        """(n, d) -> segment (n,), distance (n,), confidence (n,) in [0, 1], paths (n, L).
        confidence is 1 - d_own / d_other over the main level's centres. With a hierarchy a
        user's own segment comes from the nearest leaf, so another centre may be nearer
        than their own (confidence 0)."""
        if not self.hierarchical:
            k = min(2, self.n_segments)
            d2, labels = assign(x, self.centroids, k)
            dist = np.sqrt(d2)
            conf = np.ones(len(x), np.float32) if k == 1 else \
                1.0 - dist[:, 0] / np.maximum(dist[:, 1], 1e-12)
            return labels[:, 0], dist[:, 0], conf.astype(np.float32), labels[:, :1]
        paths = self.paths[assign(x, self.leaves, 1)[1][:, 0]]
        seg = paths[:, self.main]
        d2, near = assign(x, self.centroids, 2)
        own = np.sqrt(np.maximum(((x - self.centroids[seg]) ** 2).sum(1), 0))
        other = np.sqrt(np.where(near[:, 0] == seg, d2[:, 1], d2[:, 0]))
        conf = np.clip(1.0 - own / np.maximum(other, 1e-12), 0.0, 1.0)
        return seg, own.astype(np.float32), conf.astype(np.float32), paths

    def to_table(self) -> pa.Table:
        tables = []
        for level, vectors in zip(self.levels, self.nodes):
            parent = self.parents(level)
            tables.append(pa.table({
                "level": pa.array(np.full(level, level), pa.int32()),
                "segment": pa.array(range(level), pa.int32()),
                "parent": pa.array(parent, pa.int32(), mask=parent < 0),
                "main": pa.array(np.full(level, level == self.n_segments)),
                "vector": to_arrow(vectors)}))
        return pa.concat_tables(tables)

    @classmethod
    def from_table(cls, table: pa.Table) -> "Segmentation":
        """`centroids` -> the segmentation."""
        if "level" not in table.column_names:
            return cls.flat(to_numpy(table.sort_by("segment")["vector"]))
        levels = sorted(set(table["level"].to_pylist()))
        rows = [table.filter(pc.equal(table["level"], lv)).sort_by("segment") for lv in levels]
        paths = [np.arange(levels[-1], dtype=np.int32)]
        for r in reversed(rows[1:]):
            paths.insert(0, r["parent"].to_numpy(zero_copy_only=False).astype(np.int32)[paths[0]])
        main = levels.index(table.filter(table["main"])["level"][0].as_py())
        return cls(tuple(to_numpy(r["vector"]) for r in rows), np.stack(paths, 1), main)


def level_rows(segments: pa.Table, level: int) -> pa.Table:
    """`segments` (every level's nodes) -> that level's rows, by segment id. Artifacts from
    before the hierarchy hold one level and no `level` column."""
    if "level" in segments.column_names:
        segments = segments.filter(pc.equal(segments["level"], level))
    return segments.sort_by("segment")
