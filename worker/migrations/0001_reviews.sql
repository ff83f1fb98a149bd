-- The review store: verdicts people look at, their decisions, and the overrides those
-- decisions become. Plain SQL, applied in order by `python -m worker db upgrade`.

CREATE TABLE review_items (
    request_id      text        NOT NULL,
    tenant          text        NOT NULL DEFAULT '',
    action          text        NOT NULL,
    text            text        NOT NULL,
    context         text,
    text_digest     text        NOT NULL,  -- of the normalised text: what an override keys on
    author_id       text,
    policy_version  text        NOT NULL,
    verdict         jsonb       NOT NULL,  -- the verdict as published (scores, rule matches, spans, signals)
    received_at     timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX review_items_queue ON review_items (tenant, received_at) WHERE decided_at IS NULL;

CREATE TABLE review_decisions (
    request_id  text        NOT NULL,
    tenant      text        NOT NULL DEFAULT '',
    reviewer    text        NOT NULL,
    decision    text        NOT NULL,
    categories  text[]      NOT NULL DEFAULT '{}',
    note        text,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, request_id, reviewer)
);

CREATE TABLE review_overrides (
    tenant          text        NOT NULL DEFAULT '',
    policy_version  text        NOT NULL,
    text_digest     text        NOT NULL,
    decision        text        NOT NULL,
    categories      text[]      NOT NULL DEFAULT '{}',
    reviewer        text        NOT NULL,
    request_id      text        NOT NULL,  -- the decision it came from
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, policy_version, text_digest)
);
CREATE INDEX review_overrides_updated ON review_overrides (updated_at);
