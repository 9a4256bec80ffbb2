"""Numbers in the training log: metrics JSONL (+ TensorBoard), FLOPs and MFU, the loss-curve PNG.

MFU = model FLOPs per second / peak FLOPs per second of the devices. Model FLOPs
are estimated from the parameter counts of each part and what the stage
computes (nanoGPT/PaLM style): 2 FLOPs per parameter per token forward; backward
2 more for input gradients through every layer below the last trainable one and
2 more for weight gradients of trainable parameters; attention scores 4·L·d·S
per token forward. Recomputation (gradient checkpointing) is not counted.
The peak is measured with a large matmul unless given (`peak_flops`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vinstruct.data.formats import append_jsonl, read_jsonl, write_jsonl


# ---- FLOPs --------------------------------------------------------------------------------------------
@dataclass
class FlopModel:
    llm_body: int  # LLM parameters used per token, embeddings and LM head excluded
    llm_body_trainable: int
    lm_head: int
    lm_head_trainable: bool
    llm_layers: int
    llm_hidden: int
    vision: int
    vision_tokens: int  # tokens the vision encoder runs per image (patches + CLS)
    projector: int
    image_tokens: int  # projected tokens per image

    @classmethod
    def of(cls, model) -> "FlopModel":
        llm = model.llm
        embed = llm.get_input_embeddings().weight
        head = llm.get_output_embeddings().weight
        tied = head.data_ptr() == embed.data_ptr()
        total = sum(p.numel() for p in llm.parameters())
        body = total - embed.numel() - (0 if tied else head.numel())
        body_trainable = sum(p.numel() for p in llm.parameters() if p.requires_grad)
        body_trainable -= embed.numel() * embed.requires_grad + (0 if tied else head.numel() * head.requires_grad)
        vc = model.vision_tower.config
        text = llm.config.get_text_config() if hasattr(llm.config, "get_text_config") else llm.config
        return cls(
            llm_body=body, llm_body_trainable=max(body_trainable, 0), lm_head=head.numel(),
            lm_head_trainable=head.requires_grad, llm_layers=text.num_hidden_layers, llm_hidden=text.hidden_size,
            vision=sum(p.numel() for p in model.vision_tower.parameters()),
            vision_tokens=(vc.image_size // vc.patch_size) ** 2 + 1,
            projector=sum(p.numel() for p in model.projector.parameters()), image_tokens=model.num_image_tokens,
        )

    def step_flops(self, rows: int, width: int, images: int, targets: int, vision_computed: bool) -> float:
        """Model FLOPs of one forward+backward over a padded [rows, width] micro-batch."""
        tokens = rows * width
        forward = 2 * self.llm_body * tokens + 4 * self.llm_layers * self.llm_hidden * width * tokens
        head_forward = 2 * self.lm_head * targets  # logits only where a label is supervised
        backward_inputs = forward + head_forward
        backward_weights = 2 * self.llm_body_trainable * tokens + (head_forward if self.lm_head_trainable else 0)
        projector = 6 * self.projector * images * self.image_tokens
        vision = 2 * self.vision * images * self.vision_tokens if vision_computed else 0
        return float(forward + head_forward + backward_inputs + backward_weights + projector + vision)


def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        size: int = 1024, seconds: float = 1.0, clock=time.perf_counter) -> float:
    """Best FLOP/s of a square matmul on this device with the current thread count.

    clock: what a second is (wall time by default; a benchmark on a shared CPU may pass
    process CPU time divided by the thread count)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = clock()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / max(clock() - start, 1e-9))
    return best


# ---- the log ------------------------------------------------------------------------------------------
class MetricsLog:
    """metrics.jsonl (one row per logged step or evaluation) and optional TensorBoard scalars.

    Resuming at step S keeps the rows up to S and drops those a killed run wrote after
    its last checkpoint, so the log reads as if the run had never stopped.
    """

    def __init__(self, path: Path, resume_step: int | None, tensorboard_dir: Path | None, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.handle = None
        self.writer = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.is_file():
            rows = [r for r in read_jsonl(path, skip_bad_tail=True) if r.get("step", 0) <= resume_step]
        write_jsonl(path, rows)
        self.handle = path.open("a", encoding="utf-8")
        if tensorboard_dir is not None:
            self.writer = _tensorboard_writer(tensorboard_dir)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.handle, row)
        if self.writer is not None:
            prefix = row.get("kind", "train")
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{prefix}/{key}", value, row["step"])

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(directory: Path):
    from vinstruct.errors import VinstructError

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VinstructError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(directory))


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "training loss") -> Path:
    """Train loss per step (and held-out loss where evaluated) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_path, skip_bad_tail=True)
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train" and "loss" in r]
    held_out = [(r["step"], r["eval_loss"]) for r in rows if r.get("kind") == "eval" and "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if held_out:
        ax.plot(*zip(*held_out), "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per supervised token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path


def loss_curve(metrics_path: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_jsonl(metrics_path) if r.get("kind") == "train"]
