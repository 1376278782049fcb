"""The subcommands: each parses nothing and does little, calling the stage, the Predictor or the model code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmcraft.config import PretrainConfig, TokenizerConfig, from_namespace
from lmcraft.data.readers import Fields


def cmd_data_list(args: argparse.Namespace) -> int:
    from lmcraft.data.builtin import BUILTINS

    for b in BUILTINS.values():
        print(f"{b.name:<26}{b.description}   [needs: {b.install.split('   ')[0]}]")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from lmcraft.data.builtin import prepare

    print(json.dumps(prepare(args.name, args.out_dir), ensure_ascii=False, indent=2))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from lmcraft.data.readers import read_examples

    for path in args.files:
        examples = read_examples(path, from_namespace(Fields, args))
        labels = sorted({str(ex.label) for ex in examples})
        print(f"{path}: {len(examples):,} examples, labels {labels}")
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from lmcraft.data.readers import read_corpus
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    cfg = from_namespace(TokenizerConfig, args)
    tok = train_tokenizer(read_corpus(cfg.corpus), kind=cfg.kind, vocab_size=cfg.vocab_size,
                          min_frequency=cfg.min_frequency, lowercase=cfg.lowercase)
    print(f"wrote {TextTokenizer(tok).save(cfg.out)} ({tok.get_vocab_size():,} tokens)")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from lmcraft.pretrain import run_pretrain

    summary = run_pretrain(from_namespace(PretrainConfig, args))
    if summary.get("rank") != "worker":
        print(json.dumps(summary, indent=2))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from lmcraft.evaluate.report import format_test
    from lmcraft.finetune import run_finetune
    from lmcraft.stage_options import FinetuneConfig

    summary = run_finetune(from_namespace(FinetuneConfig, args))
    if summary.get("rank") == "worker":
        return 0
    print(f"best dev {summary['dev']} at step {summary['best_step']}; model in {summary['model_dir']}")
    if "test" in summary:
        print("test (best checkpoint):\n" + format_test(summary["test"]))
    if "baseline" in summary:
        print(f"\nbaseline on the same test split: {summary['baseline']['name']}\n"
              f"{format_test(summary['baseline']['test'], brief=True)}")
    return 0


def cmd_multitask(args: argparse.Namespace) -> int:
    from lmcraft.evaluate.report import format_test
    from lmcraft.multitask import run_multitask
    from lmcraft.stage_options import MultitaskConfig

    summary = run_multitask(from_namespace(MultitaskConfig, args))
    if summary.get("rank") == "worker":
        return 0
    print(f"best dev mean {summary['dev']['mean']:.4f} at step {summary['best_step']}; model in {summary['model_dir']}")
    for name, metrics in summary["test"].items():
        print(f"test of {name} (best checkpoint):\n{format_test(metrics, brief=True)}")
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from lmcraft.fewshot import run_fewshot
    from lmcraft.stage_options import FewshotConfig

    run_fewshot(from_namespace(FewshotConfig, args))
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from lmcraft.curve.options import SET_BY_THE_CURVE, CurveConfig
    from lmcraft.curve.plot import table
    from lmcraft.curve.run import run_curve

    cfg = from_namespace(CurveConfig, args, shadowed=SET_BY_THE_CURVE)
    summary = run_curve(cfg)
    out = cfg.out
    print("\n" + table(summary))
    print(f"written: {out}/curve.md, {out}/curve.png, {out}/curve.json; each run in {out}/runs/")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from lmcraft.tune.options import TuneConfig
    from lmcraft.tune.study import run_tune

    summary = run_tune(from_namespace(TuneConfig, args))
    best = summary["best_trial"]
    print(f"best trial {best['number']}: dev {summary['metric']} {best['value']:.4f} with {best['params']}")
    for split in ("dev", "test"):
        for name, v in summary["final"][split].items():
            print(f"  {split} {name}: {v['mean']:.4f} ± {v['std']:.4f} over seeds {summary['final']['seeds']}")
    print(f"model in {summary['model_dir']}; report {summary['report']}")
    return 0


def _predictor(args: argparse.Namespace) -> object:
    """The Predictor of ``args.model_dir`` as the inference options ask."""
    from lmcraft.inference.predictor import Predictor

    settings = {name: getattr(args, name) for name in ("num_beams", "no_repeat_ngram", "keep_placeholders")
                if getattr(args, name, None) is not None}
    return Predictor(args.model_dir, head=args.head, int8=args.int8, compile=args.compile, settings=settings,
                     fields=from_namespace(Fields, args), compiled=True if args.compiled else "trusted")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lmcraft.evaluate.report import format_test

    predictor = _predictor(args)
    metrics = predictor.evaluate(predictor.read(args.data), predictions=args.predictions, progress=True)  # type: ignore[attr-defined]
    print(format_test(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lmcraft.inference.inputs import read_inputs

    if not args.texts and not args.file:
        raise ValueError("give texts to predict for, or --file FILE")
    predictor = _predictor(args)
    examples = predictor.examples(args.texts)  # type: ignore[attr-defined]
    if args.file:
        examples += read_inputs(predictor, args.file)  # type: ignore[arg-type]
    for record in predictor.predict_examples(examples, progress=len(examples) > 1000):  # type: ignore[attr-defined]
        print(json.dumps(record, ensure_ascii=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lmcraft.report.build import build_report
    from lmcraft.report.options import ReportConfig

    build_report(from_namespace(ReportConfig, args))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    import time

    from lmcraft.inference.compiled import compile_classifier, trust_file

    start = time.perf_counter()
    packages = compile_classifier(args.model_dir, args.head, max_batch=args.max_batch)
    print(f"wrote {' and '.join(map(str, packages))} in {time.perf_counter() - start:.0f} s; `lmcraft predict` and "
          f"`lmcraft evaluate` use them from now on (their hashes are in {trust_file()})")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from lmcraft.chat import ChatSession, chat_predictor, run_chat
    from lmcraft.model.generate import GenerationConfig

    predictor = chat_predictor(args.model_dir)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens or predictor.task.max_target_tokens + 1,  # type: ignore[attr-defined]
                           temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                           repetition_penalty=args.repetition_penalty, seed=args.seed)
    return run_chat(ChatSession(predictor, cfg, system=args.system))


def cmd_serve(args: argparse.Namespace) -> int:
    from lmcraft.serve.options import ServeConfig
    from lmcraft.serve.run import serve

    return serve(from_namespace(ServeConfig, args))


def cmd_export(args: argparse.Namespace) -> int:
    if args.to == "onnx":
        from lmcraft.model.onnx_export import export_onnx

        summary = export_onnx(args.model_dir, args.out_dir, head=args.head)
        print(f"wrote {summary['out']}/model.onnx: {summary['kind']} ({', '.join(summary['inputs'])} -> "
              f"{', '.join(summary['outputs'])}); run it with onnxruntime.InferenceSession; "
              f"{summary['out']}/lmcraft_onnx.json says how")
        return 0
    from lmcraft.model.export import export_hf

    summary = export_hf(args.model_dir, args.out_dir, head=args.head)
    remote = ", trust_remote_code=True" if summary.get("remote_code") else ""
    print(f"wrote {summary['out']}: {summary['class']} ({summary['tensors']} tensors); load it with "
          f"transformers.{summary['auto_class']}.from_pretrained({summary['out']!r}{remote})")
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

    recipe = load_recipe(args.recipe, [*args.set, *([f"budget={args.budget}"] if args.budget else [])])
    if args.no_progress:
        recipe.progress = False
        recipe.pretrain.progress = recipe.finetune.progress = False
    run_recipe(recipe)
    return 0
