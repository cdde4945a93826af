"""Texts and sequences -> vectors: the text model (embed), the sequence encoder and its
training loop (encoder), pooled user vectors (pooling). Knows nothing about Ray."""
