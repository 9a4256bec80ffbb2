"""A lean forward pass for Llama-family decoders, used by the generation engine.

The engine's cost at batch 1 is reading the weights once per token (the matrix
products run at the machine's memory bandwidth) plus everything else the
transformers forward does around them: a module call, keyword plumbing, mask
building, cache bookkeeping and output objects per layer, a few hundred small
operations per token whose overhead is comparable to the products themselves on
a CPU. This pass runs the same arithmetic on the same weights with only the
operations the maths needs, writing keys and values straight into the engine's
`SlotCache`.

It replicates transformers' Llama operations in the same order (RMSNorm in
float32, rotary tables from the model's own `inv_freq`, the same attention
kernel calls, with grouped-query heads packed for one-token steps and repeated
for prefill), so its logits equal the transformers forward's bit for bit in the
tests. Models it cannot vouch for (another architecture, an adapter or hook on a
layer, a rotary type that depends on the sequence length, an attention
implementation other than SDPA) get `None` from `LeanForward.build`, and the
engine uses the transformers forward; so does an LM whose `forward` was replaced
on the instance, whenever that happens (the engine checks at each pass).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Architectures whose decoder layer is Llama's (pre-norm RMSNorm, rotary q/k, SiLU-gated MLP).
SUPPORTED_TYPES = ("llama", "qwen2")
DECODER_LAYERS = ("LlamaDecoderLayer", "Qwen2DecoderLayer")
# Rotary variants whose frequencies do not depend on the sequence length (read from the model's buffer).
STATIC_ROPE = ("default", "linear", "llama3")


def unsupported_reason(llm) -> str | None:
    """Why `llm` cannot take the lean path, or None if it can."""
    config = llm.config
    if getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return f"architecture {getattr(config, 'model_type', None)!r}"
    if getattr(config, "_attn_implementation", "sdpa") != "sdpa":
        return f"attention implementation {config._attn_implementation!r}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    if getattr(config, "use_sliding_window", False) or (
            config.model_type != "qwen2" and getattr(config, "sliding_window", None)):
        return "sliding-window attention"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in STATIC_ROPE:
        return f"rotary type {rope_type!r}"
    inner = getattr(llm, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return f"model class {type(llm).__name__}"
    for name, module in llm.named_modules():
        if module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"):
            return f"a hook on {name or 'the model'}"
    for layer in inner.layers:
        # The exact transformers classes: a wrapper (FSDP, a compiled or patched layer) gets the plain forward.
        if type(layer).__name__ not in DECODER_LAYERS:
            return f"decoder layer class {type(layer).__name__}"
        attn, mlp = layer.self_attn, layer.mlp
        linears = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if any(type(m) is not nn.Linear for m in linears):  # an adapter (LoRA) or a quantised layer
            return "a decoder layer whose projections are not plain linear layers"
        if any(type(m.weight.data) is not torch.Tensor for m in linears):  # sharded (DTensor) or quantised weights
            return "decoder weights that are not plain tensors"
    if type(llm.lm_head) is not nn.Linear:
        return "a language-model head that is not a plain linear layer"
    return None


class LeanForward:
    """`forward(embeds, mask, positions, cache)` -> logits of each row's last token, for one Llama-family LM."""

    def __init__(self, llm):
        inner = llm.model
        self.layers = list(inner.layers)
        self.norm = inner.norm
        self.lm_head = llm.lm_head
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.groups = attn.num_key_value_groups
        self.scaling = attn.scaling
        rotary = inner.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scale = rotary.attention_scaling
        self._cos = self._sin = None
        self.eps = [(layer.input_layernorm.variance_epsilon, layer.post_attention_layernorm.variance_epsilon)
                    for layer in self.layers]
        self.final_eps = self.norm.variance_epsilon

    @classmethod
    def build(cls, llm) -> LeanForward | None:
        return None if unsupported_reason(llm) is not None else cls(llm)

    # ---- pieces, each as transformers computes it -------------------------------------------------
    @staticmethod
    def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        if x.dtype == torch.float32 and weight.dtype == torch.float32:
            # One fused operation; in float32 it computes exactly transformers' five (checked in the tests).
            return F.rms_norm(x, (x.shape[-1],), weight, eps)
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(dtype)

    def _rotary(self, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [rows, 1, T, head_dim] for these positions, from tables grown as positions grow."""
        needed = int(positions.max()) + 1
        if self._cos is None or self._cos.shape[0] < needed or self._cos.dtype != dtype:
            size = max(needed, 2 * (self._cos.shape[0] if self._cos is not None else 0), 256)
            index = torch.arange(size, device=self.inv_freq.device)
            freqs = index[:, None].float() * self.inv_freq.to(index.device)
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos = (emb.cos() * self.rope_scale).to(dtype)
            self._sin = (emb.sin() * self.rope_scale).to(dtype)
        return self._cos[positions].unsqueeze(1), self._sin[positions].unsqueeze(1)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)

    def _attend(self, q, k, v, mask):
        """SDPA over the cache, grouped-query heads handled the way transformers does for this mask."""
        rows, heads, width, dim = q.shape
        if self.groups > 1:
            if width == 1:  # one query per row: the group's heads become query positions of its K/V head
                q = q.reshape(rows, heads // self.groups, self.groups, dim)
            else:
                k = k[:, :, None].expand(rows, k.shape[1], self.groups, *k.shape[2:]).reshape(rows, heads, -1, dim)
                v = v[:, :, None].expand(rows, v.shape[1], self.groups, *v.shape[2:]).reshape(rows, heads, -1, dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        out = out.reshape(rows, -1, width, dim)
        return out.transpose(1, 2).contiguous().reshape(rows, width, -1)

    # ---- the pass -----------------------------------------------------------------------------------
    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """Logits [rows, vocab] of each row's last input token. `mask` [rows, 1, width, span] (True: visible)
        may be None when every row sees every cached token."""
        rows, width, hidden = embeds.shape
        cos, sin = self._rotary(positions, embeds.dtype)
        dim = self.head_dim
        h = embeds.reshape(rows * width, hidden)  # 2-D through the products: fewer reshapes per call
        for index, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            eps_in, eps_post = self.eps[index]
            x = self._rms_norm(h, layer.input_layernorm.weight, eps_in)
            q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(rows, width, -1, dim).transpose(1, 2)
            k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(rows, width, -1, dim).transpose(1, 2)
            v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(rows, width, -1, dim).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            keys, values = cache.update(k, v, index)
            a = self._attend(q, keys, values, mask).view(rows * width, -1)
            h = h + F.linear(a, attn.o_proj.weight, attn.o_proj.bias)
            x = self._rms_norm(h, layer.post_attention_layernorm.weight, eps_post)
            gate = F.silu(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias))
            h = h + F.linear(gate * F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias),
                             mlp.down_proj.weight, mlp.down_proj.bias)
        last = self._rms_norm(h.view(rows, width, hidden)[:, -1, :], self.norm.weight, self.final_eps)
        return F.linear(last, self.lm_head.weight, self.lm_head.bias)
