"""The sentence splitter every stage uses (gold rationales, student samples, teacher scores).

A sentence is always an exact substring of the input (`text[start:end]`) with no leading or
trailing whitespace; sentences do not overlap and only whitespace lies between them. The
splitter only chooses *where to cut*; each piece between two cuts is then stripped, so those
rules hold by construction.

Where it cuts:

- after `?` and `!` (with any closing quotes or brackets that follow);
- after a period followed by whitespace and a letter or digit, *unless* the word before the
  period is a title or a never-final abbreviation (`Mr.`, `Dr.`, `e.g.`, `i.e.`, `vs.`), a
  numbered reference before its number (`No. 5`, `Fig. 2`), a list marker (`1.` at the start
  of a piece or after a colon), or an ellipsis (`...`, `…`). A-OKVQA rationales start many
  sentences in lower case ("in the image. if you read..."), so lower case does not block a cut;
- after abbreviations that can end a sentence (`etc.`, `a.m.`, `U.S.`, `Inc.`) only when a
  capitalised common sentence opener follows (`etc. The`, not `U.S. Army`); after a single
  capital (`J. K. Rowling`, `option B. The`) unless another capitalised word that is not such
  an opener follows;
- at a line break, unless the next line starts in lower case (not as a list item) and the
  previous line does not end in `.`, `!`, `?`, `:` or `;` (a soft-wrapped sentence);
- never inside decimals and amounts (`3.5`, `$1.50`): a period needs whitespace after it.

A final fragment without punctuation is a sentence too.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Span(NamedTuple):
    text: str
    start: int
    end: int


# Never end a sentence: a name or an example always follows.
_NEVER_FINAL = frozenset(
    "mr mrs ms dr prof st mt gen gov sen rep capt col lt sgt rev hon fr "
    "e.g i.e vs cf viz approx esp incl ca".split()
)
# Followed by a number they are references (`No. 5`); otherwise ordinary words (`is no.`).
_NUMBERED = frozenset("no nos fig figs eq eqs vol ch sec p pp".split())
# May end a sentence; they do only before a common sentence opener.
_MAY_END = frozenset("etc a.m p.m inc ltd co corp jr sr bros".split())
_OPENERS_WORDS = frozenset(
    "the this that these those it its he she they we i you there here in on at a an so then "
    "but and thus therefore however because since if when after before also for as to my our "
    "his her their each all some one both what which who how why look now first second "
    "finally next yes no".split()
)
_OPEN = "\"'“‘«([{"
_CLOSE = "\"'”’»)]}"
_TERMINATOR = re.compile(
    rf"(?P<term>[.!?…][.!?…{re.escape(_CLOSE)}]*)(?=\s|$)|(?P<nl>[^\S\r\n]*(?:\r\n|\r|\n)\s*)"
)
_MULTI_DOT = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_LIST_MARKER = re.compile(r"(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})")
_LIST_LINE = re.compile(r"(?:[-*•]|\d{1,3}[.)]|[A-Za-z][.)])\s")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NEXT_WORD = re.compile(rf"\s*[{re.escape(_OPEN)}]*(\S?)(\w*)")


def split_sentences(text: str) -> list[Span]:
    """Split `text` into sentence spans (see the module docstring for the rules)."""
    cuts = [0]
    for match in _TERMINATOR.finditer(text):
        if match.group("term") is not None:
            if _ends_sentence(text, cuts[-1], match.start(), match.group("term"), match.end()):
                cuts.append(match.end())
        elif _breaks_line(text, cuts[-1], match.start(), match.end()):
            cuts.append(match.end())
    cuts.append(len(text))
    spans = []
    for begin, end in zip(cuts, cuts[1:]):
        piece = text[begin:end]
        left = len(piece) - len(piece.lstrip())
        right = len(piece.rstrip())
        if right > left:
            spans.append(Span(piece[left:right], begin + left, begin + right))
    return spans


def _ends_sentence(text: str, piece_start: int, term_start: int, term: str, term_end: int) -> bool:
    if "?" in term or "!" in term:
        return True
    if ".." in term or "…" in term:
        return False
    before = text[piece_start:term_start]
    words = before.split()
    if not words:
        return False
    word = words[-1].lstrip(_OPEN)
    lowered = word.lower()
    next_first, next_rest = _NEXT_WORD.match(text, term_end).groups()
    if not next_first:
        return True  # end of text
    if not next_first.isalnum():
        return False
    if lowered in _NEVER_FINAL:
        return False
    if lowered in _NUMBERED and next_first.isdigit():
        return False
    if _LIST_MARKER.fullmatch(word) and (len(words) == 1 or words[-2].endswith((":", ";"))):
        return False
    opener = next_first.isupper() and (next_first + next_rest).lower() in _OPENERS_WORDS
    if lowered in _MAY_END or _MULTI_DOT.fullmatch(word):
        return opener
    if len(word) == 1 and word.isupper():  # an initial, unless a sentence opener follows
        return opener or not next_first.isupper()
    return True


def _breaks_line(text: str, piece_start: int, start: int, end: int) -> bool:
    if len(_LINE_BREAK.findall(text, start, end)) > 1:
        return True  # a blank line ends a paragraph
    previous = text[piece_start:start].rstrip().rstrip(_CLOSE)
    following = text[end:]
    soft_wrap = (
        following[:1].islower()
        and not _LIST_LINE.match(following)
        and not previous.endswith((".", "!", "?", ":", ";"))
    )
    return not soft_wrap
