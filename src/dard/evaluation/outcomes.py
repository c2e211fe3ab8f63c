"""Per-image outcomes: which evaluated images a model classified correctly, as a compact JSON string.

The encoding is ``base64`` (standard alphabet, with padding) of ``numpy.packbits(correct, bitorder="little")``:
image ``i`` of the evaluated range is bit ``i % 8`` (least significant first) of byte ``i // 8``. The number of
images is stored beside the string (the record's ``total``), because the last byte is padded with zero bits.
10,000 images take 1,668 characters. Any language reads it back with a base64 decoder and a bit mask; in Python::

    numpy.unpackbits(numpy.frombuffer(base64.b64decode(text), numpy.uint8), count=n, bitorder="little").astype(bool)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np
import torch

from dard.errors import DardError

__all__ = ["OUTCOME_ENCODING", "check_outcomes", "decode_outcomes", "encode_outcomes"]

#: how the strings are made, in words (stated in the docs and in tests)
OUTCOME_ENCODING = 'base64 of numpy.packbits(correct, bitorder="little")'


def encode_outcomes(correct: torch.Tensor | np.ndarray | Sequence[bool]) -> str:
    """``correct`` (one bool per image, in evaluation order) as a base64 string of its packed bits."""
    if isinstance(correct, torch.Tensor):
        correct = correct.detach().cpu().numpy()
    bits = np.asarray(correct)
    if bits.size == 0:
        bits = bits.astype(bool)  # an empty list has no dtype of its own
    if bits.ndim != 1 or bits.dtype != np.bool_:
        raise ValueError(f"outcomes must be a 1-d bool array, got {bits.dtype} of shape {bits.shape}")
    return base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode("ascii")


def decode_outcomes(text: str, n: int) -> np.ndarray:
    """The ``n`` bools that :func:`encode_outcomes` packed into ``text``; a string of another length, one with a
    padding bit set (outcomes of more images than ``n``), or one that is not base64, is a one-line DardError (a
    damaged record, not a silent misreading)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise DardError("per-image outcomes are not valid base64") from None
    if len(raw) != (n + 7) // 8:
        raise DardError(f"per-image outcomes hold {len(raw)} bytes, but {n} images need {(n + 7) // 8}")
    if n % 8 and raw[-1] >> (n % 8):  # the encoder pads with zeros: a set bit there marks an image past the n'th
        raise DardError(f"per-image outcomes mark images past the {n} of the record (padding bits set)")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="little").astype(bool)


def check_outcomes(text: str, correct: int, total: int) -> None:
    """A one-line DardError unless ``text`` holds ``total`` outcomes of which ``correct`` are marked: a record whose
    outcomes disagree with its count would pair (McNemar, paired differences) on other numbers than its table."""
    marked = int(decode_outcomes(text, total).sum())
    if marked != correct:
        raise DardError(f"counts {correct} images correct, its per-image outcomes {marked}")
