"""MLM masking statistics, the sparse loss, and packing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmcraft.model.heads import Model
from lmcraft.objectives.mlm import IGNORE, MaskedLM, mask_tokens, pack
from tests.conftest import tiny_config

SPECIAL = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]


def test_masking_statistics() -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (256, 128))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[:32, 100:] = 0  # some padding
    batch = mask_tokens(ids, special_ids=SPECIAL, mask_id=4, vocab_size=1000, generator=g)
    maskable = ~torch.isin(ids, torch.tensor(SPECIAL))
    selected = batch.selected
    assert not (selected & ~maskable).any(), "special tokens and padding are never selected"
    rate = selected.sum().item() / maskable.sum().item()
    assert abs(rate - 0.15) < 0.005
    n = selected.sum().item()
    to_mask = (batch.input_ids == 4) & selected
    unchanged = (batch.input_ids == ids) & selected
    replaced = selected & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n - 0.8) < 0.01
    # a random replacement may by chance equal the original (1 in ~1000), so "unchanged" is ~10.01%
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert abs(replaced.sum().item() / n - 0.1) < 0.01
    assert (batch.input_ids[replaced] >= 5).all(), "random replacements are ordinary tokens"
    # labels: the original id at selected positions, IGNORE everywhere else
    assert torch.equal(batch.labels[selected], ids[selected])
    assert (batch.labels[~selected] == IGNORE).all()
    # unselected positions are untouched
    assert torch.equal(batch.input_ids[~selected], ids[~selected])


def test_masking_is_dynamic_and_reproducible() -> None:
    ids = torch.randint(5, 100, (8, 64))
    a = mask_tokens(ids, special_ids=SPECIAL, mask_id=4, vocab_size=100, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, special_ids=SPECIAL, mask_id=4, vocab_size=100, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    first = mask_tokens(ids, special_ids=SPECIAL, mask_id=4, vocab_size=100, generator=g)
    second = mask_tokens(ids, special_ids=SPECIAL, mask_id=4, vocab_size=100, generator=g)
    assert torch.equal(a.selected, b.selected)
    assert not torch.equal(first.selected, second.selected)


def test_sparse_loss_equals_dense_loss() -> None:
    """The head runs only at masked positions; the loss must equal the full-vocabulary loss over all
    positions with IGNORE labels."""
    cfg = tiny_config()
    objective = MaskedLM(special_ids=SPECIAL, mask_id=4, pad_id=0, vocab_size=cfg.vocab_size)
    model = Model(cfg, {"mlm": objective.head_spec()}).eval()
    items = [torch.randint(5, 97, (n,)).tolist() for n in (20, 33, 12, 40)]
    batch = objective.collate(items, torch.Generator().manual_seed(0))
    sparse = objective.loss_sum(model, batch) / objective.n_targets(batch)
    hidden = model(batch["input_ids"], batch.get("padding_mask"))
    head = model.heads["mlm"]
    everywhere = torch.ones_like(batch["labels"], dtype=torch.bool)
    logits = head(hidden, everywhere, model.backbone.embed.token.weight).view(*batch["labels"].shape, -1)
    dense = F.cross_entropy(logits.transpose(1, 2), batch["labels"], ignore_index=IGNORE)
    torch.testing.assert_close(sparse, dense)


def test_pack_makes_full_blocks() -> None:
    seqs = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34], [40]]
    blocks = pack(seqs, block=6, cls_id=2, sep_id=3)
    # stream: 10 11 12 3 20 21 3 30 31 32 33 34 3 40 3 → blocks of 4 body tokens
    assert blocks == [[2, 10, 11, 12, 3, 3], [2, 20, 21, 3, 30, 3], [2, 31, 32, 33, 34, 3]]
    assert all(len(b) == 6 for b in blocks)
