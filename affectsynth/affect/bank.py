"""The valence-arousal exemplar bank: a VA point -> FACS action units and a soft category label.

Following Kollias, Cheng, Ververas, Kotsia & Zafeiriou, "Deep neural network augmentation:
generating faces for affect analysis" (IJCV 2020), a VA query takes its nearest exemplars in VA
space and combines their expressions, the intensity growing with the distance from the origin.

Query rule (:meth:`VABank.query`). Read the circumplex as Russell (1980) does: the direction
of a point is the kind of affect, its distance from the origin the intensity. For a query q
with radius r = min(|q|, 1) and rim point u = q / |q| (u = 0 for q = 0):

* the k *kernel* exemplars nearest to u (Euclidean in VA; ties by bank order) get Gaussian kernel
  weights w_i ~ K(d_i) - K(d_k+1), K(d) = exp(-d^2 / (2 h^2)), h = :data:`BANDWIDTH` (0.3 VA
  units: the default bank's emotions lie 15-45 degrees apart on the rim, 0.26-0.77 VA, and h
  = 0.3 blends neighbours smoothly; it also mixes the closest pair, anger and fear), d_k+1 the distance of the
  first exemplar left out, normalised to sum 1 (equal weights if all k + 1 are equidistant).
  Subtracting K(d_k+1) makes an exemplar's weight reach 0 as it leaves the k nearest, so the
  result is continuous in q and does not depend on how ties at the k-th place are broken.
  Where the rim is sparse the nearest exemplars lie further in (the inner ramp, the neutral
  exemplar), which fades the expression;
* each contributes its *pattern* p_i = au_i / max(|va_i|, :data:`RADIUS_FLOOR`)
  clipped to [0, 1] (|va_i| capped at 1): its activations at full intensity, assuming, as the
  default bank is built, that activations grow linearly with the distance from the origin;
* the blend b = sum_i w_i p_i is rescaled to keep its peak: au(q) = r * b * (sum_i w_i max p_i) /
  max b. A plain average of two prototypes that share few units halves each, so the rim between
  two emotions fell to half intensity: at the arousal pole, between the aroused face and anger,
  no unit went above 0.62 (the judge harness read the pole as neutral on 5 of the 7 dev photos, seed 1).
  The rescaling keeps the peak an emotion has on its own (so it changes nothing where one pattern
  dominates) and shows both where two meet, as a compound expression does (Du et al., 2014, below);
  it is continuous in q. So (0, 0) is exactly neutral, the rim gets full intensity, and along a ray
  every activation grows linearly with r (the pattern depends on the direction only).

Alternatives. An exemplar may be an *alternative* of a kernel exemplar (``alternative_of``): the
same VA point and label, another AU combination for it (the default bank's EMFACS variants of
one emotion). Alternatives take no part in the kernel, so the variants of an emotion are not
averaged into one weaker face: without a generator each kernel exemplar shows its own pattern
(the emotion's prototype), with one it shows the pattern of a member of its set {itself and its
alternatives} drawn uniformly, scaled to the kernel exemplar's peak: an alternative is another form
of the emotion, its strength is the point's (the radius). Without the scaling the Investigator's
Guide's happiness variants 12C and 12D, drawn at the rim, smiled at 0.55 and 0.8, as weakly as the
prototype does at those radii: with seed 3 the judge harness's valence rho on the 7 dev
photos was 0.788, with it 0.810 (seed 4: 0.924 -> 0.948; seeds 0-2 unchanged). A bank without
alternatives (one built from 4D data) is all kernel.

With a ``generator`` the weights are also resampled as w_i E_i / sum_j w_j E_j, E_i ~ Exp(1) i.i.d.
(a Bayesian-bootstrap reweighting: a Dirichlet(1, ..., 1) draw tilted by the kernel weights), so a
seed varies the blend of neighbours too; CPU results are bit-for-bit reproducible per seed. Each
query row draws one E_i per kernel exemplar of the bank and one variant per label, in bank order,
not per neighbour rank: for a given seed every VA point then shows the same tilts and variants, and
au(q) stays continuous in q, as without a generator (an emotion does not switch variant, nor its
weight jump, where the order of the neighbours changes). A VA path can therefore take a seed.

The default bank (:meth:`VABank.default`) places every EMFACS variant of
:func:`~affectsynth.affect.targets.emfacs_table` on the circumplex (:data:`CIRCUMPLEX_DEG`),
the prototype (its first variant) a kernel exemplar and the other variants its alternatives
at the same points (so an emotion's own point gives what ``--expression`` gives), each with an
intensity ramp (:data:`RAMP_RADII`, activations x radius), plus one neutral exemplar at the
origin. The emotions cover the arc from happiness (15 deg) anticlockwise to sadness (205 deg);
:data:`EXTRA_STATES` adds, with the same ramps, the non-emotional states of the low-arousal arc
no basic emotion occupies (sleepy, relaxed), so that arousal below the origin shows in the face
rather than only fading it, the alert face at the high-arousal pole (aroused), where anger and
surprise would otherwise cancel, and the compound "happily surprised" between happiness and surprise
(without it that sector is a weak surprise, which reads as fear: unpleasant). Banks built from
annotated 4D data replace it with the same code (:meth:`VABank.thin`, :meth:`VABank.save`).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from ..errors import InputError
from ..io import load_npz, save_npz
from .targets import AU_KEYS, ExpressionCode, au_dict, emfacs_table, parse_au, validate_va

__all__ = ["VABank", "default_bank", "target_from_va", "CIRCUMPLEX_DEG", "EXTRA_STATES", "RAMP_RADII",
           "BANDWIDTH", "DEFAULT_K", "RADIUS_FLOOR", "FORMAT_VERSION"]

#: Version of the .npz layout written by :meth:`VABank.save`.
FORMAT_VERSION = 1
#: Angle (degrees anticlockwise from +valence) of each emotion on the unit VA circle. Approximate
#: placements rounded to 5 degrees, not published coordinates: happiness, surprise, anger, fear and
#: sadness follow where the words "happy"/"pleased", "astonished", "angry", "afraid" and "sad" lie
#: in the circumplex of Russell (1980), "A circumplex model of affect", J. Pers. Soc. Psychol.
#: 39(6), 1161-1178; disgust, which it does not scale, is our placement in the unpleasant,
#: moderately aroused sector beyond "afraid", toward "miserable". Contempt is not on the circle:
#: its display (EMFACS R12A+R14A) is a trace one-sided smile, and on the intensity ramp toward
#: the origin it reads as a faint smile, i.e. pleasant. At 140 degrees it made the unpleasant
#: sector of the default bank render faces that the judge harness (tools/judge) read as *more*
#: pleasant than the neutral face (valence proxy -0.10 at (-0.5, 0.3) against -0.15 for the
#: neutral render, on the dev photos scaled to 1000 px, seeds 0-2). ``--expression contempt`` and the policies that draw
#: categories still render it.
CIRCUMPLEX_DEG: Mapping[str, float] = MappingProxyType({
    "happiness": 15.0, "surprise": 70.0, "anger": 100.0, "fear": 115.0, "disgust": 160.0, "sadness": 205.0})
#: States of the default bank beyond the basic emotions: name -> (angle in degrees as in
#: :data:`CIRCUMPLEX_DEG`, FACS code at full intensity, category label). Placements as in Russell
#: (1980): "sleepy" at the low-arousal pole, "relaxed" in the pleasant, calm quadrant, "happily
#: surprised" near "excited"/"delighted", "aroused" at the high-arousal pole (the octant of his
#: Fig. 1 opposite sleepiness; his "alarmed" and "astonished" lie beside it). The aroused face is
#: alarm without a valence: brows and upper lids raised, lips parted, the jaw dropped
#: (1C+2C+5C+25E+26C, a design choice), labelled surprise as an annotator would. Its jaw drop sits
#: between the posed fear and surprise it lies between: rendered on the 7 dev photos (no seed), the
#: lower lip drops 9-13 mm (MediaPipe landmarks aligned on the eyes and nose, 90 mm between the
#: outer eye corners), against 4-11 mm in the dev subjects' posed fear and 16-21 mm in their
#: posed surprise. With the jaw at B (5.6-6.2 mm on the tw_ photos) the pole read as neutral to
#: the judge harness on the smaller photos (jawOpen 0.003, and FER's surprise + fear + anger
#: ~0.1); at C its arousal rho on the 7 dev photos went 0.664 / 0.655 / 0.576 / 0.629 -> 0.752 /
#: 0.688 / 0.748 / 0.712 (no seed, seeds 0-2), valence rho 0.921 / 0.964 / 0.983 / 0.926 ->
#: 0.945 / 0.948 / 0.979 / 0.917. Without it the pole was the kernel blend of anger (10 degrees
#: away) and surprise, whose brows and lips cancel (4 against 1+2, 23 against 25+26): the judge
#: harness read the valence sweep's (0, 0.3) as unpleasant, below its (-0.25, 0.3) on some seeds.
#: With it, valence rho on the 7 dev photos 0.919 / 0.905 / 0.895 / 0.788 -> 0.926 / 0.974 /
#: 0.979 / 0.960 (no seed, seeds 0-2); arousal rho 0.538 / 0.571 / 0.400 / 0.798 -> 0.555 /
#: 0.581 / 0.336 / 0.605. Codes: drowsiness shows as the lids lowering toward
#: closure (AU43, here B: a third closed; at C the narrowed eyes read as a glare), a relaxed face
#: as a trace smile with the lids a little lowered (design choices); happily surprised is the
#: compound of Du, Tao & Martinez (2014), "Compound facial expressions of emotion", PNAS 111(15),
#: E1454-E1462, with the AUs their Table 1 gives as consistently active (in over 70 % of their 230
#: subjects), 1+2+12+25, as we recall the table (to be checked against the paper; 5 and 26 are
#: among its intersubject variants). With 26 at E as well, the jaw drop outweighed the smile on
#: the sector's inner ramp: ``render --va 0.25,0.3`` of the 7 dev photos read as afraid or sad to
#: the judge harness (tools/judge; its FER valence -0.48 on average, its combined proxy -0.09), with
#: 1+2+12+25 as more pleasant (-0.18 and +0.04; their neutral photos: -0.22 and -0.12). Labels are
#: the categories a face annotator would give (AffectNet's eight): a sleepy face is "neutral", a
#: relaxed smile and a happy surprise "happiness", an aroused face "surprise".
EXTRA_STATES: Mapping[str, tuple[float, str, str]] = MappingProxyType({
    "sleepy": (270.0, "43B", "neutral"), "relaxed": (330.0, "12B+43A", "happiness"),
    "happily surprised": (45.0, "1E+2E+12E+25E", "happiness"),
    "aroused": (90.0, "1C+2C+5C+25E+26C", "surprise")})
#: Radii of each variant's intensity ramp in the default bank (activations scaled by the radius).
RAMP_RADII = (0.2, 0.4, 0.6, 0.8, 1.0)
#: Gaussian kernel bandwidth h in VA units (module docstring). With 0.15 a 48-frame VA path
#: (test_pipeline) changed an AU by up to 19 % of its range between frames, at 0.3 by 4 % (with
#: the blend's plain average; keeping its peak, the README's example path still moves 5 % a frame
#: at 48 frames, but one from (-0.9, 0.4) to (-0.2, 0.9), across fear and disgust, 16 %, not 6 %).
BANDWIDTH = 0.3
#: Neighbours per query.
DEFAULT_K = 8
#: Exemplars closer to the origin than this are scaled as if at this radius when turned into patterns.
RADIUS_FLOOR = 0.05


@dataclass(frozen=True, eq=False)
class VABank:
    """VA exemplars with model-independent AU activations.

    Attributes:
        va: [N, 2] float32 (valence, arousal) in [-1, 1].
        au: [N, A] float32 activations in [0, 1] over :data:`~affectsynth.affect.targets.AU_KEYS`.
        labels: N category names (e.g. "happiness", "neutral").
        meta: JSON-serialisable provenance.
        alternative_of: [N] int64, the kernel exemplar each exemplar is an alternative of (its own
            index for a kernel exemplar; module docstring); None: every exemplar is a kernel one.
    """

    va: torch.Tensor
    au: torch.Tensor
    labels: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    alternative_of: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.va.shape[0]
        if self.va.shape != (n, 2) or self.au.shape != (n, len(AU_KEYS)) or len(self.labels) != n:
            raise InputError(f"VA bank: va must be [N, 2], au [N, {len(AU_KEYS)}] and N labels; got "
                             f"{list(self.va.shape)}, {list(self.au.shape)}, {len(self.labels)}")
        if n == 0 or not (self.va.isfinite().all() and self.va.abs().max() <= 1.0):
            raise InputError("VA bank: needs at least one exemplar, with finite va in [-1, 1]")
        if not (self.au.isfinite().all() and self.au.min() >= 0.0 and self.au.max() <= 1.0):
            raise InputError("VA bank: au activations must lie in [0, 1]")
        object.__setattr__(self, "labels", tuple(self.labels))
        own = torch.arange(n)
        of = own if self.alternative_of is None else torch.as_tensor(self.alternative_of, dtype=torch.int64).cpu()
        if of.shape != (n,) or of.min() < 0 or of.max() >= n or not torch.equal(of[of], of):
            raise InputError("VA bank: alternative_of must be [N] indices of kernel exemplars (which point to themselves)")
        if not (torch.allclose(self.va.cpu()[of], self.va.cpu(), atol=1e-6)
                and all(self.labels[j] == label for j, label in zip(of.tolist(), self.labels))):
            raise InputError("VA bank: an alternative must have its kernel exemplar's va and label")
        object.__setattr__(self, "alternative_of", of)
        # kernel exemplars, and each one's set (itself first, then its alternatives in bank order)
        sets: dict[int, list[int]] = {}
        for i, j in enumerate(of.tolist()):
            sets.setdefault(j, []).append(i)  # the kernel exemplar comes first: of[of] == of and i == j there
        object.__setattr__(self, "_kernel", (of == own).nonzero()[:, 0])
        object.__setattr__(self, "_sets", {j: tuple(sorted(m, key=lambda i: i != j)) for j, m in sets.items()})
        # each kernel exemplar's label as a column of a seeded query's variant draws (labels in bank order)
        labels = list(dict.fromkeys(self.labels[i] for i in self._kernel.tolist()))
        object.__setattr__(self, "_label_column", {label: j for j, label in enumerate(labels)})

    def __len__(self) -> int:
        return self.va.shape[0]

    # ---------------------------------------------------------------- construction
    @staticmethod
    def default() -> VABank:
        """The bank of EMFACS prototypes on the circumplex (module docstring)."""
        table = emfacs_table()
        # (angle in degrees, [[A] activations at full intensity: the prototype, then alternatives], label)
        rim = [(CIRCUMPLEX_DEG[emotion], [v.au for v in variants], emotion)
               for emotion, variants in table.variants.items() if emotion in CIRCUMPLEX_DEG]
        rim += [(angle, [tuple(parse_au(code).au_vector(torch.float64).tolist())], label)
                for angle, code, label in EXTRA_STATES.values()]
        va, au, labels, alternative_of = [[0.0, 0.0]], [[0.0] * len(AU_KEYS)], ["neutral"], [0]
        for angle, patterns, label in rim:
            point = [math.cos(math.radians(angle)), math.sin(math.radians(angle))]
            for radius in RAMP_RADII:
                kernel = len(va)
                for activations in patterns:
                    alternative_of.append(kernel)
                    va.append([radius * point[0], radius * point[1]])
                    au.append([radius * a for a in activations])
                    labels.append(label)
        meta = {"name": "affectsynth-default-va",
                "built_from": "EMFACS variants (affectsynth/affect/emfacs.json) at approximate circumplex "
                              "placements (affectsynth.affect.bank.CIRCUMPLEX_DEG)",
                "circumplex_deg": dict(CIRCUMPLEX_DEG),
                "extra_states": {k: list(v) for k, v in EXTRA_STATES.items()},
                "ramp_radii": list(RAMP_RADII),
                "variants": "alternatives of their emotion's prototype (module docstring)"}
        return VABank(torch.tensor(va, dtype=torch.float32).clamp(-1.0, 1.0),
                      torch.tensor(au, dtype=torch.float32), tuple(labels), meta, torch.tensor(alternative_of))

    # ---------------------------------------------------------------- queries
    def query(self, va: torch.Tensor | Sequence[Sequence[float]], k: int = DEFAULT_K,
              generator: torch.Generator | None = None,
              bandwidth: float = BANDWIDTH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """AU activations for VA points (the rule: module docstring).

        Args:
            va: [B, 2] (valence, arousal) points.
            k: neighbours per point (at most the number of kernel exemplars).
            generator: None for the deterministic kernel weights and the kernel exemplars' own patterns,
                or a CPU generator to resample the weights and draw among alternatives.
        Returns:
            (au [B, A] float32, weights [B, k] float32 summing to 1, neighbours [B, k] int64 bank indices
            of the exemplars whose patterns were used).
        """
        va = torch.as_tensor(va, dtype=torch.float32, device=self.va.device)
        if va.ndim != 2 or va.shape[1] != 2 or not va.isfinite().all():
            raise ValueError(f"va must be a finite [B, 2] tensor, got shape {list(va.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kernel_ids = self._kernel.to(self.va.device)
        k = min(k, len(kernel_ids))
        radius = va.norm(dim=1)
        rim = va / radius.clamp(min=1e-12)[:, None]  # where each query's ray meets the unit circle
        d2 = ((rim[:, None, :] - self.va[kernel_ids][None]) ** 2).sum(-1)  # [B, M] to the kernel exemplars
        d2, order = torch.sort(d2, dim=1, stable=True)
        neighbours = kernel_ids[order[:, :k]]
        # Kernel values relative to the nearest (no underflow), minus the (k+1)-th's: see the module docstring.
        kernel = torch.exp(-(d2[:, :k + 1] - d2[:, :1]) / (2.0 * bandwidth ** 2))
        weights = kernel[:, :k] - kernel[:, k:] if k < len(kernel_ids) else kernel[:, :k]
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))  # all tied
        if generator is not None:
            # one tilt per kernel exemplar, in bank order (not per neighbour rank): see the module docstring
            tilts = torch.empty((len(va), len(kernel_ids)), dtype=weights.dtype, device=generator.device)
            weights = weights * tilts.exponential_(generator=generator).to(weights.device).gather(1, order[:, :k])
            neighbours = self._draw_alternatives(neighbours, generator)
        weights = weights / weights.sum(1, keepdim=True)
        patterns = (self.au / self.va.norm(dim=1).clamp(RADIUS_FLOOR, 1.0)[:, None]).clamp(0.0, 1.0)  # [N, A]
        chosen = patterns[neighbours]  # [B, k, A]
        if generator is not None:  # an alternative shows its form at its kernel exemplar's strength
            own_peak = patterns[self.alternative_of.to(neighbours.device)[neighbours]].amax(-1)   # [B, k]
            chosen = chosen * (own_peak / chosen.amax(-1).clamp(min=1e-12))[..., None]
        blend = (weights[..., None] * chosen).sum(1)  # [B, A]
        # Keep the blend's peak at the weighted mean of its patterns' peaks (module docstring).
        peak = (weights * chosen.amax(-1)).sum(1) / blend.amax(-1).clamp(min=1e-12)  # [B]
        au = (radius.clamp(max=1.0) * peak)[:, None] * blend
        return au.clamp(0.0, 1.0), weights, neighbours  # the clamp only removes rounding beyond 1

    def _draw_alternatives(self, neighbours: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[B, k] kernel exemplars -> a member of each one's set (itself or an alternative), drawn
        uniformly once per label and query row, in the bank's label order: the ramp exemplars of one
        emotion (its intensities) show the same variant, so a query does not average an emotion's
        variants into one weaker face, and a seed shows that variant wherever the label is a neighbour."""
        column = self._label_column
        draws = torch.empty((len(neighbours), len(column)), dtype=torch.float64, device=generator.device)
        draws = draws.uniform_(generator=generator).cpu().tolist()
        picks = [[self._sets[i][min(int(draw[column[self.labels[i]]] * len(self._sets[i])), len(self._sets[i]) - 1)]
                  for i in row] for row, draw in zip(neighbours.tolist(), draws)]
        return torch.tensor(picks, dtype=torch.int64, device=neighbours.device)

    # ---------------------------------------------------------------- binning
    def _cells(self, bins: int) -> torch.Tensor:
        """[N] int64 cell index valence_bin * bins + arousal_bin of a bins x bins grid over [-1, 1]^2."""
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        ij = ((self.va.double() + 1.0) * (bins / 2.0)).floor().long().clamp(0, bins - 1)
        return ij[:, 0] * bins + ij[:, 1]

    def coverage(self, bins: int) -> torch.Tensor:
        """[bins, bins] int64 exemplar counts; [i, j] is valence bin i, arousal bin j (both from -1)."""
        return torch.bincount(self._cells(bins), minlength=bins * bins).reshape(bins, bins)

    def thin(self, bins: int) -> VABank:
        """A smaller bank: per VA cell (:meth:`coverage`'s grid) and label, the one kernel exemplar
        closest to that group's mean AU vector (a real exemplar, so its va, au and label stay
        consistent), with its alternatives. Every occupied cell keeps an exemplar of every label it
        had; bank order is kept."""
        cells = self._cells(bins).tolist()
        groups: dict[tuple[int, str], list[int]] = {}
        for i in self._kernel.tolist():
            groups.setdefault((cells[i], self.labels[i]), []).append(i)
        chosen = []
        for members in groups.values():
            au = self.au[members]
            chosen.append(members[int(((au - au.mean(0)) ** 2).sum(1).argmin())])
        keep = sorted(i for j in chosen for i in self._sets[j])  # with their alternatives
        index = {old: new for new, old in enumerate(keep)}
        meta = {**self.meta, "thinned": {"bins": bins, "from": len(self), "rule": "per cell and label, "
                                         "the kernel exemplar closest to the group's mean AU vector, with its "
                                         "alternatives"}}
        return VABank(self.va[keep], self.au[keep], tuple(self.labels[i] for i in keep), meta,
                      torch.tensor([index[int(self.alternative_of[i])] for i in keep]))

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` (float32, format version :data:`FORMAT_VERSION`), atomically."""
        save_npz(path, self.arrays(), FORMAT_VERSION)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`save` writes (other files, such as an affect model, embed them so that
        :meth:`load` reads the bank from them too)."""
        return {"va": self.va.detach().cpu().float().numpy(), "au": self.au.detach().cpu().float().numpy(),
                "au_keys": np.array(AU_KEYS, dtype=str), "labels": np.array(self.labels, dtype=str),
                "alternative_of": self.alternative_of.numpy(), "meta_json": np.array(json.dumps(self.meta))}

    @staticmethod
    def load(path: str | os.PathLike) -> VABank:
        """Read a bank written by :meth:`save` (or embedded by :meth:`arrays`); AU columns are matched by
        name, so a file written with fewer AU keys loads with the others at 0. InputError (one line) for
        anything else."""
        return VABank.from_arrays(load_npz(path, "VA bank", FORMAT_VERSION), path)

    @staticmethod
    def from_arrays(data: Mapping[str, np.ndarray], path: str | os.PathLike) -> VABank:
        """The bank from the arrays of :meth:`arrays` (read from ``path``, named in errors)."""
        try:
            column = {key: i for i, key in enumerate(AU_KEYS)}
            unknown = [str(key) for key in data["au_keys"] if key not in column]
            if unknown:
                raise InputError(f"{path}: unknown AU keys {', '.join(unknown)}")
            au = np.zeros((len(data["va"]), len(AU_KEYS)), np.float32)
            au[:, [column[str(key)] for key in data["au_keys"]]] = data["au"]
            alternative_of = data.get("alternative_of")  # optional: a bank without alternatives
            return VABank(torch.from_numpy(data["va"].astype(np.float32)), torch.from_numpy(au),
                          tuple(str(label) for label in data["labels"]), json.loads(str(data["meta_json"])),
                          None if alternative_of is None else torch.from_numpy(alternative_of.astype(np.int64)))
        except KeyError as e:
            raise InputError(f"{path}: VA bank file lacks the array {e}") from None
        except (TypeError, ValueError) as e:  # shape mismatches, bad JSON, a non-numeric version
            raise InputError(f"{path}: malformed VA bank file ({' '.join(str(e).split())})") from None


@functools.cache
def default_bank() -> VABank:
    """:meth:`VABank.default`, built once per process (a pure function of the packaged EMFACS table;
    treat it as read-only)."""
    return VABank.default()


def target_from_va(valence: float, arousal: float, bank: VABank, *, k: int = DEFAULT_K,
                   generator: torch.Generator | None = None) -> ExpressionCode:
    """The expression target for a VA point: AUs from :meth:`VABank.query`, with labels.

    ``soft_label`` mirrors the AU rule: with r = min(|(v, a)|, 1) the point is the neutral face
    blended with the neighbours' expressions at weight r, so the label is (1 - r) neutral plus r
    times the neighbours' categories weighted by their kernel weights. ``category`` is its most
    probable class (ties: the first in the EMFACS table's order); ``intensity`` is r.
    """
    valence, arousal = validate_va(valence, arousal)
    au, weights, neighbours = bank.query(torch.tensor([[valence, arousal]]), k=k, generator=generator)
    radius = min(math.hypot(valence, arousal), 1.0)
    soft = {"neutral": 1.0 - radius}
    for weight, index in zip(weights[0].tolist(), neighbours[0].tolist()):
        label = bank.labels[index]
        soft[label] = soft.get(label, 0.0) + radius * weight
    order = {name: i for i, name in enumerate(emfacs_table().categories)}
    total = sum(soft.values())  # 1 up to the float32 rounding of the weights
    soft = {name: p / total for name, p in sorted(soft.items(), key=lambda kv: order.get(kv[0], len(order))) if p > 0}
    return ExpressionCode(au=au_dict(au[0]), category=max(soft, key=soft.get), soft_label=soft,
                          valence=valence, arousal=arousal, intensity=radius,
                          source=f"va {valence:g},{arousal:g} via {bank.meta.get('name', 'a VA bank')} (k={k})")
