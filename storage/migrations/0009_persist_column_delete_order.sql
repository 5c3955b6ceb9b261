-- The group commit of 0005 deleted columns before it upserted cards: a column deleted with
-- `cards: "move"` took the moved cards with it by cascade (the cards were written again by the
-- upsert, but their checklists, items, comments and attachments were gone), so PostgreSQL no
-- longer held what clients had been told. Same function, same fence; columns are deleted
-- after the upserts.
CREATE OR REPLACE FUNCTION boardcast_persist_batch(
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

    -- Columns go last: a column deleted with its cards moved elsewhere must not take them (and
    -- their checklists, items, comments and attachments) with it by cascade; the moved cards
    -- were upserted into their new column above.
    IF p_deleted ? 'columns' THEN
        DELETE FROM columns WHERE board_id = p_board
            AND id IN (SELECT jsonb_array_elements_text(p_deleted->'columns')::uuid);
    END IF;

    INSERT INTO board_events (board_id, seq, kind, body, author, request_id, created_at, fingerprint,
                              commit_token)
    SELECT p_board, r.seq, r.kind, r.body, r.author, r.rid, to_timestamp(r.ts_ms / 1000.0), r.fp,
           CASE WHEN r.seq = p_new_seq THEN p_commit_token END
    FROM jsonb_to_recordset(p_events)
         AS r (seq bigint, kind text, body jsonb, author uuid, rid text, ts_ms bigint, fp bigint);
END
$$;
