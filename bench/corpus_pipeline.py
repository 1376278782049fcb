"""Corpus pipeline speed and memory on a generated corpus of real text (``lmcraft data corpus``).

The corpus is written deterministically (seed 0) into a temporary directory, in files of at most 256 MB,
a document a line: recombinations of real sentences, 2 to 8 from the People's Daily of January 1998
(raw, with its full-width digits and punctuation) or 2 to 6 from the English fortunes in
/usr/share/games/fortunes, about 60% Chinese by bytes. Into it go ~5% exact duplicates and ~5% near
duplicates (one or two characters, or one word, changed) of earlier documents — 80% of them copies of one
of the previous 20,000 documents, 20% of any earlier one, which lies beyond the near-duplicate window
once the corpus is large — and ~3% junk lines: runs of symbols, very short lines, keyboard mashing,
repeated phrases and repeated sentences.

    python bench/corpus_pipeline.py [--size-mb 1024] [--workers 2] [--tokenizer DIR] [--keep DIR]

A WordPiece tokenizer (8,000 entries) is trained on the source texts unless --tokenizer is given. The
pipeline runs in a subprocess, as `lmcraft data corpus` would; the process tree (main process, workers)
is polled every 0.2 s for its resident memory. Prints MB/s, MB/s per core (input MB per CPU second of all
the pipeline's processes), tokens/s, the peak RSS of the tree (the sum over its processes, an upper bound:
shared library pages count once per process) and of each process, every filter's count, and what was
injected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

FILE_MB = 256  # the corpus is split into files of at most this size
RECENT = 20_000  # most duplicates copy one of this many previous documents
JUNK = ("symbols", "short", "mashing", "spam", "repeated_sentences")
RUNNER = """\
import argparse, sys
from lmcraft.data.corpus.cli import add_corpus_parser
parser = argparse.ArgumentParser(prog="lmcraft data")
add_corpus_parser(parser.add_subparsers())
args = parser.parse_args(["corpus", *sys.argv[1:]])
sys.exit(args.func(args))
"""


def source_sentences() -> tuple[list[str], list[str]]:
    """Chinese sentences (raw People's Daily: full-width forms kept) and English ones (fortunes)."""
    from lmcraft.data.builtin import fortune_items, prepare

    with tempfile.TemporaryDirectory() as tmp:
        prepare("peoples-daily-1998", tmp)
        paragraphs = (Path(tmp) / "corpus.txt").read_text(encoding="utf-8").splitlines()
    zh = [s for p in paragraphs for s in re.findall(r"[^。！？]+[。！？]?[”」]?", p) if len(s) >= 4]
    en = []
    for path in sorted(Path("/usr/share/games/fortunes").iterdir()):
        if path.is_file() and not path.suffix and path.name not in ("art", "ascii-art"):
            for item in fortune_items(path):
                en += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", item) if len(s) >= 4]
    return zh, en


class Generator:
    """Documents, duplicates and junk, from one seeded random stream; counts what it injects."""

    def __init__(self, zh: list[str], en: list[str], seed: int = 0) -> None:
        self.zh, self.en, self.rng = zh, en, random.Random(seed)
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.reservoir: list[str] = []  # a uniform sample of every document so far
        self.seen = 0
        self.injected: Counter[str] = Counter()

    def _fresh(self) -> str:
        rng = self.rng
        if rng.random() < 0.45:
            return "".join(rng.choice(self.zh) for _ in range(rng.randint(2, 8)))
        return " ".join(rng.choice(self.en) for _ in range(rng.randint(2, 6)))

    def _earlier(self) -> str:
        return self.rng.choice(self.recent if self.rng.random() < 0.8 or not self.reservoir else self.reservoir)

    def _edited(self, doc: str) -> str:
        rng = self.rng
        words = doc.split(" ")
        if len(words) > 8:  # English: one word changed
            i = rng.randrange(len(words))
            words[i] = rng.choice(["the", "a", "very", "quite", "often", words[i].upper()])
            return " ".join(words)
        chars = list(doc)
        for _ in range(rng.randint(1, 2)):
            chars[rng.randrange(len(chars))] = rng.choice("的一是在不了有和人这中大为上个国我以要他")
        return "".join(chars)

    def _junk(self) -> str:
        rng, kind = self.rng, self.rng.choice(JUNK)
        self.injected[f"junk_{kind}"] += 1
        if kind == "symbols":
            return "".join(rng.choice("#$%&*+=<>|~^_-/\\@!?") for _ in range(rng.randint(10, 60)))
        if kind == "short":
            return rng.choice(["好", "ok", "...", "图片", "(完)", "—", "点击", "yes!"])
        if kind == "mashing":
            return " ".join("".join(rng.choice("asdfghjklqwertyuiop") for _ in range(rng.randint(12, 30)))
                            for _ in range(rng.randint(3, 8)))
        if kind == "spam":
            return " ".join([rng.choice(["buy now", "click here", "free money", "点击 这里"])] * rng.randint(30, 60))
        return rng.choice(self.zh) * rng.randint(3, 6)  # repeated_sentences

    def document(self) -> str:
        roll = self.rng.random()
        if roll < 0.03:
            return self._junk()
        if roll < 0.08 and self.recent:
            self.injected["exact_dup"] += 1
            return self._earlier()
        if roll < 0.13 and self.recent:
            self.injected["near_dup"] += 1
            return self._edited(self._earlier())
        doc = self._fresh()
        self.recent.append(doc)
        self.seen += 1
        if len(self.reservoir) < RECENT:
            self.reservoir.append(doc)
        elif (j := self.rng.randrange(self.seen)) < RECENT:
            self.reservoir[j] = doc
        return doc


def generate(directory: Path, size_mb: float, zh: list[str], en: list[str]) -> tuple[list[Path], Counter[str]]:
    generator = Generator(zh, en)
    files: list[Path] = []
    budget = int(size_mb * 1e6)
    while budget > 0:
        path = directory / f"corpus-{len(files):03d}.txt"
        target = min(budget, FILE_MB * 10**6)
        written = 0
        with path.open("wb") as f:
            while written < target:
                line = generator.document().encode("utf-8") + b"\n"
                f.write(line)
                written += len(line)
        files.append(path)
        budget -= written
    return files, generator.injected


def train(directory: Path, zh: list[str], en: list[str]) -> Path:
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    rng = random.Random(1)
    sample = rng.sample(zh, min(len(zh), 40_000)) + rng.sample(en, min(len(en), 20_000))
    TextTokenizer(train_tokenizer(sample, kind="wordpiece", vocab_size=8000)).save(directory)
    return directory


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    return "worker" if "spawn_main" in text else "resource tracker" if "resource_tracker" in text else "main"


def _tree_rss(root: Any, psutil: Any) -> dict[int, tuple[int, str]]:
    """{pid: (resident bytes, role)} of ``root`` and all its descendants that are still alive."""
    found = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process may end while we look
            found[p.pid] = (p.memory_info().rss, _role(p.cmdline()))
    return found


def watch(command: list[str]) -> dict[str, Any]:
    """Run ``command``, polling its process tree's memory every 0.2 s: the peak of the summed RSS, and each
    process's peak. Without psutil, only the largest single process's peak (getrusage) is known."""
    try:
        import psutil
    except ImportError:
        psutil = None
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_tree, peaks = 0, {}
    if psutil is not None:
        root = psutil.Process(process.pid)
        while process.poll() is None:
            with contextlib.suppress(psutil.Error):
                rss = _tree_rss(root, psutil)
                peak_tree = max(peak_tree, sum(r for r, _ in rss.values()))
                for pid, (r, role) in rss.items():
                    peaks[pid] = (max(peaks.get(pid, (0, ""))[0], r), role)
            time.sleep(0.2)
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"the pipeline failed ({process.returncode}):\n{err[-4000:]}")
    largest_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest one, not a sum
    return {"seconds": time.perf_counter() - start, "stdout": out, "peak_tree": peak_tree or largest_child,
            "largest_process": largest_child, "peaks": peaks, "measured_by": "psutil" if psutil else "getrusage"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1024, help="corpus size in MB (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="pipeline worker processes (default: %(default)s)")
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer directory (default: train one)")
    parser.add_argument("--keep", type=Path, help="write the corpus and the output here and keep them")
    parser.add_argument("--shard-tokens", type=int, default=50_000_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="corpus-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        zh, en = source_sentences()
        (work / "input").mkdir(exist_ok=True)
        files, injected = generate(work / "input", args.size_mb, zh, en)
        input_bytes = sum(f.stat().st_size for f in files)
        print(f"generated {input_bytes / 1e6:,.1f} MB in {len(files)} file(s) from {len(zh):,} Chinese and "
              f"{len(en):,} English sentences in {time.perf_counter() - started:.0f} s; injected: {dict(injected)}")
        tokenizer = args.tokenizer or train(work / "tokenizer", zh, en)
        command = [sys.executable, "-c", RUNNER, *map(str, files), "--out", str(work / "out"), "--tokenizer",
                   str(tokenizer), "--workers", str(args.workers), "--shard-tokens", str(args.shard_tokens),
                   "--overwrite", "--no-progress"]
        run = watch(command)
        manifest = json.loads((work / "out" / "manifest.json").read_text(encoding="utf-8"))

    speed, counts = manifest["throughput"], manifest["counts"]
    mb = input_bytes / 1e6
    print(run["stdout"].rstrip())
    print(f"\ncorpus pipeline, {mb:,.1f} MB, {args.workers} workers, {speed['seconds']:,.0f} s "
          f"(process: {run['seconds']:,.0f} s)")
    print(f"  {speed['mb_per_s']:.2f} MB/s   {speed['mb_per_cpu_second']:.2f} MB/s per core "
          f"({speed['cpu_seconds']:,.0f} CPU s)   {speed['tokens_per_s']:,.0f} tokens/s   "
          f"{manifest['n_tokens']:,} tokens in {len(manifest['shards'])} shards")
    print(f"  peak RSS of the process tree: {run['peak_tree'] / 2**20:,.0f} MB ({run['measured_by']}); "
          f"largest process {run['largest_process'] / 2**20:,.0f} MB")
    for _, (rss, role) in sorted(run["peaks"].items()):
        print(f"    {rss / 2**20:7,.0f} MB  {role}")
    removed = counts["removed"]
    print(f"  removed: {json.dumps(removed)}")
    print(f"  injected exact duplicates {injected['exact_dup']:,}, removed as exact {removed['exact_dup']:,}; "
          f"injected near duplicates {injected['near_dup']:,}, removed as near {removed['near_dup']:,} "
          f"({removed['near_dup'] / max(injected['near_dup'], 1):.0%}; 20% of them copy a document that may lie "
          f"beyond the window)")
    print(f"  injected junk: {sum(v for k, v in injected.items() if k.startswith('junk'))}, removed by filters: "
          f"{sum(removed[k] for k in removed if not k.endswith('_dup'))}")


if __name__ == "__main__":
    main()
