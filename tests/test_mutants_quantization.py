"""Ada-QPacknet's quantizers and budget (functional/quantization): the boundary values, dtypes and
error messages that mutation testing found unchecked, each against a hand value."""

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


def test_eight_bits_is_the_largest_valid_width() -> None:
    assert validate_bits(8) == 8 and validate_bits(1) == 1
    with pytest.raises(TypeError, match=r"bits must be an int in 1\.\.8, got 2\.5"):
        validate_bits(2.5)


def test_encode_boundaries_of_the_codebook() -> None:
    with pytest.raises(TypeError, match="values must be a torch.Tensor, got list"):
        encode([0.1, 0.2], torch.tensor([0.0]))
    # a one-entry codebook: every value gets code 0
    assert torch.equal(encode(torch.tensor([-3.0, 0.0, 7.0]), torch.tensor([1.0])), torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="^cannot encode values with an empty codebook$"):
        encode(torch.tensor([1.0]), torch.zeros(0))
    nothing = encode(torch.zeros(0), torch.zeros(0))
    assert nothing.shape == (0,) and nothing.dtype == torch.uint8
    # 256 entries (8-bit codes) are allowed, 257 are not
    book = torch.arange(256, dtype=torch.float32)
    assert encode(torch.tensor([255.2, 17.4]), book).tolist() == [255, 17]
    with pytest.raises(ValueError, match="a codebook has at most 256 entries"):
        encode(torch.tensor([1.0]), torch.arange(257, dtype=torch.float32))


def test_decode_returns_float32_whatever_the_codebook_dtype() -> None:
    out = decode(torch.tensor([2, 0], dtype=torch.uint8), torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64))
    assert out.dtype == torch.float32 and out.tolist() == [2.5, 0.5]


def test_linear_codebook_single_value_empty_and_three_bits() -> None:
    book, codes = linear_codebook(torch.tensor([0.25]), 2)
    assert book.tolist() == [0.25] and codes.tolist() == [0] and codes.dtype == torch.uint8
    book, codes = linear_codebook(torch.full((3,), 0.5), 2)  # a constant layer: one level
    assert book.tolist() == [0.5] and codes.dtype == torch.uint8 and codes.tolist() == [0, 0, 0]
    book, codes = linear_codebook(torch.zeros(0), 2)
    assert book.shape == codes.shape == (0,) and book.dtype == torch.float32 and codes.dtype == torch.uint8
    # 3 bits: 8 levels 0..7, each value on its level
    book, codes = linear_codebook(torch.arange(8, dtype=torch.float32).flip(0), 3)
    assert book.tolist() == list(range(8)) and codes.tolist() == list(range(7, -1, -1))


def test_linear_levels_are_spaced_in_float64_then_rounded() -> None:
    """Levels between 0.1 and 0.7 computed in float64 and rounded once to float32 (a float32
    linspace differs from it in the last bit)."""
    book, _ = linear_codebook(torch.tensor([0.1, 0.7], dtype=torch.float64), 2)
    expected = torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64).to(torch.float32)
    assert torch.equal(book, expected)
    assert not torch.equal(book, torch.linspace(0.1, 0.7, 4))  # the test can tell the two apart


def test_kmeans_exact_codebook_up_to_two_to_the_bits_distinct_values() -> None:
    # 2**bits distinct values: each its own centroid, the book float32 even for float64 input
    book, codes = kmeans_codebook(torch.tensor([10.0, 0.0, 2.0, 1.0], dtype=torch.float64), 2)
    assert book.dtype == torch.float32 and book.tolist() == [0.0, 1.0, 2.0, 10.0] and codes.tolist() == [3, 0, 2, 1]
    # exactly 2**bits distinct values that Lloyd from the grid 0, 3, 6, 9 would not separate (it ends
    # with centroids 0, 0.67, 2, 9): the book is still every distinct value
    values = torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 9.0])
    book, codes = kmeans_codebook(values, 2)
    assert book.tolist() == [0.0, 1.0, 2.0, 9.0] and codes.tolist() == [0, 0, 1, 1, 2, 2, 3]
    # 3 bits: 7 distinct values -> 7 entries (not 8 k-means centroids)
    book, codes = kmeans_codebook(torch.arange(7, dtype=torch.float32), 3)
    assert book.tolist() == list(range(7)) and codes.tolist() == list(range(7))
    # 1 bit: 3 distinct values are more than 2 -> k-means with 2 centroids
    book, _ = kmeans_codebook(torch.tensor([0.0, 1.0, 9.0]), 1)
    assert book.tolist() == [0.5, 9.0]
    # a single value is a one-entry codebook
    book, codes = kmeans_codebook(torch.tensor([0.3]), 2)
    assert book.tolist() == [pytest.approx(0.3)] and codes.tolist() == [0]


def test_kmeans_empty_layer_and_the_linear_grid_initialisation() -> None:
    book, codes = kmeans_codebook(torch.zeros(0), 2)
    assert book.shape == codes.shape == (0,) and book.dtype == torch.float32 and codes.dtype == torch.uint8
    # 2 bits on 0, 1, 2, 6, 7, 8, 20: Lloyd from the grid 0, 6.67, 13.33, 20 leaves 13.33 empty; scikit-learn
    # moves it to a point far from its centre (2), giving {0, 1}, {2}, {6, 7, 8}, {20}. A k-means++ start
    # (random_state 0) ends elsewhere: 1, 6.5, 8, 20.
    book, codes = kmeans_codebook(torch.tensor([0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 20.0]), 2)
    assert book.tolist() == [0.5, 2.0, 7.0, 20.0] and codes.tolist() == [0, 0, 1, 2, 2, 2, 3]


def test_quantize_defaults_to_kmeans() -> None:
    values = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.0])
    book, codes = quantize(values, 1)
    ref_book, ref_codes = kmeans_codebook(values, 1)
    assert torch.equal(book, ref_book) and torch.equal(codes, ref_codes)


def test_bit_budget_shape_message_and_no_uint8_wrap() -> None:
    with pytest.raises(ValueError, match=r"mask \(2,\) and used_bits \(3,\) differ in shape"):
        check_bit_budget(torch.zeros(3, dtype=torch.uint8), torch.ones(2, dtype=torch.bool), 2)
    # 250 + 8 = 258 > 255: the sum must not wrap around in uint8 (250 + 8 = 2)
    with pytest.raises(ValueError, match="1 positions would exceed the 255-bit budget"):
        check_bit_budget(torch.tensor([250], dtype=torch.uint8), torch.tensor([True]), 8, limit=255)


def test_capacity_allows_an_empty_layer_and_counts_2_to_the_bits_entries() -> None:
    # a layer keeping nothing: codes 5*2, mask 5, codebooks 2 * 4 * (32 + 2)
    assert task_capacity_bits([0, 5], bits=2) == 10 + 5 + 2 * 4 * 34
    # 3 bits: 8-entry codebooks (2**3, not 2*3)
    assert task_capacity_bits([4], bits=3) == 12 + 4 + 8 * 35


def test_bit_budget_reads_any_non_zero_mask_entry_as_kept() -> None:
    """used (31, 2, 3), an int64 mask (0, 2, 2), 30 more bits: only position 2 overflows (3 + 30 > 32);
    the largest used count inside the mask is 3 (31 lies outside it)."""
    used = torch.tensor([31, 2, 3], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"^1 positions would exceed the 32-bit budget with 30 more bits \(max used 3\)"):
        check_bit_budget(used, torch.tensor([0, 2, 2]), 30)
