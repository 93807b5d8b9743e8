"""Face models: the linear 3DMM class, the embedded default model and importers."""

from .face_model import FORMAT_VERSION, FaceModel, FaceModelOutput, LandmarkMap, blend_shapes

__all__ = ["FORMAT_VERSION", "FaceModel", "FaceModelOutput", "LandmarkMap", "blend_shapes"]
