"""affectsynth: facial affect synthesis with a 3D morphable model.

Stages (one module each, data flowing one way):
    io.load_image -> detect (Landmarks) -> fit (FitResult) -> affect target -> deform -> render -> composite
Conventions for images, model space and the camera: :mod:`affectsynth.camera`.

The Python API (from :mod:`affectsynth.pipeline`, imported on first use so that ``import affectsynth``
stays light)::

    import affectsynth
    result = affectsynth.synthesize("face.jpg", "happiness", seed=0)   # or "va:0.5,0.7", "au:12:0.8,6:0.6"
    result.image, result.labels, result.fit, result.timings_ms

For many images hold an :class:`~affectsynth.pipeline.Synthesizer` instead (it loads the model
and detector once).
"""

__version__ = "0.1.0"

_API = ("synthesize", "Synthesizer", "SynthesisResult", "parse_target")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'affectsynth' has no attribute {name!r}")
