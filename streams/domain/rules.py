"""The ENS rules the validator applies, and the code lists they use, kept as data.

A rule is looked up by a stable id (``ENS-EORI-FORMAT``) so that findings, dashboards and tests can name it
without depending on the wording of its message. Each rule says who must act on it (``Responsible``): a
forwarder reading a finding needs the party that can fix the booking, not only the field at fault. Where a rule
mirrors an error customs would send in an IE3N99, ``error_code`` is the CL723 code of that error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any


class Severity(StrEnum):
    """An error blocks filing; a warning is advice the forwarder may accept."""

    ERROR = "error"
    WARNING = "warning"


class ErrorCode(IntEnum):
    """CL723 functional error codes of an IE3N99 that our rules anticipate."""

    INCORRECT_VALUE = 12
    MISSING = 13
    OUT_OF_SEQUENCE = 92
    CHARACTER_NOT_ALLOWED = 102


class Responsible(StrEnum):
    """How to find the party that must fix what a rule found."""

    FILER = "filer"
    """The party that files the filing carrying the data."""
    HBL_ISSUER = "hbl_issuer"
    """The issuer of the house B/L at fault: for a lowest HBL, the shipper's forwarder."""
    CARRIER = "carrier"
    PLANNING_PARTY = "planning_party"
    """The party that planned the consolidation (this deployment's user), which owns the booking data."""
    MASTER_LOADER = "master_loader"
    PARTY_ITSELF = "party_itself"
    """The filing party whose own data (its EORI) is wrong; other parties' data falls to the HBL issuer."""
    SUPPLEMENTARY_DECLARANT = "supplementary_declarant"


@dataclass(frozen=True, slots=True)
class Rule:
    """One check of the ENS data, with the words a forwarder sees when it fails."""

    id: str
    severity: Severity
    template: str
    """A ``str.format`` template; the validator passes the fields the rule's check knows."""
    responsible: Responsible
    error_code: ErrorCode | None = None
    summary: str = ""

    def message(self, **fields: Any) -> str:
        """The template filled with the finding's details."""
        return self.template.format(**fields)


_RULES: tuple[Rule, ...] = (
    Rule(
        "ENS-EORI-FORMAT",
        Severity.ERROR,
        "EORI {value!r} of {subject} is not valid: {problem}",
        Responsible.PARTY_ITSELF,
        ErrorCode.INCORRECT_VALUE,
        "An EORI is an ISO country code and up to 15 letters or digits.",
    ),
    Rule(
        "ENS-FILER-EORI",
        Severity.ERROR,
        "{subject} files the {filing} for {hbl} but the booking gives it no EORI",
        Responsible.PARTY_ITSELF,
        ErrorCode.MISSING,
        "Every filer is identified by its EORI.",
    ),
    Rule(
        "ENS-HBL-UNIQUE",
        Severity.ERROR,
        "house B/L number {value!r} is used more than once in the ENS ({problem})",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Each house transport document number must be unique in the ENS.",
    ),
    Rule(
        "ENS-DOCUMENT-NUMBER",
        Severity.ERROR,
        "transport document number {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Transport document numbers are an..70.",
    ),
    Rule(
        "ENS-SELLER-BUYER",
        Severity.ERROR,
        "lowest house B/L {hbl} has no usable {role}: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.MISSING,
        "Seller and buyer of every lowest HBL must be filed (F15 or F16).",
    ),
    Rule(
        "ENS-HOUSE-PARTIES",
        Severity.ERROR,
        "house B/L {hbl} has no usable {role}: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.MISSING,
        "A lowest HBL names its shipper (consignor) and a consignee or notify party.",
    ),
    Rule(
        "ENS-MBL-LINK",
        Severity.ERROR,
        "house filings cannot be linked to the carrier's filing: {problem}",
        Responsible.PLANNING_PARTY,
        ErrorCode.INCORRECT_VALUE,
        "House filings name the ocean carrier's MBL number (type N704) and the carrier's EORI.",
    ),
    Rule(
        "ENS-F14-SUPP-DECL",
        Severity.ERROR,
        "the F14 for {hbl} names supplementary declarant {value!r}: {problem}",
        Responsible.SUPPLEMENTARY_DECLARANT,
        ErrorCode.INCORRECT_VALUE,
        "An F14 names the F16's filer, with its EORI, as supplementary declarant.",
    ),
    Rule(
        "ENS-VALID-SET",
        Severity.ERROR,
        "filings for {hbl} do not complete the ENS: {problem}",
        Responsible.PLANNING_PARTY,
        ErrorCode.INCORRECT_VALUE,
        "With the carrier's F12 only F12 + F15 or F12 + F14 + F16 complete an ENS.",
    ),
    Rule(
        "ENS-DEADLINE",
        Severity.ERROR,
        "the lodging deadline {deadline} ({basis}) has passed: it is {now}",
        Responsible.PLANNING_PARTY,
        None,
        "Every partial filing must be in before the lodging deadline.",
    ),
    Rule(
        "ENS-DEADLINE-NEAR",
        Severity.WARNING,
        "the lodging deadline {deadline} ({basis}) is {left} away",
        Responsible.PLANNING_PARTY,
        None,
        "The lodging deadline is close: file now.",
    ),
    Rule(
        "ENS-DESC-FORMAT",
        Severity.ERROR,
        "description of goods {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "A description of goods is an..512.",
    ),
    Rule(
        "ENS-DESC-STOPWORDS",
        Severity.ERROR,
        "description of goods {value!r} says nothing about the goods: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "A description made only of generic words (goods, FAK, said to contain...) is refused.",
    ),
    Rule(
        "ENS-SCRIPT",
        Severity.ERROR,
        "{field} {value!r} has a character customs will refuse: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.CHARACTER_NOT_ALLOWED,
        "Only Latin, Greek and Cyrillic letters are accepted (CL723 error 102).",
    ),
    Rule(
        "ENS-HS-CODE",
        Severity.ERROR,
        "HS code {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "The commodity code is 6 digits of the HS, optionally 8 of the CN.",
    ),
    Rule(
        "ENS-PACKAGE-TYPE",
        Severity.ERROR,
        "package type {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Package types are two-character codes of UN/ECE Recommendation 21 (CL017).",
    ),
    Rule(
        "ENS-PACKAGE-TYPE-UNKNOWN",
        Severity.WARNING,
        "package type {value!r} is not among the common codes this product knows; check it against CL017",
        Responsible.HBL_ISSUER,
        None,
        "Our code list is a subset of CL017; an unknown code may still be valid.",
    ),
    Rule(
        "ENS-PACKAGE-COUNT",
        Severity.ERROR,
        "number of packages {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "The number of packages is a positive whole number.",
    ),
    Rule(
        "ENS-GROSS-MASS",
        Severity.ERROR,
        "gross mass {value!r} kg is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Gross mass is positive, n..16,6.",
    ),
    Rule(
        "ENS-UN-NUMBER",
        Severity.ERROR,
        "UN number {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "A UN number of dangerous goods is 4 digits.",
    ),
    Rule(
        "ENS-CONTAINER-ID",
        Severity.ERROR,
        "container {value!r} is not valid: {problem}",
        Responsible.MASTER_LOADER,
        ErrorCode.INCORRECT_VALUE,
        "Container ids follow ISO 6346, check digit included.",
    ),
    Rule(
        "ENS-SEAL",
        Severity.ERROR,
        "seal {value!r} is not valid: {problem}",
        Responsible.MASTER_LOADER,
        ErrorCode.INCORRECT_VALUE,
        "A seal id is an..20.",
    ),
    Rule(
        "ENS-GOODS-CONTAINER",
        Severity.ERROR,
        "goods of {hbl} {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Containers of goods items must be containers of the master B/L.",
    ),
    Rule(
        "ENS-LOCODE",
        Severity.ERROR,
        "location {value!r} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Places and ports are UN/LOCODEs.",
    ),
    Rule(
        "ENS-COUNTRY",
        Severity.ERROR,
        "country {value!r} in the address of {subject} is not valid: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Countries are ISO 3166-1 alpha-2 codes.",
    ),
    Rule(
        "ENS-ADDRESS-R3002",
        Severity.ERROR,
        "the address of {subject} has {problem}: customs wants a street with its house number, or a P.O. box",
        Responsible.PARTY_ITSELF,
        ErrorCode.MISSING,
        "HTI rule R3002 on every address group: street and number, or P.O. box.",
    ),
    Rule(
        "ENS-TEXT",
        Severity.ERROR,
        "{field} {value!r} is not valid: {problem}",
        Responsible.PARTY_ITSELF,
        ErrorCode.INCORRECT_VALUE,
        "Names and address parts have the lengths of the HTI (name an..70, city an..35, street an..70, ...).",
    ),
    Rule(
        "ENS-FILER-EU-EORI",
        Severity.ERROR,
        "{subject} files the {filing} for {target} with EORI {value!r}, which is not an EU EORI: {problem}",
        Responsible.PARTY_ITSELF,
        ErrorCode.INCORRECT_VALUE,
        "A filer (declarant, representative, supplementary declarant) is identified by an EORI of the EU "
        "(XI for Northern Ireland), HTI rule R3005.",
    ),
    Rule(
        "ENS-FILER-CONTACT",
        Severity.ERROR,
        "{subject} files the {filing} for {target} but the booking gives it no e-mail or phone",
        Responsible.PARTY_ITSELF,
        ErrorCode.MISSING,
        "The declarant and the representative of a filing name 1 to 9 ways to reach them (communication 1..9).",
    ),
    Rule(
        "ENS-F12-HOUSE-FILERS",
        Severity.ERROR,
        "the F12 for {value} cannot name its house filers: {problem}",
        Responsible.PLANNING_PARTY,
        ErrorCode.MISSING,
        "The carrier's F12 names every house filer (F15 or F14) as supplementary declarant, CL745 code 1.",
    ),
    Rule(
        "ENS-CODE-LIST",
        Severity.ERROR,
        "{field} {value!r} is not a code of {code_list}: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.INCORRECT_VALUE,
        "Coded values come from their ICS2 code list (CL116, CL094, CL729, ...).",
    ),
    Rule(
        "ENS-FREIGHT-PAYMENT",
        Severity.ERROR,
        "house B/L {hbl} gives no method of payment of the transport charges (CL116: {codes})",
        Responsible.HBL_ISSUER,
        ErrorCode.MISSING,
        "Every house consignment carries transportCharges/methodOfPayment (F14, F15).",
    ),
    Rule(
        "ENS-HOUSE-DATA",
        Severity.ERROR,
        "house B/L {hbl} cannot be filed: {problem}",
        Responsible.HBL_ISSUER,
        ErrorCode.MISSING,
        "A lowest HBL names its place of acceptance and of delivery, and its route passes two countries at least.",
    ),
    Rule(
        "ENS-MASTER-DATA",
        Severity.ERROR,
        "the master B/L {value} cannot be filed: {problem}",
        Responsible.PLANNING_PARTY,
        ErrorCode.MISSING,
        "What the F12 and every equipment block need: IMO number, office of first entry, container details.",
    ),
    Rule(
        "ENS-PLAN",
        Severity.ERROR,
        "the filing plan cannot be made: {problem}",
        Responsible.PLANNING_PARTY,
        None,
        "A booking whose HBL tree cannot be planned (errors of the planner).",
    ),
    Rule(
        "ENS-PLAN-ADVICE",
        Severity.WARNING,
        "{problem}",
        Responsible.PLANNING_PARTY,
        None,
        "Advice of the planner (multi-tier chains, roles).",
    ),
)

#: Every rule by id.
RULES: Mapping[str, Rule] = MappingProxyType({r.id: r for r in _RULES})


def rule(rule_id: str) -> Rule:
    """The rule with this id; a KeyError names a rule that does not exist, which is a programming error."""
    return RULES[rule_id]


#: Common package type codes of UN/ECE Recommendation 21 (CL017), with their names. A subset: CL017 has hundreds.
PACKAGE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "1A": "Drum, steel",
        "4G": "Box, fibreboard",
        "5H": "Bag, woven plastic",
        "43": "Bag, super bulk",
        "AE": "Aerosol",
        "AM": "Ampoule, non-protected",
        "BA": "Barrel",
        "BB": "Bobbin",
        "BC": "Bottlecrate, bottlerack",
        "BE": "Bundle",
        "BG": "Bag",
        "BJ": "Bucket",
        "BK": "Basket",
        "BL": "Bale, compressed",
        "BN": "Bale, non-compressed",
        "BT": "Bolt",
        "BU": "Butt",
        "BX": "Box",
        "CA": "Can, rectangular",
        "CB": "Beer crate",
        "CH": "Chest",
        "CN": "Container, not otherwise specified as transport equipment",
        "CO": "Carboy, non-protected",
        "CR": "Crate",
        "CS": "Case",
        "CT": "Carton",
        "CX": "Can, cylindrical",
        "CY": "Cylinder",
        "DR": "Drum",
        "EN": "Envelope",
        "FC": "Fruit crate",
        "FI": "Firkin",
        "GB": "Gas bottle",
        "JC": "Jerrican, rectangular",
        "JR": "Jar",
        "JT": "Jutebag",
        "JY": "Jerrican, cylindrical",
        "KG": "Keg",
        "LG": "Log",
        "NE": "Unpacked or unpackaged",
        "NT": "Net",
        "PA": "Packet",
        "PC": "Parcel",
        "PK": "Package",
        "PL": "Pail",
        "PU": "Tray",
        "PX": "Pallet",
        "RO": "Roll",
        "SA": "Sack",
        "SC": "Crate, shallow",
        "SK": "Skeleton case",
        "ST": "Sheet",
        "SW": "Shrinkwrapped",
        "TB": "Tub",
        "TK": "Tank, rectangular",
        "TN": "Tin",
        "TU": "Tube",
        "TY": "Tank, cylindrical",
        "VG": "Bulk, gas",
        "VL": "Bulk, liquid",
        "VO": "Bulk, solid, large particles",
        "VR": "Bulk, solid, granular particles",
        "VY": "Bulk, solid, fine particles",
        "WB": "Wickerbottle",
        "ZZ": "Mutually defined",
    }
)


def _words(text: str) -> frozenset[str]:
    """The white-space separated words of a long literal, kept readable in the source."""
    return frozenset(text.split())


#: Generic phrases that say nothing about goods; a description made only of these (and FILLER_WORDS) is refused.
#: Longer phrases first, so that "general cargo" is removed before "general".
STOP_PHRASES: tuple[str, ...] = (
    "freight of all kinds",
    "shipper's load and count",
    "shippers load and count",
    "said to contain",
    "said to weigh",
    "as per invoice",
    "as per attached",
    "as per packing list",
    "see invoice",
    "see attached",
    "general cargo",
    "consolidated cargo",
    "mixed cargo",
    "not applicable",
    "general merchandise",
    "fak",
    "stc",
    "slac",
    "goods",
    "various",
    "general",
    "cargo",
    "parts",
    "consolidated",
    "consolidation",
    "merchandise",
    "miscellaneous",
    "misc",
    "sundries",
    "items",
    "products",
    "commodities",
    "stuff",
    "freight",
    "n/a",
    "na",
    "none",
    "unknown",
    "tbc",
    "tba",
)

#: Words that carry no meaning alone (connectors, packages, quantities); they never make a description acceptable.
FILLER_WORDS: frozenset[str] = _words(
    """
    of and all kinds kind the a an in with for to on per assorted mixed x pcs pieces pkgs packages package ctns
    cartons pallets plts units lot lots qty quantity
    """
)

#: ISO 3166-1 alpha-2 country codes (officially assigned).
ISO_COUNTRIES: frozenset[str] = _words(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
    JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
    MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
    RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
    TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """
)

#: Unicode blocks whose characters ICS2 text may hold (Latin, Greek, Cyrillic with their marks, punctuation, currency
#: and letter-like symbols such as №): the same blocks as the ``Text`` type of ``schemas/xsd/ics2-types.xsd``.
TEXT_BLOCKS: tuple[tuple[int, int], ...] = (
    (0x0000, 0x024F),
    (0x0300, 0x036F),
    (0x0370, 0x03FF),
    (0x0400, 0x04FF),
    (0x1E00, 0x1EFF),
    (0x1F00, 0x1FFF),
    (0x2000, 0x206F),
    (0x20A0, 0x20CF),
    (0x2100, 0x214F),
)

#: Country prefixes an EORI may carry besides ISO codes: XI is Northern Ireland's.
EORI_EXTRA_PREFIXES: frozenset[str] = frozenset({"XI"})

#: Transport document type of the ocean carrier's master B/L (CL754).
MASTER_BL_TYPE = "N704"

#: CL116, method of payment of the transport charges.
PAYMENT_METHODS: Mapping[str, str] = MappingProxyType(
    {
        "A": "payment in cash",
        "B": "payment by credit card",
        "C": "payment by cheque",
        "D": "other (e.g. direct debit to cash account)",
        "H": "electronic funds transfer",
        "Y": "account holder with carrier",
        "Z": "not pre-paid",
    }
)

#: CL094, status of a representative (1, the declarant itself, is never a representative's).
REPRESENTATIVE_STATUSES: Mapping[str, str] = MappingProxyType(
    {"2": "representative, direct representation", "3": "representative, indirect representation"}
)

#: CL729, type of person.
TYPES_OF_PERSON: Mapping[int, str] = MappingProxyType(
    {1: "natural person", 2: "legal person", 3: "association of persons"}
)

#: CL745, supplementary filing type: how a filer named as supplementary declarant files.
SUPPLEMENTARY_FILING_TYPES: Mapping[str, str] = MappingProxyType(
    {"1": "house level filing (named on the F12)", "2": "sub-house level filing (named on the F14)"}
)

#: Country prefixes of EORIs that may file in ICS2: the EU member states and XI (Northern Ireland).
EU_EORI_PREFIXES: frozenset[str] = _words(
    """
    AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK XI
    """
)

#: HTI lengths of the free-text parts of a party (an..N).
PARTY_TEXT_LENGTHS: Mapping[str, int] = MappingProxyType(
    {"name": 70, "street": 70, "number": 35, "po_box": 70, "postcode": 17, "city": 35, "sub_division": 35}
)
