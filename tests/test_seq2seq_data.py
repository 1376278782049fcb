"""Generation tasks: pair and chat readers, the gettext / headline / chatterbot built-ins, placeholders, metrics
and baselines."""

from __future__ import annotations

import gettext
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lmcraft.data.builtin import prepare
from lmcraft.data.chat import Conversation, Turn, chat_pairs, check_turns, read_chat_jsonl, read_chatterbot
from lmcraft.data.errors import DataError
from lmcraft.data.gettext_pairs import clean_entry, read_mo, strip_accelerators
from lmcraft.data.headlines import cut_at_sentence
from lmcraft.data.seq2seq import Pair, read_pairs
from lmcraft.metrics.generation import bleu, chrf, generation_report, is_chinese, lcs_length, rouge
from lmcraft.metrics.placeholders import check_placeholders, placeholders, placeholders_may_continue
from lmcraft.tasks.seq2seq.baseline import baseline_report, lead, translation_memory
from lmcraft.tasks.seq2seq.memory import TranslationMemory

LOCALE = Path("/usr/share/locale/zh_CN/LC_MESSAGES")
needs_catalogues = pytest.mark.skipif(not any(LOCALE.glob("*.mo")), reason="no zh_CN gettext catalogues here")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def splits_of(out: Path) -> dict[str, list[dict]]:
    return {s: read_jsonl(out / f"{s}.jsonl") for s in ("train", "dev", "test")}


# --- placeholders -----------------------------------------------------------------------------------------


def test_placeholders_found_and_escapes_skipped() -> None:
    assert placeholders("%s: %-10s %.2f %lu %1$s %(name)d 100%% {{x}}") == ["%s", "%-10s", "%.2f", "%lu", "%1$s",
                                                                              "%(name)d"]
    assert placeholders("{name} and {0} and {} in ${HOME}, not $HOME") == ["{name}", "{0}", "{}", "${HOME}"]
    assert placeholders("99% of the time") == []


def test_check_placeholders() -> None:
    assert check_placeholders("cannot open %s: %s", "无法打开 %s") == ["missing %s (argument 2)"]
    assert check_placeholders("%1$s copied to %2$s", "%2$s 复制自 %1$s") == []
    assert check_placeholders("%s has %d items", "%2$d 个项目在 %1$s 中") == []  # positional in the target only
    assert check_placeholders("%s has %d items", "%d 个项目在 %s 中")[0].startswith("reordered")
    assert check_placeholders("%d files", "%ld 个文件") == ["%d became %ld (argument 1: int → l int)"]
    assert check_placeholders("%-20s %s", "%-18s %s") == []  # width may change, for alignment
    assert check_placeholders("{name} in ${DIR}", "${DIR} 中的 {name}") == []
    assert check_placeholders("{name} done", "完成") == ["missing {name}"]
    assert check_placeholders("could not read %s: %m", "无法读取%1$s: %2$m") == []


# --- pairs ------------------------------------------------------------------------------------------------


def test_a_rendering_may_continue_while_it_has_only_placeholders_still_to_write() -> None:
    source = "%s has %d items; updated {when:%d %b}"
    for prefix in ("", "%s", "%2$d", "%s 有 %d 个项目", "%(na", "更新于 {when:%d", "更新于 {when:%d %b}", "100%%"):
        assert placeholders_may_continue(source, prefix), prefix
    for prefix in ("%d", "%s %d %s", "%s 有 %ld", "{who}", "%d 个项目在 %s 中", "{when:%d %b} {when:%d %b}"):
        assert not placeholders_may_continue(source, prefix), prefix
    assert not placeholders_may_continue("Quit", "退出 %s") and placeholders_may_continue("Quit", "100% 退出")


def test_read_pairs_jsonl_and_tsv(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"en": "Open", "zh": "打开"}\n\n{"en": "Close", "zh": "关闭"}\n', encoding="utf-8")
    assert read_pairs(jsonl, "en", "zh") == [Pair("Open", "打开"), Pair("Close", "关闭")]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("source\ttarget\nOpen\t打开\n", encoding="utf-8")
    assert read_pairs(tsv) == [Pair("Open", "打开")]


@pytest.mark.parametrize(("content", "line", "field"), [
    ('{"source": "a", "target": "b"}\n{"source": "a", "target": \n', 2, None),
    ('{"source": "a"}\n', 1, "target"),
    ('{"source": "a", "target": ["b"]}\n', 1, "target"),
    ('{"source": " ", "target": "b"}\n', 1, "source"),
    ("", None, None),
])
def test_read_pairs_errors_name_file_line_field(tmp_path: Path, content: str, line: int | None,
                                                field: str | None) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_pairs(path)
    assert e.value.path == str(path) and e.value.line == line and e.value.field == field


def test_read_pairs_tsv_needs_two_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\nonly one\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 2 tab-separated columns"):
        read_pairs(path)


# --- gettext ----------------------------------------------------------------------------------------------


def write_mo(path: Path, entries: dict[str, str], order: str) -> None:
    """A minimal .mo file (no hash table) in the given byte order."""
    keys = sorted(entries)
    originals = [k.encode() for k in keys]
    translations = [entries[k].encode() for k in keys]
    n = len(keys)
    offset = 28 + 16 * n
    tables, blob = [], b""
    for strings in (originals, translations):
        table = []
        for s in strings:
            table.append((len(s), offset + len(blob)))
            blob += s + b"\0"
        tables.append(table)
    head = struct.pack(order + "7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    body = b"".join(struct.pack(order + "2I", *e) for table in tables for e in table)
    path.write_bytes(head + body + blob)


@pytest.mark.parametrize("order", ["<", ">"])
def test_read_mo_both_byte_orders(tmp_path: Path, order: str) -> None:
    path = tmp_path / "t.mo"
    write_mo(path, {"": "Content-Type: text/plain; charset=UTF-8\n", "Stock label\x04_Open": "打开(_O)",
                    "%d file\x00%d files": "%d 个文件", "Save _As": "另存为(_A)"}, order)
    entries = {(e.context, e.msgid): e for e in read_mo(path)}
    assert entries[("Stock label", "_Open")].msgstr == ("打开(_O)",)
    assert entries[(None, "%d file")].msgid_plural == "%d files"
    assert clean_entry(entries[(None, "Save _As")]) == ("Save As", "另存为", True)
    assert clean_entry(entries[(None, "")]) == "empty"


def test_plural_entry_falls_back_to_the_plural_msgid(tmp_path: Path) -> None:
    path = tmp_path / "t.mo"
    write_mo(path, {"one file\x00%d files": "%d 个文件"}, "<")
    assert clean_entry(read_mo(path)[0]) == ("%d files", "%d 个文件", False)


def test_accelerators_only_where_the_translation_marks_one() -> None:
    assert strip_accelerators("C_urrent Page", "当前页(_U)") == ("Current Page", "当前页", True)
    assert strip_accelerators("table_name", "表名") == ("table_name", "表名", False)


@needs_catalogues
def test_read_mo_agrees_with_the_standard_library() -> None:
    path = LOCALE / "gtk20.mo" if (LOCALE / "gtk20.mo").exists() else next(LOCALE.glob("*.mo"))
    with path.open("rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    for e in read_mo(path):
        key = (f"{e.context}\x04" if e.context is not None else "") + e.msgid
        assert (catalog[(key, 0)] if e.msgid_plural is not None else catalog[key]) == e.msgstr[0]


@pytest.fixture(scope="module")
def gettext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "gettext-en-zh"
    prepare("gettext-en-zh", out)
    return out


@needs_catalogues
def test_gettext_pairs_clean_disjoint_deterministic(gettext_dir: Path, tmp_path: Path) -> None:
    splits = splits_of(gettext_dir)
    rows = [r for rs in splits.values() for r in rs]
    assert len(rows) > 20000, "the catalogues of a minimal Debian already give ~38k pairs"
    sources = [r["source"] for r in rows]
    assert len(sources) == len(set(sources)), "deduplicated by source, so no source is in two splits"
    assert 0.77 < len(splits["train"]) / len(rows) < 0.83
    assert not [r for r in rows if check_placeholders(r["source"], r["target"])]
    assert all(r["source"] != r["target"] and len(r["source"]) <= 200 and r["catalog"].endswith(".mo")
               for r in rows)
    assert not any("(_" in r["target"] for r in rows[:5000])
    manifest = json.loads((gettext_dir / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["dropped"]) <= {"empty", "untranslated", "too_long", "placeholders"}
    assert len(manifest["sources"]) == len(list(LOCALE.glob("*.mo")))
    prepare("gettext-en-zh", tmp_path / "again")
    for s in ("train", "dev", "test"):
        assert (tmp_path / "again" / f"{s}.jsonl").read_bytes() == (gettext_dir / f"{s}.jsonl").read_bytes()


# --- headlines --------------------------------------------------------------------------------------------


def test_cut_at_sentence() -> None:
    assert cut_at_sentence("一二。三四五。六七八九。", limit=8) == "一二。三四五。"
    assert cut_at_sentence("一二三四五六", limit=4) == "一二三四"


def test_headline_pairs_look_like_headlines(tmp_path: Path) -> None:
    out = tmp_path / "headlines"
    manifest = prepare("peoples-daily-headlines", out)
    splits = splits_of(out)
    rows = [r for rs in splits.values() for r in rs]
    assert len(rows) > 1500 and manifest["counts"]["test"] > 100
    targets = [r["target"] for r in rows]
    assert sum(map(len, targets)) / len(targets) < 25 and max(map(len, targets)) <= 3 * 40 + 2
    assert not any(t.endswith("。") or "附图片" in t for t in targets)
    assert all(len(r["source"]) <= 400 and len(r["source"]) > 2 * len(r["target"]) // 3 for r in rows)
    assert sum(r["source"].startswith(("本报", "新华社")) for r in rows) < len(rows) // 50, "datelines stripped"
    per_split = {s: {r["target"] for r in rs} for s, rs in splits.items()}
    assert not (per_split["train"] & per_split["test"]) and not (per_split["train"] & per_split["dev"])
    first = next(r for r in rows if r["target"].startswith("李鹏在北京考察企业"))
    assert first["target"] == "李鹏在北京考察企业 向广大职工祝贺新年，对节日坚守岗位的同志们表示慰问"
    assert first["source"].startswith("今天是一九九七年的最后一天。辞旧迎新之际，国务院总理李鹏")


# --- chat -------------------------------------------------------------------------------------------------

GOOD = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello"}]}


def test_read_chat_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    [conversation] = read_chat_jsonl(path)
    assert conversation.turns == (Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Hello"))
    assert conversation.to_record() == GOOD
    assert chat_pairs([conversation]) == [Pair("Hi", "Hello")]


@pytest.mark.parametrize(("line", "field", "message"), [
    ('{"messages": [', None, "malformed JSON"),
    ('{"turns": []}', "messages", "missing"),
    ('{"messages": [{"content": "Hi"}]}', "role", "has no 'role'"),
    ('{"messages": [{"role": "user"}]}', "content", "no text 'content'"),
    ('{"messages": [{"role": "bot", "content": "Hi"}]}', "role", "unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}', "messages",
     "'user' where 'assistant' was expected"),
    ('{"messages": [{"role": "assistant", "content": "a"}]}', "messages", "'assistant' where 'user'"),
    ('{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}', "messages",
     "no assistant message"),
    ('{"messages": [{"role": "user", "content": "u"}, {"role": "system", "content": "s"}]}', "role",
     "may only come first"),
])
def test_malformed_chat_names_file_line_field(tmp_path: Path, line: str, field: str | None, message: str) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as e:
        read_chat_jsonl(path)
    assert e.value.path == str(path) and e.value.line == 2 and e.value.field == field


def test_chatterbot_reader_keeps_text_and_alternates(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("categories:\n- x\nconversations:\n- - Is it yes?\n  - yes\n- - 1.0\n  - '2'\n  - dangling\n"
                    "- - {a: b}\n  - c\n- just a string\n", encoding="utf-8")
    conversations, skipped = read_chatterbot(path)
    assert [c.turns for c in conversations] == [
        (Turn("user", "Is it yes?"), Turn("assistant", "yes")), (Turn("user", "1.0"), Turn("assistant", "2"))]
    assert skipped == {"trailing_user_turn": 1, "not_a_list_of_texts": 2}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_chatterbot_builtins(tmp_path: Path, language: str) -> None:
    pytest.importorskip("chatterbot_corpus")
    out = tmp_path / language
    manifest = prepare(f"chatterbot-{language}", out)
    conversations = {s: read_chat_jsonl(out / f"{s}.jsonl") for s in ("train", "dev", "test")}
    everything = [c for cs in conversations.values() for c in cs]
    assert len(everything) == len(set(everything)) > (800 if language == "en" else 400)
    assert all(check_turns(c.turns) is None and c.turns[0].role == "user" for c in everything)
    prompts = {s: {c.first_user for c in cs} for s, cs in conversations.items()}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["dev"])
    assert manifest["counts"]["test"]["turns"] == sum(len(c.turns) for c in conversations["test"])


def test_conversation_accepts_a_list() -> None:
    assert Conversation([Turn("user", "a"), Turn("assistant", "b")]) == Conversation((Turn("user", "a"),
                                                                                       Turn("assistant", "b")))


# --- metrics and baselines --------------------------------------------------------------------------------


def test_rouge_by_hand() -> None:
    english = rouge(["The cat sat on the mat."], ["the cat is on the mat"], chinese=False)
    # unigrams 5 of 6 both ways; bigrams the-cat, on-the, the-mat: 3 of 5; LCS "the cat on the mat" = 5
    assert english == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6})
    chinese = rouge(["我 爱北京"], ["我爱天安门"], chinese=True)
    # 我爱 shared: P 2/4, R 2/5 → F1 4/9; bigrams 我爱 only: P 1/3, R 1/4 → F1 2/7; LCS 2, as unigrams
    assert chinese == pytest.approx({"rouge1": 400 / 9, "rouge2": 200 / 7, "rougeL": 400 / 9})
    assert rouge(["x"], [""], chinese=False)["rouge1"] == 0.0


def test_lcs_length() -> None:
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length("", "abc") == 0 and lcs_length("abc", "abc") == 3


def test_bleu_and_chrf_match_the_sacrebleu_command(tmp_path: Path) -> None:
    hyps, refs = ["我爱北京", "今天天气不错"], ["我爱北京天安门", "今天 天气 很好"]
    (tmp_path / "h.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")

    def cli(*args: str) -> float:
        run = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "r.txt"), "-i",
                              str(tmp_path / "h.txt"), "-b", "-w", "4", *args], capture_output=True, text=True,
                             check=True)
        return float(run.stdout.strip())

    assert bleu(hyps, refs, chinese=True) == pytest.approx(cli("-tok", "zh"), abs=1e-4)
    assert chrf(hyps, refs, chinese=True) == pytest.approx(cli("-m", "chrf"), abs=1e-4)
    assert bleu(["the cat sat on the mat"], ["the cat is on the mat"], chinese=False) == pytest.approx(37.9918, 1e-4)


def test_generation_report() -> None:
    assert is_chinese(["无法打开 %s：%s"]) and not is_chinese(["cannot open %s: %s"])
    report = generation_report(["无法打开 %s", "保存"], ["无法打开 %s：%s", "保存"],
                               sources=["cannot open %s: %s", "Save"])
    assert report["chinese"] is True and report["n"] == 2
    assert report["placeholders_intact"] == 0.0 and report["n_with_placeholders"] == 1
    assert 0 < report["bleu"] < 100 and report["rougeL"] > 50  # type: ignore[operator]
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        generation_report(["a", "b"], ["a"])


def test_a_translation_memory_takes_an_identical_source_first_and_never_a_pair_its_own_answer() -> None:
    memory = TranslationMemory([("Open file", "打开文件"), ("Open the file", "打开该文件"), ("Save", "保存")])
    assert memory.targets_for(["Open file", "Save all"]) == ["打开文件", "保存"]
    assert memory.targets_for(["Open file"], ["打开文件"]) == ["打开该文件"], "the pair itself is left out"
    assert memory.targets_for(["Open file"], ["开文件"]) == ["打开文件"], "another target for it is not the pair"
    assert memory.inputs(["Save all"]) == ["Save all ⇒ 保存"]
    variants = TranslationMemory([("Save File", "A"), ("save file", "B"), ("save file", "C")])
    assert variants.targets_for(["save file"], ["B"]) == ["C"], "the same source with another target comes first"
    with pytest.raises(ValueError, match="holds nothing but the pair"):
        TranslationMemory([("abc", "1"), ("abc", "1")]).nearest(["abc"], ["1"])
    assert TranslationMemory.from_json(memory.to_json()).pairs == memory.pairs
    with pytest.raises(ValueError, match=r"list of \[source, target\] string pairs"):
        TranslationMemory.from_json([["Open file"]])
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        memory.nearest(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="at least one"):
        TranslationMemory([])


def test_translation_memory_and_lead() -> None:
    train = [Pair("Cannot open file %s", "无法打开文件 %s"), Pair("Save the document", "保存文档"),
             Pair("Quit the program", "退出程序")]
    test = [Pair("Save the document", "?"), Pair("Cannot open the file %s", "?")]
    assert translation_memory(train, test, batch_size=1) == ["保存文档", "无法打开文件 %s"]
    assert lead([Pair("新华社消息，今天下雪了。明天晴。", "")], 5) == ["新华社消息"]
    assert lead([Pair("今天下雪了！明天晴。", "")], 20) == ["今天下雪了"]
    report = baseline_report(train, [Pair("Quit the program", "退出程序")], kind="translation")
    assert set(report) == {"copy_source", "translation_memory"}
    assert report["translation_memory"]["bleu"] == pytest.approx(100.0)
    talk = [Conversation([Turn("user", "Hi there"), Turn("assistant", "Hello!")])]
    chat = baseline_report(talk, [Conversation([Turn("user", "Hi"), Turn("assistant", "Hello!")])], kind="chat")
    assert set(chat) == {"translation_memory"} and chat["translation_memory"]["chrf"] == pytest.approx(100.0)
