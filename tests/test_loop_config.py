"""The loop's identity: the same command resumes the same run, whatever the server's port or the rate limits."""

from ares_data.teacher.config import TeacherConfig
from ares_train.loop import LoopConfig


def _key(**teacher) -> str:
    options = {"base_url": "http://127.0.0.1:8000/v1", "model": "t", **teacher}
    return LoopConfig(model="m", teacher=TeacherConfig.from_options(**options), rounds=1).run_key()


def test_run_key_ignores_where_and_how_fast_the_teacher_is_asked():
    assert _key() == _key(base_url="http://127.0.0.1:9999/v1", rpm=5, concurrency=2, timeout=9)
    assert LoopConfig(model="m", teacher=TeacherConfig.from_options(base_url="http://127.0.0.1:1/v1"), rounds=1
                      ).run_key() == LoopConfig(model="m", teacher=TeacherConfig.from_options(
                          base_url="http://127.0.0.1:1/v1"), rounds=3).run_key()  # more rounds continue the run


def test_run_key_follows_what_is_asked():
    assert _key() != _key(model="other")
    assert _key() != _key(structured_output="none")
    assert _key() != _key(max_tokens=64)


def test_an_unknown_setting_in_the_config_file_is_one_line(cli, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('model = "m"\nroundz = 2\n')
    result = cli("train", "--config", config)
    assert result.exit_code == 1
    assert "unknown setting(s) roundz" in result.stderr and str(config) in result.stderr


def test_a_critic_free_advantage_with_one_rollout_per_question_fails_before_sampling(cli, db_path):
    result = cli("train", "--model", "some-student-dir", "--advantage", "grpo", "--k", "1",
                 "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 1
    assert "advantage=grpo compares a question's rollouts" in result.stderr
    assert "--k must be at least 2" in result.stderr
    bad = cli("train", "--model", "some-student-dir", "--advantage", "rloo", "--base-url", "http://127.0.0.1:9/v1")
    assert bad.exit_code == 1 and "reward_placement=final" in bad.stderr


def test_a_stage_records_the_summary_of_a_collector_whose_teacher_failed():
    """Found by benchmarks/ares_effect.py with a sparse teacher: `asdict` turned the summary's
    `failed` Counter into one keyed by (reason, count) tuples, and the stage crashed recording it."""
    from collections import Counter

    from ares_data.teacher.collect import OnlineSummary
    from ares_train.loop import _plain

    summary = OnlineSummary("correct", selected=6, done=4, failed=Counter({"empty": 2}))
    assert _plain(summary) == {**_plain(OnlineSummary("correct", selected=6, done=4)), "failed": {"empty": 2}}
