"""Word error rate between what was said and what was heard, as every tier measures it."""

from __future__ import annotations

import jiwer

_normalize = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def wer(reference: str, hypothesis: str) -> float:
    return float(
        jiwer.wer(
            reference,
            hypothesis,
            reference_transform=_normalize,
            hypothesis_transform=_normalize,
        )
    )
