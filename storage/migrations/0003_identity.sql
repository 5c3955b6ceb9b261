-- Identity: passwords, external identities, sessions with rotating refresh tokens, personal
-- API tokens; board visibility and invitations. Every secret token is stored as its SHA-256.
ALTER TABLE users
    ADD COLUMN password_hash text,
    ADD COLUMN external_issuer text,
    ADD COLUMN external_subject text;
CREATE UNIQUE INDEX users_external_key ON users (external_issuer, external_subject)
    WHERE external_issuer IS NOT NULL;

-- One sign-in (login or register); its refresh tokens form one family.
CREATE TABLE auth_sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

ALTER TABLE boards
    ADD COLUMN visibility text NOT NULL DEFAULT 'private'
        CHECK (visibility IN ('private', 'signed_in'));

CREATE TABLE board_invitations (
    id          uuid PRIMARY KEY,
    board_id    uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    created_by  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    max_uses    integer NOT NULL CHECK (max_uses > 0),
    uses        integer NOT NULL DEFAULT 0 CHECK (uses >= 0),
    revoked_at  timestamptz
);
CREATE INDEX board_invitations_board ON board_invitations (board_id);
