"""Batch results: the rows of output and error files, and what the answered ones cost.

Output and error files hold one row per request: {"id", "custom_id", "response":
{"status_code", "request_id", "body"} | null, "error": {"code", "message"} | null}. A row is
answered when its status code is 200; every other row carries an error saying why not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vinstruct.errors import VinstructError
from vinstruct.endpoint.usage import cost_of

BATCH_DISCOUNT = 0.5  # batch requests cost half the online price at the providers that offer them


@dataclass(frozen=True)
class BatchResult:
    custom_id: str
    status_code: int | None  # None: the request never ran (expired, cancelled, its batch failed)
    body: dict | None  # the chat completion (200) or the error body the endpoint returned
    error: dict | None  # {"code", "message"} for every row that was not answered

    @property
    def ok(self) -> bool:
        return self.status_code == 200

    @property
    def content(self) -> str | None:
        """The reply text of an answered chat-completions row."""
        if not self.ok:
            return None
        return self.body["choices"][0]["message"]["content"]

    @property
    def tokens(self) -> tuple[int, int]:
        if not self.ok:
            return 0, 0
        usage = self.body.get("usage") or {}
        return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))


def parse_row(row: dict, where: str = "result row") -> BatchResult:
    """A row of an output or error file as a BatchResult."""
    try:
        custom_id = row["custom_id"]
        response = row.get("response")
        if response is None:
            error = row.get("error") or {"code": "unknown", "message": "no response and no error given"}
            return BatchResult(custom_id, None, None, {"code": error.get("code"), "message": error.get("message")})
        status, body = int(response["status_code"]), response.get("body")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise VinstructError(f"{where}: not a Batch API result row (custom_id, response, error)") from None
    if status == 200:
        return BatchResult(custom_id, status, body, None)
    detail = (body or {}).get("error") if isinstance(body, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    code = detail.get("code") if isinstance(detail.get("code"), str) else f"http_{status}"
    return BatchResult(custom_id, status, body, {"code": code, "message": detail.get("message") or f"HTTP {status}"})


def read_result_file(path: str | os.PathLike) -> Iterator[BatchResult]:
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                try:
                    row = json.loads(text)
                except json.JSONDecodeError:
                    raise VinstructError(f"{path}:{number}: invalid JSON in a batch result file") from None
                yield parse_row(row, f"{path}:{number}")


@dataclass(frozen=True)
class BatchCost:
    answered: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost: float  # at the batch price
    online_cost: float  # the same tokens at the online price
    discount: float

    def as_dict(self) -> dict:
        return {"answered": self.answered, "failed": self.failed, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": round(self.cost, 6),
                "online_cost": round(self.online_cost, 6), "batch_discount": self.discount}


def batch_cost(results: Iterable[BatchResult], price_in: float = 0.0, price_out: float = 0.0,
               discount: float = BATCH_DISCOUNT) -> BatchCost:
    """Tokens and money of answered rows; prices per 1M tokens online, `discount` the batch price's share."""
    if not 0 <= discount <= 1:
        raise VinstructError(f"batch discount must be between 0 and 1 (0.5 = half price), got {discount}")
    answered = failed = prompt = completion = 0
    for result in results:
        if result.ok:
            answered += 1
            p, c = result.tokens
            prompt, completion = prompt + p, completion + c
        else:
            failed += 1
    online = cost_of(prompt, completion, price_in, price_out)
    return BatchCost(answered, failed, prompt, completion, online * discount, online, discount)
