"""Expression targets: which face to render, as model-independent FACS action units plus labels.

AU vocabulary. Targets are activations in [0, 1] (1 = FACS intensity E) of the FACS main
codes (:data:`affectsynth.affect.facs.FACS_MAIN_CODES`), per side of the face. Two forms:

* a mapping (:attr:`ExpressionCode.au`) with keys ``"AU12"`` (both sides at that activation),
  ``"AU12_L"`` / ``"AU12_R"`` (the subject's left / right side alone); one AU number is given
  either bilaterally or per side, never both. :func:`au_dict` writes the normal form: the
  bilateral key where both sides are equal, zeros left out.
* a fixed-order [A] (batched [B, A]) tensor over :data:`AU_KEYS` = ``("AU1_L", "AU1_R",
  "AU2_L", ...)``, always per side, A = 2 x the number of main codes. This is the form that is
  batched, stored in the VA bank (:mod:`affectsynth.affect.bank`) and mapped to a face model.

Mapping to a model. :func:`au_to_model_coeffs` is the one function that turns [B, A] AU
activations into a model's [B, E] expression coefficients. Each model expression is tied to
one AU key: its own name when that is an AU name (``"AU12_L"``, ``"AU4"``: the default model),
otherwise ``au_map[name]``, the one table an importer writes (``model.meta["au_map"]``, e.g.
``{"mouthSmileLeft": "AU12_L"}``); expressions with neither stay at 0. Then

* a per-side model shape (``AU12_L``) takes that side's activation;
* a bilateral-only model shape (``AU4``) takes the *mean of the two sides*. Since the
  bilateral action is L + R at the same activation, a one-sided request (R12 at a on a model
  with only AU12) becomes AU12 at a / 2: the least-squares symmetric fit of (0, a). Such
  asymmetric requests are reported as ``approximated``;
* requested AUs the model has no shape for are reported as ``missing`` (``strict=True``:
  :class:`~affectsynth.errors.InputError`), never silently dropped.

:func:`model_coeffs_to_au` is the inverse direction (fitted coefficients -> AU activations).

Emotion-driven models. Some models' expressions are whole emotions, not action units (the
Surrey Face Model's six blendshapes: anger, disgust, fear, happiness, sadness, surprise). Each
such expression is tied to one EMFACS category (:func:`model_emotion_keys`: ``emotion_map[name]``,
``model.meta["emotion_map"]``, or the name itself when it is a category) and takes the target's
weight of that emotion (:func:`emotion_weights`: its soft label without neutral, renormalised,
times its intensity). A model is driven by AUs or by emotions, never both (that would show a
target twice). :func:`stack_model_coeffs` is the one function that maps targets to either kind;
on an emotion-driven model an AU-only target (no soft label) has all its AUs reported
``missing``, and a soft label's emotions the model has no shape for (contempt on the SFM) are
reported in ``emotions_missing``.

Parsers (:func:`parse_expression`, :func:`parse_va`, :func:`parse_au`) raise
:class:`~affectsynth.errors.InputError` with a one-line message on bad input. Expression
prototypes come from the EMFACS table ``emfacs.json`` (:func:`emfacs_table`), which cites its
sources and documents the A-E intensity letters.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from ..errors import InputError, ModelFormatError
from ..model.face_model import FaceModel
from .facs import FACS_MAIN_CODES

__all__ = ["AU_NUMBERS", "AU_KEYS", "ExpressionCode", "MappingReport", "EmfacsVariant", "EmfacsTable",
           "emfacs_table", "au_vector", "au_dict", "model_au_keys", "model_emotion_keys", "emotion_weights",
           "au_to_model_coeffs", "stack_model_coeffs", "model_coeffs_to_au", "parse_expression", "parse_va",
           "parse_au", "validate_va"]

#: The AU numbers targets may use (the FACS main codes), ascending.
AU_NUMBERS: tuple[int, ...] = tuple(sorted(FACS_MAIN_CODES))
#: The canonical per-side AU list: the columns of every [..., A] AU tensor.
AU_KEYS: tuple[str, ...] = tuple(f"AU{n}_{side}" for n in AU_NUMBERS for side in "LR")
_COLUMN = MappingProxyType({key: i for i, key in enumerate(AU_KEYS)})
_AU_NAME = re.compile(r"AU(\d+)(?:_([LR]))?")
# One item of an AU string: "12:0.8", "AU12:0.8", "12R:0.5", "12_L:0.3", "R12A" (FACS notation).
_AU_ITEM = re.compile(r"(?:AU)?(?P<prefix>[LR])?(?P<number>\d+)_?(?P<suffix>[LR])?(?P<letter>[A-E])?"
                      r"(?::(?P<value>.*))?", re.IGNORECASE)
_EMFACS_FILE = "emfacs.json"


# ------------------------------------------------------------------------ AU vectors
def _columns(number: int, side: str | None) -> tuple[int, ...]:
    """Columns of AU ``number`` on ``side`` ("L", "R", or None for both)."""
    left = _COLUMN[f"AU{number}_L"]
    return (left, left + 1) if side is None else (left + (side == "R"),)


@functools.lru_cache(maxsize=1024)   # every target's keys are split twice per render; the keys are few
def _split_key(key: str) -> tuple[int, str | None]:
    """``"AU12_L"`` -> (12, "L"); InputError for a name that is not an AU of the main codes."""
    match = _AU_NAME.fullmatch(key)
    if match is None or int(match[1]) not in FACS_MAIN_CODES:
        raise InputError(f"{key!r} is not a FACS action unit key (use AU<n>, AU<n>_L or AU<n>_R "
                         f"with n one of {', '.join(map(str, AU_NUMBERS))})")
    return int(match[1]), match[2]


def au_vector(au: Mapping[str, float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """AU mapping (keys ``AU<n>``, ``AU<n>_L``, ``AU<n>_R``) -> [A] activations over :data:`AU_KEYS`."""
    vector = np.zeros(len(AU_KEYS))  # (filled in numpy: a tensor's item assignments cost ~5 us each)
    for key, value in au.items():
        vector[list(_columns(*_split_key(key)))] = float(value)
    return torch.from_numpy(vector).to(dtype)


def au_dict(vector: torch.Tensor) -> dict[str, float]:
    """[A] activations -> the normal-form mapping: ``AU<n>`` where both sides are equal, else per side."""
    return _au_dict(vector.detach().cpu().double().tolist())


def _au_dict(values: Sequence[float]) -> dict[str, float]:
    """:func:`au_dict` of the [A] activations as Python floats."""
    au: dict[str, float] = {}
    for number, left, right in zip(AU_NUMBERS, values[0::2], values[1::2]):
        if left == right != 0.0:
            au[f"AU{number}"] = left
        elif left != right:
            au.update({f"AU{number}_{side}": v for side, v in (("L", left), ("R", right)) if v != 0.0})
    return au


# ------------------------------------------------------------------------ the target type
@dataclass(frozen=True)
class ExpressionCode:
    """A model-independent expression target with its labels.

    Attributes:
        au: AU activations in [0, 1] by key (see the module docstring; normal form from the parsers).
        category: the class label ("happiness", ...; one of :func:`emfacs_table` ``.categories``
            for targets made here), or None (compounds, raw AUs).
        soft_label: class -> probability (sums to 1), or None.
        valence, arousal: the target's point in [-1, 1], or None.
        intensity: the expression intensity in [0, 1] (for VA targets the distance from the
            origin, capped at 1), or None (raw AUs).
        source: how the target was made, for provenance (e.g. "expression happiness[6+12]@0.8").
    """

    au: dict[str, float]
    category: str | None = None
    soft_label: dict[str, float] | None = None
    valence: float | None = None
    arousal: float | None = None
    intensity: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        bilateral, sided = set(), set()
        for key, value in self.au.items():
            number, side = _split_key(key)
            (sided if side else bilateral).add(number)
            _check_unit(value, key)
        if both := sorted(bilateral & sided):
            raise InputError(f"AU{both[0]} is given both bilaterally and per side; use one form")
        if self.soft_label is not None:
            if any(not 0.0 <= p <= 1.0 for p in self.soft_label.values()) or \
                    not math.isclose(sum(self.soft_label.values()), 1.0, abs_tol=1e-6):
                raise InputError(f"soft label {self.soft_label} is not a probability distribution")
        for name in ("valence", "arousal"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
                raise InputError(f"{name} {value} is not a number in [-1, 1]")
        if self.intensity is not None:
            _check_unit(self.intensity, "intensity")

    def au_vector(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The [A] activations over :data:`AU_KEYS`."""
        return au_vector(self.au, dtype)

    def to_model_coeffs(self, model: FaceModel, *, au_map: Mapping[str, str] | None = None,
                        emotion_map: Mapping[str, str] | None = None,
                        strict: bool = False) -> tuple[torch.Tensor, MappingReport]:
        """[E] expression coefficients of ``model`` (its device and dtype) and what could not be mapped.

        See :func:`stack_model_coeffs`.
        """
        coeffs, (report,) = stack_model_coeffs([self], model, au_map=au_map, emotion_map=emotion_map,
                                               strict=strict)
        return coeffs[0], report


def _check_unit(value: float, what: str) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(f"{what} {value!r} is not a number in [0, 1]")


# ------------------------------------------------------------------------ model mapping
@dataclass(frozen=True)
class MappingReport:
    """What of one target a model cannot show exactly (AU names in normal form, e.g. "AU11", "AU20_R"),
    and which emotion shapes it drove.

    Attributes:
        missing: requested AUs the model has no blendshape for (left out of the coefficients). On an
            emotion-driven model a target with a soft label shows its AUs through the emotion
            shapes, so none are missing; an AU-only target has all of its AUs here.
        approximated: asymmetric requests on bilateral-only model AUs (set to the mean of the sides).
        emotions: the emotions of an emotion-driven model this target drove (weight > 0).
        emotions_missing: emotions of the target's soft label (weight > 0) an emotion-driven model has
            no shape for (left out of the coefficients).
    """

    missing: tuple[str, ...] = ()
    approximated: tuple[str, ...] = ()
    emotions: tuple[str, ...] = ()
    emotions_missing: tuple[str, ...] = ()


def model_au_keys(model: FaceModel, au_map: Mapping[str, str] | None = None) -> tuple[str | None, ...]:
    """The AU key each expression of ``model`` implements, or None for one that implements no AU.

    ``au_map`` (default ``model.meta["au_map"]``) maps model expression names to AU keys; a name
    it does not list is its own key when it is an AU name. ModelFormatError when the table names
    something that is not an AU key, or when one AU number has both a bilateral and a per-side shape.
    """
    table = dict(model.meta.get("au_map", {}) if au_map is None else au_map)
    return _au_keys(model.exp_names, tuple(table.items()), model.name)


# Cached: every render maps its target through it, and parsing each name again was ~0.1 ms.
# A pure function of immutable input (names, the table's items, the name errors give).
@functools.cache
def _au_keys(exp_names: tuple[str, ...], table_items: tuple[tuple[str, str], ...],
             model_name: str) -> tuple[str | None, ...]:
    """:func:`model_au_keys` of a model's expression names and its AU table's items."""
    table = dict(table_items)
    keys: list[str | None] = []
    for name in exp_names:
        key = table.get(name, name)
        try:
            _split_key(key)
        except InputError:
            if name in table:
                raise ModelFormatError(f"model {model_name!r}: au_map maps {name!r} to {key!r}, "
                                       "which is not an AU key") from None
            key = None
        keys.append(key)
    parsed = [_split_key(key) for key in keys if key is not None]
    clash = {n for n, side in parsed if side} & {n for n, side in parsed if not side}
    if clash:
        raise ModelFormatError(f"model {model_name!r} has both a bilateral and a per-side shape of AU{min(clash)}")
    return tuple(keys)


def _model_matrices(model: FaceModel, au_map: Mapping[str, str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(to_model [A, E], from_model [E, A]) float64 matrices of the AU <-> coefficient maps (shared:
    read them, never write them)."""
    return _au_matrices(model_au_keys(model, au_map))


# Cached for the same reason as _au_keys (building them was ~0.15 ms per call, twice per render);
# a pure function of the keys, a tuple.
@functools.cache
def _au_matrices(keys: tuple[str | None, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_model_matrices` of a model's :func:`model_au_keys`."""
    # Filled in numpy and made a tensor once: per-entry tensor assignment was most of the cost.
    to_model = np.zeros((len(AU_KEYS), len(keys)))
    for e, key in enumerate(keys):
        if key is not None:
            columns = list(_columns(*_split_key(key)))
            to_model[columns, e] = 1.0 / len(columns)  # a bilateral shape: the mean of the sides
    to_model = torch.from_numpy(to_model)
    return to_model, (to_model > 0).double().T


@functools.cache
def _au_coverage(keys: tuple[str | None, ...]) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Of a model's :func:`model_au_keys`: (per AU column, whether some shape implements it; per AU
    number, whether only a bilateral shape implements it)."""
    to_model, _ = _au_matrices(keys)
    return tuple((to_model.sum(1) > 0).tolist()), tuple((to_model == 0.5).any(1).reshape(-1, 2).all(1).tolist())


def au_to_model_coeffs(au: torch.Tensor, model: FaceModel, *, au_map: Mapping[str, str] | None = None,
                       strict: bool = False) -> tuple[torch.Tensor, tuple[MappingReport, ...]]:
    """Map AU activations to a model's expression coefficients (the rules: module docstring).

    Args:
        au: [B, A] activations over :data:`AU_KEYS`.
        model: the face model; ``au_map`` as in :func:`model_au_keys`.
        strict: raise InputError instead of reporting missing or approximated AUs.
    Returns:
        ([B, E] coefficients in ``model``'s dtype and device, one :class:`MappingReport` per row).
    """
    if au.ndim != 2 or au.shape[1] != len(AU_KEYS):
        raise ValueError(f"au must be [B, {len(AU_KEYS)}], got {list(au.shape)}")
    keys = model_au_keys(model, au_map)
    (to_model, _), (covered, bilateral_only) = _au_matrices(keys), _au_coverage(keys)
    au = au.detach().cpu().double()
    coeffs = au @ to_model
    reports = []
    for row in au.tolist():
        missing = _au_dict([1.0 if v > 0 and not known else 0.0 for v, known in zip(row, covered)])
        approximated = (f"AU{n}" for n, only, left, right in zip(AU_NUMBERS, bilateral_only, row[0::2], row[1::2])
                        if only and left != right)
        reports.append(MappingReport(tuple(missing), tuple(approximated)))
    if strict:
        _raise_if_inexact(model, reports)
    return coeffs.to(device=model.device, dtype=model.dtype), tuple(reports)


def _raise_if_inexact(model: FaceModel, reports: Sequence[MappingReport]) -> None:
    """InputError (one line) for the first report with AUs or emotions missing, or AUs approximated."""
    bad = next((r for r in reports if r.missing or r.approximated or r.emotions_missing), None)
    if bad is None:
        return
    problems = ([f"no blendshape for {', '.join(bad.missing)}"] if bad.missing else []) + \
        ([f"only bilateral {', '.join(bad.approximated)} for a one-sided request"] if bad.approximated else []) + \
        ([f"no emotion shape for {', '.join(bad.emotions_missing)}"] if bad.emotions_missing else [])
    raise InputError(f"model {model.name!r} cannot show this target exactly: {'; '.join(problems)}")


def model_emotion_keys(model: FaceModel, emotion_map: Mapping[str, str] | None = None) -> tuple[str | None, ...]:
    """The EMFACS category each expression of ``model`` shows, or None for one that shows no emotion.

    ``emotion_map`` (default ``model.meta["emotion_map"]``) maps model expression names to categories;
    a name it does not list is its own key when it is a category. Neutral is no expression shape.
    ModelFormatError when the table names something that is not a category.
    """
    table = dict(model.meta.get("emotion_map", {}) if emotion_map is None else emotion_map)
    return _emotion_keys(model.exp_names, tuple(table.items()), model.name)


@functools.cache  # as _au_keys: every render asks
def _emotion_keys(exp_names: tuple[str, ...], table_items: tuple[tuple[str, str], ...],
                  model_name: str) -> tuple[str | None, ...]:
    """:func:`model_emotion_keys` of a model's expression names and its emotion table's items."""
    table = dict(table_items)
    emotions = set(emfacs_table().categories) - {"neutral"}
    keys: list[str | None] = []
    for name in exp_names:
        key = table.get(name, name)
        if key not in emotions:
            if name in table:
                raise ModelFormatError(f"model {model_name!r}: emotion_map maps {name!r} to {key!r}, which is not "
                                       f"an emotion ({', '.join(sorted(emotions))})")
            key = None
        keys.append(key)
    return tuple(keys)


def emotion_weights(code: ExpressionCode) -> dict[str, float] | None:
    """The weight of each emotion of a target, for emotion-driven models; None without a soft label.

    The soft label's classes other than neutral, renormalised to sum to 1, times the target's
    intensity (1 when it has none): ``happiness@0.7`` -> {happiness: 0.7}; ``happiness+surprise``
    -> 0.5 each. A VA target's soft label already holds its neutral share 1 - r and its intensity
    is r, so each emotion gets r x its neighbours' kernel weight, the share its AU vector has
    (multiplying the raw label by r would count r twice). A neutral target gives {}.
    """
    if code.soft_label is None:
        return None
    shares = {name: p for name, p in code.soft_label.items() if name != "neutral" and p > 0}
    total = sum(shares.values())
    intensity = 1.0 if code.intensity is None else code.intensity
    return {name: intensity * p / total for name, p in shares.items()}


def stack_model_coeffs(codes: Sequence[ExpressionCode], model: FaceModel, *,
                       au_map: Mapping[str, str] | None = None, emotion_map: Mapping[str, str] | None = None,
                       strict: bool = False) -> tuple[torch.Tensor, tuple[MappingReport, ...]]:
    """[B, E] coefficients of ``model`` for B targets, and one report per target: the one function
    that turns targets into a model's coefficients (the rules: module docstring).

    An AU-driven model takes the targets' AU activations (:func:`au_to_model_coeffs`); an
    emotion-driven one (:func:`model_emotion_keys`) their :func:`emotion_weights`. ``au_map`` and
    ``emotion_map`` default to the model's own tables. ``strict``: raise InputError instead of
    reporting what cannot be shown exactly. ModelFormatError for a model tied to both AUs and emotions.
    """
    au = torch.stack([code.au_vector(torch.float64) for code in codes]) if codes else \
        torch.zeros(0, len(AU_KEYS), dtype=torch.float64)
    coeffs, reports = au_to_model_coeffs(au, model, au_map=au_map)
    emotion_keys = model_emotion_keys(model, emotion_map)
    if any(emotion_keys):
        if any(model_au_keys(model, au_map)):
            raise ModelFormatError(f"model {model.name!r} ties expressions both to action units and to emotions; "
                                   "a model is driven by one or the other")
        coeffs, reports = coeffs.clone(), list(reports)
        for i, code in enumerate(codes):
            weights = emotion_weights(code)
            if weights is None:  # AU-only: nothing drives the emotion shapes; its AUs stay reported missing
                continue
            coeffs[i] = coeffs.new_tensor([weights.get(key, 0.0) for key in emotion_keys])
            reports[i] = MappingReport(
                emotions=tuple(dict.fromkeys(key for key in emotion_keys if weights.get(key, 0.0) > 0)),
                emotions_missing=tuple(name for name, w in weights.items() if w > 0 and name not in emotion_keys))
    if strict:
        _raise_if_inexact(model, reports)
    return coeffs, tuple(reports)


def model_coeffs_to_au(coeffs: torch.Tensor, model: FaceModel, *,
                       au_map: Mapping[str, str] | None = None) -> torch.Tensor:
    """[B, E] coefficients of ``model`` -> [B, A] float32 AU activations, clipped to [0, 1].

    A bilateral shape at c gives both sides c; a per-side shape its side; several shapes tied to one
    AU key add up. Expressions implementing no AU are ignored.
    """
    _, from_model = _model_matrices(model, au_map)
    return (coeffs.detach().cpu().double() @ from_model).clamp(0.0, 1.0).float()


# ------------------------------------------------------------------------ EMFACS table
@dataclass(frozen=True)
class EmfacsVariant:
    """One AU combination of an emotion: ``code`` in FACS notation as in the file, its ``source``
    key, and ``au``, its [A] activations over :data:`AU_KEYS` at expression intensity 1."""

    code: str
    source: str
    au: tuple[float, ...]


@dataclass(frozen=True)
class EmfacsTable:
    """The parsed ``emfacs.json``.

    Attributes:
        variants: emotion -> its variants, the commonly cited EMFACS prototype first; emotions in the
            file's order (AffectNet's eight classes: neutral first).
        aliases: lower-case alternative name -> emotion.
        letters: FACS intensity letter -> activation.
        unspecified: the activation factor of a unit without a letter.
        sources: source key -> citation.
    """

    variants: Mapping[str, tuple[EmfacsVariant, ...]]
    aliases: Mapping[str, str]
    letters: Mapping[str, float]
    unspecified: float
    sources: Mapping[str, str]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.variants)


@functools.cache
def emfacs_table() -> EmfacsTable:
    """The EMFACS prototype table shipped with the package (parsed once; immutable)."""
    text = (importlib.resources.files("affectsynth.affect") / _EMFACS_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    letters = {k.upper(): float(v) for k, v in data["intensity_letters"].items()}
    unspecified = float(data["unspecified_intensity"])
    variants, aliases = {}, {}
    for emotion in data["emotions"]:
        name = emotion["name"]
        variants[name] = tuple(
            EmfacsVariant(v["code"], v["source"],
                          tuple(_parse_au_vector(v["code"], letters, unspecified).tolist()) if v["code"]
                          else (0.0,) * len(AU_KEYS))
            for v in emotion["variants"])
        aliases.update({alias.lower(): name for alias in emotion.get("aliases", ())})
    return EmfacsTable(MappingProxyType(variants), MappingProxyType(aliases), MappingProxyType(letters),
                       unspecified, MappingProxyType(dict(data["sources"])))


# ------------------------------------------------------------------------ parsers
def parse_expression(text: str, intensity: float = 1.0, *,
                     generator: torch.Generator | None = None) -> ExpressionCode:
    """A named expression (``"happiness"``) or compound (``"happiness+surprise"``) at ``intensity``.

    Names are case-insensitive; aliases ("happy", "angry", ...) are accepted. Each emotion's
    variant is its EMFACS prototype (the table's first), or with a ``generator`` one of its
    variants drawn uniformly. Activations are ``intensity`` x the variant's (see the table's
    intensity notes). A compound is the union of its emotions' AUs, the maximum per AU and side,
    with an equal soft label and ``category`` None; neutral cannot be part of a compound.
    """
    table = emfacs_table()
    intensity = _parse_number(intensity, "intensity")
    _check_unit(intensity, "intensity")
    names = [_emotion_name(part, table) for part in str(text).split("+")]
    if len(set(names)) < len(names):
        raise InputError(f"expression {text!r} names an emotion twice")
    if len(names) > 1 and "neutral" in names:
        raise InputError(f"expression {text!r}: neutral cannot be part of a compound")
    au = [0.0] * len(AU_KEYS)  # (in Python floats, float64 as the table's: a handful of tensor ops cost more)
    parts = []
    for name in names:
        options = table.variants[name]
        pick = 0 if generator is None else int(torch.randint(len(options), (1,), generator=generator))
        au = [max(a, intensity * v) for a, v in zip(au, options[pick].au)]
        parts.append(f"{name}[{options[pick].code}]")
    return ExpressionCode(au=_au_dict(au), category=names[0] if len(names) == 1 else None,
                          soft_label={name: 1.0 / len(names) for name in names}, intensity=intensity,
                          source=f"expression {'+'.join(parts)}@{intensity:g}")


def canonical_emotion(text: str) -> str:
    """An emotion's canonical name from its name or an alias, any case ("Happy" -> "happiness");
    InputError for a name the EMFACS table does not know."""
    return _emotion_name(text, emfacs_table())


def _emotion_name(part: str, table: EmfacsTable) -> str:
    name = " ".join(part.split()).lower()
    name = table.aliases.get(name, name)
    if name not in table.variants:
        raise InputError(f"unknown expression {part.strip()!r} (valid: {', '.join(table.categories)}, "
                         "or a compound such as happiness+surprise)")
    return name


def parse_va(text: str) -> tuple[float, float]:
    """``"valence,arousal"`` (e.g. ``"0.5,0.7"``) -> (valence, arousal), both in [-1, 1]."""
    parts = str(text).split(",")
    if len(parts) != 2:
        raise InputError(f"valence-arousal {text!r} must be two numbers 'valence,arousal' (got {len(parts)} fields)")
    return validate_va(*(_parse_number(p, "valence" if i == 0 else "arousal") for i, p in enumerate(parts)))


def parse_va_cell(text: str | None, what: str, where: str) -> float | None:
    """A valence or arousal cell of a labels file: None when empty, else a number in [-1, 1];
    InputError naming ``where`` (e.g. "labels.csv:12") otherwise."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {what} {text!r} is not a number") from None
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise InputError(f"{where}: {what} {value} is not in [-1, 1]")
    return value


def validate_va(valence: float, arousal: float) -> tuple[float, float]:
    """(valence, arousal) as floats; InputError unless both are finite and in [-1, 1]."""
    for name, value in (("valence", valence), ("arousal", arousal)):
        if not (math.isfinite(value) and -1.0 <= value <= 1.0):
            raise InputError(f"{name} {value} is not in [-1, 1]")
    return float(valence), float(arousal)


def _parse_number(value: object, what: str) -> float:
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InputError(f"{what} {value!r} is not a number") from None


def parse_au(text: str) -> ExpressionCode:
    """Action units with activations: ``"12:0.8,6:0.6"``; items separated by ',' or '+'.

    An item is an AU number, optionally written ``AU12``, with an optional side (``12R``,
    ``12_L``, or FACS's prefix ``R12``: the subject's side) and an activation in [0, 1] after ':'
    or a FACS intensity letter A-E (``R12A``). Numbers outside the FACS main codes, duplicates
    (also AU12 with AU12_R) and missing or out-of-range activations are InputErrors.
    """
    table = emfacs_table()
    return ExpressionCode(au=au_dict(_parse_au_vector(str(text), table.letters, None)), source=f"au {text}")


def _parse_au_vector(text: str, letters: Mapping[str, float], unspecified: float | None) -> torch.Tensor:
    """The grammar of :func:`parse_au` -> [A] float64; a unit without activation gets ``unspecified``
    (None: an InputError). Also parses the EMFACS codes."""
    vector = torch.zeros(len(AU_KEYS), dtype=torch.float64)
    given = torch.zeros(len(AU_KEYS), dtype=torch.bool)
    if not text.strip():
        raise InputError("no action units given (write e.g. 12:0.8,6:0.6)")
    for item in re.split(r"[,+]", text):
        match = _AU_ITEM.fullmatch(item.strip())
        if match is None:
            raise InputError(f"cannot read action unit {item.strip()!r} (write e.g. 12:0.8, 12R:0.5, AU6_L:0.3)")
        number = int(match["number"])
        if number not in FACS_MAIN_CODES:
            raise InputError(f"AU{number} is not a FACS action unit this toolkit knows "
                             f"(known: {', '.join(map(str, AU_NUMBERS))})")
        if match["prefix"] and match["suffix"]:
            raise InputError(f"action unit {item.strip()!r} gives its side twice")
        if match["letter"] and match["value"] is not None:
            raise InputError(f"action unit {item.strip()!r} gives both an intensity letter and a value")
        if match["value"] is not None:
            value = _parse_number(match["value"], f"AU{number} activation")
        elif match["letter"]:
            value = letters[match["letter"].upper()]
        elif unspecified is not None:
            value = unspecified
        else:
            raise InputError(f"AU{number} has no activation (write e.g. {number}:0.8 or {number}C)")
        _check_unit(value, f"AU{number} activation")
        side = (match["prefix"] or match["suffix"] or "").upper() or None
        columns = list(_columns(number, side))
        if given[columns].any():
            raise InputError(f"AU{number} is given more than once in {text!r}")
        given[columns] = True
        vector[columns] = value
    return vector
