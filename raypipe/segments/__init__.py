"""Vectors -> segments: distributed-ready K-means (kmeans, its shard questions and seeding),
stable segment ids across runs (ids), and profiles (profiles). Knows nothing about Ray."""
