"""Chat templates: LLaVA-JSON conversations -> text with the assistant replies marked.

A template renders a conversation into text *segments*, each flagged as target
(assistant reply, including its end token) or context. Tokenization then runs
once over the whole text with character offsets, so the tokens are exactly those
of the full prompt; a token that straddles a reply boundary raises instead of
silently training on the wrong tokens.

Templates (facts needed to talk to existing checkpoints):
  plain      stage-1 alignment: image then caption, "\n"-terminated; the instruction is dropped
  vicuna_v1  "<system> USER: q ASSISTANT: a</s>USER: ..." (LLaVA v1 / v1.5)
  llama_2    "[INST] <<SYS>>\n<system>\n<</SYS>>\n\nq [/INST] a </s><s>[INST] q2 [/INST] ..."
  chatml     "<|im_start|>role\ncontent<|im_end|>\n" blocks (Qwen, MPT)
  mistral    "[INST] q [/INST] a </s>[INST] ..." without a system prompt
"""

from __future__ import annotations

from collections.abc import Sequence
from abc import ABC, abstractmethod
from dataclasses import dataclass

from vinstruct.errors import VinstructError

IMAGE_MARKER = "<image>"

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
CHATML_SYSTEM = "You are a helpful assistant."

Segment = tuple[str, bool]  # (text, is_target)


@dataclass(frozen=True)
class Template(ABC):
    name: str
    system: str

    @abstractmethod
    def render(self, turns: Sequence[tuple[str, str]], system: str | None, eos: str) -> list[Segment]:
        """Segments for `turns` ((role, text) pairs, role "human" or "gpt").

        A human turn renders together with the assistant prefix that follows it, so
        rendering a conversation that ends with a human turn yields the generation prompt.
        """

    def generation_prompt(self, turns: Sequence[tuple[str, str]], system: str | None, eos: str) -> str:
        """Text for inference: the conversation so far (ending with a user turn), up to where
        the assistant speaks next."""
        return "".join(seg for seg, _ in self.render(turns, system, eos))

    def stop_strings(self, eos: str) -> list[str]:
        return [eos]


class PlainTemplate(Template):
    def render(self, turns, system, eos):
        # Stage 1 keeps only the image and the caption: the instruction text is dropped.
        if len(turns) > 2:
            raise ValueError("the plain template takes one image-caption exchange, got a multi-turn conversation")
        first_user = turns[0][1]
        images = IMAGE_MARKER * first_user.count(IMAGE_MARKER)
        segments: list[Segment] = [(images, False)]
        for role, text in turns[1:]:
            if role == "gpt":
                segments.append((text + "\n", True))
        return segments

    def stop_strings(self, eos):
        return ["\n", eos]


class VicunaTemplate(Template):
    def render(self, turns, system, eos):
        segments: list[Segment] = [((system if system is not None else self.system) + " ", False)]
        for role, text in turns:
            if role == "human":
                segments.append((f"USER: {text} ASSISTANT:", False))
            else:
                segments.append((" ", False))
                segments.append((text + eos, True))
        return segments


class Llama2Template(Template):
    # Between turns the official format starts a new "<s>[INST]" block; Mistral uses none.
    turn_separator = "<s>"

    def render(self, turns, system, eos):
        system = self.system if system is None else system
        segments: list[Segment] = []
        for index, (role, text) in enumerate(turns):
            if role == "human":
                if index == 0 and system:
                    text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{text}"
                lead = "" if index == 0 else self.turn_separator
                segments.append((f"{lead}[INST] {text} [/INST]", False))
            else:
                segments.append((" ", False))
                segments.append((f"{text} {eos}", True))
        return segments


class MistralTemplate(Llama2Template):
    turn_separator = ""


class ChatMLTemplate(Template):
    END = "<|im_end|>"

    def render(self, turns, system, eos):
        system = self.system if system is None else system
        segments: list[Segment] = []
        if system:
            segments.append((f"<|im_start|>system\n{system}{self.END}\n", False))
        for role, text in turns:
            if role == "human":
                segments.append((f"<|im_start|>user\n{text}{self.END}\n<|im_start|>assistant\n", False))
            else:
                segments.append((f"{text}{self.END}", True))
                segments.append(("\n", False))
        return segments

    def stop_strings(self, eos):
        return [self.END, eos]


TEMPLATES: dict[str, Template] = {
    "plain": PlainTemplate("plain", ""),
    "vicuna_v1": VicunaTemplate("vicuna_v1", VICUNA_SYSTEM),
    "llama_2": Llama2Template("llama_2", LLAMA_2_SYSTEM),
    "mistral": MistralTemplate("mistral", ""),
    "chatml": ChatMLTemplate("chatml", CHATML_SYSTEM),
}


# New models are built with this template unless told otherwise (LLaVA v1 / v1.5's own).
DEFAULT_TEMPLATE = "vicuna_v1"


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise VinstructError(f"unknown chat template {name!r}; expected one of {', '.join(TEMPLATES)}") from None


HINT_POSITIONS = ("after", "before")


def with_hint(question: str, hint: str, position: str = "after") -> str:
    """The question with an answer-format hint ("Answer the question using a single word or phrase.") on
    its own line: after it (LLaVA-1.5's training and evaluation files) or before it (the demo's VQA data,
    where the packed questions then share it; see world/vqa.py). An empty hint leaves the question as is."""
    if position not in HINT_POSITIONS:
        raise VinstructError(f"answer hint position must be one of {', '.join(HINT_POSITIONS)}, got {position!r}")
    if not hint.strip():
        return question
    return f"{hint}\n{question}" if position == "before" else f"{question}\n{hint}"
