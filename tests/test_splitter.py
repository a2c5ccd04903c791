"""The sentence splitter: span invariants (hypothesis), the rules, and real rationales."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ares_data.splitter import Span, split_sentences


def texts(text: str) -> list[str]:
    return [span.text for span in split_sentences(text)]


# -- span invariants, on arbitrary text and on text built from the tricky pieces -------------

_PIECES = st.sampled_from(
    ["The", "cat", "sat", "3.5", "$1.50", "0.25 m", "Mr.", "Dr.", "e.g.", "i.e.", "etc.", "U.S.",
     "a.m.", "J.", "...", "…", ".", "!", "?", "?!", '"', "'", ")", "(", "1.", "-", ":", "No.",
     "5", "it", "\n", "\n\n", "\r\n", " ", "  ", "\t", "é", "x"]
)
_BUILT = st.lists(_PIECES, max_size=40).map(" ".join) | st.lists(_PIECES, max_size=40).map("".join)


def check_spans(text: str, spans: list[Span]) -> None:
    previous_end = 0
    for span in spans:
        assert text[span.start:span.end] == span.text
        assert span.text and span.text == span.text.strip()
        assert span.start >= previous_end  # ordered, no overlap
        assert text[previous_end:span.start].strip() == ""  # only whitespace between
        previous_end = span.end
    assert text[previous_end:].strip() == ""
    assert bool(spans) == bool(text.strip())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_spans_are_exact_disjoint_and_cover_all_text(text):
    check_spans(text, split_sentences(text))


@settings(max_examples=300, deadline=None)
@given(_BUILT)
def test_spans_hold_on_punctuation_heavy_text(text):
    check_spans(text, split_sentences(text))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[abdeghkuw]{2,8}(,? [abdeghkuw]{2,8}){0,5}[.!?]", fullmatch=True),
                min_size=1, max_size=6))
def test_plain_sentences_come_back_one_by_one(bodies):
    """Letters chosen so that no word is a known abbreviation (`ca.`, `Dr.`) or an initial."""
    sentences = [b[0].upper() + b[1:] for b in bodies]
    assert texts(" ".join(sentences)) == sentences


# -- the rules --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It costs $1.50 now. It weighs 3.5 kg and is 0.25 m long.",
         ["It costs $1.50 now.", "It weighs 3.5 kg and is 0.25 m long."]),
        ("Mr. Lee met Dr. Cho. Mrs. Park came too.", ["Mr. Lee met Dr. Cho.", "Mrs. Park came too."]),
        ("Use a lens, e.g. a magnifier, i.e. glass. Then look.",
         ["Use a lens, e.g. a magnifier, i.e. glass.", "Then look."]),
        ("Bring pens, paper, etc. The rest is here.", ["Bring pens, paper, etc.", "The rest is here."]),
        ("He lives in the U.S. Army base. It is big.", ["He lives in the U.S. Army base.", "It is big."]),
        ("We left at 7 a.m. The bus was late.", ["We left at 7 a.m.", "The bus was late."]),
        ("J. K. Rowling wrote it. The answer is B. It fits.",
         ["J. K. Rowling wrote it.", "The answer is B.", "It fits."]),
        ("Wait... it moved. Then it stopped… and so on.", ["Wait... it moved.", "Then it stopped… and so on."]),
        ("Is it hot? Yes! it is.", ["Is it hot?", "Yes!", "it is."]),
        ("The sum is 12. 3 apples are left.", ["The sum is 12.", "3 apples are left."]),
        ('He said "stop." Then he left. (See above.) Next.',
         ['He said "stop."', "Then he left.", "(See above.)", "Next."]),
        ("See Fig. 2 and No. 5 on the list. The answer is no. It is not.",
         ["See Fig. 2 and No. 5 on the list.", "The answer is no.", "It is not."]),
        ("Two ways:\n1. Replace it:\n2. Rewrite it\n- a bullet\n- another",
         ["Two ways:", "1. Replace it:", "2. Rewrite it", "- a bullet", "- another"]),
        ("Steps: 1. Mix it. 2. Heat it.", ["Steps: 1. Mix it.", "2. Heat it."]),
        ("A line that\nwraps here. ok\n\nnew paragraph", ["A line that\nwraps here.", "ok", "new paragraph"]),
        ("A final fragment", ["A final fragment"]),
        ("  \n ", []),
    ],
)
def test_rules(text, expected):
    assert texts(text) == expected


# -- real rationales from the shared data ------------------------------------------------------

SCIENCEQA = {
    ("1", "lecture"): [
        "Maps have four cardinal directions, or main directions.",
        "Those directions are north, south, east, and west.",
        "A compass rose is a set of arrows that point to the cardinal directions.",
        "A compass rose usually shows only the first letter of each cardinal direction.",
        "The north arrow points to the North Pole.",
        "On most maps, north is at the top of the map.",
    ],
    ("6", "solution"): [
        "The text uses verbal irony, which involves saying one thing but implying something very different.",
        "As quiet as a jackhammer suggests that the snoring is loud.",
        "A jackhammer is not quiet, and neither is Mr. Herrera's snoring.",
    ],
    ("36", "solution"): [
        "To determine if this statement is true, calculate the value of 10,000 times the volume of Mars.",
        "Then compare the result to the volume of Jupiter.",
        "Jupiter's volume is 1.43 x 10^15 km^3, which is less than 1.63 x 10^15 km^3.",
        "So, Jupiter's volume is less than 10,000 times as large as the volume of Mars.",
    ],
    ("173", "lecture"): [
        "Figures of speech are words or phrases that use language in a nonliteral or unusual way.",
        "They can make writing more expressive.",
        "An allusion is a brief reference to something or someone well known, often from history or literature.",
        "\"I'd better get home before I turn into a pumpkin!\"",
        "Lila remarked.",
    ],
    ("221", "lecture"): [
        "A letter starts with a greeting and ends with a closing.",
        "For each one, capitalize the first word and end with a comma.",
        "You should also capitalize proper nouns, such as Aunt Sue.",
        "Dear Aunt Sue,",
        "I'm glad you could come to my party, and\nthank you for the birthday gift.",
        "I could not have\nasked for a better one!",
        "Every time I see it, I think\nof you.",
        "With love,",
        "Rory",
    ],
    ("12", "lecture"): [
        "When writing, make sure to avoid vague pronoun references.",
        "A vague pronoun reference occurs when a pronoun could refer to more than one possible antecedent.",
        "When Lisa and Kim finally landed, she breathed a sigh of relief.",
        "The pronoun she could refer to either Lisa or Kim, so the meaning of the sentence is unclear.",
        "Vague pronoun references can be corrected in one of two ways:",
        "1. Replace the pronoun with its correct antecedent:",
        "When Lisa and Kim finally landed, Lisa breathed a sigh of relief.",
        "2. Rewrite the sentence:",
        "Lisa breathed a sigh of relief when she and Kim finally landed.",
        "A vague pronoun reference also occurs when they, them, their, theirs, it, or its is used without "
        "its antecedent.",
        "They say that this nail polish dries in less than five minutes.",
        "The pronoun they is used without its antecedent, so the meaning of the sentence is unclear.",
        "This problem can be fixed by replacing the pronoun with its missing antecedent.",
        "The advertisements say that this nail polish dries in less than five minutes.",
    ],
}

AOKVQA = {
    ("fBq7g59duqhmbqAtjWY5xf", 2): ["Dr. pepper is a coke product.", "coke is a competitor to pepsi."],
    ("bsEAp6tE9zHfcQ2ZASJYbZ", 2): [
        "Giraffes have long necks.",
        "their long necks allows them to reach the leaves on trees.",
    ],
    ("KFfvmbMFji4jPLYSa72ghN", 2): [
        'The baseball uniforms have two letters for the team name abbreviation, with the last letter being a "u."',
        "since few or no baseball teams in non-university affiliated leagues have that attribute, "
        "this is most likely a college league team.",
    ],
    ("ZWw8aaWWifdcZdMU7Pmgcg", 0): ["It's actually a little under 16.5 on the scale."],
    ("V7eH795GEYSJkaUNCkCp7A", 2): ["The person likes using a mug to hold their pens, etc."],
    ("Swg6UuWx3sV6rx6mLKYwZz", 0): ["There are drinks on the table.", "coolers keep the drinks cold"],
    ("MFcz9WFowTCRnWEpVdEfiJ", 1): [
        "Snow skiing requires abundant snow on the ground to properly enjoy this activity.",
        "around since around 3,000 bce, snow skiing remains a popular form of recreation to this day!.",
    ],
}


@functools.lru_cache(maxsize=1)
def _load_real_texts(root: Path) -> dict:
    problems = json.loads((root / "scienceqa" / "problems.sample150.json").read_text())
    aokvqa = {q["question_id"]: q for q in json.loads((root / "aokvqa" / "aokvqa_v1p0_val.json").read_text())}
    found = {("scienceqa",) + key: problems[key[0]][key[1]] for key in SCIENCEQA}
    found.update({("aokvqa",) + key: aokvqa[key[0]]["rationales"][key[1]] for key in AOKVQA})
    return found


@pytest.fixture
def real_texts(shared_data):
    return _load_real_texts(shared_data)


@pytest.mark.parametrize(
    ("key", "expected"),
    [(("scienceqa",) + k, v) for k, v in SCIENCEQA.items()] + [(("aokvqa",) + k, v) for k, v in AOKVQA.items()],
    ids=lambda value: "-".join(map(str, value)) if isinstance(value, tuple) else "",
)
def test_real_rationales(real_texts, key, expected):
    text = real_texts[key]
    spans = split_sentences(text)
    assert [s.text for s in spans] == expected
    check_spans(text, spans)


def test_cli_split_json_and_lines(cli):
    out = cli("split", "Mr. Lee paid $1.50. Done!", "--json")
    assert out.exit_code == 0
    assert json.loads(out.stdout) == [
        {"text": "Mr. Lee paid $1.50.", "start": 0, "end": 19},
        {"text": "Done!", "start": 20, "end": 25},
    ]
    out = cli("split", "-", input="One.\nTwo\nthree. Four")
    assert out.stdout.splitlines() == ["One.", "Two three.", "Four"]
