"""Datasets' class codes: which emotion each number of a dataset's labels stands for.

Facial-expression datasets number their classes each in its own order, and RAF-DB from 1, so a
label "3" means happiness in FER2013, surprise in AffectNet and disgust in RAF-DB. A
:class:`ClassCodes` reads such codes as canonical EMFACS names; :data:`DATASET_CLASS_CODES` holds
the published orders, and :func:`class_codes` takes a dataset's name or a list of names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .targets import canonical_emotion

__all__ = ["ClassCodes", "DATASET_CLASS_CODES", "class_codes"]


@dataclass(frozen=True)
class ClassCodes:
    """The classes of a dataset's numeric labels.

    Attributes:
        names: canonical EMFACS names in code order.
        first: the first class's code (0, or 1 for RAF-DB).
    """

    names: tuple[str, ...]
    first: int = 0

    def read(self, text: str, where: str) -> str | None:
        """A code (``"3"``, ``"3.0"``) as its class's name; None for a whole number outside the codes
        (datasets' "none" or "uncertain" codes, such as AffectNet's 8-10); InputError (naming ``where``)
        for text that is not a whole number."""
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{where}: class code {text!r} is not a number") from None
        if not value.is_integer():
            raise InputError(f"{where}: class code {text!r} is not a whole number")
        index = int(value) - self.first
        return self.names[index] if 0 <= index < len(self.names) else None


#: The published label orders: AffectNet (0-7; 8-10 are none, uncertain, no face), FER2013 (0-6),
#: RAF-DB basic (1-7), CK+ (0-7).
DATASET_CLASS_CODES = {
    "affectnet": ClassCodes(("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")),
    "fer2013": ClassCodes(("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")),
    "rafdb": ClassCodes(("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"), first=1),
    "ckplus": ClassCodes(("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")),
}


def class_codes(spec: str) -> ClassCodes:
    """A dataset's name (:data:`DATASET_CLASS_CODES`, any case) or comma-separated emotion names
    (aliases too) for the codes 0, 1, ...; InputError for anything else or a class named twice."""
    text = spec.strip()
    if text.lower() in DATASET_CLASS_CODES:
        return DATASET_CLASS_CODES[text.lower()]
    if "," not in text:
        raise InputError(f"class codes {spec!r}: give a dataset ({', '.join(DATASET_CLASS_CODES)}) or the "
                         "class names in code order, comma-separated (code 0 first)")
    names = tuple(canonical_emotion(name) for name in text.split(","))
    if len(set(names)) < len(names):
        raise InputError(f"class codes {spec!r} name an emotion twice")
    return ClassCodes(names)
