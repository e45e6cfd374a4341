"""Self-contained HTML pages (the audit and evaluation reports, the demo's index): shared style and helpers."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .verdict{font-size:1.6em;font-weight:700;color:#fff;padding:.3em .8em;border-radius:6px;display:inline-block}
.warn{background:#fff4e5;border:1px solid #f0b35b;padding:.6em 1em;border-radius:6px}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} img{max-width:100%} section{margin:2em 0}
code{background:#f3f3f3;padding:0 .2em}"""


def png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def with_interval(value: float | None, interval: list | None, digits: int = 2) -> str:
    """'1.63 (1.41 to 1.92)': a value with its 95% interval; the value alone without one, '-' without a value."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if interval and None not in interval:
        text += f" ({interval[0]:.{digits}f} to {interval[1]:.{digits}f})"
    return text
