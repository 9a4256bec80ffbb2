"""`vinstruct eval --judge-batch` against the scripted judge's Batch API (real uvicorn, real openai SDK):
the verdicts of the online mode, a resume that submits nothing twice, and what the batch leaves
(failed rows, unreadable replies) answered once online."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest
from batch_support import created_batches
from eval_support import serve

from vinstruct.cli import main
from vinstruct.data.formats import read_jsonl
from vinstruct.eval import judge_prompts
from vinstruct.eval.endpoints import SCRIPTED_MODEL, make_judge, scripted_responders
from vinstruct.eval.extract import parse_scores
from vinstruct.generate.batch_mode import BatchSettings
from vinstruct.generate.scripted import create_app
from vinstruct.generate.scripted.batches import BatchOptions
from vinstruct.generate.server import running_server

PRICES = ("--judge-price-in", "1.0", "--judge-price-out", "2.0")
REVIEWS = 6  # 2 images x 3 categories


@contextlib.contextmanager
def judge_server(**batch_options):
    """The scripted judge + teacher with the Batch API: yields (its URL, its app, the 'batch created' lines)."""
    app = create_app(scripted_responders(), model_name=SCRIPTED_MODEL, batch=BatchOptions(**batch_options))
    with created_batches() as created, running_server(app) as url:
        yield url, app, created


def bench_args(checkpoint, world, out, url, *extra):
    return ["eval", "--model", str(checkpoint), "--suite", "llava-bench", "--world", str(world), "--limit", "2",
            "--max-new-tokens", "8", "--judge-url", url, "--out", str(out), "--quiet", *PRICES, *extra]


def batch_args(checkpoint, world, out, url, *extra):
    return bench_args(checkpoint, world, out, url, "--judge-batch", "--judge-batch-poll", "0.05", *extra)


def with_online_answers(online, out):
    """A fresh output directory holding the online run's model answers and references (no generation again)."""
    out.mkdir()
    for name in ("answers.jsonl", "references.jsonl"):
        shutil.copy(online / name, out / name)
    return out


def reviews(out) -> list[dict]:
    return [{k: r[k] for k in ("question_id", "scores", "review")} for r in read_jsonl(out / "reviews.jsonl")]


def results(out) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def online_bench(tiny_checkpoint, tiny_world, tmp_path_factory):
    """The online judge's llava-bench run: what every batch run below must reproduce."""
    out = tmp_path_factory.mktemp("online") / "bench"
    with judge_server() as (url, _, _):
        assert main(bench_args(tiny_checkpoint, tiny_world, out, url)) == 0
    return out


def test_judge_batch_gives_the_online_verdicts_at_half_the_price(tiny_checkpoint, tiny_world, tmp_path, online_bench):
    out = with_online_answers(online_bench, tmp_path / "bench")
    with judge_server() as (url, app, created):
        assert main(batch_args(tiny_checkpoint, tiny_world, out, url)) == 0
        assert app.state.requests == 0  # not one judge request went online
    assert reviews(out) == reviews(online_bench)
    assert results(out)["summary"] == results(online_bench)["summary"]
    judge, online = results(out)["judge"], results(online_bench)["judge"]
    assert judge["from_batch"] == REVIEWS and judge["online"] == judge["sent"] == 0 and len(created) == 1
    assert judge["batch"]["usage"]["prompt_tokens"] == online["usage"]["prompt_tokens"]
    assert judge["cost"] == pytest.approx(online["cost"] / 2, abs=1e-6) and online["cost"] > 0
    assert (out / "judge_journal.batch").is_dir()  # beside the journal

    # A second run finds every verdict in the journal: no batch, nothing online.
    with judge_server() as (url, app, created):
        assert main(batch_args(tiny_checkpoint, tiny_world, out, url)) == 0
        assert app.state.requests == 0 and not created
    assert results(out)["judge"]["from_journal"] == REVIEWS and reviews(out) == reviews(online_bench)


class Killed(BaseException):
    """Stands for kill -9 (not even `except Exception` sees it)."""


def test_killed_after_the_batch_was_created_a_rerun_waits_for_the_same_batch(tiny_checkpoint, tiny_world, tmp_path,
                                                                             online_bench, monkeypatch, capsys):
    from vinstruct.generate.batch_api.run import BatchRun

    out = with_online_answers(online_bench, tmp_path / "bench")
    with judge_server(delay_s=0.5) as (url, app, created):
        def killed(self, *args, **kwargs):
            raise Killed

        with monkeypatch.context() as patch:
            patch.setattr(BatchRun, "wait", killed)
            with pytest.raises(Killed):
                main(batch_args(tiny_checkpoint, tiny_world, out, url))
        assert len(created) == 1 and not (out / "reviews.jsonl").exists()

        # While it runs, the batch can be looked at from the output's name.
        assert main(["eval", "--out", str(out), "--judge-url", url, "--judge-batch-status"]) == 0
        assert "judge-review-" in capsys.readouterr().out

        assert main(batch_args(tiny_checkpoint, tiny_world, out, url)) == 0
        assert len(created) == 1 and app.state.requests == 0  # the same batch, nothing sent twice
    assert reviews(out) == reviews(online_bench)
    assert results(out)["judge"]["batch"]["batches"] == [line.split()[2] for line in created]


def test_rows_the_batch_fails_are_answered_once_online(tiny_checkpoint, tiny_world, tmp_path, online_bench):
    out = with_online_answers(online_bench, tmp_path / "bench")
    with judge_server(fail_rows=0.5) as (url, app, created):
        assert main(batch_args(tiny_checkpoint, tiny_world, out, url, "--judge-batch-retries", "0")) == 0
        online_requests = app.state.requests
    judge = results(out)["judge"]
    failed = judge["batch"]["failed"]
    assert 0 < failed < REVIEWS and len(created) == 1
    assert judge["online"] == judge["sent"] == online_requests == failed  # each asked once, online
    assert judge["from_batch"] == REVIEWS - failed
    assert reviews(out) == reviews(online_bench)


def test_an_unreadable_batch_reply_is_asked_again_online_with_the_reminder(tmp_path):
    asked_online = []

    def moody(messages, rng=None):
        # Chatty at first (in the batch); after the format reminder (online) it gives the scores.
        if messages[-1]["content"] == judge_prompts.SCORE_REMINDER:
            asked_online.append(messages)
            return "9 7\nBetter now."
        return "Both answers look fine to me!"

    scene = "A red circle.\n\nred circle: [0.1, 0.1, 0.3, 0.3]"
    requests = [judge_prompts.review_messages(scene, "What is it?", "A red circle.", answer, "conversation")
                for answer in ("A circle.", "A red circle.")]
    with serve([moody]) as url:
        judge = make_judge(url, journal=tmp_path / "journal.jsonl", batch=BatchSettings(None, poll_s=0.05))
        run = judge.run(requests, parse_scores, judge_prompts.SCORE_REMINDER, progress=False)
    assert [v.parsed for v in run.verdicts] == [(9.0, 7.0)] * 2 and [v.attempts for v in run.verdicts] == [2, 2]
    assert run.stats["batch"]["unreadable"] == 2 and run.stats["online"] == run.stats["sent"] == 2
    assert asked_online[0][-2] == {"role": "assistant", "content": "Both answers look fine to me!"}
    assert (tmp_path / "journal.batch").is_dir()


def test_the_scienceqa_ensemble_through_the_batch_equals_the_online_one(tiny_checkpoint, tiny_world, tmp_path):
    # No --judge-url: the command serves the scripted judge itself, batch endpoints included.
    online, batch = tmp_path / "online", tmp_path / "batch"
    common = ["eval", "--model", str(tiny_checkpoint), "--suite", "scienceqa", "--world", str(tiny_world),
              "--quiet", "--max-new-tokens", "4", "--limit", "6"]
    assert main([*common, "--out", str(online)]) == 0
    assert main([*common, "--out", str(batch), "--judge-batch", "--judge-batch-poll", "0.05"]) == 0
    first, second = results(online)["ensemble"], results(batch)["ensemble"]
    for name in ("judge_alone", "complement", "ensemble", "disputed"):
        assert first[name] == second[name]
    solve = second["judge_stats"]["solve"]
    assert solve["from_batch"] == solve["requests"] > 0 and solve["sent"] == 0
