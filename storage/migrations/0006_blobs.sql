-- Blob bookkeeping (storage/blobs/ledger.py): uploads not yet referenced by a committed row,
-- and blobs whose row a commit deleted. A blob is deleted only after that commit, by the
-- sweeper, and never while a row refers to it.

CREATE TABLE blob_uploads (
    key         text PRIMARY KEY,
    board_id    uuid,  -- no foreign key: the board may be deleted while the upload is pending
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blob_uploads_created ON blob_uploads (created_at);

CREATE TABLE blob_trash (
    key         text PRIMARY KEY,
    trashed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX attachments_blob_key ON attachments (blob_key);
CREATE INDEX attachments_thumb_key ON attachments (thumb_key) WHERE thumb_key IS NOT NULL;

-- In the transaction that deletes the row, so the trash is exactly what committed: an
-- attachment.delete, and the cascades of card, column and board deletions alike. NOTIFY is
-- delivered at commit (and not at all on rollback).
CREATE FUNCTION attachments_trash_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO blob_trash (key)
    SELECT k FROM (VALUES (OLD.blob_key), (OLD.thumb_key)) AS v (k)
    WHERE k IS NOT NULL
    ON CONFLICT DO NOTHING;
    PERFORM pg_notify('boardcast_blob_trash', '');
    RETURN OLD;
END
$$;

CREATE TRIGGER attachments_trash_blobs AFTER DELETE ON attachments
    FOR EACH ROW EXECUTE FUNCTION attachments_trash_blobs();
