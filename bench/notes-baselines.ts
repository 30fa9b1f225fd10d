/**
 * Figures from /work/shared/notes/performance-baselines.md (measured 2026-11-25 on this machine kind with
 * throwaway scripts before any tunnel code). Printed beside our results only as context: the comparison
 * that counts is against the baselines this benchmark measures in the same run.
 */

export type ThroughputConfig = 'fwd1' | 'rev1' | 'fwd8' | 'rev8';

/** Section A, Gbit/s, median of clean runs (10 s runs). node-tls2 is the planned design modelled in JS. */
export const NOTES_THROUGHPUT: Record<'direct' | 'sshJ' | 'model' | 'portway', Record<ThroughputConfig, string>> = {
  direct: { fwd1: '30.84', rev1: '35.47', fwd8: '33.80', rev8: '37.41' },
  sshJ: { fwd1: '2.54', rev1: '3.93', fwd8: '4.14', rev8: '4.15' },
  model: { fwd1: '3.74', rev1: '3.73', fwd8: '3.71', rev8: '3.73' },
  portway: { fwd1: 'notes target ≥ 3.4 (90 % of node-tls2 there)', rev1: '', fwd8: '', rev8: '' },
};

/** Section B on loopback: median / p99 ms. */
export const NOTES_LATENCY_LOOPBACK = {
  direct: '0.143 / 0.585',
  sshJ: '0.403 / 1.155 (tunnel up)',
  portway: '3.708 / 7.239 (node-tls2); target ≤ 4 / ≤ 8',
};

/** Section B with 20 ms RTT per link (netns + TUN delay, IP-routed direct): median / p99 ms. */
export const NOTES_LATENCY_DELAY = {
  direct: '81.2 / 83.1 (routed, 4.1 link RTTs)',
  sshJ: '82.0 / 82.9 (4.1 link RTTs)',
  portway: '125.0 / 127.7 (node-tls2, 6.3 link RTTs); target ≤ 6 RTTs, stretch 4',
};

/** Section D. */
export const NOTES_MEMORY = 'relay 72.2 KiB per idle stream (node-tls2); Node TLS server 29.5 KiB per idle TLS connection';

/** Section B, cold ssh. */
export const NOTES_COLD = {
  sshJ: '307.2 (cold ssh -J … -W echo, spawn to echo)',
  portway: '– (first stream ≈ 6 link RTTs, vs 878 ms cold ssh -J at 20 ms/link)',
};
