"""Tests for celebalib.attributes: the 40 official names and their lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from celebalib.attributes import ATTRIBUTE_INDEX, ATTRIBUTES, NUM_ATTRIBUTES, SPLITS, attribute_index
from celebalib.errors import ConfigError


def test_forty_distinct_names_with_matching_index() -> None:
    assert NUM_ATTRIBUTES == len(set(ATTRIBUTES)) == 40
    assert all(ATTRIBUTES[i] == name for name, i in ATTRIBUTE_INDEX.items())
    assert SPLITS == ("train", "val", "test")


def test_attribute_index_ignores_case_and_spaces() -> None:
    assert attribute_index("Eyeglasses") == attribute_index(" eyeglasses ") == ATTRIBUTES.index("Eyeglasses")
    assert attribute_index("5_O_CLOCK_SHADOW") == 0
    assert attribute_index("young") == 39


def test_unknown_attribute_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'Glasses'"):
        attribute_index("Glasses")


@pytest.mark.celeba
def test_names_equal_the_genuine_header(celeba_shared: Path) -> None:
    with open(celeba_shared / "list_attr_celeba.txt", encoding="utf-8") as lines:
        next(lines)
        header = next(lines).split()
    assert tuple(header) == ATTRIBUTES
