"""Checking a Batch API input file the way the service does before it runs anything.

Each line must be a JSON object {"custom_id", "method": "POST", "url", "body"} whose url is the
batch's endpoint, with custom_ids unique in the file and one model for the whole file. Any
problem fails the whole batch (status "failed", its `errors` list naming code, line and param);
problems inside a request's body are not checked here: they become that row's error later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class InputRequest:
    line: int
    custom_id: str
    body: dict


def _problem(code: str, line: int | None, message: str, param: str | None = None) -> dict:
    return {"code": code, "line": line, "message": message, "param": param}


def _check_line(number: int, text: str, endpoint: str) -> tuple[InputRequest | None, dict | None]:
    try:
        row = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, _problem("invalid_json_line", number, f"line {number} is not valid JSON")
    if not isinstance(row, dict):
        return None, _problem("invalid_json_line", number, f"line {number} must be a JSON object")
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return None, _problem("missing_required_parameter", number, f"line {number} needs a non-empty string 'custom_id'",
                              "custom_id")
    if row.get("method") != "POST":
        return None, _problem("invalid_request", number, f"line {number}: 'method' must be \"POST\"", "method")
    if row.get("url") != endpoint:
        return None, _problem("invalid_url", number,
                              f"line {number}: 'url' is {row.get('url')!r}, but this batch's endpoint is {endpoint}", "url")
    if not isinstance(row.get("body"), dict):
        return None, _problem("invalid_request", number, f"line {number}: 'body' must be a JSON object", "body")
    return InputRequest(number, custom_id, row["body"]), None


def check_input(content: bytes, endpoint: str, max_requests: int) -> tuple[list[InputRequest], list[dict]]:
    """(requests, problems): the requests of a valid file, or the problems that fail the batch."""
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return [], [_problem("invalid_file", None, "the input file is not UTF-8 text")]
    requests: list[InputRequest] = []
    problems: list[dict] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        request, problem = _check_line(number, text, endpoint)
        if problem is None and request.custom_id in seen:
            problem = _problem("duplicate_custom_id", number,
                               f"line {number}: custom_id {request.custom_id!r} appears twice in the file", "custom_id")
        if problem is not None:
            problems.append(problem)
            continue
        seen.add(request.custom_id)
        models.add(str(request.body.get("model")))
        requests.append(request)
    if not problems and not requests:
        problems.append(_problem("empty_file", None, "the input file holds no requests"))
    if len(requests) > max_requests:
        problems.append(_problem("too_many_requests", None,
                                 f"the input file holds {len(requests)} requests; a batch takes at most {max_requests}"))
    if len(models) > 1:
        problems.append(_problem("mismatched_model", None,
                                 f"all requests of a batch must name one model, found {', '.join(sorted(models))}", "model"))
    return requests, problems
