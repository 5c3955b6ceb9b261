-- History (time travel, card histories, the activity feed) and background imports.
--
-- board_snapshots  the board at one seq, rebuilt from the event log by the history reader
--                  (never by the board actor: nothing here is on the commit path). A board's
--                  seq-0 origin is written when the board row is created (trigger below), so
--                  that replay from the very start knows the title it was created with.
--                  `event_at` is the time of the event at that seq: it bounds the search for
--                  `?at=` to one interval between snapshots.
-- card_events      which events changed which card (including rank changes from rebalances),
--                  filled by the history reader as it replays, up to history_progress.
-- import_jobs      one background import: its state, progress and report; the source
--                  document stays until the job ends, so a restarted server can run it again.
CREATE TABLE board_snapshots (
    board_id    uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    seq         bigint NOT NULL CHECK (seq >= 0),
    format      smallint NOT NULL,
    body        jsonb NOT NULL,
    event_at    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, seq)
);

CREATE TABLE card_events (
    board_id  uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    card_id   uuid NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (board_id, card_id, seq)
);

CREATE TABLE history_progress (
    board_id     uuid PRIMARY KEY REFERENCES boards (id) ON DELETE CASCADE,
    indexed_seq  bigint NOT NULL
);

CREATE FUNCTION boardcast_board_origin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO board_snapshots (board_id, seq, format, body, event_at)
    VALUES (NEW.id, 0, 1,
            jsonb_build_object('id', NEW.id, 'title', NEW.title, 'description', NEW.description,
                               'seq', 0, 'columns', '[]'::jsonb, 'cards', '[]'::jsonb),
            NEW.created_at)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;

CREATE TRIGGER boards_origin AFTER INSERT ON boards
    FOR EACH ROW EXECUTE FUNCTION boardcast_board_origin();

-- Boards created before this migration: their origin is the title and description they have
-- now (a rename before 0008 is not known); their columns and cards all come from the log.
INSERT INTO board_snapshots (board_id, seq, format, body, event_at)
SELECT id, 0, 1,
       jsonb_build_object('id', id, 'title', title, 'description', description,
                          'seq', 0, 'columns', '[]'::jsonb, 'cards', '[]'::jsonb),
       created_at
FROM boards;

CREATE TABLE import_jobs (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('boardcast', 'trello')),
    state        text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    title        text,
    source       text,                  -- the document as sent (JSON); dropped when the job ends
    files_key    text,                  -- a zip import: the zip in the blob store, deleted at the end
    done         integer NOT NULL DEFAULT 0,
    total        integer NOT NULL DEFAULT 0,
    board_id     uuid REFERENCES boards (id) ON DELETE SET NULL,
    report       jsonb,
    error        text,
    attempts     integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX import_jobs_owner ON import_jobs (owner_id, created_at);
CREATE INDEX import_jobs_pending ON import_jobs (created_at) WHERE state IN ('queued', 'running');
