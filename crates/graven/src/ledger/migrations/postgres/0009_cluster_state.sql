-- Run state may also record a rollout to a Kubernetes cluster (see the
-- SQLite migration of the same name).
ALTER TABLE run_state DROP CONSTRAINT run_state_state_check;
ALTER TABLE run_state ADD CONSTRAINT run_state_state_check CHECK (state IN ('running', 'stopped', 'cluster'));
