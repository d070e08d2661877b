"""The EAD decoding loop, callable as a transformers `custom_generate` method.

Read it top to bottom: `ModelLane.read` (prefill, decode and catch-up are one operation: feed every
position the model has not read yet), `_pick_token` (processors + greedy/sampling, as `_sample` does),
and `ead_decoding` (the loop). generate() has already merged the generation config, built the logits
processors and stopping criteria, and prepared the attention mask when this runs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.generation.logits_process import (
    LogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
)
from transformers.generation.stopping_criteria import MaxLengthCriteria

from .compat import cache_argument_name, check_transformers_version, pop_prepared_cache
from .config import EADConfig
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair import check_pair, input_device, shared_vocab_size
from .routing import EntropyRouter, entropy_bits
from .row_lanes import RowLane, row_lanes_unsupported
from .scheduling import choose_lane, resolve_schedule

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
    forward_log: list[tuple[int, int, int]] = field(default_factory=list)  # (positions cached before, read, rows)

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
        self.forward_log.append((start, end - start, sequence.shape[0]))
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


_GROWTH = 64  # columns added to the per-row buffers at a time


class GeneratedRows:
    """Each row's generated tokens and trace, stored at the row's own positions.

    Under the grouped schedule rows write at different steps, so a row's k-th token is not the k-th new column
    of the models' input. This keeps the per-row view that outputs, logits processors and stopping criteria
    need: sequences right-padded with `fill` after each row's end, as generate() pads finished rows.
    """

    def __init__(self, prompt: torch.Tensor, fill: int) -> None:
        self.prompt_width = prompt.shape[1]
        self.fill = fill
        batch = prompt.shape[0]
        self.tokens = prompt
        self.choices = prompt.new_full((batch, 0), NO_TOKEN)
        self.entropies = prompt.new_full((batch, 0), float("nan"), dtype=torch.float32)
        self.steps = prompt.new_zeros((batch, 0))  # the step that produced each token (indexes per-step outputs)
        self.count = prompt.new_zeros(batch)
        self.longest = 0  # host copy of count.max()
        # Known from the routing synchronisation before each step: count.max() after it, and whether every row
        # writes in it. While every row has written every step (lockstep) the view needs no reindexing.
        self.next_longest = 1
        self.next_all_write = True
        self.lockstep = True

    def record(self, step: int, tokens: torch.Tensor, choices: torch.Tensor, entropies: torch.Tensor,
               advancing: torch.Tensor) -> None:
        """Write the token of every advancing row at that row's next position."""
        if self.choices.shape[1] < self.next_longest:  # grow by a block, not a column per step
            width = self.choices.shape[1]
            positions = torch.arange(width, width + _GROWTH, device=self.count.device).expand(self.count.shape[0], -1)
            self.tokens, self.choices, self.entropies = (
                torch.cat([buffer, buffer.new_full((buffer.shape[0], _GROWTH), value)], dim=1)
                for buffer, value in ((self.tokens, self.fill), (self.choices, NO_TOKEN), (self.entropies, float("nan")))
            )
            self.steps = torch.cat([self.steps, positions], dim=1)  # unwritten: step k for position k, as generate()
        at = self.count.clamp(max=self.choices.shape[1] - 1)[:, None]  # rows that do not write rewrite a value
        for buffer, values, offset in ((self.tokens, tokens, self.prompt_width), (self.choices, choices, 0),
                                       (self.entropies, entropies, 0), (self.steps, torch.full_like(self.count, step), 0)):
            current = buffer.gather(1, at + offset).squeeze(1)
            buffer.scatter_(1, at + offset, torch.where(advancing, values.to(buffer.dtype), current)[:, None])
        self.count += advancing
        self.longest = self.next_longest
        self.lockstep = self.lockstep and self.next_all_write

    def view(self) -> torch.Tensor:
        """Sequences with each row's last token in the last column (rows that waited get more left fill)."""
        width = self.prompt_width + self.longest
        if self.lockstep:
            return self.tokens[:, :width]
        shift = (self.longest - self.count)[:, None]
        index = torch.arange(width, device=self.tokens.device)[None, :] - shift
        return self.tokens.gather(1, index.clamp(min=0)).masked_fill(index < 0, self.fill)

    def sequences(self) -> torch.Tensor:
        return self.tokens[:, : self.prompt_width + self.longest]

    def per_position(self, per_step: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Per-step (batch, vocab) outputs regrouped per generated position, as generate() returns scores."""
        steps = self.steps[:, : self.longest].clamp(max=len(per_step) - 1).tolist()
        out = []
        for k in range(self.longest):
            producing = [row_steps[k] for row_steps in steps]
            if len(set(producing)) == 1:  # rows in lockstep: the step's tensor as is
                out.append(per_step[producing[0]])
            else:
                out.append(torch.stack([per_step[s][r] for r, s in enumerate(producing)]))
        return tuple(out)


class _RowMinLength(LogitsProcessor):
    """`min_length` / `min_new_tokens` counted per row: under the grouped schedule a row that waited is shorter
    than input_ids, so the stock processors (which read input_ids.shape) would release its EOS too early."""

    def __init__(self, rows: GeneratedRows, min_length: int, eos_token_id: torch.Tensor) -> None:
        self.rows, self.min_length, self.eos_token_id = rows, min_length, eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        short = self.rows.prompt_width + self.rows.count < self.min_length
        eos = torch.isin(torch.arange(scores.shape[-1], device=scores.device), self.eos_token_id.to(scores.device))
        return scores.masked_fill(short[:, None] & eos[None, :], -math.inf)


def _per_row_lengths(logits_processor: LogitsProcessorList, rows: GeneratedRows) -> LogitsProcessorList:
    """The same processors, with the minimum-length ones counting each row's own tokens."""
    adapted = LogitsProcessorList()
    for processor in logits_processor:
        if isinstance(processor, MinLengthLogitsProcessor):
            processor = _RowMinLength(rows, processor.min_length, processor.eos_token_id)
        elif isinstance(processor, MinNewTokensLengthLogitsProcessor):
            processor = _RowMinLength(rows, processor.prompt_length_to_skip + processor.min_new_tokens,
                                      processor.eos_token_id)
        adapted.append(processor)
    return adapted


def _stopped_rows(stopping_criteria: StoppingCriteriaList, rows: GeneratedRows, scores: torch.Tensor) -> torch.Tensor:
    """Which rows are done: max_length counts each row's own tokens (rows that waited are shorter); the other
    criteria see `rows.view()`, so a row that waits is judged on its last token again (EOS and stop strings
    give the same answer as before) and a criterion that reads input_ids.shape stops it with the batch."""
    view = rows.view()
    done = torch.zeros_like(rows.count, dtype=torch.bool)
    for criterion in stopping_criteria:
        if isinstance(criterion, MaxLengthCriteria):
            done |= rows.prompt_width + rows.count >= criterion.max_length
        else:
            done |= criterion(view, scores).to(done.device)
    return done


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

    The models read a grid with one new column per step; rows that did not write at a step (they wait under
    the grouped schedule, or have finished) get a masked hole there. `GeneratedRows` keeps each row's tokens.
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
    pad_token_id = generation_config._pad_token_tensor
    # building an empty cache per model to inspect its layers is only worth it when row lanes are asked for
    cache_blockers = ([reason for reason in map(row_lanes_unsupported, (ead_small_model, model)) if reason]
                      if config.schedule == "rows" else [])
    schedule = resolve_schedule(config.schedule, batch_size, logits_processor, pad_token_id is not None, cache_blockers)
    grouped, by_rows = schedule == "group", schedule == "rows"
    decide_first = config.variant == "decide_first"
    attention_mask = model_kwargs.get("attention_mask")  # None when generate() found no padding
    if attention_mask is None and batch_size > 1:  # rows that wait or finish leave masked holes
        attention_mask = torch.ones_like(input_ids)
    positions = _positions(attention_mask, input_ids)
    next_position = positions[:, -1] + 1
    if by_rows:
        lanes = {SMALL: RowLane(ead_small_model, prompt_length, batch_size), LARGE: RowLane(model, prompt_length, batch_size)}
    else:
        lanes = {SMALL: ModelLane(ead_small_model, prompt_length), LARGE: ModelLane(model, prompt_length)}
    router = EntropyRouter(config, batch_size, device)
    fill = int(pad_token_id) if pad_token_id is not None else 0
    want_scores = generation_config.return_dict_in_generate and generation_config.output_scores
    want_logits = generation_config.return_dict_in_generate and generation_config.output_logits

    grid = input_ids  # what the models read: one column per step, holes where a row did not write
    last_tokens = input_ids[:, -1]
    rows = GeneratedRows(input_ids, fill)
    if grouped:
        logits_processor = _per_row_lengths(logits_processor, rows)
    unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)
    advancing = unfinished
    scores, raw_logits = [], []
    current = LARGE if config.starts_large else SMALL
    all_rows = list(range(batch_size))
    runs = {current: all_rows}  # the models this step runs, and (row lanes) on which rows
    if streamer is not None:
        streamer.put(input_ids.cpu())

    for step in itertools.count():
        if by_rows:  # each model on its own rows; finished rows read nothing (their logits stay 0, unused)
            logits = torch.zeros((batch_size, vocab), device=device, dtype=torch.float32)
            for lane_id, lane_rows in runs.items():
                lane_logits = lanes[lane_id].read(grid, attention_mask, positions, lane_rows)
                logits.index_copy_(0, torch.tensor(lane_rows, device=device),
                                   lane_logits.to(device=device, dtype=torch.float32)[:, :vocab])
        else:
            step_logits = {
                lane_id: lanes[lane_id].read(grid, attention_mask, positions).to(device=device, dtype=torch.float32)[:, :vocab]
                for lane_id in sorted(runs)
            }
            if len(step_logits) == 2:
                logits = torch.where(router.active[:, None], step_logits[LARGE], step_logits[SMALL])
            else:
                (logits,) = step_logits.values()
        chosen = router.active
        if decide_first:  # the small model proposed; where it is uncertain the large model writes instead
            chosen = advancing & (entropy_bits(logits) >= config.threshold)
            if chosen.any():  # a second host synchronisation, only under this variant
                large_logits = lanes[LARGE].read(grid, attention_mask, positions)
                logits = torch.where(chosen[:, None], large_logits.to(device=device, dtype=torch.float32)[:, :vocab],
                                     logits)
        entropy = entropy_bits(logits)
        next_scores = logits_processor(rows.view(), logits)
        next_tokens = _pick_token(next_scores, generation_config.do_sample)

        rows.record(step, next_tokens, chosen.long(), entropy.float(), advancing)
        if want_scores:
            scores.append(next_scores)
        if want_logits:
            raw_logits.append(logits)
        if not decide_first:  # under decide_first the router stays on the small model, which proposes every token
            router.observe(entropy, live=advancing)

        # A row that did not write repeats its last token at its last position behind a masked key: the query
        # there sees exactly what the original saw, so the last column always holds each row's next-token logits.
        last_tokens = torch.where(advancing, next_tokens, last_tokens)
        grid = torch.cat([grid, last_tokens[:, None]], dim=-1)
        positions = torch.cat([positions, (next_position + rows.count - 1)[:, None]], dim=-1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, advancing[:, None].to(attention_mask.dtype)], dim=-1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())

        unfinished = unfinished & ~_stopped_rows(stopping_criteria, rows, next_scores)
        # The one host synchronisation per step: how many live rows want each model, and the longest of them
        # (row lanes: also which rows want which model).
        wants = {SMALL: unfinished & ~router.active, LARGE: unfinished & router.active}
        synced = torch.stack(
            [wants[SMALL].sum(), wants[LARGE].sum(),
             rows.count.masked_fill(~wants[SMALL], -1).max(), rows.count.masked_fill(~wants[LARGE], -1).max()]
        )
        if by_rows:
            synced = torch.cat([synced, wants[SMALL].long() * (SMALL + 1) + wants[LARGE].long() * (LARGE + 1)])
        rows_small, rows_large, top_small, top_large, *row_wants = synced.tolist()
        if rows_small + rows_large == 0:
            break
        if grouped:
            current = choose_lane(current, rows_small, rows_large)
            runs = {current: all_rows}
            advancing = wants[current]
            rows.next_longest = max(rows.longest, (top_large if current == LARGE else top_small) + 1)
            rows.next_all_write = (rows_large if current == LARGE else rows_small) == batch_size
        else:
            runs = {lane_id: all_rows for lane_id, wanted in ((SMALL, rows_small), (LARGE, rows_large)) if wanted}
            if by_rows:
                runs = {lane_id: [row for row, want in enumerate(row_wants) if want == lane_id + 1] for lane_id in runs}
            advancing = unfinished
            rows.next_longest = max(rows.longest, max(top_small, top_large) + 1)
            rows.next_all_write = rows_small + rows_large == batch_size

    if streamer is not None:
        streamer.end()
    if not generation_config.return_dict_in_generate:
        return rows.sequences()
    model_choices = rows.choices[:, : rows.longest]
    catchup = {  # row lanes count each row's own catch-up; whole-batch forwards read the same columns for every row
        lane_id: (torch.tensor(lane.row_catchup, dtype=torch.long, device=device) if by_rows
                  else torch.full((batch_size,), lane.catchup_tokens, dtype=torch.long, device=device))
        for lane_id, lane in lanes.items()
    }
    return EADGenerateOutput(
        sequences=rows.sequences(),
        scores=rows.per_position(scores) if want_scores else None,
        logits=rows.per_position(raw_logits) if want_logits else None,
        model_choices=model_choices,
        entropies=rows.entropies[:, : rows.longest],
        ead_stats=EADStats.from_choices(model_choices, catchup[SMALL], catchup[LARGE]),
        ead_forwards={"small": list(lanes[SMALL].forward_log), "large": list(lanes[LARGE].forward_log)},
    )
