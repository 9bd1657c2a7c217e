#!/usr/bin/env python
"""Tokenize text or JSONL files into a megatron-core indexed dataset for --dataset.data_path.

    python scripts/preprocess_data.py --input a.jsonl b.txt --output-prefix data/corpus \
        --tokenizer-type ByteLevelTokenizer
    python scripts/preprocess_data.py --input corpus.jsonl --output-prefix data/corpus \
        --tokenizer-type GPT2BPETokenizer --vocab-file gpt2/vocab.json --merge-file gpt2/merges.txt
    python scripts/preprocess_data.py --python-stdlib-mb 2 --output-prefix data/stdlib_sentences \
        --split-sentences        # one sequence per sentence, for T5 (--dataset=t5)
"""

import argparse
import re
import sys

from megatron_bridge_cli.config.tokenizer import TokenizerConfig
from megatron_bridge_cli.data.preprocess import iter_documents, stdlib_text_files, write_indexed_dataset
from megatron_bridge_cli.data.tokenizers import build_tokenizer
from megatron_bridge_cli.errors import ConfigError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="text files (one document each) or .jsonl files")
    source.add_argument("--python-stdlib-mb", type=float, help="use this many MB of Python's stdlib sources")
    parser.add_argument("--output-prefix", required=True, help="writes PREFIX.bin and PREFIX.idx")
    parser.add_argument("--json-key", default="text", help="field of each JSON line holding the text")
    parser.add_argument("--tokenizer-type", default="ByteLevelTokenizer",
                        choices=["ByteLevelTokenizer", "HuggingFaceTokenizer", "SentencePieceTokenizer",
                                 "GPT2BPETokenizer", "TikTokenizer"],
                        help="as --tokenizer.tokenizer_type of bridge-train (use the same one for training)")
    parser.add_argument("--tokenizer-model",
                        help="HuggingFace tokenizer folder, SentencePiece .model or tiktoken ranks file")
    parser.add_argument("--vocab-file", help="GPT2BPETokenizer: vocab.json")
    parser.add_argument("--merge-file", help="GPT2BPETokenizer: merges.txt")
    parser.add_argument("--tiktoken-pattern", default="cl100k",
                        help="TikTokenizer: cl100k, o200k, r50k or a regular expression")
    parser.add_argument("--split-sentences", action="store_true",
                        help="one sequence per sentence/line (T5 span-corruption data, --dataset=t5)")
    args = parser.parse_args(argv)
    try:
        tokenizer = build_tokenizer(TokenizerConfig(
            tokenizer_type=args.tokenizer_type, tokenizer_model=args.tokenizer_model, vocab_file=args.vocab_file,
            merge_file=args.merge_file, tiktoken_pattern=args.tiktoken_pattern))
        files = args.input or stdlib_text_files(int(args.python_stdlib_mb * 2**20))
        stats = write_indexed_dataset(iter_documents(files, args.json_key), tokenizer, args.output_prefix,
                                      sentences=args.split_sentences)
    except (ConfigError, OSError, KeyError, ValueError) as e:
        # tokenizer errors name bridge-train's flags (--tokenizer.vocab_file): name this script's (--vocab-file)
        message = re.sub(r"--tokenizer\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(e))
        print(f"preprocess_data: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {stats['prefix']}.bin/.idx: {stats['documents']} documents, {stats['sequences']} sequences, "
          f"{stats['tokens']} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
