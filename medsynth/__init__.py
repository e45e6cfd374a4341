"""medsynth: synthetic medical imaging data with conditional diffusion, a privacy audit and DICOM/NIfTI export."""

__version__ = "0.1.0"

from medsynth.errors import MedsynthError  # noqa: E402

__all__ = ["MedsynthError", "__version__"]
