"""Care forms over HTTP (PROTOCOL.md §10); the forms and their rules are
:mod:`care.forms`', the consent records :mod:`care.consents`'.

* ``GET /v1/forms`` (any signed-in user): ``{"forms": [F]}``, F ``{"name",
  "version", "title", "description", "consent", "fields": [{"key", "label",
  "type", "required", "help", "options"?}]}``; ``options`` (a ``choice``'s
  alone) are ``[{"value", "label"}]``.
* ``GET /v1/me/forms`` (a client; an addition): ``{"forms": [{"name",
  "version", "title", "state" ("missing", "done", "outdated"), "updated_at"
  (null: never)}], "complete"}``; ``complete`` is what ``POST /v1/bookings``
  of a session asks.
* ``GET /v1/me/forms/{name}`` (a client; an addition, so the page shows
  what it wrote): ``{"form": {"name", "version", "updated_at", "state",
  "answers"}}``; 404 when it never answered that form.
* ``PUT /v1/me/forms/{name}`` (a client): body a map of field ``key`` to
  value; 200 ``{"form": {"name", "version", "updated_at", "state":
  "done"}}``. 422 ``invalid_field`` with ``field`` (the first) and
  ``fields`` (every bad, missing or unknown key and what it takes); 404 for
  a form that does not exist.
* ``GET /v1/clients/{id}/forms`` (that client; a therapist who has or had a
  booking or a session with it, else 403; an operator):
  ``{"client_id", "forms": [{"name", "version", "updated_at", "answers"}],
  "consents": [{"kind", "version", "given_at", "about_id"}]}``. Every read
  by anyone but the client itself is written to the audit trail (record
  ``forms``) before it is answered; no entry, no answer.

Answers are encrypted at rest under the client's own key and never logged.
"""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from care.audit import AuditTrail, Record
from care.forms import check_answers, form_named, load_forms, state_of, status_public
from core.clock import rfc3339
from core.errors import Forbidden, NotFound
from core.identity import Role, User
from core.logs import get_logger
from core.validation import parse_json_body, validate_id
from dispatch.context import AppContext
from dispatch.intake import forms_of
from dispatch.routes import ctx_of, signed_in

__all__ = ["ROUTES"]

log = get_logger(component="forms")


def _audit(ctx: AppContext) -> AuditTrail:
    assert ctx.audit is not None, "build_context sets the audit trail"
    return ctx.audit


def _form_path(request: HttpRequest) -> str:
    # An unknown name is a 404 whatever its shape (the list is short and public).
    name = request.path_params["name"]
    return str(name)


async def list_forms(request: HttpRequest) -> Response:
    signed_in(request)
    return JSONResponse({"forms": [f.public() for f in load_forms()]})


async def my_forms(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    stored = await forms_of(ctx).stored(user.id)
    return JSONResponse(status_public(load_forms(), stored))


async def my_form(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    form = form_named(_form_path(request))
    store = forms_of(ctx)
    found = await store.answers(user.id, form.name)
    if not found:
        raise NotFound("you have not filled in this form yet")
    stored = (await store.stored(user.id)).get(form.name)
    return JSONResponse({"form": {**found[0].public(), "state": state_of(form, stored)}})


async def put_form(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    form = form_named(_form_path(request))
    answers = check_answers(form, parse_json_body(await request.body()))
    stored = await forms_of(ctx).put(user.id, form, answers, ctx.clock())
    # Which form and version, never the answers.
    log.info("forms.answered", user_id=user.id, form=form.name, version=form.version)
    return JSONResponse(
        {
            "form": {
                "name": form.name,
                "version": stored.version,
                "updated_at": rfc3339(stored.updated_at),
                "state": state_of(form, stored),
            }
        }
    )


async def _may_read(ctx: AppContext, user: User, client_id: str) -> None:
    """Raise :class:`Forbidden` unless ``user`` may read ``client_id``'s forms."""
    if user.role is Role.OPERATOR or (user.role is Role.CLIENT and user.id == client_id):
        return
    if user.role is Role.THERAPIST and (
        client_id in await ctx.signaling.records.clients_known(user.id, [client_id])
        or await ctx.bookings.ever_booked(user.id, client_id)
    ):
        return
    raise Forbidden("only the client, its therapists and operators read its forms")


async def client_forms(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request)
    client_id = validate_id(request.path_params["client_id"], "client id")
    await _may_read(ctx, user, client_id)
    if user.id != client_id:
        # Before anything is read: a read the trail cannot account for is not answered.
        await _audit(ctx).record(user, Record.FORMS, client_id, None, ctx.clock())
        log.info("forms.read", user_id=user.id, client_id=client_id, role=user.role.value)
    store = forms_of(ctx)
    answers = await store.answers(client_id)
    consents = await store.consents.of_client(client_id)
    return JSONResponse(
        {
            "client_id": client_id,
            "forms": [a.public() for a in answers],
            "consents": [c.public() for c in consents],
        }
    )


ROUTES = [
    Route("/v1/forms", list_forms, methods=["GET"]),
    Route("/v1/me/forms", my_forms, methods=["GET"]),
    Route("/v1/me/forms/{name}", my_form, methods=["GET"]),
    Route("/v1/me/forms/{name}", put_form, methods=["PUT"]),
    Route("/v1/clients/{client_id}/forms", client_forms, methods=["GET"]),
]
