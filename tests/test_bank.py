from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from affectsynth.affect.bank import CIRCUMPLEX_DEG, EXTRA_STATES, RAMP_RADII, VABank, target_from_va
from affectsynth.affect.targets import AU_KEYS, emfacs_table, parse_va
from affectsynth.errors import InputError


@pytest.fixture(scope="module")
def bank() -> VABank:
    return VABank.default()


def at(emotion: str, radius: float) -> tuple[float, float]:
    angle = math.radians(CIRCUMPLEX_DEG[emotion])
    return radius * math.cos(angle), radius * math.sin(angle)


def column(name: str) -> int:
    return AU_KEYS.index(name)


def test_default_bank_holds_every_variant_on_its_ramp(bank):
    table = emfacs_table()
    variants = sum(len(v) for name, v in table.variants.items() if name in CIRCUMPLEX_DEG)
    assert len(bank) == 1 + (variants + len(EXTRA_STATES)) * len(RAMP_RADII)
    assert bank.labels[0] == "neutral" and bank.va[0].abs().sum() == 0 and bank.au[0].abs().sum() == 0
    assert set(bank.labels) == set(table.categories) - {"contempt"}
    # the rim exemplar of happiness's EMFACS prototype is the prototype at full intensity
    rim = next(i for i, label in enumerate(bank.labels) if label == "happiness" and
               math.isclose(float(bank.va[i].norm()), 1.0, abs_tol=1e-6))
    assert torch.equal(bank.au[rim], torch.tensor(table.variants["happiness"][0].au, dtype=torch.float32))


def test_origin_is_neutral(bank):
    code = target_from_va(*parse_va("0,0"), bank)
    assert code.au == {} and code.category == "neutral" and code.soft_label == {"neutral": 1.0}
    assert code.intensity == 0.0 and (code.valence, code.arousal) == (0.0, 0.0)
    au, weights, neighbours = bank.query(torch.zeros(3, 2))
    assert au.abs().sum() == 0 and weights.shape == neighbours.shape == (3, 8)


def test_near_happiness_is_dominated_by_the_lip_corner_puller(bank):
    code = target_from_va(*at("happiness", 0.9), bank)
    assert code.category == "happiness"
    assert max(code.au, key=code.au.get) == "AU12" and code.au["AU12"] > 0.5
    # happiness's own AUs; the neighbouring "happily surprised" (30 degrees away) lends a little brow raise
    assert max(v for k, v in code.au.items() if k not in ("AU6", "AU12", "AU25", "AU26")) < 0.2


def test_high_arousal_negative_point_lowers_the_brows_and_raises_the_lids(bank):
    code = target_from_va(-0.3, 0.9, bank)
    # (the aroused state, 18 degrees away at 90, takes most of the rest)
    assert code.category in ("anger", "fear") and code.soft_label["anger"] + code.soft_label["fear"] > 0.75
    assert code.au["AU4"] > 0.5 and code.au["AU5"] > 0.5
    assert "AU12" not in code.au


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_no_smile_anywhere_in_the_unpleasant_half(bank, seed):
    # contempt's trace one-sided smile is kept off the circle: on its ramp it read as pleasant
    angles = torch.deg2rad(torch.arange(95.0, 270.0, 5.0))
    points = torch.cat([r * torch.stack((angles.cos(), angles.sin()), 1) for r in (0.3, 0.6, 1.0)])
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    au, _, _ = bank.query(points, generator=generator)
    smile = [column(name) for name in AU_KEYS if name.startswith(("AU12", "AU14"))]
    assert au[:, smile].max() < 0.01  # (happily surprised, 50 degrees off, lends a trace at 95 degrees)


def test_low_valence_low_arousal_is_sad(bank):
    code = target_from_va(*at("sadness", 0.8), bank)
    assert code.category == "sadness" and code.au["AU15"] > 0.3 and code.au["AU1"] > 0.3


@pytest.mark.parametrize("degrees", range(0, 360, 15))
def test_activations_grow_with_the_radius_along_a_ray(bank, degrees):
    radius = torch.linspace(0.0, 1.0, 51)
    angle = math.radians(degrees)
    au, weights, _ = bank.query(torch.stack([radius * math.cos(angle), radius * math.sin(angle)], 1))
    assert torch.allclose(weights.sum(1), torch.ones(len(radius)))
    assert (au[1:] - au[:-1]).min() >= -1e-6  # no activation ever decreases outward
    assert (au[1:].sum(1) > au[:-1].sum(1)).all()  # and the total grows strictly
    assert torch.allclose(au[-1], 2 * au[25], atol=1e-6)  # linear: r = 1 is twice r = 0.5
    assert au.max() <= 1.0


def test_beyond_the_rim_is_full_intensity(bank):
    corner, rim = bank.query(torch.tensor([[1.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]]))[0]
    assert torch.allclose(corner, rim)


def test_a_blend_of_two_emotions_keeps_their_full_intensity():
    """Between two exemplars with disjoint units, each shows at full strength on the rim (a compound
    face), not at half as a plain average gives, and at half strength at half the radius."""
    au = torch.zeros(2, len(AU_KEYS))
    au[0, column("AU1_L")] = au[1, column("AU4_L")] = 1.0
    va = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in (80.0, 100.0)])
    pair = VABank(va, au, ("surprise", "anger"))
    (rim, half), weights, _ = pair.query(torch.tensor([[0.0, 1.0], [0.0, 0.5]]), k=2)
    assert weights[0].tolist() == pytest.approx([0.5, 0.5])
    assert rim[column("AU1_L")] == pytest.approx(1.0) and rim[column("AU4_L")] == pytest.approx(1.0)
    assert torch.allclose(half, rim / 2)
    one_sided = pair.query(torch.tensor([[0.5, 0.6]]), k=2)[0][0]  # nearer the first: it leads
    assert 0.99 < one_sided[column("AU1_L")] / (0.5 ** 2 + 0.6 ** 2) ** 0.5 <= 1.0 + 1e-6
    assert one_sided[column("AU4_L")] < one_sided[column("AU1_L")]


def test_a_drawn_alternative_shows_at_its_emotions_strength(bank):
    """The default bank's weaker happiness variants (the Investigator's Guide's 12C and 12D) are other
    forms of the emotion at the same VA point: drawn at the rim they smile at full strength, as the
    prototype does there (the old rule gave 12 at 0.55 and 0.8), and at half the radius at half of it."""
    kernel = int(bank.alternative_of[[i for i, label in enumerate(bank.labels) if label == "happiness"][0]])
    forms = {tuple(bank.au[i].gt(0).tolist()) for i in range(len(bank)) if int(bank.alternative_of[i]) == kernel}
    smile_only = tuple(k == "AU12_L" or k == "AU12_R" for k in AU_KEYS)
    assert smile_only in forms  # the bank holds a 12-only variant of happiness
    shown = set()
    for seed in range(40):
        rim, half = (target_from_va(*at("happiness", r), bank, generator=torch.Generator().manual_seed(seed))
                     for r in (1.0, 0.5))
        if rim.au.get("AU6", 0.0) == 0.0 and rim.au.get("AU25", 0.0) < 0.2:  # the 12-only form led
            shown.add(seed)
            assert rim.au["AU12"] > 0.95 and half.au["AU12"] == pytest.approx(rim.au["AU12"] / 2, rel=1e-4)
    assert shown  # some seed draws it


def test_intensity_and_soft_label_follow_the_radius(bank):
    inner, outer = target_from_va(*at("surprise", 0.3), bank), target_from_va(*at("surprise", 0.9), bank)
    assert inner.intensity == pytest.approx(0.3) and outer.intensity == pytest.approx(0.9)
    assert inner.soft_label["neutral"] == pytest.approx(0.7, abs=1e-6) and inner.category == "neutral"
    assert outer.category == "surprise"
    assert inner.au["AU1"] == pytest.approx(outer.au["AU1"] / 3, rel=1e-5)  # the same direction, a third
    for code in (inner, outer):
        assert sum(code.soft_label.values()) == pytest.approx(1.0)


def test_seeds_reproduce_and_vary_the_variants(bank):
    va = torch.tensor([at("anger", 0.95), at("disgust", 0.8), at("happiness", 0.5)])

    def query(seed):
        return bank.query(va, generator=torch.Generator().manual_seed(seed))

    first, again = query(3), query(3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # bit for bit
    assert not torch.equal(first[0], query(4)[0]) and not torch.equal(first[1], query(4)[1])
    plain = bank.query(va)
    assert all(torch.equal(a, b) for a, b in zip(plain, bank.query(va)))
    assert not torch.equal(plain[0], first[0])
    # the same neighbours in VA, each showing itself or one of its alternatives
    assert torch.equal(bank.alternative_of[plain[2]], plain[2]) and torch.equal(bank.alternative_of[first[2]], plain[2])
    # the seed swaps between anger's lip actions (23 pressed tight vs 24 pressed together)
    lips = {(float(au[0, column("AU23_L")]) > 0, float(au[0, column("AU24_L")]) > 0)
            for au, _, _ in map(query, range(60))}
    assert {(True, False), (False, True)} <= lips
    seeded = target_from_va(*at("anger", 0.95), bank, generator=torch.Generator().manual_seed(3))
    assert seeded == target_from_va(*at("anger", 0.95), bank, generator=torch.Generator().manual_seed(3))


def test_every_point_of_the_square_gives_a_valid_target(bank):
    points = torch.rand(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    points = torch.cat([points, torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, -1.0], [0.0, -1.0]])])
    for v, a in points.tolist():
        code = target_from_va(v, a, bank, generator=torch.Generator().manual_seed(1))  # validates itself
        assert code.category in code.soft_label and code.intensity == pytest.approx(min(math.hypot(v, a), 1.0))


def test_query_rejects_bad_shapes(bank):
    with pytest.raises(ValueError):
        bank.query(torch.zeros(4))
    with pytest.raises(ValueError):
        bank.query(torch.tensor([[math.nan, 0.0]]))
    with pytest.raises(InputError):
        target_from_va(1.5, 0.0, bank)


@pytest.mark.parametrize("bins", [4, 8, 12])
def test_thin_reduces_the_bank_and_keeps_its_coverage(bank, bins):
    bank = VABank(bank.va, bank.au, bank.labels, bank.meta)  # every exemplar a kernel one, as in a 4D bank
    thin = bank.thin(bins)
    assert len(thin) < len(bank)
    assert torch.equal(thin.coverage(bins) > 0, bank.coverage(bins) > 0)
    assert thin.coverage(bins).max() <= len(set(bank.labels))  # at most one exemplar per label and cell

    def cells_and_labels(b):
        return set(zip(b._cells(bins).tolist(), b.labels))

    assert cells_and_labels(thin) == cells_and_labels(bank)
    kept = {tuple(v) for v in thin.va.tolist()}
    assert kept <= {tuple(v) for v in bank.va.tolist()}  # real exemplars, not averages
    assert thin.meta["thinned"]["from"] == len(bank)


def test_thin_keeps_each_kernel_exemplar_with_all_its_alternatives(bank):
    thin = bank.thin(4)

    def set_sizes(b):  # (va, label) of each kernel exemplar -> how many exemplars show it
        return collections.Counter((tuple(b.va[j].tolist()), b.labels[j]) for j in b.alternative_of.tolist())

    kept, full = set_sizes(thin), set_sizes(bank)
    assert len(kept) < len(full) and all(full[key] == n for key, n in kept.items())
    assert max(full.values()) > 1  # the default bank has alternatives to keep


def test_low_arousal_lowers_the_lids_and_stays_labelled_neutral(bank):
    sleepy = [target_from_va(0.0, -a, bank) for a in (0.25, 0.5, 1.0)]
    assert [round(c.au.get("AU43", 0.0), 4) for c in sleepy] == pytest.approx([0.25 * 0.35, 0.5 * 0.35, 0.35], abs=0.02)
    assert all(c.category == "neutral" and max(v for k, v in c.au.items() if k != "AU43") < 0.01 for c in sleepy)
    relaxed = target_from_va(math.cos(math.radians(330)), math.sin(math.radians(330)), bank)
    assert relaxed.category == "happiness" and 0.3 < relaxed.au["AU12"] < 0.4 and relaxed.au["AU43"] < 0.25


def test_coverage_counts_exemplars_per_cell(bank):
    coverage = bank.coverage(2)
    assert coverage.sum() == len(bank)
    # the origin's neutral exemplar lies in the upper-right cell; valence bin 1 (>= 0), arousal bin 0
    # (< 0) holds no emotion prototype, only the "relaxed" state's ramp (and "sleepy", on its edge)
    assert coverage[0, 1] > 0 and coverage[1, 1] > 0 and coverage[0, 0] > 0 and coverage[1, 0] >= len(RAMP_RADII)
    pleasant_calm = ((bank.va[:, 0] > 1e-6) & (bank.va[:, 1] < 0)).nonzero()[:, 0].tolist()
    assert len(pleasant_calm) == len(RAMP_RADII) and {bank.labels[i] for i in pleasant_calm} == {"happiness"}


def test_save_load_round_trip(bank, tmp_path):
    path = tmp_path / "banks" / "va.npz"
    bank.save(path)
    loaded = VABank.load(path)
    assert torch.equal(loaded.va, bank.va) and torch.equal(loaded.au, bank.au)
    assert loaded.labels == bank.labels and loaded.meta == bank.meta
    va = torch.tensor([[0.3, -0.4], [-0.7, 0.2]])
    assert all(torch.equal(a, b) for a, b in zip(loaded.query(va), bank.query(va)))


def test_load_matches_au_columns_by_name(bank, tmp_path):
    path = tmp_path / "old.npz"
    keep = [column("AU12_L"), column("AU12_R")]
    np.savez(path, format_version=np.array(1), va=bank.va.numpy(), au=bank.au[:, keep].numpy(),
             au_keys=np.array([AU_KEYS[i] for i in keep]), labels=np.array(bank.labels), meta_json=np.array("{}"))
    loaded = VABank.load(path)
    assert torch.equal(loaded.au[:, keep], bank.au[:, keep])
    assert torch.count_nonzero(loaded.au) == torch.count_nonzero(bank.au[:, keep])


def test_load_refuses_bad_files_with_one_line(bank, tmp_path):
    not_npz = tmp_path / "bank.npz"
    not_npz.write_text("hello")
    newer = tmp_path / "newer.npz"
    np.savez(newer, format_version=np.array(99))
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, format_version=np.array(1), va=bank.va.numpy(), au=bank.au[:, :1].numpy(),
             au_keys=np.array(["AU99_L"]), labels=np.array(bank.labels), meta_json=np.array("{}"))
    for path, words in ((tmp_path / "missing.npz", "no such"), (not_npz, "not a VA bank"),
                        (newer, "format version 99"), (unknown, "AU99_L")):
        with pytest.raises(InputError, match=words) as info:
            VABank.load(path)
        assert "\n" not in str(info.value)


def test_bank_validates_its_arrays():
    with pytest.raises(InputError):
        VABank(torch.zeros(2, 2), torch.zeros(2, 3), ("neutral", "neutral"))
    with pytest.raises(InputError):
        VABank(torch.full((1, 2), 1.5), torch.zeros(1, len(AU_KEYS)), ("neutral",))
    with pytest.raises(InputError):
        VABank(torch.zeros(1, 2), torch.full((1, len(AU_KEYS)), 2.0), ("neutral",))


def test_va_target_maps_to_the_default_model(bank, default_model):
    code = target_from_va(*at("anger", 1.0), bank)
    coeffs, report = code.to_model_coeffs(default_model)
    names = {default_model.exp_names[i] for i in coeffs.nonzero()[:, 0].tolist()}
    assert {"AU4", "AU5", "AU7_L", "AU7_R", "AU23"} <= names and report.missing == ()  # the prototype 4+5B+7+23
    # a seed that draws anger's 4+5B+7+10+22+23+25 variant: the default model has no AU22
    for seed in range(50):
        code = target_from_va(*at("anger", 1.0), bank, generator=torch.Generator().manual_seed(seed))
        if "AU22" in code.au:
            break
    assert code.to_model_coeffs(default_model)[1].missing == ("AU22",)


def test_an_emotions_intensities_show_one_variant_per_query(bank):
    """The ramp exemplars of an emotion are kernel exemplars of their own; a seeded query draws
    one variant per label, so it does not average the emotion's variants into a weaker face."""
    va = torch.tensor([at("disgust", 1.0), at("anger", 0.9), at("fear", 0.8)])
    for seed in range(10):
        _, _, neighbours = bank.query(va, generator=torch.Generator().manual_seed(seed))
        for row in neighbours.tolist():
            shown = {}
            for i in row:
                kernel = int(bank.alternative_of[i])
                shown.setdefault(bank.labels[i], set()).add(bank._sets[kernel].index(i))
            assert all(len(variants) == 1 for variants in shown.values()), (seed, shown)
    # and the draw still varies between seeds
    drawn = {tuple(bank.query(va, generator=torch.Generator().manual_seed(s))[2][0].tolist()) for s in range(10)}
    assert len(drawn) > 1
