"""The EAD decoding loop of `generate()`, callable as a transformers `custom_generate` method.

Read `ead_decoding` top to bottom. It is a driver of the shared step (`ead_hf.core.step`): it owns the batch's
token grid (`_BatchLanes`: every row one column per step, one `ModelRunner` per model reading the whole batch),
the logits processors, the stopping criteria, the streamer and the trace. Each step the shared step says which
model writes each row's token and returns its logits (under rollback or speculative verification it may
first cut the row); the processors
and the greedy/sampling choice pick the token as `_sample` does, and `EADStep.settle`'s one host
synchronisation says which rows finished. generate() has already merged the generation config, built the
logits processors and stopping criteria, and prepared the attention mask when this runs.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from .compat import (check_transformers_version, full_attention_only, is_single_model_processor, pad_token_id,
                     pop_prepared_cache)
from .config import EADConfig, resolve_ead_config
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair_checks import check_pair, check_prompt_ids, shared_vocab_size
from .runner import ModelRunner
from .step import EADStep, pick_tokens

__all__ = ["ead_decoding"]

# model kwargs generate() may hand to a decoding method; EAD rebuilds positions and caches itself.
_HANDLED_MODEL_KWARGS = {"attention_mask", "position_ids", "use_cache", "logits_to_keep"}


def ead_decoding(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    ead_config: EADConfig | dict | None = None,
    ead_small_model: PreTrainedModel | None = None,
    streamer=None,
    ead_allow_larger_small: bool = False,
    **model_kwargs,
) -> EADGenerateOutput | torch.LongTensor:
    """Generate with Entropy Adaptive Decoding; `model` is the large model.

    Use as ``large.generate(**inputs, custom_generate=ead_decoding, ead_config=cfg, ead_small_model=small)``.
    transformers does not pass `streamer` or `tokenizer` to a custom_generate callable: for streaming and
    `stop_strings` use `enable_ead` or `EADGenerator`, which wrap this function.
    """
    config = _check_arguments(model, ead_small_model, ead_config, input_ids, generation_config, logits_processor,
                              model_kwargs, ead_allow_larger_small)
    batch_size, prompt_length = input_ids.shape
    device, vocab = input_ids.device, shared_vocab_size(model, ead_small_model)
    fill = pad_token_id(generation_config) or 0  # what finished rows write, as generate() pads them
    trace = _Trace(generation_config)
    lanes = _BatchLanes(input_ids, model_kwargs.get("attention_mask"), ead_small_model, model, trace, device)
    step = EADStep(config, batch_size, vocab, device)
    stream = _Stream(streamer, input_ids, holds_back=config.takes_back)
    live_rows = list(range(batch_size))

    while live_rows:
        result = step(lanes, live_rows)  # may cut the grid (rollback) before the processors see it
        scores = logits_processor(lanes.grid, result.logits)
        tokens = torch.where(result.live, pick_tokens(scores, generation_config.do_sample), fill)
        trace.record(result.chosen, result.entropy, scores, result.logits, result.live)
        lanes.append(tokens, result.live)
        finished = step.settle(result, stopping_criteria(lanes.grid, scores).to(device), lanes)
        live_rows = [row for row in live_rows if not finished[row]]
        stream.step(lanes.grid, tokens, large_seen=lanes.runners[LARGE].seen, done=not live_rows)

    stream.end()
    if not generation_config.return_dict_in_generate:
        return lanes.grid
    return trace.output(lanes.grid, lanes.runners, counts_rollback=config.takes_back)


class _BatchLanes:
    """The batch's token grid (every row one column per step; a finished row gets masked columns), with one
    `ModelRunner` per model reading the whole batch: the `Lanes` the shared step reads through."""

    def __init__(self, input_ids, attention_mask, small, large, trace: "_Trace", device: torch.device) -> None:
        batch_size, self.prompt_length = input_ids.shape
        if attention_mask is None and batch_size > 1:  # None when generate() found no padding
            attention_mask = torch.ones_like(input_ids)  # finished rows get masked columns
        self.grid, self.mask, self.positions = input_ids, attention_mask, _positions(attention_mask, input_ids)
        self.runners = {SMALL: ModelRunner(small, self.prompt_length, batch_size, device),
                        LARGE: ModelRunner(large, self.prompt_length, batch_size, device)}
        self.trace, self.all_rows = trace, list(range(batch_size))

    def read(self, model: int, rows: list[int]) -> torch.Tensor:
        logits = self.runners[model].read(self.grid, self.mask, self.positions)
        return logits if rows == self.all_rows else logits[rows]

    def read_history(self, rows: list[int]):
        seen = self.runners[LARGE].seen
        last, history = self.runners[LARGE].read(self.grid, self.mask, self.positions, history=True)
        return last[rows], [history[row] for row in rows], [seen] * len(rows)

    def judged(self, row: int, first: int):
        tokens, steps = self.grid[row, first:], first - self.prompt_length
        if steps == len(self.trace.choices):
            return tokens, tokens.new_zeros(0, dtype=torch.bool), tokens.new_zeros(0, dtype=torch.float32)
        choices = torch.stack(self.trace.choices[steps:], dim=1)[row].to(tokens.device)
        return tokens, choices == SMALL, torch.stack(self.trace.entropies[steps:], dim=1)[row].to(tokens.device)

    @property
    def width(self) -> int:
        return self.grid.shape[1]

    def generation_start(self, row: int) -> int:
        return self.prompt_length

    def take_back(self, row: int, column: int) -> None:
        """Rollback runs one row per call: the grid is cut, both caches cropped, the records dropped."""
        self.grid, self.positions = self.grid[:, :column], self.positions[:, :column]
        self.mask = None if self.mask is None else self.mask[:, :column]
        for runner in self.runners.values():
            runner.forget(column)
        self.trace.cut(column - self.prompt_length)

    def append(self, tokens: torch.Tensor, live: torch.Tensor) -> None:
        """The step's tokens as a new column; rows that finished get a masked column."""
        self.grid = torch.cat([self.grid, tokens[:, None]], dim=-1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], dim=-1)
        if self.mask is not None:
            self.mask = torch.cat([self.mask, live[:, None].to(self.mask.dtype)], dim=-1)


def _check_arguments(model, small, ead_config, input_ids, generation_config, logits_processor,
                     model_kwargs, allow_larger_small: bool = False) -> EADConfig:
    """Everything EAD cannot run with is an error before any forward (`model_kwargs` loses the prepared cache)."""
    check_transformers_version()
    config = resolve_ead_config(ead_config)
    if small is None:
        raise ValueError("ead_small_model is required: pass the small model of the pair, ead_small_model=small")
    check_pair(model, small, allow_larger_small=allow_larger_small)
    rule = "EADConfig.rollback" if config.rollback is not None else "EADConfig.variant='speculative'"
    if config.takes_back and input_ids.shape[0] > 1:
        raise ValueError(f"{rule} in generate() decodes one prompt per call (rows taken back by different "
                         f"amounts would end at different lengths), got a batch of {input_ids.shape[0]} (prompts x "
                         "num_return_sequences): pass one prompt per call (pipelines do at their default batch_size=1), "
                         "or decode a batch with ead_hf.core.continuous.continuous_ead (greedy)")
    blockers = [reason for reason in map(full_attention_only, (small, model)) if reason] if config.takes_back else []
    if blockers:
        raise ValueError(f"{rule} crops both models' caches where it takes tokens back, which needs "
                         f"full-attention layers: {'; '.join(blockers)}; use this pair without it")
    prepared_cache = pop_prepared_cache(model_kwargs)
    if prepared_cache is not None and prepared_cache.get_seq_length() > 0:
        raise ValueError("EAD cannot continue from a filled cache (each model keeps its own); pass no cache")
    _reject_unsupported(generation_config, logits_processor, model_kwargs)
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (batch, prompt length) with at least one prompt token, got shape "
                         f"{tuple(input_ids.shape)}: EAD starts from a prompt (e.g. the BOS token)")
    mask = model_kwargs.get("attention_mask")
    padded_rows = input_ids.new_zeros(())
    if mask is not None and mask.ndim == 2:
        padded_rows = (mask[:, -1] == 0).sum().to(input_ids)
    largest_id, right_padded = torch.stack([input_ids.max(), padded_rows]).tolist()  # one host sync for both checks
    check_prompt_ids(largest_id, model, small)
    if right_padded:
        raise ValueError("the prompts are right-padded (a row's attention_mask ends in 0): EAD, like every decoder-only "
                         "generate, appends after the last column, so a short row would continue after its padding. "
                         "Pad on the left: tokenizer.padding_side = 'left'")
    return config


class _Stream:
    """What the streamer gets: each step's tokens, or when the large model judges (rollback, speculative; one row)
    only tokens no later read can take back: a small-model token once the large model has read it (`large_seen` columns), or when the answer ends."""

    def __init__(self, streamer, input_ids: torch.Tensor, holds_back: bool) -> None:
        self.streamer, self.holds_back, self.sent = streamer, holds_back, input_ids.shape[1]
        if streamer is not None:
            streamer.put(input_ids.cpu())

    def step(self, grid: torch.Tensor, tokens: torch.Tensor, large_seen: int, done: bool) -> None:
        if self.streamer is None:
            return
        if not self.holds_back:
            self.streamer.put(tokens.cpu())
            return
        settled = grid.shape[1] if done else max(self.sent, large_seen + 1)  # column large_seen is its own token
        if settled > self.sent:
            self.streamer.put(grid[0, self.sent:settled].cpu())
            self.sent = settled

    def end(self) -> None:
        if self.streamer is not None:
            self.streamer.end()


class _Trace:
    """Per-step records of what each row wrote (model, entropy, scores, logits) and the output built from them."""

    def __init__(self, generation_config: GenerationConfig) -> None:
        want = generation_config.return_dict_in_generate
        self.want_scores, self.want_logits = want and generation_config.output_scores, want and generation_config.output_logits
        self.choices, self.entropies, self.scores, self.logits = [], [], [], []
        self.rolled_back = 0  # steps whose tokens were taken back (rollback runs one row)

    def record(self, chosen, entropy, scores, logits, live) -> None:
        self.choices.append(torch.where(live, chosen.long(), NO_TOKEN))
        self.entropies.append(torch.where(live, entropy.float(), float("nan")))
        if self.want_scores:
            self.scores.append(scores)
        if self.want_logits:
            self.logits.append(logits)

    def cut(self, steps: int) -> None:
        """Keep the first `steps` steps' records (the tokens after them were taken back)."""
        self.rolled_back += len(self.choices) - steps
        for records in (self.choices, self.entropies, self.scores, self.logits):
            del records[steps:]

    def output(self, sequences: torch.Tensor, runners: dict, counts_rollback: bool) -> EADGenerateOutput:
        choices = torch.stack(self.choices, dim=1)
        return EADGenerateOutput(
            sequences=sequences,
            scores=tuple(self.scores) if self.want_scores else None,
            logits=tuple(self.logits) if self.want_logits else None,
            model_choices=choices,
            entropies=torch.stack(self.entropies, dim=1),
            ead_stats=EADStats.from_choices(choices, runners[SMALL].catchup, runners[LARGE].catchup),
            ead_forwards={"small": list(runners[SMALL].forward_log), "large": list(runners[LARGE].forward_log)},
            rolled_back=torch.tensor([self.rolled_back]) if counts_rollback else None,
        )


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
        if is_single_model_processor(processor):
            raise ValueError(f"{type(processor).__name__} is tied to one model and is not supported by EAD; remove it")
    unknown = sorted(k for k, v in model_kwargs.items() if k not in _HANDLED_MODEL_KWARGS and v is not None)
    if unknown:
        raise ValueError(f"EAD does not know how to pass model kwargs {unknown} to both models; remove them")


def _positions(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """Position ids as generate() computes them: left padding does not advance a row's positions."""
    if attention_mask is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)
