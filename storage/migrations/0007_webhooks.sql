-- Outgoing webhooks (docs/WEBHOOKS.md): one row per webhook with its delivery cursor, and one
-- row per delivery attempt.
--
-- The cursor is the webhook's own: `cursor_seq` is the last seq of its board that it is done
-- with (delivered, or skipped as not chosen). Any server process may deliver for any webhook:
-- a dispatcher claims due webhooks with FOR UPDATE SKIP LOCKED and a lease (`lease_owner`,
-- `lease_until`), so one webhook is delivered by one process at a time, in seq order, and a
-- process that dies mid-delivery loses its lease and another carries on (at least once).
CREATE TABLE webhooks (
    id                    uuid PRIMARY KEY,
    board_id              uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    url                   text NOT NULL,
    kinds                 text[],                  -- the event kinds delivered; NULL: every kind
    secret                text NOT NULL,           -- signs deliveries (HMAC-SHA256); never sent back
    description           text NOT NULL DEFAULT '',
    active                boolean NOT NULL DEFAULT true,
    created_by            uuid NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    cursor_seq            bigint NOT NULL,
    -- failed attempts since the last success (all at the event after the cursor, since a
    -- failure stops the webhook there), and when the next attempt is due
    consecutive_failures  integer NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz NOT NULL DEFAULT now(),
    failing_since         timestamptz,
    last_error            text,
    disabled_at           timestamptz,
    disabled_reason       text,
    -- the board's admins still have to be told of the disabling (a webhook.disabled event)
    notify_pending        boolean NOT NULL DEFAULT false,
    lease_owner           uuid,
    lease_until           timestamptz
);
CREATE INDEX webhooks_board ON webhooks (board_id);
CREATE INDEX webhooks_due ON webhooks (next_attempt_at) WHERE active OR notify_pending;

CREATE TABLE webhook_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id   uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    attempt      integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'refused')),
    status       integer,                          -- the HTTP status, when one came back
    error        text,
    duration_ms  double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, id DESC);
