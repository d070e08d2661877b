"""The EAD decoding loop, callable as a transformers `custom_generate` method.

Read `ead_decoding` top to bottom: each step the models the rows need read what they have not read yet
(`ModelRunner.read`: prefill, decode and catch-up are one operation), every live row takes the logits of
the model it chose (`_next_logits`; under rollback the large model's read may take back the small model's
latest tokens, and the row is cut there), the entropy of those logits feeds the router, the processors and the
greedy/sampling choice pick the token as `_sample` does, and one host synchronisation says which models
the next step needs (`_models_needed`). generate() has already merged the generation config, built the
logits processors and stopping criteria, and prepared the attention mask when this runs.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from .compat import (check_transformers_version, full_attention_only, is_single_model_processor, pad_token_id,
                     pop_prepared_cache)
from .config import EADConfig, resolve_ead_config
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair_checks import check_pair, shared_vocab_size
from .routing import EntropyRouter, entropy_bits, first_implausible_column
from .runner import ModelRunner

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
    **model_kwargs,
) -> EADGenerateOutput | torch.LongTensor:
    """Generate with Entropy Adaptive Decoding; `model` is the large model.

    Use as ``large.generate(**inputs, custom_generate=ead_decoding, ead_config=cfg, ead_small_model=small)``.
    transformers does not pass `streamer` or `tokenizer` to a custom_generate callable: for streaming and
    `stop_strings` use `enable_ead` or `EADGenerator`, which wrap this function.
    """
    config = _check_arguments(model, ead_small_model, ead_config, input_ids, generation_config, logits_processor,
                              model_kwargs)
    batch_size, prompt_length = input_ids.shape
    device, vocab = input_ids.device, shared_vocab_size(model, ead_small_model)
    fill = pad_token_id(generation_config) or 0  # what finished rows write, as generate() pads them
    mask = model_kwargs.get("attention_mask")  # None when generate() found no padding
    if mask is None and batch_size > 1:  # finished rows get masked columns
        mask = torch.ones_like(input_ids)
    positions = _positions(mask, input_ids)
    runners = {SMALL: ModelRunner(ead_small_model, prompt_length, batch_size, device),
               LARGE: ModelRunner(model, prompt_length, batch_size, device)}
    router = EntropyRouter(config, batch_size, device)
    trace = _Trace(generation_config)
    stream = _Stream(streamer, input_ids, holds_back=config.rollback is not None)
    grid, live = input_ids, torch.ones(batch_size, dtype=torch.bool, device=device)
    needed = [LARGE if config.starts_large else SMALL]

    while needed:
        logits, chosen, cut = _next_logits(runners, needed, router, config, grid, mask, positions, live, vocab)
        if cut is not None:  # rollback: the large model took back the small model's tokens from column `cut` on
            grid, mask, positions = grid[:, :cut], None if mask is None else mask[:, :cut], positions[:, :cut]
            for runner in runners.values():
                runner.forget(cut)
            trace.cut(cut - prompt_length)
        entropy = entropy_bits(logits)
        scores = logits_processor(grid, logits)
        tokens = torch.where(live, _pick_token(scores, generation_config.do_sample), fill)
        trace.record(chosen, entropy, scores, logits, live)
        if config.variant == "paper":  # under decide_first the router stays on the small model, which proposes
            router.observe(entropy, live=live)
        grid, mask, positions = _append(grid, mask, positions, tokens, live)
        wrote = live
        live = live & ~stopping_criteria(grid, scores).to(device)
        needed = _models_needed(router, live, entropy.isnan() & wrote, chosen)
        stream.step(grid, tokens, large_seen=runners[LARGE].seen, done=not needed)

    stream.end()
    if not generation_config.return_dict_in_generate:
        return grid
    return trace.output(grid, runners, counts_rollback=config.rollback is not None)


def _check_arguments(model, small, ead_config, input_ids, generation_config, logits_processor,
                     model_kwargs) -> EADConfig:
    """Everything EAD cannot run with is an error before any forward (`model_kwargs` loses the prepared cache)."""
    check_transformers_version()
    config = resolve_ead_config(ead_config)
    if small is None:
        raise ValueError("ead_small_model is required: pass the small model of the pair, ead_small_model=small")
    check_pair(model, small)
    if config.rollback is not None and input_ids.shape[0] > 1:
        raise ValueError(f"EADConfig.rollback in generate() decodes one prompt per call (rows taken back by different "
                         f"amounts would end at different lengths), got a batch of {input_ids.shape[0]} (prompts x "
                         "num_return_sequences): pass one prompt per call (pipelines do at their default batch_size=1), "
                         "or decode a batch with ead_hf.continuous.continuous_ead (greedy)")
    blockers = [reason for reason in map(full_attention_only, (small, model)) if reason] if config.rollback is not None else []
    if blockers:
        raise ValueError(f"EADConfig.rollback crops both models' caches where it takes tokens back, which needs "
                         f"full-attention layers: {'; '.join(blockers)}; use this pair without rollback")
    prepared_cache = pop_prepared_cache(model_kwargs)
    if prepared_cache is not None and prepared_cache.get_seq_length() > 0:
        raise ValueError("EAD cannot continue from a filled cache (each model keeps its own); pass no cache")
    _reject_unsupported(generation_config, logits_processor, model_kwargs)
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (batch, prompt length) with at least one prompt token, got shape "
                         f"{tuple(input_ids.shape)}: EAD starts from a prompt (e.g. the BOS token)")
    return config


def _next_logits(runners, needed, router, config, grid, mask, positions, live, vocab):
    """Each needed model reads what it has not read; each row takes the logits of the model that writes its
    token. Returns (logits, large-writes mask, cut): `cut` is None, or under rollback the column from which the
    large model took back the small model's tokens (the logits are then the large model's at that position).
    Under decide_first the small model proposes every position and where its entropy there is >= threshold the
    large model writes that position instead."""
    cut = None

    def read(model: int) -> torch.Tensor:  # float32 logits over the shared vocabulary, on the loop's device
        nonlocal cut
        if model == LARGE and config.rollback is not None:
            logits, cut = _read_and_judge(runners[LARGE], grid, mask, positions, config.rollback, vocab)
        else:
            logits = runners[model].read(grid, mask, positions)
        return logits.to(live.device, torch.float32)[:, :vocab]

    logits = {model: read(model) for model in needed}
    if config.variant == "decide_first":
        chosen = live & (entropy_bits(logits[SMALL]) >= config.threshold)
        if not chosen.any():  # decide_first's second host synchronisation
            return logits[SMALL], chosen, None
        return torch.where(chosen[:, None], read(LARGE), logits[SMALL]), chosen, cut
    if len(logits) == 2:
        return torch.where(router.active[:, None], logits[LARGE], logits[SMALL]), router.active, cut
    return logits[needed[0]], router.active, cut


def _read_and_judge(large: ModelRunner, grid, mask, positions, rollback: float, vocab: int):
    """Rollback, one row: the large model reads the columns it has not; the first small-model token among them
    (every column after the large model's own last token) that it gives under `rollback` x its top probability
    is taken back with all after it. Returns (its logits for the position it writes, the column cut at or None);
    one more host synchronisation."""
    seen, end = large.seen, grid.shape[1]
    _, history = large.read(grid, mask, positions, history=True)  # history[0, i] predicts column seen + i + 1
    first = max(seen + 1, large.prompt_length)
    tokens = grid[0, first:end].to(history.device)
    cut = int(first_implausible_column(history[0], seen, first, tokens, torch.ones_like(tokens, dtype=torch.bool),
                                       rollback, vocab))
    if cut == end:
        return history[:, -1], None
    return history[:, cut - 1 - seen], cut


def _append(grid, mask, positions, tokens, live):
    """The step's tokens as a new column; rows that finished get a masked column."""
    grid = torch.cat([grid, tokens[:, None]], dim=-1)
    positions = torch.cat([positions, positions[:, -1:] + 1], dim=-1)
    if mask is not None:
        mask = torch.cat([mask, live[:, None].to(mask.dtype)], dim=-1)
    return grid, mask, positions


def _models_needed(router: EntropyRouter, live: torch.Tensor, nan: torch.Tensor, chosen: torch.Tensor) -> list[int]:
    """The one host synchronisation of a step: which models the live rows want next, and whether a model
    produced NaN logits this step (routing on NaN is undefined: an error naming the model)."""
    wants_small, wants_large, nan_small, nan_large = torch.stack(
        [(live & ~router.active).any(), (live & router.active).any(), (nan & ~chosen).any(), (nan & chosen).any()]
    ).tolist()
    for failed, name in ((nan_small, "small"), (nan_large, "large")):
        if failed:
            raise ValueError(f"the {name} model produced NaN logits: its weights or dtype overflow (float16 often "
                             "does); load it in bfloat16 or float32")
    return [model for model, wanted in ((SMALL, wants_small), (LARGE, wants_large)) if wanted]


class _Stream:
    """What the streamer gets: each step's tokens, or under rollback (one row) only tokens no later read can take
    back: a small-model token once the large model has read it (`large_seen` columns), or when the answer ends."""

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
