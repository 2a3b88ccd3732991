"""Formats of ICS2 data elements: small pure checks that say precisely what is wrong.

Each ``check_*`` takes the value as it would be filed and returns None when it is acceptable, else a
``FormatProblem`` whose message completes the sentence "... is not valid: <message>" and whose ``error_code`` is
the CL723 code customs would answer with. Checks do not clean their input: a value with a stray space is reported,
because that is what would be sent; the ``normalise_*`` functions give the cleaned form a forwarder can adopt.

Decisions without a source: the MRN check character is checked for its structure only (one letter or digit),
since the algorithm customs uses for ICS2 MRNs is not in the reference material and customs, not us, issues MRNs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from stdnum import iso6346

from streams.domain.rules import (
    EORI_EXTRA_PREFIXES,
    EU_EORI_PREFIXES,
    FILLER_WORDS,
    ISO_COUNTRIES,
    PACKAGE_TYPES,
    STOP_PHRASES,
    TEXT_BLOCKS,
    ErrorCode,
)


@dataclass(frozen=True, slots=True)
class FormatProblem:
    """Why a value is refused, and the CL723 code customs would give."""

    message: str
    error_code: ErrorCode = ErrorCode.INCORRECT_VALUE


Check = Callable[[str], FormatProblem | None]

_EORI = re.compile(r"[A-Z]{2}[A-Z0-9]{1,15}")
_MRN = re.compile(r"\d{2}[A-Z]{2}[A-Z0-9]{13}[A-Z0-9]")
_HS = re.compile(r"\d{6}(?:\d{2})?")
_UNLOCODE = re.compile(r"[A-Z]{2}[A-Z2-9]{3}")
_CONTAINER = re.compile(r"[A-Z]{3}[UJZ]\d{7}")
_PACKAGE = re.compile(r"[A-Z0-9]{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_UN_NUMBER = re.compile(r"\d{4}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_ALLOWED_SCRIPTS = ("LATIN ", "GREEK ", "CYRILLIC ", "COMBINING ")
_FOREIGN_SYMBOL_PREFIXES = (
    "CJK ",
    "IDEOGRAPHIC ",
    "FULLWIDTH ",
    "HALFWIDTH ",
    "HIRAGANA ",
    "KATAKANA ",
    "HANGUL ",
    "ARABIC ",
    "HEBREW ",
    "THAI ",
    "DEVANAGARI ",
)
_LATIN_BLOCKS_END = 0x024F
"""Basic Latin to Latin Extended-B: every printable character there is fine (µ, ª, º have no LATIN name)."""


def is_valid(check: Check, value: str) -> bool:
    """Predicate form of a check."""
    return check(value) is None


def normalise_code(value: str) -> str:
    """Identifiers (EORI, container, HS code, LOCODE) without spaces, dots or dashes, in upper case."""
    return re.sub(r"[\s.\-]", "", value).upper()


def _text_problem(value: str, max_length: int, what: str) -> FormatProblem | None:
    if not value or not value.strip():
        return FormatProblem(f"{what} is empty", ErrorCode.MISSING)
    if len(value) > max_length:
        return FormatProblem(f"{what} has {len(value)} characters, at most {max_length} are allowed")
    if value != value.strip():
        return FormatProblem(f"{what} starts or ends with white space")
    control = _CONTROL.search(value)
    if control:
        return FormatProblem(
            f"{what} contains a control character at position {control.start()}", ErrorCode.CHARACTER_NOT_ALLOWED
        )
    return None


def check_country(value: str) -> FormatProblem | None:
    """ISO 3166-1 alpha-2, upper case."""
    if not re.fullmatch(r"[A-Z]{2}", value):
        return FormatProblem("a country is two upper-case letters (ISO 3166-1 alpha-2)")
    if value not in ISO_COUNTRIES:
        return FormatProblem(f"{value} is not an ISO 3166-1 country code")
    return None


def check_eori(value: str) -> FormatProblem | None:
    """ISO country code followed by up to 15 letters or digits, 17 characters at most."""
    if not value:
        return FormatProblem("the EORI is empty", ErrorCode.MISSING)
    if len(value) > 17:
        return FormatProblem(f"an EORI has at most 17 characters, this one has {len(value)}")
    if not _EORI.fullmatch(value):
        if normalise_code(value) != value and _EORI.fullmatch(normalise_code(value)):
            return FormatProblem(f"write it as {normalise_code(value)}: upper case, without spaces or punctuation")
        return FormatProblem("an EORI is a country code and 1 to 15 upper-case letters or digits")
    country = value[:2]
    if country not in ISO_COUNTRIES and country not in EORI_EXTRA_PREFIXES:
        return FormatProblem(f"{country} is not an ISO 3166-1 country code")
    return None


def check_lrn(value: str) -> FormatProblem | None:
    """Local reference number: an..22, chosen by the filer."""
    return _text_problem(value, 22, "the LRN")


def check_mrn(value: str) -> FormatProblem | None:
    """Movement reference number an18: year (2 digits), country (2 letters), 13 letters or digits, 1 check character.

    The check character's value is not verified (see the module's docstring).
    """
    if len(value) != 18:
        return FormatProblem(f"an MRN has exactly 18 characters, this one has {len(value)}")
    if not _MRN.fullmatch(value):
        return FormatProblem(
            "an MRN is 2 digits of the year, 2 letters of the country, 13 upper-case letters or digits and a check "
            "character"
        )
    if value[2:4] not in ISO_COUNTRIES:
        return FormatProblem(f"{value[2:4]} is not an ISO 3166-1 country code")
    return None


def check_hs_code(value: str) -> FormatProblem | None:
    """6 digits of the Harmonized System, optionally the 2 further digits of the Combined Nomenclature."""
    if not _HS.fullmatch(value):
        return FormatProblem("an HS code is 6 digits, or 8 with the CN subheading, without dots or spaces")
    chapter = int(value[:2])
    if chapter == 0 or chapter == 77 or chapter > 97:
        return FormatProblem(f"HS chapter {value[:2]} does not exist")
    return None


def check_unlocode(value: str) -> FormatProblem | None:
    """UN/LOCODE: an ISO country code and 3 characters of A-Z and 2-9."""
    if not _UNLOCODE.fullmatch(value):
        return FormatProblem("a UN/LOCODE is a country code and 3 letters or digits 2-9, like NLRTM")
    if value[:2] not in ISO_COUNTRIES:
        return FormatProblem(f"{value[:2]} is not an ISO 3166-1 country code")
    return None


def check_container_id(value: str) -> FormatProblem | None:
    """ISO 6346: owner code (3 letters), category (U, J or Z), 6-digit serial number and check digit."""
    if not _CONTAINER.fullmatch(value):
        return FormatProblem(
            "a container id is 3 letters of the owner, U, J or Z, 6 digits and a check digit, like TCNU1234565"
        )
    expected = iso6346.calc_check_digit(value[:10])
    if value[10] != expected:
        return FormatProblem(f"its check digit should be {expected}, not {value[10]}")
    return None


def check_seal(value: str) -> FormatProblem | None:
    """Seal identification: an..20."""
    return _text_problem(value, 20, "the seal id")


def check_package_type(value: str) -> FormatProblem | None:
    """Package type an2 (CL017): two upper-case letters or digits. See ``is_known_package_type`` for the list."""
    if not _PACKAGE.fullmatch(value):
        return FormatProblem("a package type is a two-character code of UN/ECE Rec. 21, like CT (carton)")
    return None


def is_known_package_type(value: str) -> bool:
    """Whether the code is among the common CL017 codes of ``rules.PACKAGE_TYPES``."""
    return value in PACKAGE_TYPES


def check_package_count(value: int) -> FormatProblem | None:
    """Number of packages: a positive whole number, n..8."""
    if isinstance(value, bool) or not isinstance(value, int):
        return FormatProblem("the number of packages is a whole number")
    if value <= 0:
        return FormatProblem("the number of packages must be at least 1")
    if value > 99_999_999:
        return FormatProblem("the number of packages has at most 8 digits")
    return None


def check_gross_mass(value: float | int | str | Decimal) -> FormatProblem | None:
    """Gross mass in kg: greater than zero, n..16,6 (16 digits at most, 6 of them after the decimal point)."""
    if isinstance(value, bool):
        return FormatProblem("the gross mass is a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        return FormatProblem("the gross mass is a number")
    if not number.is_finite():
        return FormatProblem("the gross mass is a finite number")
    if number <= 0:
        return FormatProblem("the gross mass must be greater than zero")
    _sign, digits, exponent = number.normalize().as_tuple()
    decimals = max(0, -int(exponent))
    integer_digits = max(1, len(digits) + int(exponent))
    if decimals > 6:
        return FormatProblem(f"the gross mass has {decimals} decimals, at most 6 are allowed")
    if integer_digits + decimals > 16:
        return FormatProblem("the gross mass has more than 16 digits")
    return None


def check_datetime(value: str) -> FormatProblem | None:
    """ICS2 date-times are UTC written ``YYYY-MM-DDThh:mm:ssZ``."""
    if not _DATETIME.fullmatch(value):
        return FormatProblem("a date-time is written YYYY-MM-DDThh:mm:ssZ, in UTC, like 2027-06-15T12:00:00Z")
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return FormatProblem(f"{value} is not a date of the calendar")
    return None


def check_un_number(value: str) -> FormatProblem | None:
    """UN number of dangerous goods: 4 digits."""
    if not _UN_NUMBER.fullmatch(value):
        return FormatProblem("a UN number is 4 digits, like 1263")
    if value == "0000":
        return FormatProblem("UN 0000 does not exist")
    return None


def check_document_number(value: str) -> FormatProblem | None:
    """Transport document numbers (MBL, HBL): an..70."""
    return _text_problem(value, 70, "the document number")


@lru_cache(maxsize=4096)
def _character_allowed(char: str) -> bool:
    """Whether ICS2 free text may hold ``char``; cached, as every text of every filing is checked per character."""
    if not any(low <= ord(char) <= high for low, high in TEXT_BLOCKS):
        return False
    if ord(char) <= _LATIN_BLOCKS_END:
        return char.isprintable()
    try:
        name = unicodedata.name(char)
    except ValueError:
        return False
    category = unicodedata.category(char)
    if category[0] in "LM":
        return name.startswith(_ALLOWED_SCRIPTS)
    if category == "Nd":
        return name.startswith("DIGIT ")
    if category[0] == "N":
        return name.startswith(_ALLOWED_SCRIPTS)
    if category[0] in "PSZ":
        return category in ("Zl", "Zp") or not name.startswith(_FOREIGN_SYMBOL_PREFIXES)
    return False


def check_script(value: str) -> FormatProblem | None:
    """Only Latin, Greek and Cyrillic letters; digits, punctuation, symbols and spaces are fine (CL723 error 102)."""
    if value.isascii() and value.isprintable():
        return None  # printable Basic Latin is all allowed: most texts need no look at each character
    for position, char in enumerate(value):
        if not _character_allowed(char):
            try:
                name = unicodedata.name(char)
            except ValueError:
                name = f"U+{ord(char):04X}"
            return FormatProblem(
                f"character {char!r} ({name}) at position {position} is not Latin, Greek or Cyrillic",
                ErrorCode.CHARACTER_NOT_ALLOWED,
            )
    return None


def check_text(value: str, max_length: int) -> FormatProblem | None:
    """Free text an..``max_length`` on one line (names, address parts)."""
    return _text_problem(value, max_length, "the text")


def check_eu_eori(value: str) -> FormatProblem | None:
    """An EORI a filer may file with: one of an EU member state, or XI (Northern Ireland); GB, JP... are refused."""
    problem = check_eori(value)
    if problem is not None:
        return problem
    if value[:2] not in EU_EORI_PREFIXES:
        return FormatProblem(f"{value[:2]} is not an EU member state (nor XI, Northern Ireland)")
    return None


def check_address_r3002(street: str | None, number: str | None, po_box: str | None) -> FormatProblem | None:
    """HTI rule R3002: a street with its house number, or a P.O. box."""
    if po_box and po_box.strip():
        return None
    if not (street and street.strip()):
        return FormatProblem("neither a street with a house number nor a P.O. box", ErrorCode.MISSING)
    if not (number and number.strip()):
        return FormatProblem("a street without a house number", ErrorCode.MISSING)
    return None


def check_description(value: str) -> FormatProblem | None:
    """Description of goods: an..512 (the script and stop-word rules are separate checks)."""
    return _text_problem(value, 512, "the description")


_STOP_PATTERNS = tuple(re.compile(rf"(?<!\w){re.escape(p)}(?!\w)") for p in STOP_PHRASES)
#: Matches where any of ``_STOP_PATTERNS`` does: one search tells that a description holds no generic phrase at all.
_ANY_STOP = re.compile(rf"(?<!\w)(?:{'|'.join(re.escape(p) for p in STOP_PHRASES)})(?!\w)")
_WORD = re.compile(r"[^\W_]+")


def check_description_stopwords(value: str) -> FormatProblem | None:
    """Refuse a description made only of generic words ("goods", "FAK", "said to contain", quantities...)."""
    text = value.casefold()
    found: list[str] = []
    for phrase, pattern in zip(STOP_PHRASES, _STOP_PATTERNS, strict=True) if _ANY_STOP.search(text) else ():
        if pattern.search(text):
            found.append(phrase)
            text = pattern.sub(" ", text)
    meaningful = [w for w in _WORD.findall(text) if w not in FILLER_WORDS and not w.isdigit()]
    if meaningful:
        return None
    if found:
        listed = ", ".join(repr(p) for p in found)
        return FormatProblem(f"it is made only of generic words ({listed}); name the goods, e.g. 'cotton shirts'")
    return FormatProblem("it names no goods; describe them, e.g. 'cotton shirts'")
