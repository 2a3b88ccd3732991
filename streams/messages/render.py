"""ICS2 XML out: the filings of a plan and the answers to customs' referrals, as UTF-8 bytes.

``render_filing`` dispatches on the planned filing (F12, F14, F15, F16). Each message is checked against the
project's XSD before it is returned, and a draft lacking data the message needs raises ``RenderError`` naming the
element and the HBL: an invalid message never leaves this module.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from streams.domain.planning import FilingDraft, FilingType
from streams.errors import RenderError
from streams.messages.answers import RfiAnswer, RfsAnswer
from streams.messages.render_answers import render_rfi, render_rfs
from streams.messages.render_common import Render, finish
from streams.messages.render_house import render_house_filing
from streams.messages.render_master import render_master_filing

#: The filings this module renders, and how.
RENDERERS: dict[FilingType, Callable[[Render], etree._Element]] = {
    FilingType.F12: render_master_filing,
    FilingType.F14: render_house_filing,
    FilingType.F15: render_house_filing,
    FilingType.F16: render_house_filing,
}


def render_filing(draft: FilingDraft) -> bytes:
    """The draft's filing as ICS2 XML (root ``IE3F1x`` in the ICS2 namespace), valid against its XSD."""
    ctx = Render(draft)
    renderer = RENDERERS.get(draft.planned.filing)
    if renderer is None:
        supported = ", ".join(f.value for f in RENDERERS)
        raise RenderError(f"{ctx.where()}: {draft.planned.filing.value} is not rendered (only {supported})")
    return finish(renderer(ctx), ctx.message_type, ctx.where())


def render_rfi_answer(answer: RfiAnswer) -> bytes:
    """IE3R02: the answer to a request for information, quoting its referral request reference and the MRN."""
    return render_rfi(answer)


def render_rfs_answer(answer: RfsAnswer) -> bytes:
    """IE3R03: high-risk cargo screening results for a request for screening."""
    return render_rfs(answer)
