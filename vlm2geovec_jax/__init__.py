"""vlm2geovec-jax: universal multimodal embeddings for remote sensing (VLM2GeoVec) in JAX."""
from vlm2geovec_jax.embedder import Embedder, load

__all__ = ["Embedder", "load"]
__version__ = "0.1.0"
