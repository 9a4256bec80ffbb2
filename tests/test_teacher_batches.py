"""The scripted teacher's Batch API, driven by the real openai SDK over HTTP: files, batches, life cycle, faults."""

from __future__ import annotations

import json
import time

import openai
import pytest
from batch_support import MODEL, batch_teacher, teacher_requests

from vinstruct.generate.batch_api import BatchRequest
from vinstruct.generate.batch_api.requests import request_line

TERMINAL = ("completed", "failed", "expired", "cancelled")


def upload(client, requests: list[BatchRequest], lines: list[bytes] | None = None, name: str = "input.jsonl"):
    data = b"".join(lines if lines is not None else [request_line(r) for r in requests])
    return client.files.create(file=(name, data), purpose="batch")


def submit(client, requests, lines=None):
    file = upload(client, requests, lines)
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")


def follow(client, batch_id: str, limit: int = 200):
    """Retrieve a batch until it ends; returns (statuses seen in order, without repeats; the last Batch)."""
    seen = []
    for _ in range(limit):
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in TERMINAL:
            return seen, batch
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not end: {seen}")


def rows(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_goes_through_the_life_cycle_and_answers_as_the_online_endpoint_does():
    requests = teacher_requests(6)
    with batch_teacher() as (client, created):
        batch = submit(client, requests)
        assert batch.status == "validating" and batch.object == "batch" and batch.completion_window == "24h"
        assert batch.expires_at == batch.created_at + 24 * 3600
        seen, batch = follow(client, batch.id)
        assert seen == ["in_progress", "finalizing", "completed"]
        assert batch.request_counts.model_dump() == {"total": 6, "completed": 6, "failed": 0}
        assert batch.error_file_id is None and batch.model == MODEL
        assert None not in (batch.in_progress_at, batch.finalizing_at, batch.completed_at)
        output = rows(client, batch.output_file_id)
        assert [row["custom_id"] for row in output] == [r.custom_id for r in requests]
        for row, request in zip(output, requests):
            assert set(row) == {"id", "custom_id", "response", "error"} and row["error"] is None
            assert row["id"].startswith("batch_req_") and row["response"]["request_id"].startswith("req_")
            assert row["response"]["status_code"] == 200
            online = client.chat.completions.create(**request.body)
            assert row["response"]["body"]["choices"][0]["message"]["content"] == online.choices[0].message.content
        tokens = sum(row["response"]["body"]["usage"]["total_tokens"] for row in output)
        assert batch.usage.total_tokens == tokens
        result_file = client.files.retrieve(batch.output_file_id)
        assert result_file.purpose == "batch_output" and result_file.filename == f"{batch.id}_output.jsonl"
        assert [b.id for b in client.batches.list()] == [batch.id]
        assert len(created) == 1 and "requests=6" in created[0]


def test_an_input_file_that_breaks_a_rule_fails_the_batch_naming_line_and_field():
    good = [request_line(r) for r in teacher_requests(3)]
    wrong_url = json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL}}) + "\n"
    lines = [good[0], b"{not json\n", good[1], wrong_url.encode(), good[2], good[2]]
    with batch_teacher() as (client, _):
        seen, batch = follow(client, submit(client, [], lines).id)
        assert seen == ["failed"] and batch.failed_at is not None
        problems = [(e.code, e.line, e.param) for e in batch.errors.data]
        assert problems == [("invalid_json_line", 2, None), ("invalid_url", 4, "url"),
                            ("duplicate_custom_id", 6, "custom_id")]
        assert batch.output_file_id is None and batch.error_file_id is None


def test_failing_rows_land_in_the_error_file_and_the_same_submissions_fail_the_same_rows():
    requests = teacher_requests(20)

    def failed_ids():
        with batch_teacher(fail_rows=0.3, seed=4) as (client, _):
            _, batch = follow(client, submit(client, requests).id)
            errors, output = rows(client, batch.error_file_id), rows(client, batch.output_file_id)
            assert batch.request_counts.failed == len(errors) > 0 and batch.request_counts.completed == len(output) > 0
            assert batch.status == "completed" and len(errors) + len(output) == 20
            for row in errors:
                assert row["error"] is None and row["response"]["status_code"] == 500
                assert row["response"]["body"]["error"]["type"] == "server_error"
            return [row["custom_id"] for row in errors]

    assert failed_ids() == failed_ids()


def test_a_bad_request_body_is_that_rows_http_400_not_the_batchs_failure():
    requests = teacher_requests(2) + [BatchRequest("empty", {"model": MODEL, "messages": []})]
    with batch_teacher() as (client, _):
        _, batch = follow(client, submit(client, requests).id)
        assert batch.status == "completed" and batch.request_counts.failed == 1
        [row] = rows(client, batch.error_file_id)
        assert row["custom_id"] == "empty" and row["response"]["status_code"] == 400
        assert "messages" in row["response"]["body"]["error"]["message"]


def test_an_expiring_batch_answers_part_of_its_rows_and_lists_the_rest_as_batch_expired():
    requests = teacher_requests(8)
    with batch_teacher(expire=(1,), expire_after=0.25) as (client, _):
        seen, batch = follow(client, submit(client, requests).id)
        assert seen == ["in_progress", "expired"] and batch.expired_at is not None
        assert [r["custom_id"] for r in rows(client, batch.output_file_id)] == [r.custom_id for r in requests[:2]]
        expired = rows(client, batch.error_file_id)
        assert [r["custom_id"] for r in expired] == [r.custom_id for r in requests[2:]]
        assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in expired)
        assert follow(client, submit(client, requests).id)[1].status == "completed"  # batch 2 is not one to expire


def test_a_slow_batch_reports_growing_counts_and_can_be_cancelled():
    requests = teacher_requests(10)
    with batch_teacher(delay_s=30) as (client, _):
        batch = submit(client, requests)
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "in_progress" and batch.request_counts.total == 10
        assert batch.request_counts.completed < 10
        batch = client.batches.cancel(batch.id)
        assert batch.status == "cancelling" and batch.cancelling_at is not None
        seen, batch = follow(client, batch.id)
        assert seen == ["cancelled"]
        answered, cancelled = rows(client, batch.output_file_id), rows(client, batch.error_file_id)
        assert len(answered) + len(cancelled) == 10 and batch.request_counts.failed == len(cancelled) > 0
        assert all(r["error"]["code"] == "batch_cancelled" for r in cancelled)
        assert client.batches.cancel(batch.id).status == "cancelled"
    with batch_teacher(delay_s=0.5) as (client, _):
        counts = []
        batch = submit(client, requests)
        while batch.status not in TERMINAL:
            batch = client.batches.retrieve(batch.id)
            counts.append(batch.request_counts.completed)
            time.sleep(0.05)
        assert counts == sorted(counts) and counts[0] < 10 and counts[-1] == 10
        with pytest.raises(openai.BadRequestError, match="status is completed"):
            client.batches.cancel(batch.id)


def test_files_and_batches_are_kept_in_a_state_directory_across_a_restart(tmp_path):
    requests = teacher_requests(4)
    with batch_teacher(delay_s=60, state_dir=tmp_path) as (client, _):
        first = submit(client, requests)
        assert client.batches.retrieve(first.id).status == "in_progress"
    with batch_teacher(state_dir=tmp_path) as (client, created):
        seen, batch = follow(client, first.id)
        assert batch.status == "completed" and len(rows(client, batch.output_file_id)) == 4
        assert client.files.retrieve(first.input_file_id).bytes > 0
        second = submit(client, requests)
        assert len(created) == 1 and "number=2" in created[0]  # the count goes on where it stopped
        assert [b.id for b in client.batches.list()] == [second.id, first.id]


def test_uploads_and_batch_creation_are_checked():
    requests = teacher_requests(3)
    with batch_teacher(max_bytes=2000, max_requests=2) as (client, _):
        with pytest.raises(openai.BadRequestError, match="at most 2000 bytes"):
            upload(client, requests)
        with pytest.raises(openai.BadRequestError, match="purpose"):
            client.files.create(file=("a.jsonl", b"{}\n"), purpose="nonsense")
        small = [BatchRequest(f"r{i}", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}) for i in range(3)]
        file = upload(client, small)
        for wrong in ({"endpoint": "/v1/embeddings"}, {"completion_window": "1h"}, {"input_file_id": "file-missing"}):
            arguments = {"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **wrong}
            with pytest.raises(openai.BadRequestError):
                client.batches.create(**arguments)
        too_many = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        _, batch = follow(client, too_many.id)
        assert batch.status == "failed" and batch.errors.data[0].code == "too_many_requests"
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_missing")
        assert client.files.delete(file.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.content(file.id)


def test_lists_are_paged_as_the_sdk_expects():
    small = [BatchRequest("r0", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})]
    with batch_teacher() as (client, _):
        ids = [submit(client, small).id for _ in range(5)]
        page = client.batches.list(limit=2)
        assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
        assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK follows the pages
        assert len(client.files.list(purpose="batch").data) == 5


CLIENT = """
import json, sys
from openai import OpenAI
from vinstruct.generate.batch_api import BatchRequest, BatchRun
url, requests_path, run_dir, out_path = sys.argv[1:]
requests = [BatchRequest(r["custom_id"], r["body"]) for r in map(json.loads, open(requests_path))]
run = BatchRun(OpenAI(base_url=url, api_key="unused"), run_dir, max_requests=3, poll_s=0.05, poll_max_s=0.2,
               progress=False)
json.dump({r.custom_id: r.content for r in run.run(requests)}, open(out_path, "w"))
"""


def test_a_client_killed_while_polling_reuses_its_batches_counted_from_the_teachers_log(tmp_path):
    import subprocess
    import sys

    from eval_support import free_port
    from serving import wait_for_http

    requests = teacher_requests(6)
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps({"custom_id": r.custom_id, "body": r.body}) + "\n"
                                                     for r in requests))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    teacher = subprocess.Popen([sys.executable, "-m", "vinstruct", "teacher", "--port", str(port), "--batch-delay", "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client_args = [sys.executable, "-c", CLIENT, url, str(tmp_path / "requests.jsonl"), str(tmp_path / "run"),
                   str(tmp_path / "out.json")]
    try:
        wait_for_http(url + "/models", teacher)
        first = subprocess.Popen(client_args)
        state = tmp_path / "run" / "batch_state.json"
        deadline = time.monotonic() + 60
        while not (state.is_file() and [p["status"] for p in json.loads(state.read_text())["parts"]] == ["in_progress"] * 2):
            assert first.poll() is None and time.monotonic() < deadline, "the client ended before its batches ran"
            time.sleep(0.05)
        first.kill()  # SIGKILL: no cleanup, no final state write
        first.wait()
        assert subprocess.run(client_args, timeout=120).returncode == 0
    finally:
        teacher.terminate()
        log = teacher.communicate(timeout=20)[0]
    assert len([line for line in log.splitlines() if line.startswith("batch created:")]) == 2
    answers = json.loads((tmp_path / "out.json").read_text())
    with batch_teacher() as (client, _):
        assert answers == {r.custom_id: client.chat.completions.create(**r.body).choices[0].message.content
                           for r in requests}


@pytest.mark.parametrize("options, message", [
    (["--batch-expire", "first"], "--batch-expire: expected batch numbers from 1"),
    (["--batch-fail-rows", "1.5"], "--batch-fail-rows (fail_rows) must be between 0 and 1"),
    (["--batch-delay", "-1"], "--batch-delay (delay_s) must be at least 0"),
])
def test_teacher_batch_options_are_checked_before_it_serves(options, message, capsys):
    from vinstruct.cli import main

    assert main(["teacher", "--port", "0", *options]) == 1
    assert message in capsys.readouterr().err
