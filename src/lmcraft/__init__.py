"""lmcraft: a Transformer language model through the whole process — corpus, tokenizer, pretraining,
fine-tuning, model selection, evaluation, saving and prediction."""

__version__ = "0.1.0"
