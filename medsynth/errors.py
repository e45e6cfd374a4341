"""User-facing errors: one clear sentence saying what is wrong and how to fix it."""


class MedsynthError(Exception):
    """An error caused by the user's input; the CLI prints its message and exits non-zero, without a traceback."""


class DataError(MedsynthError):
    """Input data that cannot be read or that contradicts itself (files, labels, dataset.json, DICOM series)."""


class OutputExistsError(MedsynthError):
    """An output path that already holds something, when overwriting was not asked for."""


class Interrupted(MedsynthError):
    """A long command stopped by Ctrl-C or SIGTERM after keeping what it had finished; the message says how to go on."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's text (its type name when it has none), cut to `limit` characters: enough to
    say what a library complained about inside one sentence of ours."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line[:limit] if limit else line
