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

Matrix products. On a CPU in float32 the pass can run its products through
oneDNN (`kernel="onednn"`, the engine's default there) instead of the BLAS that
`F.linear` calls: the same products, summed in another order, so logits differ
from transformers' in the last bits (greedy tokens equal in the tests and
benchmarks), and on the AMD EPYC measured they stream the weights 1.5-2x faster
at the few rows a decode step has (the BLAS path there ran a one-row product on
one thread at about 10 GB/s where the memory delivers 50; on an Intel Xeon
measured before, it already streamed at 16.5 GB/s, so the gain there is
smaller). With oneDNN the pass also multiplies by q|k|v and by gate|up as one
matrix each (a copy made once and kept while the weights are unchanged, only
where it takes under a quarter of the free memory): fewer, larger products, 121 calls a token instead of 211 for a 30-layer
LM. `kernel="aten"` keeps transformers' own kernels and its logits bit for bit.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

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
        linears = _projections(layer)
        if any(type(m) is not nn.Linear for m in linears):  # an adapter (LoRA) or a quantised layer
            return "a decoder layer whose projections are not plain linear layers"
        if any(type(m.weight.data) is not torch.Tensor for m in linears):  # sharded (DTensor) or quantised weights
            return "decoder weights that are not plain tensors"
    if type(llm.lm_head) is not nn.Linear:
        return "a language-model head that is not a plain linear layer"
    return None


KERNELS = ("onednn", "aten")
# oneDNN pays ~20 us a call before any arithmetic (BLAS ~3 us); it streams a weight faster, which only wins once
# the weight no longer sits in cache: at 576 x 576 it already does, at 128 x 128 it loses 7x (measured).
ONEDNN_MIN_WEIGHT_BYTES = 1 << 20


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias through oneDNN, on the weight as it is stored (no packed copy: no extra memory)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_usable(llm) -> bool:
    """Whether oneDNN's linear runs here for this LM's weights: a CPU float32 model, and a probe call works
    and agrees with `F.linear` (a torch build without oneDNN, or one that changes the op, falls back)."""
    weight = llm.lm_head.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.no_grad():
            probe = torch.linspace(-1, 1, 3 * weight.shape[1]).view(3, -1)
            sample = weight[:64]
            return bool(torch.allclose(_onednn_linear(probe, sample, None), F.linear(probe, sample),
                                       rtol=1e-4, atol=1e-4))
    except (RuntimeError, AttributeError):
        return False


# Fused copies per LM, dropped with it: {llm: (what they were made from, [per layer (qkv, qkv bias, gate|up)])}.
_FUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fused_weights(llm, layers) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] | None:
    """Per layer: q|k|v weights (and biases) and gate|up weights stacked into one matrix each, or None when the
    copies would take more than a quarter of the free memory. Made once; made again if any weight changed
    (trained in place: its version moves; replaced or moved: its address does)."""
    from vinstruct.machine import available_memory

    parts = []
    for layer in layers:
        q, k, v, _, gate, up, _ = _projections(layer)
        biases = [p.bias for p in (q, k, v) if p.bias is not None]
        if gate.bias is not None or up.bias is not None or len(biases) not in (0, 3):
            return None  # Llama's mlp_bias, or a bias on some of q, k, v only: the separate products handle it
        parts += [q.weight, k.weight, v.weight, gate.weight, up.weight] + biases
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in parts)
    known = _FUSED.get(llm)
    if known is not None and known[0] == key:
        return known[1]
    _FUSED.pop(llm, None)  # free the stale copies before making new ones
    free = available_memory(parts[0].device)
    needed = sum(t.numel() * t.element_size() for t in parts)
    if free is not None and needed > free // 4:
        return None
    fused = []
    with torch.no_grad():
        for layer in layers:
            q, k, v, _, gate, up, _ = _projections(layer)
            qkv_bias = torch.cat([q.bias, k.bias, v.bias]) if q.bias is not None else None
            fused.append((torch.cat([q.weight, k.weight, v.weight]), qkv_bias, torch.cat([gate.weight, up.weight])))
    _FUSED[llm] = (key, fused)
    return fused


def release_stacked_weights(llm) -> None:
    """Free the stacked copies made for `llm` (a training loop that generated for an evaluation calls this:
    its next step changes the weights, and the copies would only hold memory until the next evaluation)."""
    _FUSED.pop(llm, None)


def _projections(layer) -> list[nn.Linear]:
    """A decoder layer's linear layers, in the order the pass uses them: q, k, v, o, gate, up, down."""
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]


class _Layer(NamedTuple):
    """One decoder layer's tensors, read once (module attribute lookups cost ~1 us each, 70 a layer)."""

    norm_in: torch.Tensor
    eps_in: float
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    norm_post: torch.Tensor
    eps_post: float
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear
    qkv: tuple[torch.Tensor, torch.Tensor | None] | None  # stacked q|k|v weight and bias, where fused
    gate_up: torch.Tensor | None  # stacked gate|up weight, where fused


class LeanForward:
    """`forward(embeds, mask, positions, cache)` -> logits of each row's last token, for one Llama-family LM.

    It reads the LM's weights as they are when it is built (stacked copies are made then): build a new one
    after changing them, as `generate()` and the server's engine do by building one per call and per engine.
    """

    def __init__(self, llm, kernel: str = "aten", onednn_min_bytes: int = ONEDNN_MIN_WEIGHT_BYTES):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.kernel = kernel
        inner = llm.model
        layers = list(inner.layers)
        # The kernel for each projection (the same in every layer) and for the head: oneDNN for the large ones.
        big = [m.weight.numel() * m.weight.element_size() >= onednn_min_bytes
               for m in _projections(layers[0]) + [llm.lm_head]]
        self._fast = tuple(_onednn_linear if kernel == "onednn" and b else F.linear for b in big)
        # Stacked q|k|v and gate|up products where oneDNN runs the larger ones (and memory allows).
        fused = _fused_weights(llm, layers) if kernel == "onednn" and big[4] else None
        self.layers = []
        for i, layer in enumerate(layers):
            q, k, v, o, gate, up, down = _projections(layer)
            self.layers.append(_Layer(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon, q, k, v, o,
                                      layer.post_attention_layernorm.weight,
                                      layer.post_attention_layernorm.variance_epsilon, gate, up, down,
                                      fused[i][:2] if fused else None, fused[i][2] if fused else None))
        self.fused = fused is not None
        self.norm = inner.norm
        self.lm_head = llm.lm_head
        attn = layers[0].self_attn
        self.head_dim = attn.head_dim
        self.groups = attn.num_key_value_groups
        self.scaling = attn.scaling
        self.q_width, self.k_width = attn.q_proj.weight.shape[0], attn.k_proj.weight.shape[0]
        self.inner_width = layers[0].mlp.gate_proj.weight.shape[0]
        rotary = inner.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scale = rotary.attention_scaling
        self._cos = self._sin = None
        self.final_eps = self.norm.variance_epsilon

    @classmethod
    def build(cls, llm, kernel: str = "auto") -> LeanForward | None:
        """The lean pass for `llm`, or None if it cannot vouch for it. kernel "auto": oneDNN where
        `onednn_usable` says so, transformers' kernels elsewhere."""
        if unsupported_reason(llm) is not None:
            return None
        if kernel == "auto":
            kernel = "onednn" if onednn_usable(llm) else "aten"
        return cls(llm, kernel)

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
        """cos and sign-folded sin [rows, T, head_dim] for these positions, from tables grown as positions grow.

        transformers rotates by x * cos + cat(-x2, x1) * sin; with sin's first half negated this is
        x * cos + roll(x) * sin, the same products bit for bit (a sign flip is exact) in four operations."""
        needed = int(positions.max()) + 1
        if self._cos is None or self._cos.shape[0] < needed or self._cos.dtype != dtype:
            size = max(needed, 2 * (self._cos.shape[0] if self._cos is not None else 0), 256)
            index = torch.arange(size, device=self.inv_freq.device)
            freqs = index[:, None].float() * self.inv_freq.to(index.device)
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos = (emb.cos() * self.rope_scale).to(dtype)
            sin = (emb.sin() * self.rope_scale).to(dtype)
            half = sin.shape[-1] // 2
            self._sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        return self._cos[positions], self._sin[positions]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of x [rows, T, heads, dim] with cos/sin [rows, T, 1, dim] (see `_rotary`)."""
        return (x * cos) + (torch.roll(x, x.shape[-1] // 2, dims=-1) * sin)

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
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
        dim, q_width, k_width, inner = self.head_dim, self.q_width, self.k_width, self.inner_width
        h = embeds.reshape(rows * width, hidden)  # 2-D through the products: fewer reshapes per call
        # oneDNN is chosen for float32 CPU weights; a model moved to another dtype or device since runs aten.
        fast = embeds.dtype == torch.float32 and embeds.device.type == "cpu"
        lq, lk, lv, lo, lg, lu, ld, lh = self._fast if fast else (F.linear,) * 8
        fused = fast and self.fused
        for index, layer in enumerate(self.layers):
            x = self._rms_norm(h, layer.norm_in, layer.eps_in)
            if fused:  # q and k side by side: one rotation for both
                qkv = _onednn_linear(x, *layer.qkv)
                qk = self._rotate(qkv[:, :q_width + k_width].view(rows, width, -1, dim), cos, sin)
                q, k = qk[:, :, :q_width // dim], qk[:, :, q_width // dim:]
                v = qkv[:, q_width + k_width:].view(rows, width, -1, dim)
            else:
                q = self._rotate(lq(x, layer.q.weight, layer.q.bias).view(rows, width, -1, dim), cos, sin)
                k = self._rotate(lk(x, layer.k.weight, layer.k.bias).view(rows, width, -1, dim), cos, sin)
                v = lv(x, layer.v.weight, layer.v.bias).view(rows, width, -1, dim)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            keys, values = cache.update(k, v, index)
            a = self._attend(q, keys, values, mask).view(rows * width, -1)
            h = h + lo(a, layer.o.weight, layer.o.bias)
            x = self._rms_norm(h, layer.norm_post, layer.eps_post)
            if fused:
                gate_up = _onednn_linear(x, layer.gate_up, None)
                gate, up = gate_up[:, :inner], gate_up[:, inner:]
            else:
                gate, up = lg(x, layer.gate.weight, layer.gate.bias), lu(x, layer.up.weight, layer.up.bias)
            h = h + ld(F.silu(gate) * up, layer.down.weight, layer.down.bias)
        last = self._rms_norm(h.view(rows, width, hidden)[:, -1, :], self.norm.weight, self.final_eps)
        return lh(last, self.lm_head.weight, self.lm_head.bias)
