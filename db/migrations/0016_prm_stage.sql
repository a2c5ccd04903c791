-- 0016_prm_stage: a process reward model distilled from the store's sentence scores is a checkpoint
-- (stage 'prm') trained by a run (kind 'prm'). Widening a CHECK constraint is an ALTER on PostgreSQL;
-- on SQLite it is a table rebuild that copies every column the table has at this point of the
-- migration order (ares_data/migrate.py runs SQLite migrations with foreign keys off, then checks them).
-- `{postgresql}` / `{sqlite}` before a statement: that engine only.

{postgresql} ALTER TABLE model_checkpoint DROP CONSTRAINT model_checkpoint_stage_check;
{postgresql} ALTER TABLE model_checkpoint ADD CONSTRAINT model_checkpoint_stage_check
    CHECK (stage IN ('base', 'rl', 'sft', 'prm'));
{postgresql} ALTER TABLE training_run DROP CONSTRAINT training_run_kind_check;
{postgresql} ALTER TABLE training_run ADD CONSTRAINT training_run_kind_check CHECK (kind IN ('rl', 'sft', 'prm'));

-- legacy renames leave the views and other tables' REFERENCES as written (they name the tables).
{sqlite} PRAGMA legacy_alter_table = ON;
{sqlite} CREATE TABLE model_checkpoint_new (
    id {pk},
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    base_model TEXT NOT NULL,
    adapter_path TEXT,
    parent_id INTEGER REFERENCES model_checkpoint (id),
    round INTEGER,
    stage TEXT NOT NULL CHECK (stage IN ('base', 'rl', 'sft', 'prm')),
    metadata {json},
    created_at {ts} NOT NULL,
    CONSTRAINT uq_model_checkpoint_name UNIQUE (name)
);
{sqlite} INSERT INTO model_checkpoint_new (id, name, path, base_model, adapter_path, parent_id, round, stage, metadata,
                                  created_at)
SELECT id, name, path, base_model, adapter_path, parent_id, round, stage, metadata, created_at
FROM model_checkpoint;
{sqlite} DROP TABLE model_checkpoint;
{sqlite} ALTER TABLE model_checkpoint_new RENAME TO model_checkpoint;
{sqlite} CREATE TABLE training_run_new (
    id {pk},
    kind TEXT NOT NULL CHECK (kind IN ('rl', 'sft', 'prm')),
    round INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    config {json},
    metrics {json},
    input_checkpoint_id INTEGER REFERENCES model_checkpoint (id),
    output_checkpoint_id INTEGER REFERENCES model_checkpoint (id),
    export_id INTEGER REFERENCES export (id),
    error TEXT,
    started_at {ts} NOT NULL,
    finished_at {ts}
);
{sqlite} INSERT INTO training_run_new (id, kind, round, status, config, metrics, input_checkpoint_id, output_checkpoint_id,
                              export_id, error, started_at, finished_at)
SELECT id, kind, round, status, config, metrics, input_checkpoint_id, output_checkpoint_id, export_id, error,
       started_at, finished_at
FROM training_run;
{sqlite} DROP TABLE training_run;
{sqlite} ALTER TABLE training_run_new RENAME TO training_run;
{sqlite} PRAGMA legacy_alter_table = OFF;
