"""Text from a bundle made inert for every output: a file, node, interface or rule comment may hold
terminal escape sequences (`ESC[2J` clears the screen, `ESC]0;…` retitles the window, OSC 52 writes
the clipboard), bidirectional overrides that reorder what a reader sees, or a spreadsheet formula.

Control characters (C0, DEL, C1) and Unicode direction and invisible format characters are shown
escaped, as tshark and git show them (`\\x1b`, `\\u202e`). A CSV cell that starts like a formula
(`=`, `+`, `-`, `@`, tab, carriage return) gets a leading apostrophe (OWASP's CSV injection advice),
so a spreadsheet shows it as text. Markup is left to each renderer (HTML autoescape, markdown.md,
Rich without markup).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only for CSV: the command line imports this module before any table
    import pandas as pd

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(value: object) -> str:
    """A value as text with its control and direction characters shown escaped."""
    text = value if isinstance(value, str) else str(value)
    return UNSAFE.sub(_escape, text) if UNSAFE.search(text) else text


def template_value(value: object) -> object:
    """jinja2's finalize for our pages: every value a template prints made inert, except the markup
    the renderer built itself (Markup: figures, the flow data block); autoescape does the rest."""
    from markupsafe import Markup

    return inert(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def inert_data(obj: object) -> object:
    """Every string in a structure of dicts and lists (keys too) made inert."""
    if isinstance(obj, str):
        return inert(obj)
    if isinstance(obj, dict):
        return {inert_data(k): inert_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [inert_data(v) for v in obj]
    return obj


def csv_cell(value: object) -> object:
    """A CSV cell that neither a terminal nor a spreadsheet takes for anything but text."""
    if not isinstance(value, str):
        return value
    text = inert(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The table with its text cells made safe for CSV (numbers untouched). Categorical columns are
    fixed through their categories, so a large table of few distinct values costs little."""
    import pandas as pd

    out = {}
    for name in df.columns:
        col = df[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats = col.cat.categories
            if cats.dtype == object and any(csv_cell(c) != c for c in cats if isinstance(c, str)):
                col = col.cat.rename_categories([csv_cell(c) for c in cats]) if _distinct(cats) else col.map(csv_cell)
        elif col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            text = col.astype(str)
            risky = (text.str.contains(UNSAFE.pattern, regex=True) | text.str.startswith(FORMULA_START)).to_numpy()
            if risky.any():
                col = col.astype(object).copy()
                col[risky] = col[risky].map(csv_cell)
        out[name] = col
    return pd.DataFrame(out, index=df.index) if out else df


def _distinct(cats: pd.Index) -> bool:
    """Renaming categories keeps them distinct (an escaped name could equal another one)."""
    renamed = [csv_cell(c) for c in cats]
    return len(set(renamed)) == len(renamed)
