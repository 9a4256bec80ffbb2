"""A multi-turn conversation with images, as the terminal chat and the web UI keep it.

Turns are (role, text) pairs with `<image>` markers where images stand, in
LLaVA-JSON roles ("human", "gpt"); images are kept in marker order. When the
prompt outgrows the model's context, the oldest exchanges are dropped whole,
with their images: an image is either entirely in the prompt or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from vinstruct.data.encoding import EncodingSpec, encode_prompt
from vinstruct.data.templates import IMAGE_MARKER
from vinstruct.errors import VinstructError
from vinstruct.serve.engine import ContextLengthError


def prompt_ids(spec: EncodingSpec, turns, system: str | None = None) -> list[int]:
    """encode_prompt, with a template's refusal (e.g. `plain` takes one exchange) as a VinstructError."""
    try:
        return encode_prompt(spec, turns, system)
    except ValueError as err:
        raise VinstructError(f"chat template {spec.template!r}: {err}") from None


@dataclass
class Conversation:
    system: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)  # where each image came from (for saving)

    def add_user(self, text: str, images: Sequence[Image.Image] = (), names: Sequence[str] = ()) -> None:
        """A user message; new images go first, one `<image>` line each, as in LLaVA's data."""
        if IMAGE_MARKER in text:
            text = text.replace(IMAGE_MARKER, "<img>")  # typed markers are text, not image slots
        markers = "".join(IMAGE_MARKER + "\n" for _ in images)
        self.turns.append(("human", markers + text))
        self.images += list(images)
        self.image_names += list(names) or [f"image-{len(self.image_names) + i + 1}.png" for i in range(len(images))]

    def undo_user(self) -> None:
        """Take back the last user message and its images (it could not be sent)."""
        if self.turns and self.turns[-1][0] == "human":
            n_images = self.turns.pop()[1].count(IMAGE_MARKER)
            if n_images:
                del self.images[-n_images:]
                del self.image_names[-n_images:]

    def add_reply(self, text: str) -> None:
        self.turns.append(("gpt", text))

    def pop_exchange(self) -> str | None:
        """Remove the last assistant reply (to regenerate it); return the user text it answered."""
        if self.turns and self.turns[-1][0] == "gpt":
            self.turns.pop()
        return self.turns[-1][1] if self.turns else None

    def reset(self) -> None:
        self.turns.clear()
        self.images.clear()
        self.image_names.clear()

    def _drop_oldest_exchange(self) -> None:
        dropped = self.turns[:2] if len(self.turns) > 1 and self.turns[1][0] == "gpt" else self.turns[:1]
        n_images = sum(text.count(IMAGE_MARKER) for _, text in dropped)
        del self.turns[: len(dropped)]
        del self.images[:n_images]
        del self.image_names[:n_images]

    def prompt(self, spec: EncodingSpec, max_new_tokens: int, context_length: int) -> tuple[list[int], int]:
        """Prompt ids for the next reply, dropping old exchanges until it fits; returns (ids, exchanges
        dropped)."""
        dropped = 0
        while True:
            ids = prompt_ids(spec, self.turns, self.system)
            if len(ids) + max_new_tokens <= context_length:
                return ids, dropped
            if len(self.turns) <= 1:
                raise ContextLengthError(
                    f"the message needs {len(ids)} tokens plus {max_new_tokens} for the reply, "
                    f"more than the model's context of {context_length}"
                )
            self._drop_oldest_exchange()
            dropped += 1

    def to_llava(self, sample_id: str = "chat") -> dict:
        """The conversation as one LLaVA-JSON sample."""
        sample: dict = {"id": sample_id}
        if len(self.image_names) == 1:
            sample["image"] = self.image_names[0]
        elif self.image_names:
            sample["image"] = list(self.image_names)
        conversations = [{"from": "system", "value": self.system}] if self.system is not None else []
        conversations += [{"from": role, "value": text} for role, text in self.turns]
        sample["conversations"] = conversations
        return sample
