"""Jinja chat templates that render exactly what our templates (data/templates.py) render.

Exported llava-hf directories carry one, so that `processor.apply_chat_template` and
vLLM's OpenAI-compatible server build the same prompt text our own code builds.
A message's content may be a string (with `<image>` markers where images go) or a
list of parts in the OpenAI / transformers style: image parts become `<image>\\n`
ahead of the text, the layout LLaVA's training data uses.
"""

from __future__ import annotations

from vinstruct.data.templates import get_template
from vinstruct.errors import VinstructError

# Newlines are written as expressions: transformers renders chat templates with trim_blocks,
# which would eat a literal newline that follows a block tag.
NL = "{{ '\\n' }}"

# The text of `message` in either content style.
_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] if part['type'] in ('image', 'image_url') %}<image>" + NL + "{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
)


def _system_prelude(default: str) -> str:
    """Sets ns.system from a leading system message, else the template's own system line."""
    return (
        "{% set ns = namespace(system=" + repr(default) + ") %}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% if messages[0]['content'] is string %}{% set ns.system = messages[0]['content'] %}"
        "{% else %}{% set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text') "
        "| map(attribute='text') | join('') %}{% endif %}"
        "{% endif %}"
    )


_TURNS = "{% for message in messages if message['role'] != 'system' %}"


def _vicuna(system: str) -> str:
    return (
        _system_prelude(system) + "{{ ns.system }} " + _TURNS
        + "{% if message['role'] == 'user' %}USER: " + _CONTENT + " ASSISTANT:"
        + "{% else %} " + _CONTENT + "{{ eos_token }}{% endif %}{% endfor %}"
    )


def _llama_2(system: str, separator: str) -> str:
    return (
        _system_prelude(system) + _TURNS
        + "{% if message['role'] == 'user' %}"
        + "{% if not loop.first %}" + separator + "{% endif %}[INST] "
        + "{% if loop.first and ns.system %}<<SYS>>" + NL + "{{ ns.system }}" + NL + "<</SYS>>" + NL + NL
        + "{% endif %}" + _CONTENT + " [/INST]"
        + "{% else %} " + _CONTENT + " {{ eos_token }}{% endif %}{% endfor %}"
    )


def _chatml(system: str) -> str:
    return (
        _system_prelude(system)
        + "{% if ns.system %}<|im_start|>system" + NL + "{{ ns.system }}<|im_end|>" + NL + "{% endif %}" + _TURNS
        + "{% if message['role'] == 'user' %}<|im_start|>user" + NL + _CONTENT
        + "<|im_end|>" + NL + "<|im_start|>assistant" + NL
        + "{% else %}" + _CONTENT + "<|im_end|>" + NL + "{% endif %}{% endfor %}"
    )


def _plain() -> str:
    # Stage-1 format: only the first user turn's images, then each reply and a newline.
    return (
        _TURNS
        + "{% if loop.first %}"
        + "{% if message['content'] is string %}{{ '<image>' * message['content'].count('<image>') }}"
        + "{% else %}{% for part in message['content'] if part['type'] in ('image', 'image_url') %}"
        + "<image>{% endfor %}{% endif %}"
        + "{% elif message['role'] == 'assistant' %}" + _CONTENT + NL + "{% endif %}{% endfor %}"
    )


def jinja_chat_template(name: str) -> str:
    """The Jinja chat template equivalent to our template `name`."""
    template = get_template(name)
    builders = {
        "vicuna_v1": lambda: _vicuna(template.system),
        "llama_2": lambda: _llama_2(template.system, "<s>"),
        "mistral": lambda: _llama_2(template.system, ""),
        "chatml": lambda: _chatml(template.system),
        "plain": _plain,
    }
    if name not in builders:
        raise VinstructError(
            f"chat template {name!r} has no Jinja equivalent for export; expected one of {', '.join(builders)}"
        )
    return builders[name]()

