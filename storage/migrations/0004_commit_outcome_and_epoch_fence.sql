-- What a board needs to judge its own commits and requests from the log alone:
--   fingerprint   a stable hash of the command behind a request id, so that a request id
--                 reused for a different command is refused with `conflict` after a restart too;
--   commit_token  a random id of the group commit, stored on its last event, so that a commit
--                 whose outcome is unknown (the reply was lost) is judged by what it wrote, not
--                 by the board's seq, which another writer may have moved;
-- and tombstones of deleted boards, so that a resuming former member is told the board was
-- deleted instead of that it never existed.
ALTER TABLE board_events ADD COLUMN fingerprint bigint, ADD COLUMN commit_token uuid;

CREATE TABLE deleted_boards (
    id          uuid PRIMARY KEY,
    seq         bigint NOT NULL,       -- the seq of the board.deleted event
    deleted_by  uuid NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    member_ids  uuid[] NOT NULL        -- who may be told about it
);

DROP FUNCTION boardcast_persist_batch(
    uuid, bigint, bigint, text, text, uuid[], uuid[], uuid[], text[], bigint[],
    uuid[], uuid[], text[], text[], bigint[], bigint[], text[], text[], uuid[], text[], bigint[]
);

-- One group commit in one round trip: a single function call is one statement, so it is
-- atomic without BEGIN/COMMIT, fenced by the board's seq and epoch.
--
-- Single activation across processes: whoever activates a board takes a new epoch
-- (`UPDATE boards SET epoch = epoch + 1`, see BoardRepo.claim_epoch), and every group commit
-- is fenced by the epoch as well as by the seq. An activation that another one replaced (a
-- paused process, a node cut from its lease, a second server on the same database) can then
-- never commit: its batch is refused with SQLSTATE BC002 (fenced), told apart from BC001 (the
-- seq moved under the same epoch) so that the actor stops instead of reloading.
CREATE FUNCTION boardcast_persist_batch(
    p_board uuid, p_base_seq bigint, p_new_seq bigint, p_title text, p_description text,
    p_deleted_cards uuid[], p_deleted_columns uuid[],
    p_col_ids uuid[], p_col_titles text[], p_col_ranks bigint[],
    p_card_ids uuid[], p_card_columns uuid[], p_card_titles text[], p_card_descriptions text[],
    p_card_ranks bigint[],
    p_ev_seqs bigint[], p_ev_kinds text[], p_ev_bodies text[], p_ev_authors uuid[], p_ev_rids text[],
    p_ev_ts_ms bigint[], p_ev_fingerprints bigint[], p_commit_token uuid, p_epoch bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_epoch bigint;
BEGIN
    UPDATE boards SET seq = p_new_seq, title = p_title, description = p_description, updated_at = now()
    WHERE id = p_board AND seq = p_base_seq AND epoch = p_epoch;
    IF NOT FOUND THEN
        -- Which fence failed: the epoch first, since a replaced writer's seq is meaningless.
        -- A missing row (the board was deleted) is reported as stale, as before.
        SELECT epoch INTO v_epoch FROM boards WHERE id = p_board;
        IF FOUND AND v_epoch <> p_epoch THEN
            RAISE EXCEPTION 'board % is at epoch %, not %', p_board, v_epoch, p_epoch
                USING ERRCODE = 'BC002';
        END IF;
        RAISE EXCEPTION 'board % is not at seq %', p_board, p_base_seq USING ERRCODE = 'BC001';
    END IF;
    IF cardinality(p_deleted_cards) > 0 THEN
        DELETE FROM cards WHERE id = ANY (p_deleted_cards);
    END IF;
    IF cardinality(p_deleted_columns) > 0 THEN
        DELETE FROM columns WHERE id = ANY (p_deleted_columns);
    END IF;
    IF cardinality(p_col_ids) > 0 THEN
        INSERT INTO columns (id, board_id, title, rank)
        SELECT u.id, p_board, u.title, u.rank
        FROM unnest(p_col_ids, p_col_titles, p_col_ranks) AS u (id, title, rank)
        ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, rank = EXCLUDED.rank;
    END IF;
    IF cardinality(p_card_ids) > 0 THEN
        INSERT INTO cards (id, board_id, column_id, title, description, rank)
        SELECT u.id, p_board, u.column_id, u.title, u.description, u.rank
        FROM unnest(p_card_ids, p_card_columns, p_card_titles, p_card_descriptions, p_card_ranks)
             AS u (id, column_id, title, description, rank)
        ON CONFLICT (id) DO UPDATE SET column_id = EXCLUDED.column_id, title = EXCLUDED.title,
            description = EXCLUDED.description, rank = EXCLUDED.rank;
    END IF;
    INSERT INTO board_events (board_id, seq, kind, body, author, request_id, created_at, fingerprint,
                              commit_token)
    SELECT p_board, u.seq, u.kind, u.body::jsonb, u.author, u.rid, to_timestamp(u.ts_ms / 1000.0), u.fp,
           CASE WHEN u.seq = p_new_seq THEN p_commit_token END
    FROM unnest(p_ev_seqs, p_ev_kinds, p_ev_bodies, p_ev_authors, p_ev_rids, p_ev_ts_ms, p_ev_fingerprints)
         AS u (seq, kind, body, author, rid, ts_ms, fp);
END
$$;
