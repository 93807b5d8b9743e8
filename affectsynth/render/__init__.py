"""Rendering: rasterise image-space meshes (:mod:`.raster`) and shade the fragments (:mod:`.shade`)."""

from .raster import (AUTO_ORDER, BACKENDS, Fragments, RasterBackend, Rasterizer, available_backends, rasterize,
                     resolve_backend)
from .shade import MeshRenderer, PhotoTextureShader, interpolate, sample_image, texture, visibility

__all__ = ["AUTO_ORDER", "BACKENDS", "Fragments", "RasterBackend", "Rasterizer", "available_backends",
           "rasterize", "resolve_backend", "MeshRenderer", "PhotoTextureShader", "interpolate", "sample_image",
           "texture", "visibility"]
