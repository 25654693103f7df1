"""Word error rate, for tests and bench/transcription.py: how far a transcript is from what
was said, counted on normalised words (Whisper writes "Good morning, everyone." and "10";
the reference says "good morning everyone" and "ten")."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9']+")
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _spelled(number: int) -> list[str]:
    """0-999 as words ("42" -> forty two); larger numbers stay digits."""
    if number < 20:
        return [_ONES[number]]
    if number < 100:
        tens, ones = divmod(number, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return [_ONES[hundreds], "hundred"] + (_spelled(rest) if rest else [])
    return [str(number)]


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation, small numbers spelled out."""
    words: list[str] = []
    for word in _WORD.findall(text.lower()):
        words.extend(_spelled(int(word)) if word.isdigit() else [word])
    return words


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
