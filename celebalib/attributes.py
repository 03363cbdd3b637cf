"""The 40 CelebA attributes, in the column order of the official ``list_attr_celeba.txt``."""

from __future__ import annotations

from celebalib.errors import ConfigError

ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
NUM_ATTRIBUTES = len(ATTRIBUTES)
ATTRIBUTE_INDEX: dict[str, int] = {name: i for i, name in enumerate(ATTRIBUTES)}
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Attributes of the person rather than of the photo: the shape of the face and its features,
# build, sex and age. Expression (Smiling, Mouth_Slightly_Open, High_Cheekbones, Narrow_Eyes),
# grooming (beards, make-up, hair colour, cut and style), what someone wears, and the photo's
# own look (Blurry, Pale_Skin, Rosy_Cheeks, Bags_Under_Eyes) change between photos of one person.
PERSON_ATTRIBUTES: tuple[str, ...] = (
    "Arched_Eyebrows", "Attractive", "Bald", "Big_Lips", "Big_Nose", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Male", "Oval_Face", "Pointy_Nose", "Receding_Hairline", "Young",
)


def attribute_index(name: str) -> int:
    """Return the column of an attribute, accepting any capitalisation."""
    for candidate, index in ATTRIBUTE_INDEX.items():
        if candidate.lower() == name.strip().lower():
            return index
    raise ConfigError(f"unknown attribute {name!r}; expected one of the 40 CelebA names, e.g. 'Eyeglasses'")
