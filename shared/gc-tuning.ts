/**
 * V8 tuning for the processes that move stream bytes: the relay (splice), the agent and the forward proxy
 * (e2e-pump). Process-wide, so only entry points call it, once, before any work.
 *
 * Node gives every socket read a fresh ArrayBuffer (up to 64 KiB) and every decrypted TLS record another
 * (16 KiB). V8 counts them as external memory, and they die young, but they are freed only by a young-
 * generation collection (scavenge), which runs when the young generation fills with JS objects. Moving bytes
 * makes little JS garbage, so scavenges were rare, the live external total reached V8's limit about every
 * 32 MB moved, and each time V8 started a full mark-compact of the whole heap (concurrent marking threads
 * plus 10-25 ms on the main thread): half of the relay's CPU under iperf3 load, and a tenth of an endpoint's.
 * Scheduling a scavenge task once the young generation is MINOR_GC_TASK_TRIGGER_PERCENT full frees the dead
 * read buffers long before that (about 0.2 ms per scavenge); see docs/benchmark.md, "CPU per byte".
 */
import v8 from 'node:v8';

/** Percent of the young generation's capacity at which V8 schedules a scavenge task (V8's default: 80). */
export const MINOR_GC_TASK_TRIGGER_PERCENT = 5;

export function tuneGcForStreaming(): void {
  // A threshold V8 reads at every allocation check (not a heap layout), so setting it at start-up is safe.
  v8.setFlagsFromString(`--minor-gc-task-trigger=${MINOR_GC_TASK_TRIGGER_PERCENT}`);
}
