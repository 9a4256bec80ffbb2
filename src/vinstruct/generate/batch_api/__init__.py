"""Sending chat-completions requests through an OpenAI-compatible Batch API, resumably.

    requests.py  BatchRequest; JSONL input files split at 50,000 requests / 200 MB
    state.py     the run's state file (one phase at a time, written atomically)
    run.py       BatchRun: write, upload, create, poll (backoff, progress bar), download, results;
                 status and cancel
    retry.py     run_in_rounds: unanswered rows again in new batches; round_runs for status/cancel
    results.py   BatchResult rows; batch_cost at the batch discount (default 0.5)

Independent of the online client: it needs only an `openai.OpenAI` (its files and batches).
"""

from vinstruct.generate.batch_api.requests import (CHAT_ENDPOINT, MAX_BYTES, MAX_REQUESTS, BatchRequest,
                                                   read_request_file, split_lines, write_request_files)
from vinstruct.generate.batch_api.results import BATCH_DISCOUNT, BatchCost, BatchResult, batch_cost, parse_row
from vinstruct.generate.batch_api.retry import round_runs, run_in_rounds, worth_retrying
from vinstruct.generate.batch_api.run import TERMINAL, BatchRun, format_status
from vinstruct.generate.batch_api.state import STATE_NAME, Part, RunState

__all__ = ["BatchRequest", "BatchRun", "BatchResult", "BatchCost", "RunState", "Part", "run_in_rounds", "round_runs", "batch_cost",
           "format_status", "parse_row", "read_request_file", "split_lines", "write_request_files", "worth_retrying",
           "BATCH_DISCOUNT", "CHAT_ENDPOINT", "MAX_BYTES", "MAX_REQUESTS", "STATE_NAME", "TERMINAL"]
