"""SQLite schema. Times are UTC epoch seconds (REAL) so range filters use the indexes."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    assigned_to TEXT,
    created_at REAL NOT NULL,
    last_event_at REAL NOT NULL,
    doc BLOB NOT NULL,
    -- The local day (ISO) whose round-robin count this lead's assignment moved.
    count_day TEXT
);
CREATE INDEX IF NOT EXISTS leads_channel ON leads (channel, id);
CREATE INDEX IF NOT EXISTS leads_status ON leads (status, id);
CREATE INDEX IF NOT EXISTS leads_assigned ON leads (assigned_to, created_at);

CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    lead_id TEXT,
    channel TEXT NOT NULL,
    external_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    matched_on TEXT,
    doc BLOB NOT NULL,
    UNIQUE (channel, external_id)
);
CREATE INDEX IF NOT EXISTS events_lead ON events (lead_id, id);

-- (channel, external_id) and Idempotency-Key aliases -> the event they first named.
CREATE TABLE IF NOT EXISTS replay_keys (
    key TEXT PRIMARY KEY,
    event_id TEXT NOT NULL
) WITHOUT ROWID;

-- "phone:+7916...", "email:...", "vk:123" -> leads of that person.
CREATE TABLE IF NOT EXISTS identities (
    key TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    PRIMARY KEY (key, lead_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lead_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    remote_id TEXT,
    -- 1 once a delivery attempt started: the sink may have acted even if we never heard back.
    attempted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_lead ON outbox (lead_id, kind);
CREATE INDEX IF NOT EXISTS outbox_kind_due ON outbox (kind, state, next_attempt_at);

-- A lead's id in each sink (Bitrix24 lead id, ...): merges are written onto it.
CREATE TABLE IF NOT EXISTS outbox_links (
    sink TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    PRIMARY KEY (sink, lead_id)
) WITHOUT ROWID;

-- Authentic input we could not turn into an event: kept for a person to look at.
-- state/note/updated_at: what a person decided (kept, release asked, released); a file of
-- an older version gains them in gateway.store.sqlite_ops.migrate_ops.
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at REAL NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'kept',
    note TEXT,
    updated_at REAL
);

-- One-time data migrations already applied to this file.
CREATE TABLE IF NOT EXISTS migrations (
    name TEXT PRIMARY KEY
);
-- Events stored per channel, outcome and 5-minute bucket (UTC epoch seconds of its start),
-- written in the events' own transaction: the /ops charts read a few hundred rows, never
-- the events, and a restart keeps the history.
CREATE TABLE IF NOT EXISTS intake (
    channel TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (channel, bucket, outcome)
) WITHOUT ROWID;

-- Poller positions (IMAP folder/UIDVALIDITY/last UID), written with the events they produced.
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Chat threads: one customer on one account of one channel.
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    account TEXT NOT NULL,
    chat TEXT NOT NULL,
    lead_id TEXT,
    handle TEXT,
    locale TEXT,
    created_at REAL NOT NULL,
    last_inbound_at REAL,
    last_outbound_at REAL,
    auto_answered_for REAL,
    UNIQUE (channel, account, chat)
);

-- Transcript lines, in and out; seq is the order they were stored in.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    lead_id TEXT,
    direction TEXT NOT NULL,
    author TEXT NOT NULL,
    text TEXT,
    attachments BLOB,
    at REAL NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    external_id TEXT,
    edited_at REAL,
    ask_phone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_lead ON messages (lead_id, seq);
CREATE INDEX IF NOT EXISTS messages_external ON messages (conversation_id, external_id);

-- Pushed input (webhooks) kept before it was answered, handled after.
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    claimed_by TEXT,
    claimed_until REAL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    thread TEXT,
    UNIQUE (channel, account, key)
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (state, next_attempt_at);
"""
