"""A 2D picture keeps its orientation: row 0 stays at the top through ingest, medsynth's pictures and the NIfTI
written for it (a chest X-ray shows its lungs side by side, not one above the other)."""

from __future__ import annotations

import matplotlib.image
import nibabel as nib
import numpy as np

from medsynth.data.preprocess import PreprocessSpec, preprocess
from medsynth.data.readers import load_study, scan
from medsynth.data.writers import write_study_nifti
from medsynth.viz import save_grid


def test_row_zero_stays_at_the_top_and_column_zero_at_the_left(tmp_path):
    picture = np.full((16, 12), 255, np.uint8)
    picture[:4, :] = 0              # a black band across the top
    picture[4:, :3] = 128           # and a grey one down the left side, below it
    np.savez(tmp_path / "p.npz", train_images=picture[None], train_labels=np.array([[0]]))
    study = load_study(scan(tmp_path / "p.npz").refs[0])
    model = preprocess(study, PreprocessSpec(percentiles=(0.0, 100.0))).image[0].numpy()   # RAS: (x, y)
    seen = np.flipud(model.T)       # what imshow(array.T, origin="lower") shows, top row first (medsynth's pictures)
    assert np.array_equal(seen < -0.9, picture == 0) and np.array_equal(np.abs(seen) < 0.1, picture == 128)
    save_grid(tmp_path / "grid.png", model[None, None], [""], columns=1)
    shown = matplotlib.image.imread(tmp_path / "grid.png")[..., :3].mean(-1)
    black_rows, black_cols = np.nonzero(shown < 0.05)
    grey_rows, grey_cols = np.nonzero((shown > 0.4) & (shown < 0.6))
    assert black_rows.max() < grey_rows.mean() and grey_cols.max() < black_cols.mean()   # band on top, stripe left
    write_study_nifti(study, tmp_path / "p.nii.gz")
    image = nib.load(tmp_path / "p.nii.gz")
    top, bottom = (image.affine @ [r, 0, 0, 1] for r in (0, 15))
    assert top[1] > bottom[1]                            # row 0 lies anterior (up) of row 15 in world space
    assert (image.affine @ [0, 11, 0, 1])[0] > top[0]    # columns run towards +x (to the viewer's right)
