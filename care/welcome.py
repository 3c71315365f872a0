"""The welcome email (PROTOCOL.md §10): after a client's first quick-connect
request or first booking, once ever (its dedupe key names the client), it
lists the forms still to fill before a booked session, with a link to the
forms page. Queued through notify's outbox only for a client who gave an
address (``PATCH /v1/me/contact``; the sender looks it up when sending).

The payload holds form titles and a link: never an answer or an address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from care.forms import Form
from notify.outbox import NewMessage

__all__ = ["WELCOME_TEMPLATE", "welcome_email"]

#: The email's template (notify/templates/welcome_client.*).
WELCOME_TEMPLATE: Final = "welcome_client"


def welcome_email(client_id: str, to_fill: Sequence[Form], public_url: str) -> NewMessage:
    """The welcome email for ``client_id``, naming the forms of ``to_fill``
    (all of them done: it says so)."""
    forms_url = public_url.rstrip("/") + "/forms"
    if to_fill:
        intro = (
            f"Before your first booked session, please fill in these short forms ({len(to_fill)}):"
        )
        listed = "\n".join(f"- {f.title}" for f in to_fill)
        inline = ", ".join(f.title for f in to_fill)
    else:
        intro = "Your forms are all filled in; you can look at them or change them at any time:"
        listed = inline = "(none left to fill)"
    return NewMessage(
        channel="email",
        dedupe_key=f"welcome:{client_id}",
        recipient_id=client_id,
        template=WELCOME_TEMPLATE,
        about_id=client_id,
        payload={"intro": intro, "forms": listed, "forms_inline": inline, "forms_url": forms_url},
    )
