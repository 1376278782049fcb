"""The streaming corpus pipeline: each step on real text, the shards against a plain one-loop reference,
parallel and resumed runs against a clean one (byte for byte), and the errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from lmcraft.cli import main
from lmcraft.data.corpus import (
    CorpusConfig,
    DedupConfig,
    ExactSet,
    FilterConfig,
    MinHasher,
    NearDupIndex,
    OutDirError,
    TokenShards,
    digest64,
    rejected_by,
    run_corpus,
    shingle_hashes,
)
from lmcraft.data.corpus.dedup import rehashed_table
from lmcraft.data.errors import DataError
from lmcraft.text import normalize, split_sentences
from lmcraft.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def pd_lines(peoples_daily: Path) -> list[str]:
    """The first 400 paragraphs of the People's Daily, January 1998: full-width digits and punctuation."""
    return peoples_daily.read_text(encoding="utf-8").splitlines()[:400]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def config(inputs: list[Path], out: Path, tokenizer: Path, **overrides: object) -> CorpusConfig:
    """In this process (workers=0), small shards, no progress bar."""
    options: dict[str, object] = {"workers": 0, "shard_tokens": 4000, "progress": False, **overrides}
    return CorpusConfig(inputs, out, tokenizer, **options)  # type: ignore[arg-type]


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}


def without_throughput(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("throughput", "tokenizer")}


# ---- the steps -----------------------------------------------------------------------------------------


def test_normalize_folds_full_width_forms_and_removes_controls(pd_lines: list[str]) -> None:
    assert normalize("１２月３１日，ＡＢＣ！\u3000ｘｙｚ") == "12月31日,ABC! xyz"
    assert normalize(" a\x00b\u200bc\td\r\ne  \n\n\u2028 f\ufeff ") == "abc d\ne\nf"
    assert normalize("ﬁne Ａ\u0301") == "fine Á"  # compatibility forms, and composition after folding
    text = normalize(pd_lines[3])  # "１２月３１日，中共中央总书记、国家主席江泽民发表１９９８年新年讲话《..."
    assert text.startswith("12月31日,中共中央总书记、国家主席江泽民发表1998年新年讲话《")
    assert not any("\uff01" <= ch <= "\uff5e" for line in pd_lines for ch in normalize(line))


def test_split_sentences_chinese(pd_lines: list[str]) -> None:
    assert split_sentences("他说：“好。”然后走了！真的吗？是的；好") == [
        "他说：“好。”", "然后走了！", "真的吗？", "是的；", "好"]
    # NFKC makes ！？； ASCII; beside CJK characters they still end sentences, while a decimal point does not
    assert split_sentences(normalize("利率为５．５％！今年如此？是的")) == ["利率为5.5%!", "今年如此?", "是的"]
    paragraph = normalize(pd_lines[6])  # "１９９７年，是中国发展历史上非常重要的很不平凡的一年。中国人民..."
    sentences = split_sentences(paragraph)
    assert sentences[0] == "1997年,是中国发展历史上非常重要的很不平凡的一年。"
    assert len(sentences) == 4 and "".join(sentences) == paragraph
    assert all(s.endswith("。") for s in sentences)


def test_split_sentences_english() -> None:
    text = ('Mr. Smith met Dr. Jones in the U.S. capital. They talked, e.g. about J. R. R. Tolkien! '
            '"Really?" she asked. It cost $2.50 at 3 p.m. on Monday. Done')
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Jones in the U.S. capital.", "They talked, e.g. about J. R. R. Tolkien!",
        '"Really?" she asked.', "It cost $2.50 at 3 p.m. on Monday.", "Done"]
    assert split_sentences('He said "Go." Then he left.\nNew line') == ['He said "Go."', "Then he left.", "New line"]
    assert split_sentences("no boundary here") == ["no boundary here"]


def test_filters_name_what_they_remove(pd_lines: list[str]) -> None:
    cfg = FilterConfig()

    def reason(text: str) -> str | None:
        text = normalize(text)
        return rejected_by(text, split_sentences(text), cfg)

    assert reason(pd_lines[6]) is None
    assert reason("Mr. Smith met Dr. Jones in the U.S. capital to talk about the weather.") is None
    assert reason("好的") == "too_short"
    assert rejected_by("中" * 20, ["中" * 20], FilterConfig(max_chars=19)) == "too_long"
    assert reason("#### $$$$ %%%% ^^^^ &&&& **** !!!! ~~~~") == "symbols"
    assert reason("我们今天去公园玩。我们今天去公园玩。我们今天去公园玩。") == "dup_sentences"
    assert reason("buy now " * 30) == "top_2gram"
    assert reason("a b c d e f g h i j k l m n o p") == "word_length"
    assert reason("THEGODDESSOFTHENETHASTWISTINGFINGERS ANDHERVOICEISLIKEAJAVELIN") == "word_length"


def test_exact_set_agrees_with_a_python_set_across_growth() -> None:
    rng = np.random.default_rng(0)
    keys = [int(k) for k in rng.integers(0, 2**63, 200_000, dtype=np.uint64)] + [0, 1]
    keys += keys[:30_000]
    exact, reference = ExactSet(), set()
    for key in keys:
        assert exact.add(key) == (key not in reference)
        reference.add(key if key else 1)  # 0 is stored as 1
    assert len(exact) == len(reference) and len(exact.table) == 1 << 19  # grown from 2^16, at most 70% full
    assert all(k in exact for k in keys[:1000]) and not any(int(k) in exact for k in rng.integers(2, 2**62, 1000))
    assert len(ExactSet(exact.table.copy())) == len(exact)
    rehashed = ExactSet(rehashed_table(exact.table, 1 << 20, chunk=1000))  # growth, a thousand keys at a time
    assert len(rehashed) == len(exact) and all(k in rehashed for k in keys[::100])


def test_minhash_signature_is_datasketchs(pd_lines: list[str]) -> None:
    hasher = MinHasher(64)
    for text in [normalize(t) for t in pd_lines[:20]] + ["The quick brown fox jumps over the lazy dog again."]:
        reference = MinHash(num_perm=64, hashfunc=int)
        reference.update_batch(shingle_hashes(text).tolist())
        np.testing.assert_array_equal(hasher.signature(text), reference.hashvalues)


def test_near_duplicate_with_one_changed_character_is_removed(pd_lines: list[str]) -> None:
    hasher, index = MinHasher(64), NearDupIndex(threshold=0.8, num_perm=64, window=1000)
    original = normalize(pd_lines[6])
    changed = original[:40] + ("和" if original[40] != "和" else "与") + original[41:]
    english = ("Mr. Smith met Dr. Jones in the capital to talk about the weather, the harvest and the new railway "
               "line. They agreed that the line should reach the northern villages before the winter, that the "
               "farmers would be paid for their land, and that the old station near the river would become a "
               "school for the children of the valley.")  # 58 word 3-grams: one changed word changes 3
    assert index.add(hasher.signature(original))
    assert not index.add(hasher.signature(changed)), "one character changed: a near duplicate"
    assert index.add(hasher.signature(normalize(pd_lines[7]))), "a different paragraph is kept"
    assert index.add(hasher.signature(english))
    assert not index.add(hasher.signature(english.replace("harvest", "harvests")))
    assert index.add(hasher.signature("Mrs. Brown sold her old car to a collector from Leeds for a very good price."))


def test_near_dup_window_forgets_old_documents_and_restores_exactly() -> None:
    rng = np.random.default_rng(1)
    signatures = rng.integers(0, 2**32, (50, 64), dtype=np.uint64).astype(np.uint32)
    index = NearDupIndex(window=10)
    for s in signatures:
        assert index.add(s)
    assert len(index) == 10 and not index.add(signatures[-1]) and index.add(signatures[0])  # 0 left the window
    restored = NearDupIndex(window=10)
    restored.restore(index.state(), index.n_added)
    np.testing.assert_array_equal(restored.state(), index.state())
    assert [restored.add(s) for s in signatures[35:]] == [index.add(s) for s in signatures[35:]]


# ---- the pipeline --------------------------------------------------------------------------------------


def reference_docs(lines: list[str], tokenizer_dir: Path, cfg: CorpusConfig) -> list[list[int]]:
    """The pipeline's steps for one document after another, in a plain loop: what the shards must hold."""
    tokenizer = TextTokenizer.load(tokenizer_dir).tokenizer
    exact, hasher = ExactSet(), MinHasher(cfg.dedup.num_perm)
    near = NearDupIndex(cfg.dedup.threshold, cfg.dedup.num_perm, cfg.dedup.window)
    docs = []
    for line in lines:
        text = normalize(line)
        if text and rejected_by(text, split_sentences(text), cfg.filters) is None and exact.add(digest64(text)) \
                and near.add(hasher.signature(text)):
            docs.append(tokenizer.encode(text, add_special_tokens=False).ids)
    return docs


def test_shards_hold_exactly_the_tokenizers_ids(pd_lines: list[str], zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    lines = pd_lines + pd_lines[100:120] + [pd_lines[130][:-3] + "的" + pd_lines[130][-2:]]  # dups and a near one
    cfg = config([write_lines(tmp_path / "pd.txt", lines)], tmp_path / "out", zh_tokenizer_dir)
    manifest = run_corpus(cfg)
    expected = reference_docs(lines, zh_tokenizer_dir, cfg)
    shards = TokenShards(tmp_path / "out")
    assert len(shards) == len(expected) == manifest["n_docs"] and len(manifest["shards"]) >= 3
    assert shards.n_tokens == sum(map(len, expected)) == manifest["n_tokens"]
    assert shards.doc(0).dtype == np.dtype("<u2") and manifest["dtype"] == "uint16"  # vocabulary of 2,000
    assert [d.tolist() for d in shards] == expected
    assert shards.doc(-1).tolist() == expected[-1] and shards[17].tolist() == expected[17]
    removed = manifest["counts"]["removed"]
    assert removed["exact_dup"] >= 20 and removed["near_dup"] >= 1
    assert manifest["counts"]["documents"] == len(lines) - manifest["counts"]["empty_lines"]
    assert sum(removed.values()) + manifest["n_docs"] == manifest["counts"]["documents"]
    first = manifest["shards"][0]
    offsets = np.fromfile(tmp_path / "out" / f"{first['name']}.idx", dtype="<i8")
    assert offsets[0] == 0 and offsets[-1] == first["n_tokens"] >= cfg.shard_tokens
    assert len(offsets) == first["n_docs"] + 1


def test_every_filter_is_counted(pd_lines: list[str], zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    near = pd_lines[6][:30] + ("和" if pd_lines[6][30] != "和" else "与") + pd_lines[6][31:]
    lines = [
        pd_lines[6], pd_lines[7], pd_lines[9],
        "", "好的", "中" * 500,  # empty, too_short, too_long (max_chars 400)
        "#### $$$$ %%%% ^^^^ &&&& **** !!!! ~~~~", "我们今天去公园玩。我们今天去公园玩。我们今天去公园玩。",
        "buy now " * 30, "a b c d e f g h i j k l m n o p",
        pd_lines[6], near,  # exact_dup, near_dup
    ]
    cfg = config([write_lines(tmp_path / "mixed.txt", lines)], tmp_path / "out", zh_tokenizer_dir,
                 filters=FilterConfig(max_chars=400))
    counts = run_corpus(cfg)["counts"]
    assert counts["removed"] == {"too_short": 1, "too_long": 1, "symbols": 1, "dup_sentences": 1, "top_2gram": 1,
                                 "word_length": 1, "exact_dup": 1, "near_dup": 1}
    assert counts["empty_lines"] == 1 and counts["kept"]["documents"] == 3 and counts["lines"] == len(lines)


def test_sentence_unit_makes_each_sentence_a_document(pd_lines: list[str], zh_tokenizer_dir: Path,
                                                     tmp_path: Path) -> None:
    paragraph = normalize(pd_lines[6])
    cfg = config([write_lines(tmp_path / "p.txt", [pd_lines[6]])], tmp_path / "out", zh_tokenizer_dir, unit="sentence")
    manifest = run_corpus(cfg)
    tokenizer = TextTokenizer.load(zh_tokenizer_dir).tokenizer
    expected = [tokenizer.encode(s, add_special_tokens=False).ids for s in split_sentences(paragraph)]
    assert [d.tolist() for d in TokenShards(tmp_path / "out")] == expected
    assert manifest["counts"]["documents"] == manifest["counts"]["sentences"] == 4


def test_workers_and_resume_write_the_same_bytes(pd_lines: list[str], zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    """A clean run in one process; the same with 2 worker processes; and one killed after its first shard,
    then resumed. Input: a gzipped JSONL file then a text file, so the resume seeks into a .gz."""
    part1 = tmp_path / "part1.jsonl.gz"
    with gzip.open(part1, "wt", encoding="utf-8") as f:
        for line in pd_lines[:250]:
            f.write(json.dumps({"text": line, "id": 1}, ensure_ascii=False) + "\n")
    part2 = write_lines(tmp_path / "part2.txt", pd_lines[250:] + pd_lines[:50])
    inputs = [part1, part2]
    clean = run_corpus(config(inputs, tmp_path / "clean", zh_tokenizer_dir, batch_lines=64))
    assert len(clean["shards"]) >= 4

    parallel = run_corpus(config(inputs, tmp_path / "parallel", zh_tokenizer_dir, batch_lines=64, workers=2))
    assert shard_bytes(tmp_path / "parallel") == shard_bytes(tmp_path / "clean")
    assert without_throughput(parallel) == without_throughput(clean)

    class Killed(Exception):
        pass

    def kill(info: object) -> None:
        raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run_corpus(config(inputs, out, zh_tokenizer_dir, batch_lines=64), on_shard=kill)
    assert (out / "progress.json").exists() and not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.bin", "shard-00000.idx"]
    with pytest.raises(OutDirError, match="--resume"):
        run_corpus(config(inputs, out, zh_tokenizer_dir, batch_lines=64))
    with pytest.raises(OutDirError, match="filters"):
        run_corpus(config(inputs, out, zh_tokenizer_dir, batch_lines=64, resume=True,
                          filters=FilterConfig(min_chars=5)))
    resumed = run_corpus(config(inputs, out, zh_tokenizer_dir, batch_lines=64, resume=True))
    assert shard_bytes(out) == shard_bytes(tmp_path / "clean")
    assert without_throughput(resumed) == without_throughput(clean)
    assert not (out / "progress.json").exists() and not list(out.glob("state-*"))
    assert run_corpus(config(inputs, out, zh_tokenizer_dir, resume=True, batch_lines=64)) == resumed  # done


def test_bad_jsonl_line_names_file_and_line(zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "第一行的文字内容很好。"}\n\n{"text": "第三行"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        run_corpus(config([bad], tmp_path / "out", zh_tokenizer_dir))
    bad.write_text('{"text": "第一行的文字内容很好。"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'text': missing"):
        run_corpus(config([bad], tmp_path / "out2", zh_tokenizer_dir))
    with pytest.raises(DataError, match=r"missing\.txt: no such file"):
        run_corpus(config([tmp_path / "missing.txt"], tmp_path / "out3", zh_tokenizer_dir))


def test_bad_utf8_is_replaced_and_counted(zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bytes.txt"
    path.write_bytes("这一行的文字完全正常。\n".encode() + b"\xff\xfe broken bytes in this line \xc3\n")
    manifest = run_corpus(config([path], tmp_path / "out", zh_tokenizer_dir))
    assert manifest["counts"]["bad_utf8_lines"] == 1 and manifest["n_docs"] == 2


def test_out_dir_of_another_run_needs_overwrite(pd_lines: list[str], zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    inputs = [write_lines(tmp_path / "pd.txt", pd_lines[:60])]
    run_corpus(config(inputs, tmp_path / "out", zh_tokenizer_dir))
    with pytest.raises(OutDirError, match=r"a different run.*--overwrite"):
        run_corpus(config(inputs, tmp_path / "out", zh_tokenizer_dir, dedup=DedupConfig(near_dup=False)))
    with pytest.raises(OutDirError, match="already finished"):
        run_corpus(config(inputs, tmp_path / "out", zh_tokenizer_dir))
    (tmp_path / "out" / "notes.txt").write_text("mine")
    again = run_corpus(config(inputs, tmp_path / "out", zh_tokenizer_dir, overwrite=True,
                              dedup=DedupConfig(near_dup=False)))
    assert again["run"]["dedup"]["near_dup"] is False and (tmp_path / "out" / "notes.txt").exists()


def test_cli_prints_every_filters_count(pd_lines: list[str], zh_tokenizer_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = write_lines(tmp_path / "pd.txt", pd_lines[:80])
    assert main(["data", "corpus", str(source), "--out", str(tmp_path / "out"), "--tokenizer", str(zh_tokenizer_dir),
                 "--workers", "0", "--min-chars", "12", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for reason in ("too_short", "too_long", "symbols", "dup_sentences", "top_2gram", "word_length", "exact_dup",
                   "near_dup"):
        assert reason in printed
    assert "MB/s per core" in printed and "tokens/s" in printed
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["run"]["filters"]["min_chars"] == 12


def test_pretraining_reads_token_shards(pd_lines: list[str], zh_tokenizer_dir: Path, tmp_path: Path) -> None:
    """`lmcraft pretrain --corpus SHARDS_DIR` packs the shards' documents as it would the text's tokens."""
    from lmcraft.objectives.mlm import pack
    from lmcraft.objectives.packing import PackedBlocks
    from lmcraft.pretrain import shard_stream

    source = write_lines(tmp_path / "pd.txt", pd_lines[:200])
    assert main(["data", "corpus", str(source), "--out", str(tmp_path / "shards"), "--tokenizer",
                 str(zh_tokenizer_dir), "--workers", "0", "--no-progress"]) == 0
    tokenizer = TextTokenizer.load(zh_tokenizer_dir)
    stream = shard_stream([str(tmp_path / "shards")], tokenizer, tokenizer.vocab_size)
    documents = [ids.tolist() for ids in TokenShards(tmp_path / "shards")]
    assert stream is not None and stream.n_docs == len(documents)
    lazy = PackedBlocks(stream, block=64, cls_id=tokenizer.cls_id)
    assert list(lazy) == pack(documents, block=64, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)
    out = tmp_path / "pt"
    assert main(["pretrain", "--corpus", str(tmp_path / "shards"), "--tokenizer", str(zh_tokenizer_dir), "--out",
                 str(out), "--size", "tiny", "--max-len", "64", "--max-steps", "2", "--eval-every", "2",
                 "--no-progress", "--no-tensorboard"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    n_blocks = len(pack(documents, block=64, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id))
    assert summary["train_blocks"] + max(1, int(n_blocks * 0.02)) == n_blocks
    with pytest.raises(ValueError, match="mixes token-shard directories and text files"):
        shard_stream([str(tmp_path / "shards"), str(source)], tokenizer, tokenizer.vocab_size)
