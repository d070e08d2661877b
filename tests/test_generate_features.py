"""The usual generate features under EAD: streamers, stop strings, eos/padding, processors, criteria, limits."""

import pytest
import torch
from transformers import (LogitsProcessorList, MaxTimeCriteria, StoppingCriteria, StoppingCriteriaList,
                          TextIteratorStreamer, TextStreamer)
from transformers.generation.logits_process import SuppressTokensLogitsProcessor

from ead_hf import EADConfig, EADGenerator, enable_ead
from ead_hf.models.tiny import tiny_pair

MIXED = EADConfig(threshold=5.0, window=3, min_dwell=2)


@pytest.fixture(scope="module")
def generator(qwen_pair, tokenizer):
    small, large = qwen_pair
    return EADGenerator(small=small, large=large, config=MIXED, tokenizer=tokenizer)


def test_streamer_receives_exactly_the_generated_text(generator, tokenizer, capsys):
    batch = tokenizer(["Stream me"], return_tensors="pt")
    out = generator.generate(**batch, max_new_tokens=15, do_sample=False,
                             streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))
    printed = capsys.readouterr().out
    expected = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert printed.rstrip("\n") == expected.rstrip("\n") and expected


def test_iterator_streamer_with_prompt(generator, tokenizer):
    batch = tokenizer(["abc"], return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_special_tokens=True)
    out = generator.generate(**batch, max_new_tokens=10, do_sample=False, streamer=streamer)
    assert "".join(streamer) == tokenizer.decode(out[0], skip_special_tokens=True)


def test_streamer_under_rollback_gets_only_tokens_kept(qwen_pair, tokenizer):
    """Tokens the large model may still take back are held until it has read them (or the answer ends): what was
    streamed is exactly the final text."""
    small, large = qwen_pair
    config = EADConfig(threshold=5.3, window=2, min_dwell=1, rollback=0.8)
    batch = tokenizer(["Once upon a time, in a land"], return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_special_tokens=True)
    out = EADGenerator(small=small, large=large, config=config).generate(**batch, max_new_tokens=14, do_sample=False, streamer=streamer,
                                                     return_dict_in_generate=True)
    assert int(out.rolled_back[0]) > 0, "the config should take tokens back"
    assert "".join(streamer) == tokenizer.decode(out.sequences[0], skip_special_tokens=True)


def test_stop_strings_stop(generator, tokenizer):
    batch = tokenizer(["Hello"], return_tensors="pt")
    free = generator.generate(**batch, max_new_tokens=30, do_sample=False)
    text = tokenizer.decode(free[0, batch["input_ids"].shape[1]:])
    stop = text[8:10]
    assert stop not in text[:8] + text[8:9], "pick a stop string that first occurs at character 8"
    stopped = generator.generate(**batch, max_new_tokens=30, do_sample=False, stop_strings=stop)
    new_text = tokenizer.decode(stopped[0, batch["input_ids"].shape[1]:])
    assert new_text == text[:10]


def test_stop_strings_need_a_tokenizer(qwen_pair, tokenizer):
    small, large = qwen_pair
    with pytest.raises(ValueError, match="stop_strings need the tokenizer"):
        EADGenerator(small=small, large=large, config=MIXED).generate(**tokenizer(["x"], return_tensors="pt"), max_new_tokens=3,
                                                   stop_strings=["a"])


def test_finished_rows_are_padded_and_traced_as_no_token(generator, batch):
    free = generator.generate(**batch, max_new_tokens=20, do_sample=False)
    width = batch["input_ids"].shape[1]
    eos = int(free[1, width + 3])
    out = generator.generate(**batch, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=0,
                             return_dict_in_generate=True)
    row = out.sequences[1, width:].tolist()
    end = row.index(eos)
    assert end <= 3 and all(t == 0 for t in row[end + 1:])
    assert (out.model_choices[1, end + 1:] == -1).all() and out.entropies[1, end + 1:].isnan().all()
    assert (out.model_choices[1, :end + 1] >= 0).all()
    assert out.sequences.shape[1] <= width + 20


def test_max_new_tokens_zero_is_rejected_like_plain_generate(generator, qwen_pair, batch):
    _, large = qwen_pair
    with pytest.raises(ValueError) as plain:
        large.generate(**batch, max_new_tokens=0)
    with pytest.raises(ValueError) as ead:
        generator.generate(**batch, max_new_tokens=0)
    assert str(ead.value) == str(plain.value)


def test_user_processors_and_criteria_are_applied(generator, batch):
    width = batch["input_ids"].shape[1]
    banned = list(range(4, 100, 2))
    out = generator.generate(**batch, max_new_tokens=12, do_sample=False,
                             logits_processor=LogitsProcessorList([SuppressTokensLogitsProcessor(banned)]))
    assert not set(out[:, width:].flatten().tolist()) & set(banned)

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= width + 5, dtype=torch.bool)

    out = generator.generate(**batch, max_new_tokens=12, do_sample=False,
                             stopping_criteria=StoppingCriteriaList([StopAfter(), MaxTimeCriteria(60)]))
    assert out.shape[1] == width + 5


def test_vocab_padding_mismatch_uses_the_shared_vocabulary(batch):
    small, large = tiny_pair("qwen2", seed=8, small_vocab_size=128, large_vocab_size=160)
    generator = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("-inf"), start="large"))
    out = generator.generate(**batch, max_new_tokens=15, do_sample=False, return_dict_in_generate=True,
                             output_logits=True)
    assert all(step.shape[-1] == 128 for step in out.logits)
    # large alone restricted to the shared 128 ids gives the same tokens
    plain = large.generate(**batch, max_new_tokens=15, do_sample=False, suppress_tokens=list(range(128, 160)))
    assert torch.equal(out.sequences, plain)
    unrestricted = large.generate(**batch, max_new_tokens=15, do_sample=False)
    assert (unrestricted >= 128).any(), "the test pair should reach padded ids when not restricted"
    mixed = EADGenerator(small=small, large=large, config=MIXED).generate(**batch, max_new_tokens=15, do_sample=False)
    assert (mixed < 128).all()


def test_enable_ead_accepts_a_dict_config(qwen_pair, batch):
    small, large = tiny_pair("qwen2", seed=3, dtype=torch.float64)
    expected = EADGenerator(small=small, large=large, config=MIXED).generate(**batch, max_new_tokens=8, do_sample=False)
    enable_ead(large=large, small=small)
    out = large.generate(**batch, max_new_tokens=8, do_sample=False, ead_config=MIXED.to_dict())
    assert torch.equal(out, expected)
