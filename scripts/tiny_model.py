"""Write a tiny random-weight Llama checkpoint and a word-level tokenizer to a folder (no model hub).

Used by scripts/serve_local.sh to give a real OpenAI-compatible server (``transformers serve``)
a model to serve in CI. The final norm's weight is zero, so every logit is 0 and greedy decoding
picks token 0, which is the end-of-sequence token: the model stops after one token unless the
server honours an exact-length knob (``min_new_tokens``). A server that ignores the knob shows.

    python scripts/tiny_model.py OUT_DIR [--vocab 512]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write(out: Path, vocab_size: int = 512, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    words = ["<eos>"] + [f"w{k}" for k in range(vocab_size - 2)] + ["<unk>"]  # id 1 (w0) is what greedy picks once <eos> is barred
    tok = Tokenizer(models.WordLevel({w: k for k, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=0, bos_token_id=None, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # all logits 0: greedy picks token 0 = <eos> unless a knob forbids it
    model.generation_config.eos_token_id = 0
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)
    (out / "energykit_tiny.json").write_text(json.dumps({"vocab_size": vocab_size, "seed": seed}))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--vocab", type=int, default=512)
    args = parser.parse_args()
    print(write(args.out, args.vocab))
