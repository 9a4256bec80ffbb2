"""The judge client over real HTTP: retries on unreadable replies, a journal, a judge that never answers."""

from eval_support import free_port, serve

from vinstruct.eval import judge_prompts, scripted_judge
from vinstruct.eval.endpoints import make_judge
from vinstruct.eval.extract import parse_scores

SCENE = "A red circle and a blue square.\n\nred circle: [0.1, 0.1, 0.3, 0.3]\nblue square: [0.6, 0.6, 0.9, 0.9]"


def _request(candidate="There is a red circle on the left.", category="conversation"):
    return judge_prompts.review_messages(SCENE, "What is on the left?", "A red circle is on the left.",
                                         candidate, category)


def test_unreadable_replies_are_asked_again_then_counted(tmp_path):
    seen = []

    def moody(messages, rng=None):
        # First answer is chatty with no scores; after the format reminder it complies.
        seen.append(messages)
        if messages[-1]["content"] == judge_prompts.SCORE_REMINDER:
            return "9 7\nBetter now."
        return "Both answers look fine to me!"

    def stubborn(messages, rng=None):
        return "I refuse to give numbers."

    with serve([moody]) as url:
        run = make_judge(url, journal=tmp_path / "j.jsonl").run([_request()], parse_scores,
                                                                judge_prompts.SCORE_REMINDER, progress=False)
    assert run.verdicts[0].parsed == (9.0, 7.0) and run.verdicts[0].attempts == 2
    assert seen[1][-2] == {"role": "assistant", "content": "Both answers look fine to me!"}
    assert run.complete
    with serve([stubborn]) as url:
        judge = make_judge(url, max_attempts=3)
        run = judge.run([_request()], parse_scores, judge_prompts.SCORE_REMINDER, progress=False)
    verdict = run.verdicts[0]
    assert verdict.parsed is None and verdict.attempts == 3 and verdict.error is None
    assert run.stats["unreadable"] == 1 and run.complete  # answered, but unreadable: counted, not an outage


def test_journal_makes_a_rerun_send_nothing(tmp_path):
    requests = [_request("A red circle."), _request("A green star.")]
    with serve([scripted_judge.respond]) as url:
        judge = make_judge(url, journal=tmp_path / "journal.jsonl", concurrency=2)
        first = judge.run(requests, parse_scores, judge_prompts.SCORE_REMINDER, progress=False)
        second = judge.run(requests, parse_scores, judge_prompts.SCORE_REMINDER, progress=False)
    assert first.stats["sent"] == 2 and second.stats["sent"] == 0 and second.stats["from_journal"] == 2
    assert [v.parsed for v in first.verdicts] == [v.parsed for v in second.verdicts]
    assert first.verdicts[0].parsed[1] > first.verdicts[1].parsed[1]  # the invented green star scores lower


def test_a_judge_that_never_answers_ends_the_run_incomplete(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    judge = make_judge(dead, timeout=2.0, max_retries=0, give_up_after=2, concurrency=1)
    run = judge.run([_request() for _ in range(5)], parse_scores, judge_prompts.SCORE_REMINDER, progress=False)
    assert not run.complete and "failed 2 requests in a row" in run.gave_up
    assert all(v.parsed is None for v in run.verdicts)
    assert run.stats["sent"] == 2 and run.stats["unanswered"] == 5  # three were never sent
