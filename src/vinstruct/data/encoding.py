"""Conversation -> (input_ids, labels), with image markers expanded to feature slots.

The text rendered by a template is tokenized once with character offsets; a
token is a target when its non-space characters are all inside an assistant
reply, context when none are, and an error when it mixes both (the masked and
the full tokenization would disagree). Each `<image>` becomes
`num_image_tokens` copies of the image token id, always masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vinstruct.data.templates import DEFAULT_TEMPLATE, IMAGE_MARKER, Segment, get_template
from vinstruct.errors import BadSampleError, VinstructError

IGNORE_INDEX = -100


@dataclass
class EncodingSpec:
    """Everything about a model that turns text into its input ids."""

    tokenizer: object
    image_token_id: int
    num_image_tokens: int
    template: str = DEFAULT_TEMPLATE
    tokenization: str = "joined"  # or "chunks" (official LLaVA), see model/config.py
    use_im_start_end: bool = False
    max_length: int = 2048
    im_start: str = "<im_start>"
    im_end: str = "<im_end>"

    @classmethod
    def for_model(cls, model, template: str | None = None, max_length: int | None = None) -> "EncodingSpec":
        c = model.config
        return cls(
            tokenizer=model.tokenizer,
            image_token_id=c.image_token_id,
            num_image_tokens=model.num_image_tokens,
            template=template or c.template,
            tokenization=c.tokenization,
            use_im_start_end=c.use_im_start_end,
            max_length=max_length or c.model_max_length,
        )


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    num_images: int
    # Independent turns (see encode_independent_turns): per token, 0 for the shared prefix and k for
    # exchange k; and the position each token takes when its exchange is read on its own.
    segments: list[int] | None = None
    positions: list[int] | None = None

    @property
    def num_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def _char_targets(segments: Sequence[Segment]) -> tuple[str, list[bool]]:
    text, flags = "", []
    for seg, is_target in segments:
        text += seg
        flags += [is_target] * len(seg)
    return text, flags


def _label_token(text: str, flags: list[bool], start: int, end: int, sample_id) -> bool:
    """Whether the token covering text[start:end] is a target; raise if it straddles a boundary."""
    if end <= start:
        return False
    solid = [flags[i] for i in range(start, end) if not text[i].isspace()]
    if not solid:
        return all(flags[start:end])
    if all(solid):
        return True
    if not any(solid):
        return False
    raise BadSampleError(
        sample_id,
        f"tokenization mismatch: token {text[start:end]!r} spans both an assistant reply and the prompt "
        "(masked and full tokenization disagree; check the template and tokenizer)",
    )


def _tokenize_piece(tokenizer, text: str, with_bos: bool):
    out = tokenizer(text, add_special_tokens=with_bos, return_offsets_mapping=True)
    return out["input_ids"], out["offset_mapping"]


def encode_text(spec: EncodingSpec, segments: Sequence[Segment], sample_id=None) -> Encoded:
    """Tokenize rendered segments into ids and labels, expanding image markers."""
    text, flags = _char_targets(segments)
    if spec.use_im_start_end:
        # Rewrite markers as <im_start><image><im_end>; the wrappers are context tokens.
        wrapped = spec.im_start + IMAGE_MARKER + spec.im_end
        new_text, new_flags, i = "", [], 0
        while i < len(text):
            if text.startswith(IMAGE_MARKER, i):
                new_text += wrapped
                new_flags += [False] * len(wrapped)
                i += len(IMAGE_MARKER)
            else:
                new_text += text[i]
                new_flags.append(flags[i])
                i += 1
        text, flags = new_text, new_flags

    # Split at image markers: "joined" tokenizes the text pieces as if they were one string
    # with the marker being a special token; "chunks" tokenizes each piece on its own.
    pieces = text.split(IMAGE_MARKER)
    ids: list[int] = []
    labels: list[int] = []
    image_slot = [spec.image_token_id] * spec.num_image_tokens
    if spec.tokenization == "joined":
        piece_ids, offsets = _tokenize_piece(spec.tokenizer, text, True)
        marker_id = spec.tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
        for token_id, (start, end) in zip(piece_ids, offsets):
            if token_id == marker_id and text[start:end] == IMAGE_MARKER:
                ids += image_slot
                labels += [IGNORE_INDEX] * len(image_slot)
                continue
            ids.append(token_id)
            labels.append(token_id if _label_token(text, flags, start, end, sample_id) else IGNORE_INDEX)
    else:
        base = 0
        for index, piece in enumerate(pieces):
            if index > 0:
                ids += image_slot
                labels += [IGNORE_INDEX] * len(image_slot)
            piece_ids, offsets = _tokenize_piece(spec.tokenizer, piece, index == 0)
            for token_id, (start, end) in zip(piece_ids, offsets):
                ids.append(token_id)
                target = _label_token(text, flags, base + start, base + end, sample_id)
                labels.append(token_id if target else IGNORE_INDEX)
            base += len(piece) + len(IMAGE_MARKER)
    return Encoded(ids, labels, len(pieces) - 1)


def truncate(encoded: Encoded, spec: EncodingSpec, sample_id=None) -> Encoded:
    """Cut to max_length, never through an image's feature slots."""
    if len(encoded.input_ids) <= spec.max_length:
        return encoded
    image_positions = [i for i, t in enumerate(encoded.input_ids) if t == spec.image_token_id]
    if image_positions and image_positions[-1] >= spec.max_length:
        raise BadSampleError(
            sample_id,
            f"cannot fit its image: image features end at token {image_positions[-1] + 1} "
            f"but max_length is {spec.max_length}",
        )
    return Encoded(encoded.input_ids[: spec.max_length], encoded.labels[: spec.max_length], encoded.num_images)


def conversation_turns(conversations: Sequence[dict], sample_id=None) -> tuple[str | None, list[tuple[str, str]]]:
    """Validate LLaVA-JSON turns; return (system override, [(role, text), ...])."""
    if not isinstance(conversations, list) or not conversations:
        raise BadSampleError(sample_id, "empty conversation (expected a non-empty 'conversations' list)")
    system = None
    turns: list[tuple[str, str]] = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise BadSampleError(sample_id, f"turn {index}: expected an object with 'from' and 'value'")
        role, value = turn["from"], turn["value"]
        if not isinstance(value, str):
            raise BadSampleError(sample_id, f"turn {index}: 'value' must be a string")
        if role == "system" and index == 0:
            system = value
            continue
        role = {"user": "human", "assistant": "gpt"}.get(role, role)
        expected = "human" if len(turns) % 2 == 0 else "gpt"
        if role != expected:
            raise BadSampleError(sample_id, f"turn {index}: expected a {expected!r} turn, got {turn['from']!r}")
        if role == "gpt" and IMAGE_MARKER in value:
            raise BadSampleError(sample_id, f"turn {index}: <image> in an assistant ('gpt') turn")
        turns.append((role, value))
    if not turns:
        raise BadSampleError(sample_id, "empty conversation (only a system turn)")
    return system, turns


def encode_conversation(
    spec: EncodingSpec, conversations: Sequence[dict], num_images: int, sample_id=None, truncate_long: bool = True
) -> Encoded:
    """Validate, render with the template, tokenize and (optionally) truncate one sample."""
    system, turns = conversation_turns(conversations, sample_id)
    markers = sum(text.count(IMAGE_MARKER) for _, text in turns)
    if markers != num_images:
        raise BadSampleError(
            sample_id,
            f"{markers} <image> marker(s) in the conversation but {num_images} image(s) given "
            "(expected exactly one <image> per image)",
        )
    template = get_template(spec.template)
    eos = spec.tokenizer.eos_token or ""
    try:
        segments = template.render(turns, system, eos)
    except ValueError as err:
        raise BadSampleError(sample_id, str(err)) from None
    encoded = encode_text(spec, segments, sample_id)
    if encoded.num_targets == 0 and any(role == "gpt" and text for role, text in turns):
        raise BadSampleError(sample_id, "no assistant tokens survived tokenization")
    return truncate(encoded, spec, sample_id) if truncate_long else encoded


def encode_prompt(spec: EncodingSpec, turns: Sequence[tuple[str, str]], system: str | None = None) -> list[int]:
    """Input ids for generation: the conversation up to the assistant's next reply."""
    if not turns or turns[-1][0] != "human":
        raise VinstructError("a generation prompt must end with a user turn")
    template = get_template(spec.template)
    eos = spec.tokenizer.eos_token or ""
    text = template.generation_prompt(list(turns), system, eos)
    return encode_text(spec, [(text, False)]).input_ids


def _with_image_prefix(first: str, text: str) -> str:
    """`text` with the image marker placed as in the first human turn (leading or trailing)."""
    if IMAGE_MARKER in text:
        return text
    head, _, tail = first.partition(IMAGE_MARKER)
    if not head.strip():  # marker first: "<image>\nQuestion"
        return head + IMAGE_MARKER + tail[: len(tail) - len(tail.lstrip())] + text
    return text + head[len(head.rstrip()):] + IMAGE_MARKER


def encode_independent_turns(spec: EncodingSpec, conversations: Sequence[dict], num_images: int,
                             sample_id=None) -> Encoded:
    """Several one-exchange conversations about the same image, packed into one sequence.

    Each exchange is encoded as if it were the first of its conversation (image, question,
    answer); the shared prefix (system line, image features) is kept once and every exchange
    is appended after it. `segments` and `positions` let the training step mask attention so
    that an exchange sees the prefix and itself only, at the positions it would have alone: the
    model learns each answer from the image, never from an earlier answer, at a fraction of the
    cost of one sample per question.
    """
    system, turns = conversation_turns(conversations, sample_id)
    if num_images != 1 or len(turns) % 2:
        raise BadSampleError(sample_id, "independent turns need exactly one image and question/answer pairs")
    first = turns[0][1]
    if first.count(IMAGE_MARKER) != 1:
        raise BadSampleError(sample_id, "independent turns: the first question must hold the one <image> marker")
    exchanges = []
    for k in range(0, len(turns), 2):
        question = turns[k][1] if k == 0 else _with_image_prefix(first, turns[k][1])
        if k and turns[k][1].count(IMAGE_MARKER):
            raise BadSampleError(sample_id, f"turn {k}: <image> outside the first question")
        exchange = [{"from": "human", "value": question}, {"from": "gpt", "value": turns[k + 1][1]}]
        if system is not None:
            exchange.insert(0, {"from": "system", "value": system})
        exchanges.append(encode_conversation(spec, exchange, 1, sample_id, truncate_long=False))
    shared = len(exchanges[0].input_ids)
    for other in exchanges[1:]:
        a, b = exchanges[0].input_ids, other.input_ids
        shared = min(shared, next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))))
    last_image = max(i for i, t in enumerate(exchanges[0].input_ids) if t == spec.image_token_id)
    if shared <= last_image:
        raise BadSampleError(sample_id, "independent turns: the exchanges do not share the image prefix")
    ids, labels = exchanges[0].input_ids[:shared], exchanges[0].labels[:shared]
    segments, positions = [0] * shared, list(range(shared))
    for k, exchange in enumerate(exchanges, start=1):
        rest = len(exchange.input_ids) - shared
        if len(ids) + rest > spec.max_length:
            break  # whole exchanges only
        ids += exchange.input_ids[shared:]
        labels += exchange.labels[shared:]
        segments += [k] * rest
        positions += range(shared, shared + rest)
    return Encoded(ids, labels, 1, segments, positions)
