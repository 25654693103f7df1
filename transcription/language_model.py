"""Small bigram language models for the offline engine, and word error rate.

pocketsphinx's general English model transcribes synthetic speech poorly (about 30% word
errors, ../shared/notes/transcription-facts.md). A deployment with a known vocabulary (a
classroom, a set phrase book) and the tests, which need deterministic transcripts, give it a
model built from the sentences expected: `OFFLINE_LM` names the ARPA file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

_WORD = re.compile(r"[a-z']+")
# Probability mass kept back for unseen continuations; the rest is shared by seen bigrams.
_DISCOUNT = 0.5


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation: the unit both the model and WER count."""
    return _WORD.findall(text.lower())


def build_arpa(sentences: list[str]) -> str:
    """An ARPA bigram model (absolute discounting, backoff to unigrams) of `sentences`."""
    unigrams: Counter[str] = Counter()
    bigrams: Counter[tuple[str, str]] = Counter()
    for sentence in sentences:
        tokens = ["<s>", *words_of(sentence), "</s>"]
        unigrams.update(tokens)
        bigrams.update(zip(tokens, tokens[1:], strict=False))
    total = sum(count for word, count in unigrams.items() if word != "<s>")
    followers: Counter[str] = Counter(first for first, _ in bigrams)
    history_count: Counter[str] = Counter()
    for (first, _), count in bigrams.items():
        history_count[first] += count

    def log10(p: float) -> float:
        return math.log10(p)

    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "",
             "\\1-grams:"]
    for word in sorted(unigrams):
        prob = -99.0 if word == "<s>" else log10(unigrams[word] / total)
        backoff = log10(_DISCOUNT * followers[word] / history_count[word]) \
            if history_count[word] else 0.0
        lines.append(f"{prob:.4f} {word} {backoff:.4f}")
    lines += ["", "\\2-grams:"]
    for (first, second), count in sorted(bigrams.items()):
        lines.append(f"{log10((count - _DISCOUNT) / history_count[first]):.4f} {first} {second}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def write_arpa(sentences: list[str], path: Path) -> Path:
    path.write_text(build_arpa(sentences), encoding="ascii")
    return path


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous_diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            previous_diagonal, row[j] = row[j], min(
                row[j] + 1, row[j - 1] + 1, previous_diagonal + (ref_word != hyp_word))
    return row[-1] / len(ref)
