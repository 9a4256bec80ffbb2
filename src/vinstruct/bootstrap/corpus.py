"""World text for the tokenizer and the language model.

Two kinds of documents, from one split's annotations:
- captions, all of one scene's in one document;
- chats in the Vicuna v1 template that later stages use: the first user turn
  starts with a complete description of the scene (where an image will stand
  later) and asks an exact question; further turns ask more. The LM so learns
  the chat format and how to answer from what it was told about a scene.
Only train (for training) and val (for held-out perplexity) are ever read here:
test answers never reach the LM.
"""

from __future__ import annotations

import numpy as np

from vinstruct.bootstrap.worlddata import WorldSplit
from vinstruct.data.templates import DEFAULT_TEMPLATE, get_template
from vinstruct.world.questions import CATEGORIES, Question, scene_questions

TURNS_PER_CHAT = 5


def caption_documents(split: WorldSplit) -> list[str]:
    """One document per scene: its captions, one per line, in a seeded order.

    Grouping them teaches the LM that later lines about a scene repeat what earlier ones said
    (in-context copying). Stage 1 leans on exactly that skill: the frozen LM must turn the projected
    image tokens in front of a caption into that caption's words."""
    docs = []
    for index, captions in enumerate(split.captions):
        order = np.random.default_rng([7, index]).permutation(len(captions))
        docs.append("\n".join(captions[i] for i in order))
    return docs


def chat_documents(split: WorldSplit, eos: str, seed: int, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Vicuna-format chats about each scene: description + question, then more questions."""
    chat = get_template(template)
    docs = []
    for index, (objects, captions) in enumerate(zip(split.objects, split.captions)):
        rng = np.random.default_rng([seed, index])
        questions = scene_questions(objects, split.image_size, rng)
        order = rng.permutation(len(questions))
        # The two complete captions say everything the questions ask about.
        context = f"{captions[0]} {captions[1]}" if len(captions) > 1 else captions[0]
        for start in range(0, len(order), TURNS_PER_CHAT):
            turns = []
            for k, q_index in enumerate(order[start:start + TURNS_PER_CHAT]):
                question = questions[q_index]
                text = f"{context}\n{question.text}" if k == 0 else question.text
                turns += [("human", text), ("gpt", question.reply)]
            docs.append("".join(segment for segment, _ in chat.render(turns, None, eos)))
    return docs


def text_qa_questions(split: WorldSplit, seed: int, limit: int) -> list[tuple[str, Question]]:
    """(scene description, question) pairs, one question per scene, categories in turn: the quiz
    of how well an LM reads a described scene."""
    quiz = []
    for index, (objects, captions) in enumerate(zip(split.objects[:limit], split.captions[:limit])):
        rng = np.random.default_rng([seed, index])
        questions = scene_questions(objects, split.image_size, rng)
        wanted = CATEGORIES[index % len(CATEGORIES)]
        pool = [q for q in questions if q.category == wanted] or questions
        question = pool[int(rng.integers(len(pool)))]
        context = f"{captions[0]} {captions[1]}" if len(captions) > 1 else captions[0]
        quiz.append((context, question))
    return quiz


def text_qa_prompts(split: WorldSplit, eos: str, seed: int, limit: int,
                    template: str = DEFAULT_TEMPLATE) -> tuple[list[str], list[str], list[str]]:
    """Single-question chat prompts (description + question) with their answers and categories."""
    chat = get_template(template)
    quiz = text_qa_questions(split, seed, limit)
    prompts = [chat.generation_prompt([("human", f"{context}\n{q.text}")], None, eos) for context, q in quiz]
    return prompts, [q.answer for _, q in quiz], [q.category for _, q in quiz]
