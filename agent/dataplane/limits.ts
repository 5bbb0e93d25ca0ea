// Two numbers the data path compares against in several places.

/** "No limit" for a breaker or outlier threshold: the largest value the shared int32 counters hold. */
export const UNLIMITED = 2 ** 31 - 1;

/** Node timers cannot wait longer (a longer one fires at once): a longer timeout means none. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
