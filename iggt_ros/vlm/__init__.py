"""Vision-language plug-ins: open-vocabulary text queries over the instances of the map.

- `encoders`: the `TextEncoder` / `RegionEncoder` interfaces; `registry`: selection by name
  from `QueryConfig` ('embedded', 'open_clip', 'none').
- `embedded`: the shipped default (MiniLM sentences + a small crop network, one 384-D space);
  `open_clip_backend`: CLIP models from a local weights file.
- `embedder`: `InstanceEmbedder`, per-instance embeddings aggregated over views, computed off the
  inference thread and only for new or changed instances, kept in an `EmbeddingStore`.
- `labels`: instance labels, the vocabulary word closest to an instance's embedding, with why an
  instance has none;
- `query`: `answer_query`, the ranking behind `/iggt/query` and `iggt-ros query`;
  `state`: the saved snapshot a replay leaves for `iggt-ros query`.
- `lmm`: yes/no grounding of candidates by a large multimodal model over an OpenAI-compatible API.

Importing this package imports nothing heavy; each module pulls in torch or optional libraries
only when used.
"""
