"""DICOM series: geometry matches SimpleITK, slices order by position, rescale applies, broken series are refused."""

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from conftest import oblique_affine, write_dicom_series
from medsynth.data.geometry import LPS_TO_RAS
from medsynth.data.readers import load_study, scan
from medsynth.errors import DataError

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the independent reader these tests compare against")


def _sitk_geometry(folder):
    """SimpleITK's reading of a series: (array[i, j, k], LPS affine)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine


def assert_matches_simpleitk(study, folder):
    array, affine_lps = _sitk_geometry(folder)
    np.testing.assert_allclose(LPS_TO_RAS @ study.affine, affine_lps, atol=1e-4)
    np.testing.assert_allclose(study.image[0], array, atol=1e-3)


def test_oblique_series_matches_simpleitk(tmp_path, ct_volume):
    write_dicom_series(tmp_path / "series", ct_volume, oblique_affine())
    study = load_study(scan(tmp_path / "series").refs[0])
    assert study.modality == "CT" and study.image.shape == (1, *ct_volume.shape)
    np.testing.assert_allclose(study.image[0], ct_volume)  # rescale intercept applied: values back in HU
    assert_matches_simpleitk(study, tmp_path / "series")


def test_slice_order_comes_from_positions_not_file_names(tmp_path, ct_volume):
    paths = write_dicom_series(tmp_path / "s", ct_volume, oblique_affine())
    for n, path in enumerate(paths):  # scramble names and instance numbers
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = (n * 7) % len(paths) + 1
        path.unlink()
        ds.save_as(tmp_path / "s" / f"{(n * 5) % len(paths)}_x.dcm", enforce_file_format=True)
    study = load_study(scan(tmp_path / "s").refs[0])
    np.testing.assert_allclose(study.image[0], ct_volume)


def test_folder_of_two_series_gives_two_studies(tmp_path, ct_volume):
    write_dicom_series(tmp_path / "a", ct_volume, np.eye(4), patient_id="P1")
    write_dicom_series(tmp_path / "b", ct_volume[:, :, :4], oblique_affine(), modality="MR", intercept=0, patient_id="P2")
    found = scan(tmp_path)
    assert [(r.study_id, r.modality, r.subject_id) for r in found.refs] == [("a", "CT", "P1"), ("b", "MR", "P2")]
    assert load_study(found.refs[1]).image.shape == (1, 12, 10, 4)


def test_missing_slice_is_refused(tmp_path, ct_volume):
    paths = write_dicom_series(tmp_path / "s", ct_volume, np.eye(4))
    paths[3].unlink()
    with pytest.raises(DataError, match="missing slices"):
        scan(tmp_path / "s")


def test_mixed_series_is_refused(tmp_path, ct_volume):
    uid = pydicom.uid.generate_uid()
    write_dicom_series(tmp_path / "s" / "one", ct_volume, np.eye(4), series_uid=uid)
    write_dicom_series(tmp_path / "s" / "two", ct_volume, oblique_affine(), series_uid=uid)
    with pytest.raises(DataError, match="mixes slices"):
        scan(tmp_path / "s")


def test_corrupt_dicom_pixel_data_is_refused(tmp_path, ct_volume):
    paths = write_dicom_series(tmp_path / "s", ct_volume, np.eye(4))
    paths[2].write_bytes(paths[2].read_bytes()[:-100])
    with pytest.raises(DataError, match="cannot decode"):
        load_study(scan(tmp_path / "s").refs[0])


def test_pydicom_shipped_ct_reads_in_hounsfield_units():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    study = load_study(scan(path).refs[0])
    assert study.modality == "CT" and study.image.shape == (1, 128, 128, 1)
    expected = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(study.image[0, :, :, 0], expected)
    np.testing.assert_allclose(LPS_TO_RAS @ study.affine[:, 3], [*map(float, ds.ImagePositionPatient), 1.0])


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_transfer_syntaxes_decode_like_the_uncompressed_file(tmp_path, name):
    reference = load_study(scan(get_testdata_file("MR_small.dcm")).refs[0])
    compressed = load_study(scan(get_testdata_file(name)).refs[0])
    np.testing.assert_array_equal(compressed.image, reference.image)
    np.testing.assert_allclose(compressed.affine, reference.affine)


def test_shared_real_dicom_series_match_simpleitk():
    from conftest import shared_data

    root = shared_data("dicom")
    found = scan(root)
    assert len(found.refs) == 2
    for ref in found.refs:
        study = load_study(ref)
        assert study.modality == "MR"
        assert_matches_simpleitk(study, root / ref.study_id)


def test_dicom_seg_becomes_the_label_map_of_its_series():
    """dcmqi's liver SEG on three real CT slices, against the same mask stored as NRRD (compared in world space)."""
    from conftest import shared_data

    root = shared_data("dcmqi_seg")
    found = scan(root)
    assert found.label_names == {0: "background", 1: "Liver"} and found.refs[0].label.endswith("liver.dcm")
    study = load_study(found.refs[0], found.label_names)
    nrrd = sitk.ReadImage(str(root / "liver_seg.nrrd"))
    expected = np.argwhere(sitk.GetArrayFromImage(nrrd).transpose(2, 1, 0) > 0)
    world_expected = np.array([nrrd.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in expected])
    ours = LPS_TO_RAS @ study.affine
    world_ours = (ours[:3, :3] @ np.argwhere(study.label > 0).T + ours[:3, 3:4]).T
    assert len(world_ours) == len(world_expected) == 107098
    order = lambda p: p[np.lexsort(np.round(p, 1).T)]  # noqa: E731
    np.testing.assert_allclose(order(world_ours), order(world_expected), atol=0.01)
