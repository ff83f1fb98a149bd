"""The review page: the queue of a reviewer's tenants, oldest first, and a decision per
item (allow / block / escalate, also by keyboard: a, b, e).

Server-rendered HTML (Starlette + Jinja2 with autoescaping: the user's text is hostile
input and is only ever rendered as text, spans included). A decision is published to
``moderation.decisions`` like any other reviewer tool's, so the worker's ``Reviews`` step
stores it once, publishes the final verdict and makes the override: the page holds no
moderation logic. Reviewers log in with their name and secret (``MODERATION_REVIEW_LOGINS``)
and see and decide only their tenants' items.

    python -m worker review-ui [--host 127.0.0.1] [--port 8090]
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from kombu import Connection, Exchange, Producer
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from worker._tls import broker_ssl
from worker.models import Decision
from worker.reviews import ReviewStore
from worker.settings import Settings

__all__ = ["create_app", "segments"]

BASE = "_"  # the URL's name for requests without a tenant (stored as "")

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def segments(text: str, spans: list[tuple[int, int]]) -> list[tuple[str, bool]]:
    """The text cut at the rule matches' spans: (part, highlighted). Overlaps merge."""
    merged: list[list[int]] = []
    for start, end in sorted((max(0, s), min(len(text), e)) for s, e in spans):
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[tuple[str, bool]] = []
    at = 0
    for start, end in merged:
        if start > at:
            out.append((text[at:start], False))
        out.append((text[start:end], True))
        at = end
    if at < len(text):
        out.append((text[at:], False))
    return out


def _view(row: dict[str, Any]) -> dict[str, Any]:
    verdict = row["verdict"]
    spans = [
        (span["start"], span["end"])
        for match in verdict.get("rule_matches") or []
        for span in match.get("spans") or []
    ]
    scores = sorted(
        ((k, v) for k, v in (verdict.get("category_scores") or {}).items() if v >= 0.05),
        key=lambda kv: -kv[1],
    )[:5]
    reasons = [verdict["reason"]] if verdict.get("reason") else []
    reasons += [
        f"signal {s['rule_id']}: {s.get('reason') or ''} {s.get('observed') or ''}".strip()
        for s in verdict.get("signals") or []
    ]
    earlier = verdict.get("earlier_decision")
    changed = None
    if earlier and earlier.get("decision") != verdict.get("action"):
        changed = (
            f"Policy changed: {earlier['reviewer']} decided {earlier['decision']} for this "
            f"text under policy {earlier['policy_version']} (request {earlier['request_id']}); "
            f"policy {verdict.get('policy_version')} decides {verdict.get('action')}."
        )
    return {
        "id": row["id"],
        "action": row["action"],
        "changed": changed,
        "received": row["received_at"].strftime("%Y-%m-%d %H:%M:%S UTC"),
        "author": verdict.get("author_id"),
        "language": verdict.get("language"),
        "context": row["context"],
        "segments": segments(row["text"], spans),
        "scores": scores,
        "reasons": reasons,
    }


class _Decisions:
    """Publishes decisions to ``moderation.decisions``, confirmed by the broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def publish(self, decision: Decision) -> None:
        with Connection(
            self.settings.broker_url,
            ssl=broker_ssl(self.settings),
            transport_options={"confirm_publish": True},
        ) as connection:
            Producer(connection.channel(), exchange=Exchange("")).publish(
                decision.model_dump_json(exclude_none=True),
                routing_key=self.settings.decisions_queue,
                content_type="application/json",
                delivery_mode=2,
                retry=True,
            )


def create_app(settings: Settings) -> Starlette:
    if not settings.database_url:
        raise SystemExit("review-ui: set MODERATION_DATABASE_URL (the review store)")
    if not settings.review_logins:
        raise SystemExit("review-ui: set MODERATION_REVIEW_LOGINS (who may review what)")
    store = ReviewStore(settings.database_url)
    decisions = _Decisions(settings)
    logins = settings.review_logins

    def reviewer_of(request: Request) -> str | None:
        name = request.session.get("reviewer")
        return name if name in logins else None

    async def login_form(request: Request) -> Response:
        return HTMLResponse(
            _TEMPLATES.get_template("login.html").render(title="Log in", error=None)
        )

    async def login(request: Request) -> Response:
        form = await request.form()
        name, secret = str(form.get("reviewer", "")), str(form.get("secret", ""))
        found = logins.get(name)
        if found is None or not hmac.compare_digest(
            found.secret.get_secret_value().encode(), secret.encode()
        ):
            page = _TEMPLATES.get_template("login.html").render(
                title="Log in", error="Unknown reviewer or wrong secret."
            )
            return HTMLResponse(page, status_code=401)
        request.session["reviewer"] = name
        return RedirectResponse("./", status_code=303)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("login", status_code=303)

    async def queue(request: Request) -> Response:
        reviewer = reviewer_of(request)
        if reviewer is None:
            return RedirectResponse("login", status_code=303)
        tenants = logins[reviewer].tenants
        tenant = request.query_params.get("tenant", tenants[0])
        if tenant not in tenants:
            return HTMLResponse("Not your tenant.", status_code=403)
        rows = store.pending("" if tenant == BASE else tenant)
        page = _TEMPLATES.get_template("queue.html").render(
            title=tenant,
            tenant=tenant,
            tenants=tenants,
            reviewer=reviewer,
            items=[_view(r) for r in rows],
        )
        return HTMLResponse(page)

    async def decide(request: Request) -> Response:
        reviewer = reviewer_of(request)
        if reviewer is None:
            return RedirectResponse("login", status_code=303)
        form = await request.form()
        tenant = str(form.get("tenant", ""))
        if tenant not in logins[reviewer].tenants:
            return HTMLResponse("Not your tenant.", status_code=403)
        try:
            decision = Decision.model_validate(
                {
                    "id": str(form.get("id", "")),
                    "tenant": None if tenant == BASE else tenant,
                    "decision": str(form.get("decision", "")),
                    "reviewer": reviewer,
                }
            )
        except ValidationError:
            return HTMLResponse("Not a decision.", status_code=400)
        decisions.publish(decision)
        return RedirectResponse(f"./?tenant={tenant}", status_code=303)

    secret = settings.review_session_secret
    return Starlette(
        routes=[
            Route("/", queue),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout),
            Route("/decide", decide, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret.get_secret_value() if secret else secrets.token_hex(32),
                same_site="strict",
                https_only=False,
            )
        ],
    )


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
