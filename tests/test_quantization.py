"""Ada-QPacknet's quantizers, bit budget and capacity (eq. 10), against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from avalanche_sst.functional.quantization import (
    check_bit_budget,
    decode,
    encode,
    kmeans_codebook,
    linear_codebook,
    quantize,
    task_capacity_bits,
    validate_bits,
)


def test_kmeans_two_clusters_hand_computed():
    # Linear init puts the centroids at 0 and 1; {0, .1} and {.9, 1} settle at their means.
    book, codes = kmeans_codebook(torch.tensor([0.9, 0.0, 1.0, 0.1]), bits=1)
    assert torch.allclose(book, torch.tensor([0.05, 0.95]))
    assert codes.tolist() == [1, 0, 1, 0]
    assert codes.dtype == torch.uint8


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("method", ["kmeans", "linear"])
def test_at_most_two_to_the_bits_values_and_codes_below_it(bits, method):
    values = torch.randn(300, generator=torch.Generator().manual_seed(bits))
    book, codes = quantize(values, bits, method)
    assert book.numel() <= 2 ** bits
    assert codes.dtype == torch.uint8 and int(codes.max()) < 2 ** bits
    decoded = decode(codes, book)
    assert decoded.shape == values.shape
    assert torch.unique(decoded).numel() <= 2 ** bits
    # every value went to its nearest entry (what Alg. 3's assignment means)
    assert torch.equal(codes, encode(values, book))


def test_kmeans_is_exact_with_few_distinct_values_and_deterministic():
    values = torch.tensor([0.5, -1.0, 0.5, 2.0, -1.0])
    book, codes = kmeans_codebook(values, bits=2)
    assert book.tolist() == [-1.0, 0.5, 2.0]
    assert torch.equal(decode(codes, book), values)
    many = torch.randn(200, generator=torch.Generator().manual_seed(3))
    a, b = kmeans_codebook(many, 3, seed=7), kmeans_codebook(many, 3, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.all(a[0][1:] > a[0][:-1])  # sorted ascending


def test_kmeans_error_shrinks_with_bits():
    values = torch.randn(500, generator=torch.Generator().manual_seed(0))
    errors = [float((decode(*reversed(kmeans_codebook(values, b))) - values).pow(2).mean()) for b in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 10


def test_linear_quantizer_hand_computed():
    book, codes = linear_codebook(torch.tensor([0.0, 0.2, 0.7, 1.0]), bits=2)
    assert torch.allclose(book, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    assert codes.tolist() == [0, 1, 2, 3]
    const_book, const_codes = linear_codebook(torch.full((3,), 0.25), bits=3)
    assert const_book.tolist() == [0.25] and const_codes.tolist() == [0, 0, 0]


def test_empty_layer_and_encode_ties():
    book, codes = kmeans_codebook(torch.zeros(0), 2)
    assert book.numel() == 0 and codes.numel() == 0
    assert encode(torch.tensor([0.5]), torch.tensor([0.0, 1.0])).tolist() == [0]  # tie -> lower code


@pytest.mark.parametrize("bad", [0, 9, -1])
def test_bits_outside_1_to_8_raise(bad):
    with pytest.raises(ValueError, match="bits must be in 1..8"):
        validate_bits(bad)
    with pytest.raises(ValueError, match="1..8"):
        kmeans_codebook(torch.randn(10), bad)


def test_bits_must_be_an_int_and_quantizer_known():
    with pytest.raises(TypeError):
        validate_bits(2.5)
    with pytest.raises(TypeError):
        validate_bits(True)
    with pytest.raises(ValueError, match="quantizer"):
        quantize(torch.randn(4), 2, "log")
    with pytest.raises(TypeError, match="uint8"):
        decode(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]))


def test_bit_budget_of_a_position():
    used = torch.tensor([24, 30, 0], dtype=torch.uint8)
    check_bit_budget(used, torch.tensor([True, False, True]), 8)  # 24 + 8 = 32 fits
    with pytest.raises(ValueError, match="32-bit budget"):
        check_bit_budget(used, torch.tensor([False, True, False]), 8)  # 30 + 8 > 32


def test_capacity_eq10_hand_computed():
    # codes 15*2, mask 15*1, codebooks 2 layers * 2^2 entries * (32 + 2), fp32 7*32
    assert task_capacity_bits([10, 5], bits=2, fp32_values=7) == 30 + 15 + 2 * 4 * 34 + 224
    # actual codebook lengths instead of 2^b
    assert task_capacity_bits([10, 5], bits=2, codebook_sizes=[3, 4]) == 30 + 15 + 7 * 34
    # unquantized (pruning only): 32 bits a weight, no codebook
    assert task_capacity_bits([10, 5], bits=32, fp32_values=7) == 15 * 32 + 15 + 224
    with pytest.raises(ValueError, match="non-negative"):
        task_capacity_bits([-1], bits=2)
