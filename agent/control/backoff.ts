// Reconnect delays: capped exponential backoff with full jitter (a uniformly random wait up to
// the exponential bound), so agents that lost the controller together do not return together.

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 100, maxMs: 10_000 };

/** The wait before reconnect attempt `attempt` (0 = the first retry). */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const bound = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * bound);
}
