-- Core tables: users, boards, members, columns, cards and the per-board event log.
CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE boards (
    id           uuid PRIMARY KEY,
    title        text NOT NULL,
    description  text NOT NULL DEFAULT '',
    owner_id     uuid NOT NULL REFERENCES users (id),
    seq          bigint NOT NULL DEFAULT 0,
    -- bumped by every activation claim once boards move between nodes; fences writes
    epoch        bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE board_members (
    board_id  uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role      text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, user_id)
);
CREATE INDEX board_members_user ON board_members (user_id);

CREATE TABLE columns (
    id        uuid PRIMARY KEY,
    board_id  uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    title     text NOT NULL,
    rank      bigint NOT NULL CHECK (rank >= 0)
);
CREATE INDEX columns_board ON columns (board_id);

CREATE TABLE cards (
    id           uuid PRIMARY KEY,
    board_id     uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    column_id    uuid NOT NULL REFERENCES columns (id) ON DELETE CASCADE,
    title        text NOT NULL,
    description  text NOT NULL DEFAULT '',
    rank         bigint NOT NULL CHECK (rank >= 0)
);
CREATE INDEX cards_board ON cards (board_id);

CREATE TABLE board_events (
    board_id    uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    body        jsonb NOT NULL,
    author      uuid NOT NULL,
    request_id  text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (board_id, seq)
);
