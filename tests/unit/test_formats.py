"""Format checks of ICS2 data elements: table cases and property tests (valid accepted, mutated refused)."""

from __future__ import annotations

import string
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from stdnum import iso6346

from streams.domain import formats
from streams.domain.rules import ISO_COUNTRIES, PACKAGE_TYPES, STOP_PHRASES, ErrorCode

PROPS = settings(max_examples=150, deadline=None)
COUNTRIES = sorted(ISO_COUNTRIES)
UPPER_ALNUM = string.ascii_uppercase + string.digits


class TestEori:
    @pytest.mark.parametrize("value", ["NL812345678000", "NL860123456", "DE993311220000", "XI123456789000", "FR1"])
    def test_valid_eoris_pass(self, value):
        """Country code plus 1 to 15 letters or digits is accepted (XI for Northern Ireland too)."""
        assert formats.check_eori(value) is None

    @pytest.mark.parametrize(
        ("value", "words"),
        [
            ("D123456789", "country code"),
            ("DE1234567890123456", "at most 17"),
            ("QQ123456", "QQ is not"),
            ("de 1234", "write it as DE1234"),
            ("NL", "country code and 1 to 15"),
            ("", "empty"),
        ],
    )
    def test_invalid_eoris_say_why(self, value, words):
        """Each refusal names the precise problem."""
        problem = formats.check_eori(value)
        assert problem is not None and words in problem.message

    @PROPS
    @given(st.sampled_from(COUNTRIES), st.text(UPPER_ALNUM, min_size=1, max_size=15))
    def test_generated_eoris_pass(self, country, rest):
        """Any ISO country and up to 15 upper-case alphanumerics is a valid EORI."""
        assert formats.check_eori(country + rest) is None

    @PROPS
    @given(
        st.sampled_from(COUNTRIES),
        st.text(UPPER_ALNUM, min_size=1, max_size=14),
        st.sampled_from(list("-./ ab")),
    )
    def test_eori_with_foreign_character_fails(self, country, rest, bad):
        """A punctuation mark or a lower-case letter anywhere after the country makes it invalid."""
        assert formats.check_eori(country + bad + rest) is not None

    @PROPS
    @given(st.sampled_from(COUNTRIES), st.text(UPPER_ALNUM, min_size=16, max_size=30))
    def test_too_long_eori_fails(self, country, rest):
        """More than 15 characters after the country is refused."""
        assert formats.check_eori(country + rest) is not None


class TestMrnAndLrn:
    @pytest.mark.parametrize("value", ["24NLJ4H7PL2RZC1WX5", "27DE0000000000000A"])
    def test_valid_mrns_pass(self, value):
        """Year, country, 13 alphanumerics and a check character."""
        assert formats.check_mrn(value) is None

    @pytest.mark.parametrize(
        "value",
        ["24NLJ4H7PL2RZC1WX", "2XNLJ4H7PL2RZC1WX5", "24N1J4H7PL2RZC1WX5", "24QQJ4H7PL2RZC1WX5", "24nlj4h7pl2rzc1wx5"],
    )
    def test_malformed_mrns_fail(self, value):
        """Wrong length, year, country or case is refused."""
        assert formats.check_mrn(value) is not None

    @PROPS
    @given(
        st.integers(0, 99),
        st.sampled_from(COUNTRIES),
        st.text(UPPER_ALNUM, min_size=13, max_size=13),
        st.sampled_from(UPPER_ALNUM),
    )
    def test_generated_mrns_pass_and_truncated_fail(self, year, country, body, check):
        """A structurally valid MRN passes; dropping its last character fails."""
        mrn = f"{year:02d}{country}{body}{check}"
        assert formats.check_mrn(mrn) is None
        assert formats.check_mrn(mrn[:-1]) is not None

    @pytest.mark.parametrize(("value", "ok"), [("F15V1ABC", True), ("X" * 22, True), ("X" * 23, False), ("", False)])
    def test_lrn_length(self, value, ok):
        """An LRN is 1 to 22 characters."""
        assert formats.is_valid(formats.check_lrn, value) is ok


class TestHsCode:
    @pytest.mark.parametrize("value", ["847130", "94016100", "010121"])
    def test_valid_codes_pass(self, value):
        """6 or 8 digits in an existing chapter."""
        assert formats.check_hs_code(value) is None

    @pytest.mark.parametrize(
        "value", ["84713", "8471300", "847130000", "8471.30", "ABCDEF", "001234", "771234", "991234"]
    )
    def test_invalid_codes_fail(self, value):
        """Wrong length, separators, letters or a chapter that does not exist."""
        assert formats.check_hs_code(value) is not None

    @PROPS
    @given(st.integers(1, 97).filter(lambda c: c != 77), st.text(string.digits, min_size=4, max_size=4), st.booleans())
    def test_generated_codes_pass_and_shortened_fail(self, chapter, rest, cn):
        """Any 6- or 8-digit code of a real chapter passes; one digit less fails."""
        code = f"{chapter:02d}{rest}" + ("12" if cn else "")
        assert formats.check_hs_code(code) is None
        assert formats.check_hs_code(code[:-1]) is not None


class TestUnlocodeAndCountry:
    @pytest.mark.parametrize("value", ["NLRTM", "JPTYO", "DEHAM", "SGSIN", "KRPUS", "USNY2"])
    def test_valid_locodes_pass(self, value):
        """Country plus three of A-Z and 2-9."""
        assert formats.check_unlocode(value) is None

    @pytest.mark.parametrize("value", ["NLRT", "nlrtm", "NLRT1", "NLRT0", "QQABC", "NL-RTM"])
    def test_invalid_locodes_fail(self, value):
        """Digits 0 and 1, lower case, wrong length or unknown country are refused."""
        assert formats.check_unlocode(value) is not None

    @PROPS
    @given(st.sampled_from(COUNTRIES), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789", min_size=3, max_size=3))
    def test_generated_locodes_pass(self, country, place):
        """Any ISO country with three allowed characters passes, with a 0 in place of the last it fails."""
        assert formats.check_unlocode(country + place) is None
        assert formats.check_unlocode(country + place[:2] + "0") is not None

    def test_country_codes(self):
        """ISO codes pass, unknown or lower-case ones fail."""
        assert formats.check_country("JP") is None
        assert formats.check_country("XX") is not None
        assert formats.check_country("jp") is not None


class TestContainerId:
    def test_seed_container_passes(self):
        """The seed's TCNU1234565 has a correct check digit."""
        assert formats.check_container_id("TCNU1234565") is None

    def test_wrong_check_digit_names_the_right_one(self):
        """A wrong check digit is refused with the expected digit in the message."""
        problem = formats.check_container_id("TCNU1234564")
        assert problem is not None and "should be 5" in problem.message

    @pytest.mark.parametrize("value", ["TCNU123456", "TCNX1234565", "TCN1234565", "tcnu1234565", "TCNU 123456 5"])
    def test_malformed_ids_fail(self, value):
        """Wrong length, category letter or case, or spaces are refused."""
        assert formats.check_container_id(value) is not None

    @PROPS
    @given(
        st.text(string.ascii_uppercase, min_size=3, max_size=3),
        st.sampled_from("UJZ"),
        st.text(string.digits, min_size=6, max_size=6),
    )
    def test_ids_built_with_stdnum_check_digit_pass(self, owner, category, serial):
        """An id completed with stdnum's ISO 6346 check digit passes."""
        body = owner + category + serial
        assert formats.check_container_id(body + iso6346.calc_check_digit(body)) is None

    @PROPS
    @given(
        st.text(string.ascii_uppercase, min_size=3, max_size=3),
        st.sampled_from("UJZ"),
        st.text(string.digits, min_size=6, max_size=6),
        st.integers(1, 9),
    )
    def test_ids_with_another_check_digit_fail(self, owner, category, serial, shift):
        """Any other check digit than stdnum's is refused."""
        body = owner + category + serial
        wrong = str((int(iso6346.calc_check_digit(body)) + shift) % 10)
        assert formats.check_container_id(body + wrong) is not None

    @PROPS
    @given(
        st.text(string.ascii_uppercase, min_size=3, max_size=3),
        st.text(string.digits, min_size=6, max_size=6),
        st.integers(0, 9),
        st.integers(1, 9),
    )
    def test_serial_digit_mutation_fails(self, owner, serial, position, shift):
        """Changing one serial digit while keeping the check digit is refused, unless ISO 6346's mod 10 hides it."""
        body = owner + "U" + serial
        valid = body + iso6346.calc_check_digit(body)
        index = 4 + position % 6
        mutated = valid[:index] + str((int(valid[index]) + shift) % 10) + valid[index + 1 :]
        assume(iso6346.calc_check_digit(mutated[:10]) != valid[10])
        assert formats.check_container_id(mutated) is not None


class TestPackagesMassSeal:
    def test_code_list_has_common_codes(self):
        """The CL017 subset holds at least 40 codes, among them the seed's and the usual ones."""
        assert len(PACKAGE_TYPES) >= 40
        assert {"CT", "PK", "BL", "RO", "PL", "BX", "CS", "BG", "DR", "PA", "PX"} <= set(PACKAGE_TYPES)
        assert all(formats.check_package_type(code) is None for code in PACKAGE_TYPES)

    @pytest.mark.parametrize("value", ["C", "CTN", "ct", "C-"])
    def test_malformed_package_types_fail(self, value):
        """A package type is exactly two upper-case letters or digits."""
        assert formats.check_package_type(value) is not None

    def test_unknown_but_well_formed_package_type(self):
        """QQ is well formed but not among the known codes."""
        assert formats.check_package_type("QQ") is None
        assert not formats.is_known_package_type("QQ")

    @pytest.mark.parametrize("value", [820.5, 0.000001, 1, "9999999999.123456", Decimal("700.25")])
    def test_valid_masses_pass(self, value):
        """Positive masses within n..16,6 pass."""
        assert formats.check_gross_mass(value) is None

    @pytest.mark.parametrize("value", [0, -1.5, 0.0000001, float("nan"), float("inf"), "12345678901.234567", True])
    def test_invalid_masses_fail(self, value):
        """Zero, negatives, more than 6 decimals or 16 digits, non-finite and booleans are refused."""
        assert formats.check_gross_mass(value) is not None

    @PROPS
    @given(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("9999999999"), places=6))
    def test_generated_masses_pass(self, mass):
        """Any positive mass with at most 6 decimals and 16 digits passes; with a 7th decimal digit it fails."""
        assert formats.check_gross_mass(mass) is None
        assert formats.check_gross_mass(mass + Decimal("0.0000001")) is not None

    @pytest.mark.parametrize(("value", "ok"), [(1, True), (0, False), (-3, False), (10**8, False)])
    def test_package_counts(self, value, ok):
        """A package count is 1 to 99,999,999."""
        assert (formats.check_package_count(value) is None) is ok

    @pytest.mark.parametrize(("value", "ok"), [("JPS0098812", True), ("S" * 20, True), ("S" * 21, False), ("", False)])
    def test_seals(self, value, ok):
        """A seal id is 1 to 20 characters."""
        assert formats.is_valid(formats.check_seal, value) is ok


class TestDatesAndUnNumbers:
    @pytest.mark.parametrize(
        ("value", "ok"),
        [
            ("2027-06-15T12:00:00Z", True),
            ("2027-06-15T12:00:00", False),
            ("2027-06-15T12:00:00+00:00", False),
            ("2027-02-30T12:00:00Z", False),
            ("2027-06-15 12:00:00Z", False),
        ],
    )
    def test_datetimes(self, value, ok):
        """Only YYYY-MM-DDThh:mm:ssZ of a real calendar date passes."""
        assert formats.is_valid(formats.check_datetime, value) is ok

    @PROPS
    @given(st.datetimes(min_value=datetime(1970, 1, 1)))
    def test_generated_datetimes_pass(self, moment):
        """Any date-time written in the ICS2 form passes; without the Z it fails."""
        text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert formats.check_datetime(text) is None
        assert formats.check_datetime(text[:-1]) is not None

    @pytest.mark.parametrize(("value", "ok"), [("1263", True), ("0000", False), ("126", False), ("UN1263", False)])
    def test_un_numbers(self, value, ok):
        """A UN number is 4 digits."""
        assert formats.is_valid(formats.check_un_number, value) is ok


class TestScript:
    @pytest.mark.parametrize(
        "value",
        [
            "Laptop computers",
            "Müller & Söhne GmbH, 5 % off",
            "Ελληνικά προϊόντα",
            "Русские товары №5",
            "µ-café ½ kg",
        ],
    )
    def test_latin_greek_cyrillic_and_punctuation_pass(self, value):
        """Latin, Greek and Cyrillic letters with digits, punctuation and spaces are accepted."""
        assert formats.check_script(value) is None

    @pytest.mark.parametrize(
        "value", ["木製椅子", "Chairs 椅子", "カタカナ", "한국어", "شحن", "Tables\u3002", "ＡＢＣ"]
    )
    def test_other_scripts_fail_with_error_102(self, value):
        """CJK, kana, Hangul, Arabic, ideographic punctuation and full-width forms fail with code 102."""
        problem = formats.check_script(value)
        assert problem is not None and problem.error_code is ErrorCode.CHARACTER_NOT_ALLOWED

    def test_message_names_character_and_position(self):
        """The refusal names the first bad character and where it is."""
        problem = formats.check_script("Chairs 椅子")
        assert problem is not None and "'椅'" in problem.message and "position 7" in problem.message

    @PROPS
    @given(st.text(st.characters(whitelist_categories=("Lo",), min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1))
    def test_generated_cjk_fails(self, text):
        """Any text of CJK ideographs fails."""
        assert formats.check_script(text) is not None

    @PROPS
    @given(st.text(string.ascii_letters + string.digits + " .,-/()&'", min_size=1, max_size=60))
    def test_generated_ascii_passes(self, text):
        """Any printable ASCII text passes the script check."""
        assert formats.check_script(text) is None


class TestDescription:
    @pytest.mark.parametrize(
        "value",
        [
            "goods",
            "Various",
            "GENERAL CARGO",
            "Freight of all kinds",
            "FAK",
            "said to contain 10 cartons of goods",
            "STC: parts",
            "Consolidated",
            "N/A",
        ],
    )
    def test_stop_word_descriptions_fail(self, value):
        """A description made only of generic words is refused."""
        problem = formats.check_description_stopwords(value)
        assert problem is not None and "generic" in problem.message

    @pytest.mark.parametrize(
        "value", ["Laptop computers", "Auto parts", "Cotton woven fabrics", "STC 40 cartons of ceramic tableware"]
    )
    def test_real_descriptions_pass(self, value):
        """A description that names goods passes, even with a generic word in it."""
        assert formats.check_description_stopwords(value) is None

    @PROPS
    @given(
        st.lists(st.sampled_from(["goods", "various", "FAK", "general cargo", "parts", "of", "and", "10"]), min_size=1)
    )
    def test_generated_stop_word_combinations_fail(self, words):
        """Any combination of stop words and fillers is refused; adding a real noun makes it pass."""
        text = " ".join(words)
        assume(any(w not in ("of", "and", "10") for w in words))
        assert formats.check_description_stopwords(text) is not None
        assert formats.check_description_stopwords(text + " bicycles") is None

    @pytest.mark.parametrize("phrase", STOP_PHRASES)
    def test_every_generic_phrase_is_named(self, phrase):
        """Each generic phrase, alone or beside a filler, is named in the finding (none is skipped unseen)."""
        for text in (phrase, f"{phrase.upper()}, various", f"10 x {phrase}"):
            problem = formats.check_description_stopwords(text)
            assert problem is not None and repr(phrase) in problem.message

    @pytest.mark.parametrize(("value", "ok"), [("x" * 512, True), ("x" * 513, False), ("  ", False), (" lead", False)])
    def test_description_length(self, value, ok):
        """A description is 1 to 512 characters without surrounding spaces."""
        assert formats.is_valid(formats.check_description, value) is ok


class TestNormalise:
    def test_normalise_code_removes_separators_and_upper_cases(self):
        """Spaces, dots and dashes go; letters become upper case."""
        assert formats.normalise_code(" de 123.456-7 ") == "DE1234567"
        assert formats.check_eori(formats.normalise_code("nl 8123 4567 8000")) is None
