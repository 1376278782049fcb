"""Supervised tasks. Every task is one object with the same shape (``../objectives`` share it):

- ``head`` (the head's name on the model) and ``head_spec()`` (what builds it; stored in config.json);
- ``encode(tokenizer, examples, max_len) -> items``: examples to token ids plus whatever the loss needs;
- ``collate(items, generator) -> batch``: a dict of tensors;
- ``n_targets(batch)`` and ``loss_sum(model, batch)``: the loss summed over the batch's targets;
- ``new_metrics()``: an accumulator with ``update(model, batch)``, ``reduce(sum_tensor)`` and ``compute()``;
- ``metric`` and ``greater_is_better``: what selects the best checkpoint;
- ``predict(model, tokenizer, examples, max_len)``: decoded predictions, one dict per example.

The training loop (``train/loop.py``) knows nothing else, so multi-task learning is a list of tasks.
"""
