"""User-facing errors: one clear sentence saying what is wrong and how to fix it."""


class MedsynthError(Exception):
    """An error caused by the user's input; the CLI prints its message and exits non-zero, without a traceback."""


class DataError(MedsynthError):
    """Input data that cannot be read or that contradicts itself (files, labels, dataset.json, DICOM series)."""


class OutputExistsError(MedsynthError):
    """An output path that already holds something, when overwriting was not asked for."""
