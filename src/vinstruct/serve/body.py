"""Request bodies as JSON, with their limits checked before and after parsing.

Before parsing: the size (413) and the nesting depth (400). Python's parser recurses once per
level, so a body of 100,000 brackets would otherwise end in a RecursionError; the depth is
measured on the raw bytes with array operations, which costs milliseconds even for the largest
body allowed. After parsing: every string must be valid Unicode text. JSON's `\\ud800` escapes
can spell lone UTF-16 surrogates, which no UTF-8 encoder (the tokenizer's included) accepts.
"""

from __future__ import annotations

import json
import re

import numpy as np

from vinstruct.serve.protocol import ApiError

MAX_DEPTH = 32  # a chat request needs 6 levels (body, messages, message, content, part, image_url)

# A JSON string literal, escapes included; unrolled so that long base64 strings match in linear time.
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
SURROGATE = re.compile("[\ud800-\udfff]")


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings not counted)."""
    structure = np.frombuffer(JSON_STRING.sub(b'""', data), np.uint8)
    opens = (structure == ord("[")) | (structure == ord("{"))
    closes = (structure == ord("]")) | (structure == ord("}"))
    return int((opens.astype(np.int32) - closes).cumsum().max(initial=0))


def lone_surrogate_at(value, path: str = "body") -> str | None:
    """The path of the first string (key or value) in parsed JSON that holds a lone surrogate, if any."""
    pending = [(value, path)]
    while pending:  # iterative: the depth is bounded already, but a walk need not rely on it
        item, where = pending.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return where
        elif isinstance(item, list):
            pending.extend((x, f"{where}[{i}]") for i, x in enumerate(item))
        elif isinstance(item, dict):
            for key, x in item.items():
                if SURROGATE.search(key):
                    return f"{where} (a key)"
                pending.append((x, f"{where}.{key}" if where != "body" else key))
    return None


def parse_json_body(data: bytes, max_depth: int = MAX_DEPTH):
    """Parse a request body, or raise a 400 ApiError saying what is wrong with it."""
    depth = nesting_depth(data)
    if depth > max_depth:
        raise ApiError(400, f"the request body nests arrays/objects {depth} levels deep; the limit is {max_depth}",
                       code="invalid_json")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as err:  # ValueError: bad syntax, bad UTF-8, a 5000-digit number
        raise ApiError(400, f"the request body is not valid JSON ({err})", code="invalid_json") from None
    where = lone_surrogate_at(body)
    if where is not None:
        raise ApiError(400, f"{where}: the text contains a lone UTF-16 surrogate (an escape such as \\ud800 "
                       "without its pair), which is not a character; send valid Unicode", where, "invalid_text")
    return body
