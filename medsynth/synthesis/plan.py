"""What to generate: how many studies of which class, in a fixed order, so study k is the same on every run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from medsynth.conditioning import ConditionSpec
from medsynth.errors import MedsynthError


@dataclass(frozen=True)
class StudyPlan:
    index: int            # global study index k (names the study, seeds its randomness)
    class_name: str | None
    conditions: dict = field(default_factory=dict)   # extra conditions, raw values ({column: value})


def parse_fixed(specs: list[str], spec: ConditionSpec, extrapolate: bool) -> dict:
    """'sex=F' / 'age=72' specs -> {column: value}, each checked against the run's vocabulary and ranges."""
    known = {c.name: c for c in spec.extras}
    fixed = {}
    for item in specs:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise MedsynthError(f"--condition {item!r} must look like NAME=VALUE, e.g. --condition sex=F.")
        if name not in known:
            raise MedsynthError(f"--condition {name!r} is not a condition of this run (it knows: "
                                f"{', '.join(known) or 'none beyond the class'}; the class is chosen with --class).")
        known[name].encode(value, "--condition ", extrapolate)   # refuses an unknown value or a range it never saw
        fixed[name] = value
    return fixed


def parse_prompt(prompt: str, spec: ConditionSpec, extrapolate: bool) -> tuple[str | None, dict, dict]:
    """A structured prompt, comma-separated terms matched against the run's own vocabulary: a class or category value
    ("lesion", "F"; case-insensitive), NAME=VALUE, or a covariate with a value or range ("age 72", "age 70-80").
    Returns (class or None, fixed values, covariate ranges {name: (lo, hi)}); an unknown term is refused naming what
    the run knows."""
    by_value = {v.lower(): ("class", v) for v in spec.class_names}
    by_value.update({v.lower(): (c.name, v) for c in spec.extras if not c.continuous for v in c.values})
    covariates = {c.name.lower(): c for c in spec.extras if c.continuous}
    cls, fixed, ranges = None, {}, {}
    for term in (t.strip() for t in prompt.split(",") if t.strip()):
        words = term.replace("=", " ").split()
        if term.lower() in by_value:
            name, value = by_value[term.lower()]
            cls, fixed = (value, fixed) if name == "class" else (cls, {**fixed, name: value})
        elif len(words) == 2 and words[0].lower() in covariates:
            column = covariates[words[0].lower()]
            lo, _, hi = words[1].partition("-")
            for bound in (lo, hi or lo):
                column.encode(bound, "--prompt ", extrapolate)
            ranges[column.name] = (float(lo), float(hi or lo))
        elif "=" in term:
            fixed.update(parse_fixed([term], spec, extrapolate))
        else:
            known = [*spec.class_names, *(v for c in spec.extras for v in c.values), *(f"{c} N or N-M" for c in covariates)]
            raise MedsynthError(f"--prompt term {term!r} matches nothing this run knows ({', '.join(known)}).")
    return cls, fixed, ranges


def read_condition_table(path: str, spec: ConditionSpec, extrapolate: bool) -> list[dict]:
    """--conditions FILE.csv: one row per study, any subset of the run's columns ("class" for the class); a blank
    cell is drawn like a column left out. Unknown columns, values and ranges are refused naming the line."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise MedsynthError(f"--conditions {path} cannot be read as a CSV table ({err}).") from None
    known = {"class", *(c.name for c in spec.extras)}
    unknown = [c for c in table.columns if c not in known]
    if unknown or table.empty:
        raise MedsynthError(f"--conditions {path} " + (f"has column {unknown[0]!r}, which is not a condition of this "
                            f"run ({', '.join(sorted(known))})." if unknown else "holds no rows."))
    rows = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        row = {k: v for k, v in row.items() if str(v).strip()}
        if row.get("class") is not None and row["class"] not in spec.class_names:
            raise MedsynthError(f"--conditions {path} line {line}: class {row['class']!r} is not one the run knows "
                                f"({', '.join(spec.class_names)}).")
        parse_fixed([f"{k}={v}" for k, v in row.items() if k != "class"], spec, extrapolate)
        rows.append(row)
    return rows


def with_conditions(plans: list[StudyPlan], spec: ConditionSpec, rows: list[dict], fixed: dict, seed: int,
                    ranges: dict | None = None, per_study: list[dict] | None = None) -> list[StudyPlan]:
    """Each study's extra conditions: its own (`per_study`, a --conditions row) or the fixed ones, a covariate with a
    range drawn uniformly in it, the rest taken together from one training study drawn (seeded by the study index)
    among those of the study's class that agree with the given categorical values, so the set keeps the real set's
    correlations (from any training study when none agrees)."""
    if not spec.extras:
        return plans
    categorical = {c.name for c in spec.extras if not c.continuous}
    out = []
    for p in plans:
        given = {**fixed, **(per_study[p.index] if per_study else {})}
        given.pop("class", None)
        rng = np.random.default_rng([seed, p.index, 11])
        pool = [r for r in rows if p.class_name in (None, r.get("class"))
                and all(str(r.get(k)) == str(v) for k, v in given.items() if k in categorical)] or rows
        drawn = pool[int(rng.integers(len(pool)))] if pool else {}
        drawn = {**drawn, **{k: round(float(rng.uniform(lo, hi)), 1) for k, (lo, hi) in (ranges or {}).items()}}
        out.append(replace(p, conditions={c.name: given.get(c.name, drawn.get(c.name)) for c in spec.extras}))
    return out


def parse_class_counts(specs: list[str], known: list[str]) -> dict[str, int]:
    """'lesion=200' specs -> {'lesion': 200}, checked against the classes the model was trained on."""
    counts: dict[str, int] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not sep:
            raise MedsynthError(f"--class {spec!r} must look like NAME=COUNT, e.g. --class lesion=200.")
        if not known:
            raise MedsynthError("--class was given but this model is not class-conditioned; use --n instead.")
        if name not in known:
            raise MedsynthError(f"class {name!r} was never seen in training; the model knows: {', '.join(known)}.")
        if not raw.isdigit() or int(raw) < 1:
            raise MedsynthError(f"--class {spec!r}: the count must be a positive integer.")
        counts[name] = counts.get(name, 0) + int(raw)
    return counts


def proportional_counts(n: int, names: list[str], training_counts: list[int]) -> dict[str, int]:
    """n split across classes as in training (largest remainder), every count a whole number; equal shares when the
    run keeps no class counts (a private run)."""
    weights = np.asarray(training_counts or [1] * len(names), float)
    share = weights / max(1.0, weights.sum()) * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return {name: int(c) for name, c in zip(names, counts) if c > 0}


def plan_studies(n: int | None, class_specs: list[str], class_names: list[str], class_counts: list[int]) -> list[StudyPlan]:
    """The ordered list of studies: classes in the order given (or the model's order), indices 0..N-1."""
    if n is not None and n < 1:
        raise MedsynthError(f"--n must be a positive integer, got {n}.")
    if class_specs:
        counts = parse_class_counts(class_specs, class_names)
        if n is not None and n != sum(counts.values()):
            raise MedsynthError(f"--n {n} disagrees with the --class counts, which add up to {sum(counts.values())}.")
    elif class_names:
        counts = proportional_counts(n or 16, class_names, class_counts)
    else:
        return [StudyPlan(k, None) for k in range(n or 16)]
    order = [name for name, count in counts.items() for _ in range(count)]
    return [StudyPlan(k, name) for k, name in enumerate(order)]


def parse_shard(spec: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> (0, 1)."""
    if not spec:
        return 0, 1
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise MedsynthError(f"--shard {spec!r} must look like i/n, e.g. 0/4.") from None
    if n < 1 or not 0 <= i < n:
        raise MedsynthError(f"--shard {spec!r}: need 0 <= i < n.")
    return i, n


def shard_of(plans: list[StudyPlan], shard: int, shards: int) -> list[StudyPlan]:
    """Contiguous block `shard` of `shards`: together the blocks cover every index once."""
    bounds = np.linspace(0, len(plans), shards + 1).round().astype(int)
    return plans[bounds[shard] : bounds[shard + 1]]


def parse_guidance_per(specs: list[str], spec: ConditionSpec, class_column: str | None) -> dict:
    """'sex=2' specs -> {extra column index or "class": scale}, naming the run's conditions when one is unknown."""
    names = {c.name: j for j, c in enumerate(spec.extras)}
    if class_column and spec.class_names:
        names[class_column] = "class"
    per = {}
    for item in specs:
        name, sep, raw = item.partition("=")
        try:
            scale = float(raw)
        except ValueError:
            scale = -1.0
        if not sep or name not in names or scale < 0:
            raise MedsynthError(f"--guidance-per {item!r} must be NAME=SCALE with a scale of 0 or more and NAME one of "
                                f"this run's conditions ({', '.join(names) or 'none'}).")
        per[names[name]] = scale
    return per
