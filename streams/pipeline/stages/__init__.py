"""One module per stage, each thin: decode, call the domain, emit. No Faust here (``streams.pipeline.app`` wires them).

``booking`` plans and files a booking version; ``parse`` reads customs' XML; ``correlate`` meets notifications with
the filing ledger and completes the answers (``answers``) and filing changes (``changes``) waiting there;
``lifecycle`` keeps each ENS's state and raises its alerts; ``audit`` collects every recorded topic into the
hash-chained audit trail. ``base`` holds what they share.
"""
