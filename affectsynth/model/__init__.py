"""Face models: the linear 3DMM class, the embedded default model and (later) importers."""

from .default import build_default_model, load_default_model
from .face_model import FORMAT_VERSION, FaceModel, FaceModelOutput, LandmarkMap, blend_shapes, mouth_opening

__all__ = ["FORMAT_VERSION", "FaceModel", "FaceModelOutput", "LandmarkMap", "blend_shapes",
           "build_default_model", "load_default_model"]
