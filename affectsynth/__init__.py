"""affectsynth: facial affect synthesis with a 3D morphable model.

Stages (one module each, data flowing one way):
    io.load_image -> detect (Landmarks) -> fit (FitResult) -> affect target -> deform -> render -> composite
Conventions for images, model space and the camera: :mod:`affectsynth.camera`.
"""

__version__ = "0.1.0"
