"""The export gate: an audit (or evaluation) report vouches only for the exact files it judged.

Each report lists the sha256 of every file of the synthetic set it read (`judged_files`: samples.csv, generate.json,
every image, label map and study record). Export recomputes them and refuses, in one sentence, a report of another
set, a report of this set whose files changed since, and a report that lists no files.
"""

from __future__ import annotations

import json
from pathlib import Path

from medsynth.errors import MedsynthError
from medsynth.runs.synthset import SyntheticSet

REMAKE = {"audit": "medsynth audit RUN SYNTH --out REPORT", "evaluation": "medsynth evaluate RUN SYNTH --out DIR"}


def read_report(report: str | Path | None, what: str) -> dict | None:
    """report.json of an audit or evaluation folder (or the file itself); None when no report was given."""
    if report is None:
        return None
    path = Path(report) / "report.json" if Path(report).is_dir() else Path(report)
    if not path.is_file():
        raise MedsynthError(f"--{what} {report} holds no report.json; run `{REMAKE[what]}` first.")
    try:
        payload = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise MedsynthError(f"--{what} {path} is not a readable report (not JSON); pass the folder `{REMAKE[what]}` "
                            "wrote.") from None
    if not isinstance(payload, dict):
        raise MedsynthError(f"--{what} {path} is not a medsynth {what} report.")
    return payload


def check_bound(report: dict, sset: SyntheticSet, source: str | Path, what: str,
                current: dict[str, str] | None = None) -> None:
    """Refuse a report that did not judge exactly the files `sset` holds now (`current`: their hashes, if known)."""
    judged = report.get("judged_files")
    if not isinstance(judged, dict) or not judged:
        raise MedsynthError(f"--{what} {source} does not list the files it judged (an older medsynth or another tool "
                            f"wrote it), so it cannot vouch for this set; run `{REMAKE[what]}` again and pass the new "
                            "report.")
    current = current or sset.file_hashes()
    table = next(iter(current))                        # samples.csv: which studies the set holds
    if set(judged) != set(current) or judged.get(table) != current[table]:
        raise MedsynthError(f"--{what} {source} judged another synthetic set ({len(judged)} files) than {sset.folder} "
                            f"({len(current)} files, {table} differs); run `{REMAKE[what]}` on this set and pass that "
                            "report.")
    changed = sorted(name for name, digest in current.items() if judged[name] != digest)
    if changed:
        more = f" and {len(changed) - 1} more file(s)" if len(changed) > 1 else ""
        raise MedsynthError(f"{changed[0]}{more} in {sset.folder} changed after the {what} (sha256 differs from the "
                            f"report's); run `{REMAKE[what]}` again before exporting the set.")
