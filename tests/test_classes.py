"""Datasets' class codes (affectsynth.affect.classes)."""

from __future__ import annotations

import pytest

from affectsynth.affect.classes import DATASET_CLASS_CODES, ClassCodes, class_codes
from affectsynth.affect.targets import canonical_emotion
from affectsynth.errors import InputError


def test_codes_read_as_their_datasets_classes():
    """The same number is a different class in each dataset; CK+ writes its codes as floats."""
    assert [DATASET_CLASS_CODES[d].read("3", "x") for d in ("affectnet", "fer2013", "rafdb", "ckplus")] == \
        ["surprise", "happiness", "disgust", "disgust"]
    assert DATASET_CLASS_CODES["rafdb"].read("1", "x") == "surprise"
    assert DATASET_CLASS_CODES["rafdb"].read("0", "x") is None         # RAF-DB counts from 1
    assert DATASET_CLASS_CODES["ckplus"].read("5.0000000e+00", "x") == "happiness"
    assert DATASET_CLASS_CODES["affectnet"].read("8", "x") is None     # AffectNet's "none"
    for text in ("happy", "2.5", ""):
        with pytest.raises(InputError, match="^f.csv:3: class code"):
            DATASET_CLASS_CODES["fer2013"].read(text, "f.csv:3")


def test_every_dataset_names_each_class_once_canonically():
    for codes in DATASET_CLASS_CODES.values():
        assert len(set(codes.names)) == len(codes.names)
        assert all(canonical_emotion(name) == name for name in codes.names)


def test_class_codes_from_a_dataset_or_names():
    assert class_codes(" FER2013 ") is DATASET_CLASS_CODES["fer2013"]
    assert class_codes("angry,happy,Neutral") == ClassCodes(("anger", "happiness", "neutral"))
    for bad in ("fer", "happy", "happy,joyy", "happy,joy"):
        with pytest.raises(InputError):
            class_codes(bad)
