"""Cells a spreadsheet would run as a formula (OWASP's CSV injection), and how they are made inert."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# A cell that begins with one of these is read as a formula: =, +, -, @, tab, carriage return.
FORMULA_START = "^[=+\\-@\t\r]"


def neutralised(col: Column) -> Column:
    """Text that begins like a formula gets a leading `'` (shown, not run, by spreadsheets)."""
    text = col.cast("string")
    return F.when(text.rlike(FORMULA_START), F.concat(F.lit("'"), text)).otherwise(text)
