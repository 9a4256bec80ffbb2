"""HTTP routes of the Batch API on the scripted teacher: `/v1/files` and `/v1/batches`.

Request and response shapes follow the OpenAI API (the `openai` SDK's `files` and `batches`
resources work unchanged); errors have the API's {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from vinstruct.errors import VinstructError
from vinstruct.generate.scripted.batches import COMPLETION_WINDOWS, ENDPOINTS, BatchOptions, BatchStore
from vinstruct.generate.scripted.files import UPLOAD_PURPOSES


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _page(items: list[dict], after: str | None, limit: int) -> dict:
    """One page of a cursor-paginated list (the SDK follows `has_more` and `after=<last id>`)."""
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    page = items[start:start + limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(items)}


def _limit(request: Request, default: int, most: int) -> int | JSONResponse:
    raw = request.query_params.get("limit")
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        return _error(400, f"'limit' must be a whole number from 1 to {most}, got {raw!r}", "limit")
    return value


def add_batch_routes(app: FastAPI, answer, options: BatchOptions) -> BatchStore:
    """Serve files and batches on `app`; `answer(body) -> (status, json)` answers one chat request."""
    store = BatchStore(options, answer)
    app.state.batches = store

    @app.post("/v1/files")
    async def upload_file(request: Request):
        form = await request.form()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or isinstance(upload, str):
            return _error(400, "the upload needs a 'file' part (multipart/form-data)", "file")
        if purpose not in UPLOAD_PURPOSES:
            return _error(400, f"'purpose' must be one of {', '.join(UPLOAD_PURPOSES)}, got {purpose!r}", "purpose")
        content = await upload.read()
        if purpose == "batch":
            if not (upload.filename or "").endswith(".jsonl"):
                return _error(400, f"a batch input file must be a .jsonl file, got {upload.filename!r}", "file")
            if len(content) > options.max_bytes:
                return _error(400, f"a batch input file may hold at most {options.max_bytes} bytes, "
                                   f"this one holds {len(content)}", "file")
        record = store.files.add(content, upload.filename or "upload", purpose)
        store.save()
        return record

    @app.get("/v1/files")
    async def list_files(request: Request):
        limit = _limit(request, 10_000, 10_000)
        if isinstance(limit, JSONResponse):
            return limit
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            return _error(400, f"'order' must be asc or desc, got {order!r}", "order")
        files = store.files.listing(request.query_params.get("purpose"), order)
        return _page(files, request.query_params.get("after"), limit)

    def _no_file(file_id: str) -> JSONResponse:
        return _error(404, f"no such file: {file_id}", "file_id")

    @app.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str):
        record = store.files.get(file_id)
        return record if record is not None else _no_file(file_id)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str):
        if store.files.get(file_id) is None:
            return _no_file(file_id)
        return Response(store.files.content(file_id), media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str):
        if not store.files.delete(file_id):
            return _no_file(file_id)
        store.save()
        return {"id": file_id, "object": "file", "deleted": True}

    @app.post("/v1/batches")
    async def create_batch(request: Request):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        file_id, endpoint, window = body.get("input_file_id"), body.get("endpoint"), body.get("completion_window")
        if endpoint not in ENDPOINTS:
            return _error(400, f"'endpoint' must be one of {', '.join(ENDPOINTS)} here, got {endpoint!r}", "endpoint")
        if window not in COMPLETION_WINDOWS:
            return _error(400, f"'completion_window' must be one of {', '.join(COMPLETION_WINDOWS)}, got {window!r}",
                          "completion_window")
        record = store.files.get(file_id) if isinstance(file_id, str) else None
        if record is None:
            return _error(400, f"'input_file_id' names no uploaded file: {file_id!r}", "input_file_id")
        if record["purpose"] != "batch":
            return _error(400, f"file {file_id} was uploaded with purpose {record['purpose']!r}, not 'batch'",
                          "input_file_id")
        metadata = body.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16
                                         and all(isinstance(v, str) for v in metadata.values())):
            return _error(400, "'metadata' must be an object of at most 16 string values", "metadata")
        return store.create(file_id, endpoint, window, metadata)

    @app.get("/v1/batches")
    async def list_batches(request: Request):
        limit = _limit(request, 20, 100)
        if isinstance(limit, JSONResponse):
            return limit
        return _page([store.look(batch_id) for batch_id in store.listing()], request.query_params.get("after"), limit)

    @app.get("/v1/batches/{batch_id}")
    async def retrieve_batch(batch_id: str):
        batch = store.look(batch_id)
        return batch if batch is not None else _error(404, f"no such batch: {batch_id}", "batch_id")

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str):
        if batch_id not in store.jobs:
            return _error(404, f"no such batch: {batch_id}", "batch_id")
        try:
            return store.cancel(batch_id)
        except VinstructError as err:
            return _error(400, str(err), "batch_id")

    return store
