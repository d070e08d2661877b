"""Hub-style `custom_generate` entry for Entropy Adaptive Decoding, shipped inside the ead_hf package.

    model.generate(**inputs, custom_generate=ead_hf.CUSTOM_GENERATE_DIR, trust_remote_code=True,
                   ead_config=EADConfig(threshold=2.0), ead_small_model=small)

transformers calls this with every argument given to generate(); the installed ead_hf does the work,
so streamers and stop_strings work here too. Copy this folder into a saved model directory to make
`from_pretrained(..., trust_remote_code=True)` return a model whose generate is EAD-aware.
"""

from ead_hf.hf.integration import generate_with_ead


def generate(model, ead_config=None, ead_small_model=None, **kwargs):
    if ead_small_model is None:
        raise ValueError("ead_small_model is required: pass the small model of the pair, ead_small_model=small")
    if ead_config is None:
        raise ValueError("ead_config is required: pass ead_config=EADConfig(threshold=...)")
    return generate_with_ead(small=ead_small_model, large=model, ead_config=ead_config, **kwargs)
