"""The EAD decoding loop, callable as a transformers `custom_generate` method.

Read it top to bottom: `ModelLane.read` (prefill, decode and catch-up are one operation: feed every
position the model has not read yet), `_pick_token` (processors + greedy/sampling, as `_sample` does),
and `ead_decoding` (the loop). generate() has already merged the generation config, built the logits
processors and stopping criteria, and prepared the attention mask when this runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from .compat import cache_argument_name, check_transformers_version, pop_prepared_cache
from .config import EADConfig
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair import check_pair, input_device, shared_vocab_size
from .routing import EntropyRouter, entropy_bits

__all__ = ["ead_decoding", "ModelLane", "resolve_ead_config"]

# model kwargs generate() may hand to a decoding method; EAD rebuilds positions and caches itself.
_HANDLED_MODEL_KWARGS = {"attention_mask", "position_ids", "use_cache", "logits_to_keep"}


@dataclass
class ModelLane:
    """One model of the pair with its own KV cache and the number of sequence positions it has read."""

    model: PreTrainedModel
    prompt_length: int
    cache: DynamicCache = field(init=False)
    seen: int = 0
    catchup_tokens: int = 0  # generated tokens read beyond one per forward (see EADStats)
    forward_log: list[tuple[int, int]] = field(default_factory=list)  # (positions cached before, positions read)

    def __post_init__(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.device = input_device(self.model)
        self.cache_argument = cache_argument_name(self.model)
        self.extra = {"logits_to_keep": 1} if self.model._supports_logits_to_keep() else {}

    def read(self, sequence: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        """Feed all positions this model has not read yet in ONE forward; return next-token logits (batch, vocab).

        The first call is the prompt prefill; after the other model wrote k tokens it is the catch-up.
        """
        start, end = self.seen, sequence.shape[1]
        outputs = self.model(
            input_ids=sequence[:, start:end].to(self.device),
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            position_ids=positions[:, start:end].to(self.device),
            use_cache=True,
            **{self.cache_argument: self.cache},
            **self.extra,
        )
        self.catchup_tokens += max(0, end - 1 - max(start, self.prompt_length))
        self.forward_log.append((start, end - start))
        self.seen = end
        return outputs.logits[:, -1]


def resolve_ead_config(ead_config: Any) -> EADConfig:
    if isinstance(ead_config, EADConfig):
        return ead_config
    if isinstance(ead_config, dict):
        return EADConfig.from_dict(ead_config)
    if ead_config is None:
        raise ValueError("ead_config is required: pass ead_config=EADConfig(threshold=...) to generate()")
    raise TypeError(f"ead_config must be an EADConfig or a dict, got {type(ead_config).__name__}")


def _reject_unsupported(
    generation_config: GenerationConfig, logits_processor: LogitsProcessorList, model_kwargs: dict
) -> None:
    """Modes that need one model's internals, several hypotheses or a second pass do not fit EAD."""
    checks = [
        (generation_config.num_beams not in (None, 1),
         "beam search (num_beams > 1) is not supported by EAD; use num_beams=1 with greedy or sampling"),
        (generation_config.guidance_scale not in (None, 1, 1.0),
         "classifier-free guidance (guidance_scale) runs the model a second time and is not supported by EAD; "
         "remove guidance_scale"),
        (generation_config.watermarking_config is not None,
         "watermarking is tied to one model's vocabulary and is not supported by EAD; remove watermarking_config"),
        (getattr(generation_config, "prompt_lookup_num_tokens", None) is not None,
         "prompt lookup decoding is a speculative mode; use it without ead_config"),
        (getattr(generation_config, "penalty_alpha", None) is not None,
         "contrastive search (penalty_alpha) is not supported by EAD; use greedy or sampling"),
        (getattr(generation_config, "dola_layers", None) is not None,
         "DoLa decoding (dola_layers) reads one model's layers and is not supported by EAD"),
        (generation_config.output_attentions or generation_config.output_hidden_states,
         "output_attentions/output_hidden_states come from two different models under EAD and are not "
         "supported; use output_scores/output_logits and the model_choices/entropies trace"),
        (generation_config.use_cache is False,
         "EAD needs KV caches (each model keeps its own); remove use_cache=False"),
        (generation_config.cache_implementation not in (None, "dynamic"),
         f"EAD keeps a DynamicCache per model; cache_implementation={generation_config.cache_implementation!r} "
         "is not supported"),
        ("inputs_embeds" in model_kwargs,
         "EAD needs token ids for both models; pass input_ids instead of inputs_embeds"),
    ]
    for failed, message in checks:
        if failed:
            raise ValueError(message)
    for processor in logits_processor:
        name = type(processor).__name__
        if "Watermark" in name or "ClassifierFreeGuidance" in name:
            raise ValueError(f"{name} is tied to one model and is not supported by EAD; remove it")
    unknown = sorted(k for k, v in model_kwargs.items() if k not in _HANDLED_MODEL_KWARGS and v is not None)
    if unknown:
        raise ValueError(f"EAD does not know how to pass model kwargs {unknown} to both models; remove them")


def _pick_token(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    """Greedy or multinomial choice, drawing from the RNG exactly as transformers' `_sample` does."""
    if do_sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    return torch.argmax(scores, dim=-1)


def _positions(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """Position ids as generate() computes them: left padding does not advance a row's positions."""
    if attention_mask is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def ead_decoding(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    ead_config: EADConfig | dict | None = None,
    ead_small_model: PreTrainedModel | None = None,
    streamer=None,
    **model_kwargs,
) -> EADGenerateOutput | torch.LongTensor:
    """Generate with Entropy Adaptive Decoding; `model` is the large model.

    Use as ``large.generate(**inputs, custom_generate=ead_decoding, ead_config=cfg, ead_small_model=small)``.
    transformers does not pass `streamer` or `tokenizer` to a custom_generate callable: for streaming and
    `stop_strings` use `enable_ead` or `EADGenerator`, which wrap this function.
    """
    check_transformers_version()
    config = resolve_ead_config(ead_config)
    if ead_small_model is None:
        raise ValueError("ead_small_model is required: pass the small model of the pair, ead_small_model=small")
    check_pair(model, ead_small_model)
    prepared_cache = pop_prepared_cache(model_kwargs)
    if prepared_cache is not None and prepared_cache.get_seq_length() > 0:
        raise ValueError("EAD cannot continue from a filled cache (each model keeps its own); pass no cache")
    _reject_unsupported(generation_config, logits_processor, model_kwargs)

    batch_size, prompt_length = input_ids.shape
    device = input_ids.device
    vocab = shared_vocab_size(model, ead_small_model)
    attention_mask = model_kwargs.get("attention_mask")  # None when generate() found no padding
    positions = _positions(attention_mask, input_ids)
    lanes = {SMALL: ModelLane(ead_small_model, prompt_length), LARGE: ModelLane(model, prompt_length)}
    router = EntropyRouter(config, batch_size, device)
    pad_token_id = generation_config._pad_token_tensor
    pads_finished_rows = any(hasattr(c, "eos_token_id") for c in stopping_criteria) and pad_token_id is not None
    want_scores = generation_config.return_dict_in_generate and generation_config.output_scores
    want_logits = generation_config.return_dict_in_generate and generation_config.output_logits

    unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)
    choices, entropies, scores, raw_logits = [], [], [], []
    runs = {SMALL: not config.starts_large, LARGE: config.starts_large}  # host-side: which models run this step
    if streamer is not None:
        streamer.put(input_ids.cpu())

    while True:
        step_logits = {
            lane_id: lane.read(input_ids, attention_mask, positions).to(device=device, dtype=torch.float32)[:, :vocab]
            for lane_id, lane in lanes.items()
            if runs[lane_id]
        }
        if len(step_logits) == 2:
            logits = torch.where(router.active[:, None], step_logits[LARGE], step_logits[SMALL])
        else:
            (logits,) = step_logits.values()
        entropy = entropy_bits(logits)
        next_scores = logits_processor(input_ids, logits)
        next_tokens = _pick_token(next_scores, generation_config.do_sample)
        if pads_finished_rows:
            next_tokens = torch.where(unfinished, next_tokens, pad_token_id.to(device))

        choices.append(torch.where(unfinished, router.active.long(), NO_TOKEN))
        entropies.append(torch.where(unfinished, entropy.float(), float("nan")))
        if want_scores:
            scores.append(next_scores)
        if want_logits:
            raw_logits.append(logits)
        router.observe(entropy, live=unfinished)

        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=-1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch_size, 1)], dim=-1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())

        unfinished = unfinished & ~stopping_criteria(input_ids, next_scores).to(device)
        # The one host synchronisation per step: is anything left, and which models do live rows need.
        any_left, needs_small, needs_large = torch.stack(
            [unfinished.any(), (unfinished & ~router.active).any(), (unfinished & router.active).any()]
        ).tolist()
        if not any_left:
            break
        runs = {SMALL: needs_small, LARGE: needs_large}

    if streamer is not None:
        streamer.end()
    if not generation_config.return_dict_in_generate:
        return input_ids
    model_choices = torch.stack(choices, dim=1)
    catchup = {
        lane_id: torch.full((batch_size,), lane.catchup_tokens, dtype=torch.long, device=device)
        for lane_id, lane in lanes.items()
    }
    return EADGenerateOutput(
        sequences=input_ids,
        scores=tuple(scores) if want_scores else None,
        logits=tuple(raw_logits) if want_logits else None,
        model_choices=model_choices,
        entropies=torch.stack(entropies, dim=1),
        ead_stats=EADStats.from_choices(model_choices, catchup[SMALL], catchup[LARGE]),
        ead_forwards={"small": list(lanes[SMALL].forward_log), "large": list(lanes[LARGE].forward_log)},
    )
