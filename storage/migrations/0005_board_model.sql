-- The full board model: card dates, assignees, labels, covers, archiving and custom field
-- values; column colours, WIP limits and archiving; labels, custom fields, checklists and their
-- items, comments and attachments; the commenter role. And a persist function that takes each
-- table's changes as one JSON batch instead of one positional array per column.

ALTER TABLE board_members DROP CONSTRAINT board_members_role_check,
    ADD CONSTRAINT board_members_role_check
        CHECK (role IN ('owner', 'admin', 'member', 'commenter', 'viewer'));
ALTER TABLE board_invitations DROP CONSTRAINT board_invitations_role_check,
    ADD CONSTRAINT board_invitations_role_check CHECK (role IN ('admin', 'member', 'commenter', 'viewer'));

ALTER TABLE boards ADD COLUMN allow_wip_overflow boolean NOT NULL DEFAULT false;

ALTER TABLE columns
    ADD COLUMN colour text,
    ADD COLUMN wip_limit integer CHECK (wip_limit > 0),
    ADD COLUMN archived boolean NOT NULL DEFAULT false;

-- Dates are milliseconds since the epoch, as on the wire; assignees and labels are ordered id
-- lists (no foreign keys: a label's deletion rewrites the cards in the same commit).
ALTER TABLE cards
    ADD COLUMN start_ms bigint,
    ADD COLUMN due_ms bigint,
    ADD COLUMN done boolean NOT NULL DEFAULT false,
    ADD COLUMN assignees uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN label_ids uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN cover_id uuid,
    ADD COLUMN archived boolean NOT NULL DEFAULT false,
    ADD COLUMN fields jsonb NOT NULL DEFAULT '{}';

CREATE TABLE labels (
    id        uuid PRIMARY KEY,
    board_id  uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    name      text NOT NULL,
    colour    text NOT NULL
);
CREATE INDEX labels_board ON labels (board_id);

CREATE TABLE custom_fields (
    id        uuid PRIMARY KEY,
    board_id  uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    name      text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('text', 'number', 'date', 'checkbox', 'select')),
    options   jsonb NOT NULL DEFAULT '[]',
    rank      bigint NOT NULL
);
CREATE INDEX custom_fields_board ON custom_fields (board_id);

CREATE TABLE checklists (
    id        uuid PRIMARY KEY,
    board_id  uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    card_id   uuid NOT NULL REFERENCES cards (id) ON DELETE CASCADE,
    title     text NOT NULL,
    rank      bigint NOT NULL CHECK (rank >= 0)
);
CREATE INDEX checklists_board ON checklists (board_id);

CREATE TABLE checklist_items (
    id            uuid PRIMARY KEY,
    board_id      uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    checklist_id  uuid NOT NULL REFERENCES checklists (id) ON DELETE CASCADE,
    card_id       uuid NOT NULL,
    text          text NOT NULL,
    rank          bigint NOT NULL CHECK (rank >= 0),
    done          boolean NOT NULL DEFAULT false,
    assignee_id   uuid,
    due_ms        bigint
);
CREATE INDEX checklist_items_board ON checklist_items (board_id);

CREATE TABLE comments (
    id          uuid PRIMARY KEY,
    board_id    uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    card_id     uuid NOT NULL REFERENCES cards (id) ON DELETE CASCADE,
    author_id   uuid NOT NULL,
    body        text NOT NULL,
    mentions    uuid[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    edited_at   timestamptz
);
CREATE INDEX comments_board ON comments (board_id);

CREATE TABLE attachments (
    id            uuid PRIMARY KEY,
    board_id      uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    card_id       uuid NOT NULL REFERENCES cards (id) ON DELETE CASCADE,
    name          text NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    blob_key      text NOT NULL,
    thumb_key     text,
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX attachments_board ON attachments (board_id);

-- Ranks now stay below 2**53, so that JavaScript's JSON.parse reads every one exactly (see
-- actors/ranks.py). Lists holding a larger rank are spread evenly again, in their order.
WITH s AS (
    SELECT id, row_number() OVER w AS n, count(*) OVER (PARTITION BY board_id) AS total
    FROM columns
    WHERE board_id IN (SELECT board_id FROM columns WHERE rank > 9007199254740991)
    WINDOW w AS (PARTITION BY board_id ORDER BY rank, id)
)
UPDATE columns c SET rank = s.n * (9007199254740992 / (s.total + 1)) FROM s WHERE c.id = s.id;
WITH s AS (
    SELECT id, row_number() OVER w AS n, count(*) OVER (PARTITION BY column_id) AS total
    FROM cards
    WHERE column_id IN (SELECT column_id FROM cards WHERE rank > 9007199254740991)
    WINDOW w AS (PARTITION BY column_id ORDER BY rank, id)
)
UPDATE cards c SET rank = s.n * (9007199254740992 / (s.total + 1)) FROM s WHERE c.id = s.id;

DROP FUNCTION boardcast_persist_batch(
    uuid, bigint, bigint, text, text, uuid[], uuid[], uuid[], text[], bigint[],
    uuid[], uuid[], text[], text[], bigint[], bigint[], text[], text[], uuid[], text[], bigint[],
    bigint[], uuid, bigint
);

-- One group commit in one round trip, fenced by the board's seq and epoch exactly as in 0004
-- (BC002: another activation took a newer epoch; BC001: the seq moved or the board is gone).
-- Each table's changes arrive as one JSON array of final row states (the protocol's own
-- encoding of the entity), read with jsonb_to_recordset; `p_deleted` maps a table to the ids
-- deleted from it. Rows of another board are never touched: every write is keyed by board.
CREATE FUNCTION boardcast_persist_batch(
    p_board uuid, p_base_seq bigint, p_new_seq bigint, p_epoch bigint, p_commit_token uuid,
    p_settings jsonb, p_deleted jsonb, p_columns jsonb, p_cards jsonb, p_labels jsonb,
    p_fields jsonb, p_checklists jsonb, p_items jsonb, p_comments jsonb, p_attachments jsonb,
    p_events jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_epoch bigint;
BEGIN
    UPDATE boards SET seq = p_new_seq, title = p_settings->>'title',
        description = p_settings->>'description',
        allow_wip_overflow = (p_settings->>'allow_wip_overflow')::boolean, updated_at = now()
    WHERE id = p_board AND seq = p_base_seq AND epoch = p_epoch;
    IF NOT FOUND THEN
        SELECT epoch INTO v_epoch FROM boards WHERE id = p_board;
        IF FOUND AND v_epoch <> p_epoch THEN
            RAISE EXCEPTION 'board % is at epoch %, not %', p_board, v_epoch, p_epoch
                USING ERRCODE = 'BC002';
        END IF;
        RAISE EXCEPTION 'board % is not at seq %', p_board, p_base_seq USING ERRCODE = 'BC001';
    END IF;

    -- Deletions, children first (a card's checklists, items, comments and attachments also go
    -- by cascade; deleting them again is harmless).
    IF p_deleted <> '{}'::jsonb THEN
        DELETE FROM checklist_items WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'items')::uuid);
        DELETE FROM checklists WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'checklists')::uuid);
        DELETE FROM comments WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'comments')::uuid);
        DELETE FROM attachments WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'attachments')::uuid);
        DELETE FROM cards WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'cards')::uuid);
        DELETE FROM columns WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'columns')::uuid);
        DELETE FROM labels WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'labels')::uuid);
        DELETE FROM custom_fields WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'fields')::uuid);
    END IF;

    -- Upserts, parents first.
    IF jsonb_array_length(p_columns) > 0 THEN
        INSERT INTO columns AS t (id, board_id, title, rank, colour, wip_limit, archived)
        SELECT r.id, p_board, r.title, r.rank, r.colour, r.wip_limit, r.archived
        FROM jsonb_to_recordset(p_columns)
             AS r (id uuid, title text, rank bigint, colour text, wip_limit integer, archived boolean)
        ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, rank = EXCLUDED.rank,
            colour = EXCLUDED.colour, wip_limit = EXCLUDED.wip_limit, archived = EXCLUDED.archived
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_labels) > 0 THEN
        INSERT INTO labels AS t (id, board_id, name, colour)
        SELECT r.id, p_board, r.name, r.colour
        FROM jsonb_to_recordset(p_labels) AS r (id uuid, name text, colour text)
        ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, colour = EXCLUDED.colour
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_fields) > 0 THEN
        INSERT INTO custom_fields AS t (id, board_id, name, kind, options, rank)
        SELECT r.id, p_board, r.name, r.kind, coalesce(r.options, '[]'), r.rank
        FROM jsonb_to_recordset(p_fields) AS r (id uuid, name text, kind text, options jsonb, rank bigint)
        ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, options = EXCLUDED.options,
            rank = EXCLUDED.rank
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_cards) > 0 THEN
        INSERT INTO cards AS t (id, board_id, column_id, title, description, rank, start_ms, due_ms,
                                done, assignees, label_ids, cover_id, archived, fields)
        SELECT r.id, p_board, r.column_id, r.title, r.description, r.rank, r.start_ms, r.due_ms,
               r.done, coalesce(r.assignees, '{}'), coalesce(r.label_ids, '{}'), r.cover_id, r.archived,
               coalesce(r.fields, '{}')
        FROM jsonb_to_recordset(p_cards)
             AS r (id uuid, column_id uuid, title text, description text, rank bigint, start_ms bigint,
                   due_ms bigint, done boolean, assignees uuid[], label_ids uuid[], cover_id uuid,
                   archived boolean, fields jsonb)
        ON CONFLICT (id) DO UPDATE SET column_id = EXCLUDED.column_id, title = EXCLUDED.title,
            description = EXCLUDED.description, rank = EXCLUDED.rank, start_ms = EXCLUDED.start_ms,
            due_ms = EXCLUDED.due_ms, done = EXCLUDED.done, assignees = EXCLUDED.assignees,
            label_ids = EXCLUDED.label_ids, cover_id = EXCLUDED.cover_id,
            archived = EXCLUDED.archived, fields = EXCLUDED.fields
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_checklists) > 0 THEN
        INSERT INTO checklists AS t (id, board_id, card_id, title, rank)
        SELECT r.id, p_board, r.card_id, r.title, r.rank
        FROM jsonb_to_recordset(p_checklists) AS r (id uuid, card_id uuid, title text, rank bigint)
        ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, rank = EXCLUDED.rank
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_items) > 0 THEN
        INSERT INTO checklist_items AS t (id, board_id, checklist_id, card_id, text, rank, done,
                                          assignee_id, due_ms)
        SELECT r.id, p_board, r.checklist_id, r.card_id, r.text, r.rank, r.done, r.assignee_id, r.due_ms
        FROM jsonb_to_recordset(p_items)
             AS r (id uuid, checklist_id uuid, card_id uuid, text text, rank bigint, done boolean,
                   assignee_id uuid, due_ms bigint)
        ON CONFLICT (id) DO UPDATE SET checklist_id = EXCLUDED.checklist_id,
            card_id = EXCLUDED.card_id, text = EXCLUDED.text, rank = EXCLUDED.rank,
            done = EXCLUDED.done, assignee_id = EXCLUDED.assignee_id, due_ms = EXCLUDED.due_ms
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_comments) > 0 THEN
        INSERT INTO comments AS t (id, board_id, card_id, author_id, body, mentions, created_at,
                                   edited_at)
        SELECT r.id, p_board, r.card_id, r.author_id, r.body, coalesce(r.mentions, '{}'),
               to_timestamp(r.created_at_ms / 1000.0), to_timestamp(r.edited_at_ms / 1000.0)
        FROM jsonb_to_recordset(p_comments)
             AS r (id uuid, card_id uuid, author_id uuid, body text, mentions uuid[],
                   created_at_ms bigint, edited_at_ms bigint)
        ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, mentions = EXCLUDED.mentions,
            edited_at = EXCLUDED.edited_at
        WHERE t.board_id = p_board;
    END IF;
    IF jsonb_array_length(p_attachments) > 0 THEN
        -- Attachments never change once added: a second write of one is a no-op.
        INSERT INTO attachments (id, board_id, card_id, name, content_type, size, blob_key,
                                 thumb_key, created_by, created_at)
        SELECT r.id, p_board, r.card_id, r.name, r.content_type, r.size, r.blob_key, r.thumb_key,
               r.created_by, to_timestamp(r.created_at_ms / 1000.0)
        FROM jsonb_to_recordset(p_attachments)
             AS r (id uuid, card_id uuid, name text, content_type text, size bigint, blob_key text,
                   thumb_key text, created_by uuid, created_at_ms bigint)
        ON CONFLICT (id) DO NOTHING;
    END IF;

    INSERT INTO board_events (board_id, seq, kind, body, author, request_id, created_at, fingerprint,
                              commit_token)
    SELECT p_board, r.seq, r.kind, r.body, r.author, r.rid, to_timestamp(r.ts_ms / 1000.0), r.fp,
           CASE WHEN r.seq = p_new_seq THEN p_commit_token END
    FROM jsonb_to_recordset(p_events)
         AS r (seq bigint, kind text, body jsonb, author uuid, rid text, ts_ms bigint, fp bigint);
END
$$;
