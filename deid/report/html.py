"""Tiny HTML building blocks for a single self-contained page.

No template engine and no JavaScript: the report is static HTML with inline CSS and
images as ``data:`` URIs, so it opens offline from a file, e-mail attachment or CI
artifact. A Content-Security-Policy meta tag forbids every network fetch (images only
from ``data:``, no scripts), so even a value that looked like a URL inside a config
could not make the browser request anything. Every text value goes through
:func:`esc`.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

# (frame-ancestors is not allowed in a <meta> CSP; Chromium logs a console error for it)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
:root{--fg:#1d232a;--muted:#5b6570;--line:#d8dde3;--bg:#ffffff;--soft:#f5f7f9;--ok:#1b7f4b;--bad:#b3261e;--warn:#8a5a00}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#12263a;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d6e2;font-size:13px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:6px 28px;z-index:2;font-size:13px}
nav a{color:#12263a;margin-right:14px;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:8px 28px 40px}
h2{font-size:18px;margin:28px 0 8px;padding-top:8px;border-top:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:150px;background:var(--soft)}
.card b{display:block;font-size:20px}
.card span{color:var(--muted);font-size:12px}
.verdict{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.verdict.ok{background:#e6f4ec;color:var(--ok)}.verdict.bad{background:#fbe9e7;color:var(--bad)}.verdict.warn{background:#fff4d6;color:var(--warn)}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 9px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sanity td{color:var(--muted);font-style:italic}
td.bad{color:var(--bad);font-weight:600}td.ok{color:var(--ok)}
.scroll{overflow-x:auto;max-width:100%}
.note{color:var(--muted);font-size:12.5px;margin:4px 0 10px}
.missing{border-left:4px solid #e0a100;background:#fffaf0;padding:8px 12px;margin:10px 0}
.missing li{margin:2px 0}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0}
.strip td{padding:4px;text-align:center;font-size:12px;color:var(--muted)}
.strip img{display:block;margin:0 auto;border:1px solid var(--line)}
.legend span{display:inline-block;width:22px;height:4px;margin:0 5px 2px 10px;vertical-align:middle}
pre{background:var(--soft);padding:10px;border:1px solid var(--line);overflow:auto;max-height:420px;font-size:12px}
details summary{cursor:pointer;color:#12263a}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:30px;padding-top:10px}
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        return isinstance(v, (float, np.floating)) and math.isnan(v)
    except TypeError:
        return False


def fmt(v: Any, kind: str = "g") -> str:
    """``f3`` three decimals, ``f2``, ``int``, ``pct`` (already in %), ``g`` general."""
    if is_missing(v):
        return "–"
    if isinstance(v, (float, np.floating)) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    try:
        if kind == "int":
            return f"{int(round(float(v))):,}"
        if kind == "pct":
            return f"{float(v):.1f}%"
        if kind.startswith("f"):
            return f"{float(v):.{int(kind[1:])}f}"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.4g}"
    except (TypeError, ValueError):
        pass
    return str(v)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def img(data: bytes, alt: str, cls: str = "plot", mime: str = "image/png", width: int | None = None,
        height: int | None = None) -> str:
    size = (f' width="{int(width)}"' if width else "") + (f' height="{int(height)}"' if height else "")
    return f'<img class="{esc(cls)}" alt="{esc(alt)}" src="{data_uri(data, mime)}"{size}>'


Column = tuple[str, str, str, str]  # (key, header, format, tooltip)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], row_class: Callable[[dict], str] | None = None,
          cell_class: Callable[[str, Any, dict], str] | None = None, cls: str = "") -> str:
    head = "".join(
        f'<th class="{"num" if f != "s" else ""}" title="{esc(t)}">{esc(h)}</th>' for _, h, f, t in columns
    )
    thead = f"<thead><tr>{head}</tr></thead>" if any(h for _, h, _, _ in columns) else ""
    body = []
    for r in rows:
        rc = row_class(r) if row_class else ""
        tds = []
        for key, _, f, _ in columns:
            v = r.get(key)
            c = ["num"] if f != "s" else []
            if cell_class:
                extra = cell_class(key, v, r)
                if extra:
                    c.append(extra)
            text = esc(v) if f == "s" else esc(fmt(v, f))
            tds.append(f'<td class="{" ".join(c)}">{text}</td>')
        body.append(f'<tr class="{esc(rc)}">' + "".join(tds) + "</tr>")
    return f'<div class="scroll"><table class="{esc(cls)}">{thead}<tbody>{"".join(body)}</tbody></table></div>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def missing_box(items: Sequence[str], title: str = "Not in this report") -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f'<div class="missing"><b>{esc(title)}</b><ul>{lis}</ul></div>'


def cards(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in items) + "</div>"


#: the report's generator tag (``deid verify`` recognises a renamed report by it)
GENERATOR = "deid report"


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str, footer: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f'<meta name="generator" content="{GENERATOR}">'  # how deid verify knows it under another name
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{links}</nav><main>{body}<footer>{footer}</footer></main></body></html>\n"
    )
