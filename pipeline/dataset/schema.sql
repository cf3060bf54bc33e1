-- The source tables of the seed design ("Training Data Format"), as the export relies on them.
-- Production already has these tables; the pipeline never alters them. This DDL creates them for
-- tests, benchmarks and the demo (`python -m pipeline dataset sample`), and only if absent.
--
-- profile_scores.score is TEXT: the teacher LLM's answer as returned ("0.95", and sometimes junk).
-- The export selects score::text, so a NUMERIC or REAL column in production works the same way.
CREATE TABLE IF NOT EXISTS user_profiles (
    twitter_id      TEXT PRIMARY KEY,
    username        TEXT,
    display_name    TEXT,
    bio             TEXT,
    likely_is       TEXT,
    category        TEXT,
    created_at      TIMESTAMPTZ,
    follower_count  BIGINT,
    location        TEXT
);

CREATE TABLE IF NOT EXISTS profile_scores (
    id          BIGSERIAL PRIMARY KEY,
    twitter_id  TEXT NOT NULL REFERENCES user_profiles (twitter_id),
    score       TEXT,
    reason      TEXT,
    scored_by   TEXT NOT NULL,
    scored_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS profile_scores_twitter_id_scored_at_idx
    ON profile_scores (twitter_id, scored_at DESC);
