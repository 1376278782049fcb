"""Export a model directory in the Hugging Face layout, loadable with transformers' ``AutoModelFor...``.

The family follows from the architecture (a post-LN encoder is BERT, or RoBERTa with a position offset; a
pre-LN decoder with learned positions is GPT-2; a pre-RMSNorm rotary SwiGLU decoder is Llama, or Qwen2 with
biases on Q, K, V only). The weights go through the same rules as the import (``convert.py``), backwards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from lmcraft.fsutil import staged_dir, write_json
from lmcraft.model.convert import ENCODERS, backbone_rules, head_rules, reverse_rules
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.tokenizer import TextTokenizer

HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
CLASSES = {  # (family, head) -> transformers class; None: the bare model
    ("bert", "mlm"): "BertForMaskedLM", ("bert", "classify"): "BertForSequenceClassification",
    ("bert", None): "BertModel",
    ("roberta", "mlm"): "RobertaForMaskedLM", ("roberta", "classify"): "RobertaForSequenceClassification",
    ("roberta", None): "RobertaModel", ("bert", "tag"): "BertForTokenClassification",
    ("roberta", "tag"): "RobertaForTokenClassification", ("bert", "span"): "BertForQuestionAnswering",
    ("roberta", "span"): "RobertaForQuestionAnswering", ("gpt2", "lm"): "GPT2LMHeadModel", ("gpt2", None): "GPT2Model",
    ("llama", "lm"): "LlamaForCausalLM", ("llama", None): "LlamaModel", ("qwen2", "lm"): "Qwen2ForCausalLM",
    ("qwen2", None): "Qwen2Model", ("electra", "rtd"): "ElectraForPreTraining", ("electra", None): "ElectraModel",
}

# A classifier that pools with mean or cls has no transformers class: it goes out with modeling_lmcraft.py,
# which transformers runs only when asked to (trust_remote_code=True).
REMOTE_CODE = Path(__file__).with_name("modeling_lmcraft.py")
REMOTE_CLASSES = {"bert": "LmcraftBertForSequenceClassification",
                  "roberta": "LmcraftRobertaForSequenceClassification"}

AUTO_CLASSES = (("ForSequenceClassification", "AutoModelForSequenceClassification"),
                ("ForTokenClassification", "AutoModelForTokenClassification"),
                ("ForQuestionAnswering", "AutoModelForQuestionAnswering"), ("ForMaskedLM", "AutoModelForMaskedLM"),
                ("ForCausalLM", "AutoModelForCausalLM"), ("LMHeadModel", "AutoModelForCausalLM"))


def family_of(cfg: TransformerConfig, heads: dict[str, Any] | None = None) -> str:
    """The transformers family that can hold this architecture exactly, or an error saying why none can. An
    encoder pretrained with replaced-token detection (an ``rtd`` head) is ELECTRA's, else BERT's."""
    biases = cfg.qkv_bias and cfg.out_bias and cfg.ffn_bias
    plain = cfg.norm == "layernorm" and cfg.position == "learned" and cfg.activation in HF_ACTIVATION and biases
    if not cfg.causal and not cfg.norm_first and plain:
        if cfg.position_offset:
            return "roberta"
        return "electra" if any(spec.get("kind") == "rtd" for spec in (heads or {}).values()) else "bert"
    if cfg.causal and cfg.norm_first and plain and cfg.n_segment == 0:
        return "gpt2"
    rotary_swiglu = cfg.position == "rotary" and cfg.norm == "rmsnorm" and cfg.activation == "swiglu"
    if cfg.causal and cfg.norm_first and rotary_swiglu:
        if cfg.qkv_bias == cfg.out_bias:
            return "llama"
        if cfg.qkv_bias and not cfg.out_bias and not cfg.ffn_bias:
            return "qwen2"
    raise ValueError("no transformers architecture holds this model exactly (BERT/RoBERTa: post-LN encoder with "
                     "learned positions and biases; GPT-2: pre-LN decoder with learned positions and no segments; "
                     f"Llama/Qwen2: rotary RMSNorm SwiGLU decoder); its architecture: {cfg.to_dict()}")


def pooled_on_its_own(head: str | None, spec: dict[str, Any] | None) -> bool:
    """A classifier pooling with mean or cls: transformers' classes cannot hold it (they read a pooler)."""
    return head == "classify" and spec is not None and spec.get("pooling", "cls") != "pooler"


def hf_config(cfg: TransformerConfig, family: str, head: str | None, spec: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {"model_type": family, "architectures": [CLASSES[family, head]],
                              "vocab_size": cfg.vocab_size, "pad_token_id": cfg.pad_id, "torch_dtype": "float32"}
    if family in ENCODERS:
        config.update(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                      intermediate_size=cfg.d_ff, hidden_act=HF_ACTIVATION[cfg.activation],
                      hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                      max_position_embeddings=cfg.max_len, type_vocab_size=max(cfg.n_segment, 1),
                      layer_norm_eps=cfg.norm_eps, position_embedding_type="absolute")
        if family == "electra":
            config.update(embedding_size=cfg.d_model)
    elif family == "gpt2":
        config.update(n_embd=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.d_ff,
                      n_positions=cfg.max_len, activation_function=HF_ACTIVATION[cfg.activation],
                      layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                      attn_pdrop=cfg.dropout, tie_word_embeddings=True, bos_token_id=cfg.pad_id,
                      eos_token_id=cfg.pad_id)
    else:
        config.update(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                      num_key_value_heads=cfg.kv_heads, head_dim=cfg.dh, intermediate_size=cfg.d_ff,
                      hidden_act="silu", rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                      max_position_embeddings=cfg.max_len, attention_dropout=cfg.dropout,
                      tie_word_embeddings=bool(spec.get("tied", True)) if spec else False)
        if family == "llama":
            config.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.ffn_bias)
    if head in ("classify", "tag") and spec is not None:
        labels = list(spec["labels"])
        config.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
                      num_labels=len(labels))
    if pooled_on_its_own(head, spec):
        remote = REMOTE_CLASSES[family]
        module = REMOTE_CODE.stem  # a model_type of its own: without trust_remote_code transformers refuses it
        config.update(model_type=f"lmcraft_{family}", architectures=[remote],
                      lmcraft_pooling=str((spec or {}).get("pooling", "cls")),
                      auto_map={"AutoConfig": f"{module}.Lmcraft{family.title()}Config",
                                "AutoModelForSequenceClassification": f"{module}.{remote}"})
    return config


def pick_head(model: Model, head: str | None) -> str | None:
    if head is not None:
        if head not in model.head_specs:
            raise ValueError(f"the model has no {head!r} head (heads: {sorted(model.head_specs) or 'none'})")
        return head
    for name in ("classify", "tag", "span", "mlm", "lm", "rtd"):
        if name in model.head_specs:
            return name
    return None


def export_state(model: Model, family: str, head: str | None) -> dict:
    cfg, spec = model.cfg, model.head_specs.get(head or "")
    ours = {k: v for k, v in model.state_dict().items()}
    bare = head is None
    base = "" if bare else {"bert": "bert.", "roberta": "roberta.", "electra": "electra.", "gpt2": "transformer.",
                            "llama": "model.", "qwen2": "model."}[family]
    state = reverse_rules(backbone_rules(family, cfg), ours, cfg, prefix=base)
    if head == "classify":
        if family not in ("bert", "roberta"):
            raise ValueError(f"a classification head exports only with an encoder (BERT, RoBERTa), not with {family}")
        kind = "classify_pooled" if pooled_on_its_own(head, spec) else "classify"
        state.update(reverse_rules(head_rules(family, kind, base), ours, cfg))
    elif head in ("tag", "span"):
        if spec is not None and spec.get("ngrams"):
            raise ValueError("transformers' token classifiers read no token n-grams; this tagger does (tag.ngrams). "
                             "Export it to ONNX (lmcraft export --to onnx) or keep it as an lmcraft model "
                             "directory")
        if spec is not None and spec.get("crf"):
            raise ValueError("transformers' token classifiers have no CRF layer; this tagger decodes with one. "
                             "Fine-tune without --crf to export it, or keep it as an lmcraft model directory")
        if family not in ("bert", "roberta"):
            raise ValueError(f"a {head} head exports only with an encoder (BERT, RoBERTa), not with {family}")
        state.update(reverse_rules(head_rules(family, head, base), ours, cfg))
    elif head == "mlm":
        if family not in ("bert", "roberta"):
            raise ValueError(f"a masked-LM head exports only with an encoder, not with {family}")
        state.update(reverse_rules(head_rules(family, "mlm", base), ours, cfg))
    elif head == "rtd":
        state.update(reverse_rules(head_rules(family, "rtd", base), ours, cfg))
    elif head == "lm":
        if family not in ("gpt2", "llama", "qwen2"):
            raise ValueError(f"a causal-LM head exports only with a decoder, not with {family}")
        if spec is not None and spec.get("memory"):
            raise ValueError("this translation model reads a translation memory's target beside each source "
                             "(seq2seq --memory), which transformers would not supply; keep it as an lmcraft "
                             "model directory")
        if spec is not None and not spec.get("tied", True):
            state.update(reverse_rules(head_rules(family, "lm_untied", base), ours, cfg))
    if family in ENCODERS and cfg.n_segment == 0:  # transformers always adds a segment embedding
        state[base + "embeddings.token_type_embeddings.weight"] = ours["backbone.embed.token.weight"][:1] * 0
    return state


def tokenizer_files(tokenizer: TextTokenizer, out: Path, max_len: int) -> None:
    tokenizer.save(out)
    (out / "special_tokens.json").unlink(missing_ok=True)  # transformers reads its own files, written here
    names = {"pad": "pad_token", "unk": "unk_token", "cls": "cls_token", "sep": "sep_token", "mask": "mask_token"}
    specials = {names[role]: token for role, token in tokenizer.roles.items() if token is not None}
    write_json(out / "special_tokens_map.json", specials)
    write_json(out / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                               "model_max_length": max_len, **specials})


def export_hf(model_dir: str | Path, out_dir: str | Path, *, head: str | None = None) -> dict[str, Any]:
    """Write ``model_dir`` (lmcraft's or a converted one) to ``out_dir`` in the transformers layout."""
    model, tokenizer, _ = load_model_dir(model_dir)
    head = pick_head(model, head)
    family = family_of(model.cfg, {head: model.head_specs[head]} if head else None)
    config = hf_config(model.cfg, family, head, model.head_specs.get(head or ""))
    state = export_state(model, family, head)
    with staged_dir(out_dir) as staging:
        write_json(staging / "config.json", config)
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        tokenizer_files(tokenizer, staging, model.input_tokens)
        remote = "auto_map" in config
        if remote:
            shutil.copyfile(REMOTE_CODE, staging / REMOTE_CODE.name)
    auto = next((a for suffix, a in AUTO_CLASSES if config["architectures"][0].endswith(suffix)), "AutoModel")
    return {"out": str(out_dir), "family": family, "class": config["architectures"][0], "auto_class": auto,
            "tensors": len(state), "remote_code": remote,
            "config": json.loads(json.dumps(config))}
