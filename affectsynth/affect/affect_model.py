"""The affect model built from 4D expression data (:mod:`affectsynth.affect.build`), as ``render`` uses it.

One ``affect.npz`` holds

* a VA exemplar bank (:class:`~affectsynth.affect.bank.VABank`, kernel exemplars only), stored with
  :meth:`VABank.arrays` at the top level so that ``VABank.load("affect.npz")`` reads it too; absent
  when no frame had valence-arousal labels;
* per-class prototypes: the mean over people of the apex frames' expression coefficients of the
  base model, their spread (standard deviation across people), and the same prototype as
  model-independent AU activations (what ``render --affect --expression`` shows);
* the VA coverage grid and provenance (sources, counts, fitting residuals) as JSON.

The file's ``format_version`` is the VA bank's (so the bank loads); ``affect/format_version`` is
this layout's, :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..io import load_npz, save_npz
from .bank import FORMAT_VERSION as BANK_FORMAT_VERSION
from .bank import VABank
from .sequences import canonical_category
from .targets import AU_KEYS, ExpressionCode, au_dict, emfacs_table

__all__ = ["AffectModel", "FORMAT_VERSION"]

#: Version of the affect part of the layout (``affect/...`` arrays).
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class AffectModel:
    """Class prototypes and a VA bank learnt from 4D data.

    Attributes:
        classes: C class names (lower case; EMFACS emotions by their canonical names).
        exp_names: E expression names of the base model the coefficients refer to.
        prototype_coeffs: [C, E] float32 mean apex coefficients over people, in [0, 1].
        prototype_spread: [C, E] float32 their standard deviation across people (0 for one person).
        prototype_au: [C, A] float32 ``prototype_coeffs`` as AU activations over
            :data:`~affectsynth.affect.targets.AU_KEYS` (``model_coeffs_to_au``).
        prototype_people: [C] int64 how many people each prototype averages.
        bank: the VA bank, or None when no frame had valence-arousal labels.
        coverage: [bins, bins] int64 exemplar counts of the bank before thinning (``VABank.coverage``;
            valence bin i, arousal bin j, both from -1), or [0, 0] without a bank.
        provenance: JSON-serialisable sources, counts, residual statistics, options.
    """

    classes: tuple[str, ...]
    exp_names: tuple[str, ...]
    prototype_coeffs: np.ndarray
    prototype_spread: np.ndarray
    prototype_au: np.ndarray
    prototype_people: np.ndarray
    bank: VABank | None = None
    coverage: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, e = len(self.classes), len(self.exp_names)
        shapes = {"prototype_coeffs": (c, e), "prototype_spread": (c, e), "prototype_au": (c, len(AU_KEYS)),
                  "prototype_people": (c,)}
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise InputError(f"affect model: {name} must be {list(shape)}, got {list(np.shape(getattr(self, name)))}")

    # ---------------------------------------------------------------- targets
    def expression(self, text: str, intensity: float = 1.0) -> ExpressionCode:
        """The target of ``--expression`` from the learnt prototypes: ``"happiness"`` (EMFACS aliases
        accepted) or a compound ``"happiness+surprise"`` (the maximum per AU, as for the EMFACS
        prototypes), activations x ``intensity``. ``neutral`` is no expression. InputError for a class
        the model has no prototype of."""
        if not 0.0 <= float(intensity) <= 1.0:
            raise InputError(f"intensity {intensity} is not a number in [0, 1]")
        names = [canonical_category(part) for part in str(text).split("+")]
        au = np.zeros(len(AU_KEYS))
        for name in names:
            if name == "neutral" and len(names) == 1:
                continue
            if name not in self.classes:
                raise InputError(f"the affect model has no prototype of {name!r} (it has: "
                                 f"{', '.join(self.classes) or 'none'}{', neutral' if 'neutral' not in self.classes else ''})")
            au = np.maximum(au, float(intensity) * self.prototype_au[self.classes.index(name)])
        known = set(emfacs_table().categories)
        category = names[0] if len(names) == 1 else None
        return ExpressionCode(au=au_dict(torch.from_numpy(au.clip(0.0, 1.0))), category=category,
                              soft_label={name: 1.0 / len(names) for name in names} if set(names) <= known else None,
                              intensity=float(intensity),
                              source=f"expression {'+'.join(names)}@{float(intensity):g} from the affect model "
                                     f"{self.provenance.get('name', '')}".rstrip())

    def coverage_summary(self, rim_radius: float = 0.2) -> str:
        """One line: how many cells of the coverage grid are occupied, and which of the eight 45-degree
        sectors of the VA disc (anticlockwise from +valence; cells by their centres, at radius >=
        ``rim_radius``) have exemplars and which have none."""
        bins = self.coverage.shape[0]
        centres = (np.arange(bins) + 0.5) * (2.0 / max(bins, 1)) - 1.0
        valence, arousal = np.meshgrid(centres, centres, indexing="ij")
        sector = (np.degrees(np.arctan2(arousal, valence)) % 360 // 45).astype(int)
        outside = np.hypot(valence, arousal) >= rim_radius
        names = [f"{45 * s}-{45 * (s + 1)} deg" for s in range(8)]
        counts = [int(self.coverage[outside & (sector == s)].sum()) for s in range(8)]
        return (f"{int((self.coverage > 0).sum())}/{bins * bins} cells occupied; sectors with data: "
                + (", ".join(n for n, c in zip(names, counts) if c) or "none")
                + "; without: " + (", ".join(n for n, c in zip(names, counts) if not c) or "none"))

    def require_bank(self) -> VABank:
        if self.bank is None:
            raise InputError("the affect model has no VA bank (its labels had no valence-arousal)")
        return self.bank

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write ``affect.npz`` (module docstring), atomically."""
        arrays = dict(self.bank.arrays()) if self.bank is not None else {}
        arrays.update({
            "affect/format_version": np.array(FORMAT_VERSION),
            "affect/classes": np.array(self.classes, dtype=str).reshape(-1),
            "affect/exp_names": np.array(self.exp_names, dtype=str),
            "affect/prototype_coeffs": np.asarray(self.prototype_coeffs, np.float32),
            "affect/prototype_spread": np.asarray(self.prototype_spread, np.float32),
            "affect/prototype_au": np.asarray(self.prototype_au, np.float32),
            "affect/prototype_people": np.asarray(self.prototype_people, np.int64),
            "affect/au_keys": np.array(AU_KEYS, dtype=str),
            "affect/coverage": np.asarray(self.coverage, np.int64),
            "affect/provenance_json": np.array(json.dumps(self.provenance, sort_keys=True)),
        })
        save_npz(path, arrays, BANK_FORMAT_VERSION)

    @staticmethod
    def load(path: str | os.PathLike) -> AffectModel:
        """Read a file written by :meth:`save`; InputError (one line) for anything else."""
        data = load_npz(path, "affect model", BANK_FORMAT_VERSION)
        try:
            version = int(data["affect/format_version"])
            if version != FORMAT_VERSION:
                raise InputError(f"{path}: affect model format version {version}, expected {FORMAT_VERSION}")
            if [str(k) for k in data["affect/au_keys"]] != list(AU_KEYS):
                raise InputError(f"{path}: the affect model's AU columns are not this version's")
            return AffectModel(
                classes=tuple(str(c) for c in data["affect/classes"]),
                exp_names=tuple(str(n) for n in data["affect/exp_names"]),
                prototype_coeffs=data["affect/prototype_coeffs"], prototype_spread=data["affect/prototype_spread"],
                prototype_au=data["affect/prototype_au"], prototype_people=data["affect/prototype_people"],
                bank=VABank.from_arrays(data, path) if "va" in data else None, coverage=data["affect/coverage"],
                provenance=json.loads(str(data["affect/provenance_json"])))
        except KeyError as e:
            raise InputError(f"{path}: not an affect model (no array {e}; build one with affectsynth model build-affect)") \
                from None
        except (TypeError, ValueError) as e:
            raise InputError(f"{path}: malformed affect model ({' '.join(str(e).split())})") from None
