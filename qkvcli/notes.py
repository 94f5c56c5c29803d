"""Notes for the user: what qkv guessed, collected while a command runs.

The core calls `note`; the CLI prints each note as one ``qkv: note: …`` line
on stderr at the end, and only when the command succeeds: a run that fails
prints its one error line and nothing else.

>>> _ = take()
>>> note("X.csv: line 1 is a header"); note("X.csv: line 1 is a header")
>>> take()
['X.csv: line 1 is a header']
"""

from __future__ import annotations

_pending: list[str] = []


def note(text: str) -> None:
    """Keep ``text`` for the end of the run (once, however often it is noted)."""
    if text not in _pending:
        _pending.append(text)


def take() -> list[str]:
    """The notes so far, in order; the list is emptied."""
    out = list(_pending)
    _pending.clear()
    return out
