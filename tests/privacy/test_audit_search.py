"""Copy search: every kind of planted copy is found and outranks every fresh (non-copied) study."""

import itertools

import numpy as np
import pytest
from scipy import ndimage

from medsynth.data.phantom import PhantomSpec, make_phantom
from medsynth.privacy.descriptors import descriptors, shift_linear, spectrum, top_k
from medsynth.privacy.plant import plant_copy
from medsynth.privacy.search import align, best_alignment, nearest, ranked, texture_score

RUNGS = ("exact", "flip", "shift2", "rotation5", "noise", "intensity", "elastic1.5", "blur1_noise2.5")


def _unit(study):
    return np.clip(study.image[0] / 1000.0, -1, 1)  # HU window -1000..1000 -> [-1, 1]


@pytest.fixture(scope="module")
def gallery():
    return [_unit(make_phantom(PhantomSpec(size=32, seed=0), k, k % 5 == 0)) for k in range(40)]


@pytest.fixture(scope="module")
def fresh():
    return [_unit(make_phantom(PhantomSpec(size=32, seed=1), k, k % 5 == 0)) for k in range(20)]


def test_every_kind_of_planted_copy_is_found_and_outranks_fresh_studies(gallery, fresh):
    rng = np.random.default_rng(0)
    sources = rng.choice(len(gallery), 5 * len(RUNGS))
    copies = [plant_copy(gallery[s], RUNGS[n // 5], rng)[0] for n, s in enumerate(sources)]
    found = nearest(copies, gallery)
    null = max(m.score for m in nearest(fresh, gallery))
    for n, (match, source) in enumerate(zip(found, sources)):
        kind = RUNGS[n // 5]
        assert match.index == source, kind
        assert match.score > null, (kind, match.score, null)  # every copy scores above every fresh study


def test_a_large_gallery_searched_in_two_tiers_still_finds_every_kind_of_copy(gallery):
    # Galleries of thousands are searched on previews first (an eighth of each descriptor) and only the previews'
    # candidates are scored in full: each copy must still be matched to its source, with the same score and
    # transform as the one-tier search gives.
    rng = np.random.default_rng(4)
    sources = rng.choice(len(gallery), 2 * len(RUNGS))
    copies = [plant_copy(gallery[s], RUNGS[n // 2], rng)[0] for n, s in enumerate(sources)]
    two_tier = descriptors(gallery, previews=True)
    assert two_tier.previews[0].shape == (len(gallery), 16**3)
    one = ranked(copies, gallery, k=3, keep=1, gallery_descriptors=descriptors(gallery, previews=False))
    two = ranked(copies, gallery, k=3, keep=1, gallery_descriptors=two_tier)
    assert [m[0].index for m in two] == list(sources)
    assert [m[0] for m in two] == [m[0] for m in one]


def test_flipped_and_shifted_copies_are_matched_exactly_with_their_transform(gallery):
    flipped = np.flip(gallery[3], 0).copy()
    match = nearest([flipped], gallery)[0]
    assert match.index == 3 and match.score > 0.9999 and 0 in match.flip_axes
    shifted, _ = plant_copy(gallery[7], "shift2", np.random.default_rng(4))
    score, axes, shift = best_alignment(shifted, gallery[7])
    assert score > 0.999 and axes == () and any(shift)


def test_copies_shifted_three_voxels_along_every_axis_are_found_with_their_shift(gallery):
    # Moved 5 voxels in all, a copy shares little with its source voxel by voxel; the shift-searched tiny descriptor
    # still ranks the source first, and the exact stage recovers the shift.
    rng = np.random.default_rng(5)
    for i in (2, 11, 23):
        shifted, params = plant_copy(gallery[i], "shift3", rng)
        match = ranked([shifted], gallery, k=10, max_shift=3, keep=1)[0][0]
        assert match.index == i and match.score > 0.99 and list(match.shift) == params["shift"]


def test_texture_survives_a_warp_and_does_not_match_across_patients(gallery, fresh):
    # Unrelated phantoms share every tissue border but not their noise: on flat regions their textures do not
    # correlate, while a warped or rotated copy keeps its source's texture block by block.
    rng = np.random.default_rng(3)
    unrelated = [texture_score(align(f, m), gallery[m.index]) for f, m in zip(fresh[:6], nearest(fresh[:6], gallery))]
    warped = [texture_score(plant_copy(gallery[i], kind, rng, -1.0)[0], gallery[i])
              for i, kind in zip(range(6), ["elastic1.5", "rotation5"] * 3)]
    assert max(unrelated) < 0.3 < 0.5 < min(warped), (unrelated, warped)


def test_large_volumes_are_searched_on_a_coarse_grid_and_aligned_at_full_resolution():
    # 48^3 is above the 32^3 descriptor grid: descriptors are 24^3 block means, the flip is found there, and the
    # exact shift (in full-resolution voxels) on the full volumes; the answer must match an exhaustive alignment.
    large = [_unit(make_phantom(PhantomSpec(size=48, seed=5), k, k % 3 == 0)) for k in range(12)]
    index = descriptors(large)
    assert index.shape == (24, 24, 24) and index.search[0].shape == (12, 24**3)
    copy = np.roll(np.flip(large[8], 2), (2, -1, 1), axis=(0, 1, 2))
    others = [_unit(make_phantom(PhantomSpec(size=48, seed=6), k, False)) for k in range(3)]
    found = ranked([copy] + others, large, k=5, keep=2, gallery_descriptors=index, chunk=2)
    assert found[0][0].index == 8 and found[0][0].flip_axes == (2,) and found[0][0].score > 0.99
    assert found[0][0].score == pytest.approx(best_alignment(copy, large[8])[0])
    assert all(len(f) == 2 and f[0].score >= f[1].score for f in found)


def test_two_d_studies_are_searched_too():
    slices = [_unit(make_phantom(PhantomSpec(dims=2, size=48, seed=2), k, False)) for k in range(12)]
    copy = np.roll(np.flip(slices[5], 1), 1, axis=0)
    assert nearest([copy], slices)[0].index == 5


def _overlap_ncc(query, source, shift):
    """NCC of the overlap when `query` is moved by `shift` onto `source` (each side's mean removed on the overlap)."""
    q = tuple(slice(max(0, s), n + min(0, s)) for s, n in zip(shift, query.shape))
    g = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, source.shape))
    a, b = query[q] - query[q].mean(), source[g] - source[g].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("shape", [(12, 14, 11), (20, 17)])
def test_the_alignment_score_is_the_best_overlap_ncc_over_every_flip_and_shift(shape):
    rng = np.random.default_rng(7)
    source = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    query = np.roll(np.flip(source, 0), (1,) + (-2,) * (len(shape) - 1), axis=tuple(range(len(shape))))
    query = query + 0.3 * rng.normal(size=shape)
    brute = max((_overlap_ncc(np.flip(query, axes) if axes else query, source, shift), axes, shift)
                for axes in [a for r in range(len(shape) + 1) for a in itertools.combinations(range(len(shape)), r)]
                for shift in itertools.product(range(-3, 4), repeat=len(shape)))
    score, axes, shift = best_alignment(query, source, max_shift=3)
    assert score == pytest.approx(brute[0], abs=1e-6) and (axes, shift) == brute[1:]


@pytest.mark.parametrize("shift", [(1.3, -2.7, 0.4), (0.0, 5.5, -0.25), (-0.6, 0.0)])
def test_the_pose_descriptors_shift_is_linear_interpolation_with_a_constant_outside(shift):
    volume = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(9, 12, 10)[: len(shift)]), 1.0)
    expected = ndimage.shift(volume, shift, order=1, mode="grid-constant", cval=-4.0)
    np.testing.assert_allclose(shift_linear(volume, np.array(shift), -4.0), expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(16, 20, 15), (12, 9)])
def test_the_spectrum_descriptor_ignores_flips_and_circular_shifts_and_tells_studies_apart(shape):
    rng = np.random.default_rng(5)
    volume, other = (ndimage.gaussian_filter(rng.normal(size=shape), 1.0).astype(np.float32) for _ in range(2))
    moved = np.roll(np.flip(volume, 0), (3, -2), axis=(0, 1))
    assert spectrum(volume).shape == tuple(n // 2 + 1 for n in shape)
    np.testing.assert_allclose(spectrum(moved), spectrum(volume), atol=1e-3)
    assert np.abs(spectrum(other) - spectrum(volume)).max() > 0.1


def test_top_k_is_chunked_without_changing_the_answer():
    rng = np.random.default_rng(1)
    queries, gallery = rng.normal(size=(37, 50)).astype(np.float32), rng.normal(size=(90, 50)).astype(np.float32)
    exact = np.argsort(-(queries @ gallery.T), axis=1)[:, :7]
    np.testing.assert_array_equal(top_k(queries, gallery, 7, chunk=8), exact)


def test_studies_on_different_grids_are_refused(gallery):
    with pytest.raises(ValueError, match="one grid"):
        nearest([np.zeros((16, 16, 16))], gallery)
