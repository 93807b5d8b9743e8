"""Importers: turn a public 3D morphable face model, as its authors distribute it, into a
:class:`~affectsynth.model.face_model.FaceModel`.

* :func:`import_ict`: the ICT Face Model Light (ICT-FaceKit, MIT licence).
* :func:`import_sfm`: the Surrey Face Model as the eos library ships it (``share/``: shape PCA
  model and 6 emotion blendshapes; free for non-commercial research), read without eos.
* Both get MediaPipe's 478-point map and the lip and lid regions by registering the default
  model onto their mean (:mod:`.mp478`).
* :func:`import_bfm2009`, :func:`import_bfm2017`: the Basel Face Model 2009 (.mat) and 2017
  (.h5); untested on the real files (none were available).
* :func:`import_flame`: FLAME 2020/2023 (.pkl, read without chumpy) and its landmark
  embeddings; untested on the real files (none were available).
"""

from .bfm import import_bfm2009, import_bfm2017
from .flame import import_flame
from .ict import import_ict
from .sfm import import_sfm

__all__ = ["import_bfm2009", "import_bfm2017", "import_flame", "import_ict", "import_sfm"]
