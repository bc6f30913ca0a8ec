-- 0003: when each agent was created (its first stored state), so that a status-time report
-- counts only the time an agent existed (before, a new agent showed the whole range as
-- offline). Written with the first state and never changed. Existing agents get the
-- earliest time known of them: their first kept history row, else their stored state's
-- time (an agent that never changed was stored once, when it was created).
ALTER TABLE agent_state ADD COLUMN created_at INTEGER;
UPDATE agent_state SET created_at = MIN(
    updated_at,
    COALESCE((SELECT MIN(h.at) FROM status_history h WHERE h.agent_id = agent_state.agent_id),
             updated_at));
