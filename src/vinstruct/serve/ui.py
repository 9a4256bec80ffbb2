"""The web UI (Gradio): upload an image, chat about it with streaming replies.

One process: Gradio's server calls the shared engine directly, so several
browser tabs are batched together like API clients. Each tab keeps its own
Conversation in a `gr.State`; an image is sent with the first message after it
is uploaded (or picked from the examples) and stays in the conversation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from vinstruct.data.images import open_image
from vinstruct.errors import VinstructError
from vinstruct.model.generation import SamplingParams
from vinstruct.serve.assistant import Assistant
from vinstruct.serve.conversation import Conversation

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def example_images(directory: str | Path | None, limit: int = 8) -> list[str]:
    """Images to offer as examples: a world's `images/test` split, or the images in `directory` itself."""
    if directory is None:
        return []
    root = Path(directory)
    for candidate in (root / "images" / "test", root / "images", root):
        if candidate.is_dir():
            found = sorted(p for p in candidate.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if found:
                return [str(p) for p in found[:limit]]
    raise VinstructError(f"--examples: no PNG/JPEG/WebP images in {root} (or its images/test)")


@dataclasses.dataclass
class TabState:
    """What one browser tab remembers: its conversation and which image it has already sent."""

    conversation: Conversation = dataclasses.field(default_factory=Conversation)
    sent_image: str | None = None  # digest of the last image attached to the conversation


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ChatController:
    """The UI's event handlers, kept apart from the layout so they read (and test) as plain Python."""

    def __init__(self, assistant: Assistant, system: str | None = None):
        self.assistant = assistant
        self.system = system

    def new_state(self) -> TabState:
        return TabState(Conversation(system=self.system))

    def send(self, text: str, image_path: str | None, history: list, state: TabState, temperature: float,
             top_p: float, max_tokens: int):
        """Add the user's message (and a newly chosen image), then stream the reply."""
        text = (text or "").strip()
        if not text:
            yield history, state, "Type a question first.", text
            return
        images, names = [], []
        if image_path and _digest(image_path) != state.sent_image:
            images, names = [open_image(image_path)], [os.path.basename(image_path)]
            state.sent_image = _digest(image_path)
            history = history + [{"role": "user", "content": {"path": image_path}}]
        state.conversation.add_user(text, images, names)
        history = history + [{"role": "user", "content": text}]
        yield from self._reply(history, state, temperature, top_p, max_tokens)

    def regenerate(self, history: list, state: TabState, temperature: float, top_p: float, max_tokens: int):
        """Drop the last reply and answer the same message again."""
        if state.conversation.pop_exchange() is None:
            yield history, state, "Nothing to regenerate yet.", ""
            return
        if history and history[-1]["role"] == "assistant":
            history = history[:-1]
        yield from self._reply(history, state, temperature, top_p, max_tokens)

    def clear(self):
        return [], self.new_state(), "Conversation cleared.", ""

    def _reply(self, history: list, state: TabState, temperature: float, top_p: float, max_tokens: int):
        params = SamplingParams(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p))
        conversation = state.conversation
        try:
            ids, dropped = conversation.prompt(self.assistant.spec, params.max_new_tokens,
                                               self.assistant.context_length)
        except VinstructError as err:
            conversation.undo_user()
            yield history, state, f"Error: {err}", ""
            return
        handle = self.assistant.submit(ids, conversation.images or None, params)
        reply = ""
        history = history + [{"role": "assistant", "content": ""}]
        try:
            for delta in handle:
                reply += delta
                history[-1] = {"role": "assistant", "content": reply}
                yield history, state, "Generating…", ""
        finally:
            handle.cancel()  # no-op when finished; stops the work if the tab went away mid-reply
        result = handle.result()
        conversation.add_reply(result.text)
        note = f" Dropped {dropped} old exchange(s) to fit the context." if dropped else ""
        status = (f"Done: {len(result.token_ids)} tokens ({result.finish_reason}); prompt {result.prompt_tokens} "
                  f"tokens, {handle.cached_tokens} reused from the previous turn.{note}")
        yield history, state, status, ""


def build_ui(assistant: Assistant, examples: list[str] = (), defaults: SamplingParams | None = None,
             system: str | None = None):
    """The Gradio Blocks app."""
    import gradio as gr

    defaults = defaults or SamplingParams(max_new_tokens=256, temperature=0.2)
    controller = ChatController(assistant, system)
    with gr.Blocks(title=f"vinstruct — {assistant.name}") as demo:
        gr.Markdown(f"## vinstruct · {assistant.name}\nUpload an image, then ask about it.")
        state = gr.State(controller.new_state())  # each tab gets its own deep copy
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Image", elem_id="image", height=260)
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Example images")
                temperature = gr.Slider(0.0, 1.5, value=defaults.temperature, step=0.05, label="Temperature",
                                        elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
                max_tokens = gr.Slider(1, max(1, min(1024, assistant.context_length // 2)), step=1,
                                       value=min(defaults.max_new_tokens, max(1, assistant.context_length // 2)),
                                       label="Max new tokens")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=420, render_markdown=False,
                                     feedback_options=None)
                question = gr.Textbox(label="Message", placeholder="Ask about the image…", elem_id="question",
                                      lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear", elem_id="clear")
                status = gr.Markdown("", elem_id="status")
        sliders = [temperature, top_p, max_tokens]
        outputs = [chatbot, state, status, question]
        for trigger in (send.click, question.submit):
            trigger(controller.send, [question, image, chatbot, state, *sliders], outputs)
        regenerate.click(controller.regenerate, [chatbot, state, *sliders], outputs)
        clear.click(controller.clear, None, outputs)
        chatbot.clear(controller.clear, None, outputs)  # the chat panel's own trash button
    return demo


def launch_ui(demo, host: str, port: int | None, banner=None) -> None:
    """Serve the UI until interrupted; `banner(url)` is called once it is up."""
    import gradio as gr

    # System fonts: the page must not reach out to font servers (it may run offline).
    theme = gr.themes.Default(font=[gr.themes.Font("sans-serif")], font_mono=[gr.themes.Font("monospace")])
    demo.queue(default_concurrency_limit=None)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=True,
                ssr_mode=False, mcp_server=False, theme=theme, footer_links=[])
    if banner is not None:
        banner(demo.local_url.rstrip("/"))
    try:
        demo.block_thread()
    finally:
        demo.close()
