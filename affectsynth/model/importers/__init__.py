"""Importers: turn a public 3D morphable face model, as its authors distribute it, into a
:class:`~affectsynth.model.face_model.FaceModel`.

* :func:`import_ict`: the ICT Face Model Light (ICT-FaceKit, MIT licence).
"""

from .ict import import_ict

__all__ = ["import_ict"]
