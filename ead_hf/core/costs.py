"""Compute accounting: FLOPs of the forwards a generation actually ran, and the paper's token-share cost.

Counted per forward over `new` positions with `past` positions cached, for every row of the batch:
the projections (q, k, v, o and the gated MLP: 2 FLOPs per weight per position), attention scores and
the weighted sum (2 * 2 * heads * head_dim per attended position), and the LM head for each position
whose logits were computed (the newest one, or under rollback every position the large model judged).
Norms, rotary embeddings and softmax are left out (a fraction of a percent at these sizes).
"""

from __future__ import annotations

__all__ = ["ModelShape", "forward_flops", "generation_flops", "paper_cost"]

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    parameters: int  # all parameters, for the paper's cost formula

    @classmethod
    def of(cls, model) -> "ModelShape":
        config = model.config.get_text_config(decoder=True)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers, hidden=config.hidden_size, heads=config.num_attention_heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim, intermediate=config.intermediate_size, vocab=config.vocab_size,
            parameters=sum(p.numel() for p in model.parameters()),
        )

    @property
    def linear_flops_per_position(self) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        per_layer = self.hidden * q + 2 * self.hidden * kv + q * self.hidden + 3 * self.hidden * self.intermediate
        return 2 * self.layers * per_layer


def forward_flops(shape: ModelShape, past: int, new: int, rows: int = 1, kept_logits: int = 1) -> int:
    """FLOPs of one forward reading `new` positions after `past` cached ones, for `rows` rows."""
    attended = new * past + new * (new + 1) // 2  # position i attends to past + i positions
    attention = 4 * shape.layers * shape.heads * shape.head_dim * attended
    head = 2 * shape.hidden * shape.vocab * kept_logits
    return rows * (new * shape.linear_flops_per_position + attention + head)


def generation_flops(shape: ModelShape, forward_log: list[tuple[int, int, int, int]]) -> int:
    """Sum over a model's `ead_forwards` log of (positions cached, positions read, rows computed, positions per
    row the output head ran on)."""
    return sum(forward_flops(shape, past, new, rows, kept) for past, new, rows, kept in forward_log)


def paper_cost(large_share: float, small_parameters: int, large_parameters: int) -> float:
    """The paper's cost relative to large-only: f * P_L + (1 - f) * P_S, divided by P_L."""
    return (large_share * large_parameters + (1 - large_share) * small_parameters) / large_parameters
