"""Agreement between teachers and humans, against figures worked out by hand."""

import math

import pytest

from ares_data.review.agreement import agreement
from ares_data.review.labels import record_score

pytestmark = pytest.mark.both_backends
FOUR = "Alpha is one. Beta is two. Gamma is three. The answer is (A)."


@pytest.fixture
def labelled(store, feedback):
    """Round 1: teachers a and b on four sentences, a human on three; round 2: two flat teachers."""
    q = feedback.question(2)
    r1 = feedback.rollout(q, FOUR)
    feedback.score(r1, [1.0, 1.0, 1.0, 1.0], model="teacher-a")  # superseded by a's later call
    feedback.score(r1, [0.2, 0.4, 0.6, 0.8], model="teacher-a")
    # Scores on an `invalid` call are the valid lists of a partly invalid grouped answer: they count
    # like any other (issue 14), here superseded by b's later call.
    feedback.score(r1, [0.0, 0.0, 0.0, 0.0], model="teacher-b", status="invalid")
    feedback.score(r1, [0.1, 0.4, 0.9, 0.9], model="teacher-b")
    with store.session() as session:
        from sqlmodel import select

        from ares_data.tables import Sentence

        ids = session.exec(select(Sentence.id).where(Sentence.rationale_id == r1.id).order_by(Sentence.idx)).all()
        for sentence_id, score in zip(ids, [0.2, 0.5, 0.5]):
            record_score(session, sentence_id=sentence_id, score=score, reviewer="ann")
    r2 = feedback.rollout(q, "Two is even. The answer is (A).", round=2)
    feedback.score(r2, [0.5, 0.5], model="teacher-a")
    feedback.score(r2, [0.5, 0.5], model="teacher-b")


def _pairs(rows):
    return {(r["labeller_a"], r["labeller_b"]): r for r in rows}


def test_round_one_matches_the_hand_computation(store, labelled):
    rows = _pairs(agreement(store, 1))
    assert set(rows) == {("teacher-a", "teacher-b"), ("human", "teacher-a"), ("human", "teacher-b")}
    ab = rows["teacher-a", "teacher-b"]
    # a = .2 .4 .6 .8, b = .1 .4 .9 .9: deviations from the means (.5, .575) give
    # sum(dx*dy) = .29, sum(dx^2) = .2, sum(dy^2) = .4675; ranks 1 2 3 4 vs 1 2 3.5 3.5.
    assert ab["shared_sentences"] == 4
    assert ab["pearson"] == pytest.approx(0.29 / math.sqrt(0.2 * 0.4675))
    assert ab["spearman"] == pytest.approx(4.5 / math.sqrt(5 * 4.5))
    assert ab["mean_abs_diff"] == pytest.approx((0.1 + 0 + 0.3 + 0.1) / 4)
    assert ab["exact_agreement"] == pytest.approx(0.25)
    ah = rows["human", "teacher-a"]
    # human = .2 .5 .5 on the first three: sum(dx*dh) = .06, sum(dx^2) = .08, sum(dh^2) = .06.
    assert ah["shared_sentences"] == 3
    assert ah["pearson"] == pytest.approx(0.06 / math.sqrt(0.08 * 0.06))
    assert ah["spearman"] == pytest.approx(1.5 / math.sqrt(2 * 1.5))
    assert ah["mean_abs_diff"] == pytest.approx(0.2 / 3)
    assert ah["exact_agreement"] == pytest.approx(1 / 3)
    hb = rows["human", "teacher-b"]
    assert hb["shared_sentences"] == 3 and hb["mean_abs_diff"] == pytest.approx(0.6 / 3)
    assert hb["exact_agreement"] == 0


def test_flat_scores_have_no_correlation_and_all_rounds_pool(store, labelled):
    [flat] = agreement(store, 2)
    assert flat["shared_sentences"] == 2 and flat["exact_agreement"] == 1
    assert flat["pearson"] is None and flat["spearman"] is None
    pooled = _pairs(agreement(store))
    assert pooled["teacher-a", "teacher-b"]["shared_sentences"] == 6
    assert pooled["human", "teacher-a"]["shared_sentences"] == 3


def test_agreement_cli_prints_the_table(cli, labelled):
    result = cli("agreement", "--round", "1")
    assert result.exit_code == 0, result.output
    assert "teacher-a" in result.stdout and "0.948" in result.stdout
