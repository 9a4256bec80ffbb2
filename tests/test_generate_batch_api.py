"""Batch runs with the real openai SDK against the scripted teacher: split, submit, poll, results, resume, retry."""

from __future__ import annotations

import json

import pytest
from batch_support import batch_teacher, teacher_requests

from vinstruct.errors import VinstructError
from vinstruct.generate.batch_api import (BatchResult, BatchRun, batch_cost, format_status, round_runs, run_in_rounds,
                                          split_lines, write_request_files)
from vinstruct.generate.batch_api.requests import BatchRequest, request_line

FAST = {"poll_s": 0.01, "poll_max_s": 0.05, "progress": False}


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (not even `except Exception`)."""


def online_answers(client, requests) -> dict[str, str]:
    return {r.custom_id: client.chat.completions.create(**r.body).choices[0].message.content for r in requests}


def test_requests_are_split_at_the_request_and_byte_limits(tmp_path):
    requests = teacher_requests(9)
    sizes = [len(request_line(r)) for r in requests]
    max_bytes = max(sizes) * 2 + 10
    groups = list(split_lines(requests, max_requests=3, max_bytes=max_bytes))
    assert [line for group in groups for line in group] == [request_line(r) for r in requests]
    assert all(len(group) <= 3 and sum(map(len, group)) <= max_bytes for group in groups) and len(groups) >= 3
    parts, _ = write_request_files(requests, tmp_path, "requests", max_requests=3, max_bytes=max_bytes)
    assert [p["requests"] for p in parts] == [len(g) for g in groups]
    assert [(tmp_path / p["path"]).stat().st_size for p in parts] == [p["bytes"] for p in parts]
    with pytest.raises(VinstructError, match="appears twice"):
        list(split_lines(requests + requests[:1]))
    with pytest.raises(VinstructError, match="more than a whole input file may hold"):
        list(split_lines(requests, max_bytes=min(sizes) - 1))


def test_a_run_answers_every_request_once_as_the_online_endpoint_does(tmp_path):
    requests = teacher_requests(10)
    with batch_teacher(max_requests=4) as (client, created):
        run = BatchRun(client, tmp_path / "run", max_requests=4, **FAST)
        results = list(run.run(requests))
        assert len(created) == 3  # 10 requests, at most 4 a file
        assert [r.custom_id for r in results] == [r.custom_id for r in requests] and all(r.ok for r in results)
        assert {r.custom_id: r.content for r in results} == online_answers(client, requests)
        assert [s["status"] for s in run.status()] == ["completed"] * 3
        cost = batch_cost(results, price_in=0.15, price_out=0.60)
        assert cost.answered == 10 and cost.prompt_tokens > 0 and cost.cost == pytest.approx(cost.online_cost / 2)
        assert batch_cost(results, 0.15, 0.60, discount=1.0).cost == pytest.approx(cost.online_cost)


def kill_during(phase: str, run: BatchRun, requests, monkeypatch) -> None:
    """Run `run` until the moment named by `phase`, then stop it as kill -9 would."""

    def then_die(method):
        def wrapper(*args, **kwargs):
            method(*args, **kwargs)  # the server got the call; the reply never reaches the state file
            raise Killed

        return wrapper

    if phase == "after writing":
        run.write(requests)
    elif phase == "during an upload":
        monkeypatch.setattr(run.client.files, "create", then_die(run.client.files.create))
    elif phase == "between uploads":
        real, calls = run.client.files.create, []

        def upload_once(*args, **kwargs):
            if calls:
                raise Killed
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(run.client.files, "create", upload_once)
    elif phase == "during batch creation":
        monkeypatch.setattr(run.client.batches, "create", then_die(run.client.batches.create))
    elif phase == "while polling":
        def die(seconds):
            raise Killed

        run.sleep = die
    elif phase == "during a download":
        monkeypatch.setattr(run, "_download", then_die(run._download))
    elif phase == "while reading results":
        results = run.run(requests)
        next(results)
        return
    if phase != "after writing":
        with pytest.raises(Killed):
            list(run.run(requests))
    monkeypatch.undo()


PHASES = ["after writing", "during an upload", "between uploads", "during batch creation", "while polling",
          "during a download", "while reading results"]


@pytest.fixture(scope="module")
def shared_teacher():
    """One scripted teacher for the kill tests (each counts only the batches it creates itself)."""
    with batch_teacher() as (client, created):
        yield client, created


@pytest.mark.parametrize("phase", PHASES)
def test_a_run_killed_at_any_phase_goes_on_without_a_second_submission(phase, shared_teacher, tmp_path, monkeypatch):
    client, created = shared_teacher
    requests = teacher_requests(6)
    before = len(created)
    kill_during(phase, BatchRun(client, tmp_path, max_requests=3, **FAST), requests, monkeypatch)
    again = list(BatchRun(client, tmp_path, max_requests=3, **FAST).run(requests))
    assert len(created) - before == 2  # two input files, one batch each, however the first try ended
    state = json.loads((tmp_path / "batch_state.json").read_text())
    uploads = [f for f in client.files.list(purpose="batch") if f.filename.startswith(f"vinstruct-{state['run_id']}-")]
    assert len(uploads) == 2
    assert [r.custom_id for r in again] == [r.custom_id for r in requests]
    assert {r.custom_id: r.content for r in again} == online_answers(client, requests)
    assert all(part["downloaded"] and part["status"] == "completed" for part in state["parts"])


def test_failed_and_expired_rows_are_answered_in_later_rounds_and_a_rerun_sends_nothing(tmp_path):
    requests = teacher_requests(12)
    with batch_teacher(fail_rows=0.25, expire=(1,), max_requests=4) as (client, created):
        results = list(run_in_rounds(client, requests, tmp_path, retries=3, max_requests=4, **FAST))
        assert sorted(r.custom_id for r in results) == sorted(r.custom_id for r in requests)
        assert all(r.ok for r in results)
        assert {r.custom_id: r.content for r in results} == online_answers(client, requests)
        rounds = sorted(p.name for p in tmp_path.iterdir())
        assert rounds[:2] == ["round-0", "round-1"] and len(created) > 3
        submitted = len(created)
        rerun = list(run_in_rounds(client, requests, tmp_path, retries=3, max_requests=4, **FAST))
        assert len(created) == submitted and sorted(r.custom_id for r in rerun) == sorted(r.custom_id for r in results)
        statuses = [s["status"] for run in round_runs(client, tmp_path, **FAST) for s in run.status()]
        assert len(statuses) == submitted and statuses[0] == "expired" and set(statuses[1:]) == {"completed"}


def test_unanswered_rows_come_back_as_errors_after_the_last_round(tmp_path):
    requests = [BatchRequest("bad-body", {"model": "vinstruct-scripted", "messages": []})] + teacher_requests(4)
    with batch_teacher(expire=(1, 2), expire_after=0.5) as (client, created):
        # round 0: bad-body gets 400, 1 row answered, 3 expire; round 1: 1 of those 3 answered, 2 expire again
        results = {r.custom_id: r for r in run_in_rounds(client, requests, tmp_path, retries=1, **FAST)}
        assert len(created) == 2 and set(results) == {r.custom_id for r in requests}
        assert results["bad-body"].status_code == 400  # a 4xx is final: never sent again
        expired = [r for r in results.values() if r.error and r.error["code"] == "batch_expired"]
        assert len(expired) == 2 and sum(r.ok for r in results.values()) == 2


def test_a_batch_the_server_refuses_yields_each_of_its_requests_as_an_error(tmp_path):
    requests = teacher_requests(3)
    with batch_teacher(max_requests=2) as (client, _):
        results = list(BatchRun(client, tmp_path, **FAST).run(requests))
        assert [r.custom_id for r in results] == [r.custom_id for r in requests]
        assert all(r.error["code"] == "batch_failed" and "at most 2" in r.error["message"] for r in results)


def test_status_and_cancel_act_on_the_runs_batches(tmp_path):
    requests = teacher_requests(6)
    with batch_teacher(delay_s=60) as (client, _):
        run = BatchRun(client, tmp_path, max_requests=3, **FAST)
        run.submit(requests)
        later = BatchRun(client, tmp_path, **FAST)  # another process, the same directory
        assert [s["status"] for s in later.status()] == ["in_progress", "in_progress"]
        table = format_status(later.status())
        assert all(part.batch_id in table for part in later.state.parts) and "in_progress" in table
        assert [s["status"] for s in later.cancel()] == ["cancelling", "cancelling"]
        results = list(later.run(requests))
        assert all(r.error["code"] == "batch_cancelled" for r in results) and len(results) == 6
        assert [s["status"] for s in later.status()] == ["cancelled", "cancelled"]


def test_a_run_directory_belongs_to_one_set_of_requests(tmp_path):
    with batch_teacher() as (client, _):
        BatchRun(client, tmp_path, **FAST).write(teacher_requests(3))
        with pytest.raises(VinstructError, match="other requests"):
            BatchRun(client, tmp_path, **FAST).write(teacher_requests(3, seed=1))
        with pytest.raises(VinstructError, match="no batch run here"):
            BatchRun(client, tmp_path / "empty", **FAST).status()


def test_cost_counts_answered_rows_at_the_batch_discount():
    answered = BatchResult("a", 200, {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 500_000}}, None)
    failed = BatchResult("b", 500, {"error": {}}, {"code": "http_500", "message": "x"})
    cost = batch_cost([answered, failed], price_in=2.0, price_out=8.0)
    assert (cost.answered, cost.failed, cost.online_cost, cost.cost) == (1, 1, 6.0, 3.0)
    with pytest.raises(VinstructError, match="between 0 and 1"):
        batch_cost([], discount=2)


def test_polling_rides_out_connection_errors_and_names_a_batch_the_server_lost(tmp_path, monkeypatch):
    import httpx
    import openai

    requests = teacher_requests(2)
    with batch_teacher() as (client, _):
        BatchRun(client, tmp_path / "lost", **FAST).submit(requests)  # left running on this server
        run = BatchRun(client, tmp_path / "flaky", **FAST)
        run.submit(requests)
        real, failures = client.batches.retrieve, [2]

        def flaky(batch_id):
            if failures[0]:
                failures[0] -= 1
                raise openai.APIConnectionError(request=httpx.Request("GET", "http://127.0.0.1/"))
            return real(batch_id)

        monkeypatch.setattr(client.batches, "retrieve", flaky)
        assert all(r.ok for r in run.run(requests)) and failures == [0]
    with batch_teacher() as (fresh_server, _):  # a restarted server without a state directory
        with pytest.raises(VinstructError, match="does not know batch"):
            BatchRun(fresh_server, tmp_path / "lost", **FAST).status()
