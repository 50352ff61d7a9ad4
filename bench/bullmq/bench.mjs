#!/usr/bin/env node
// BullMQ peer benchmark for taskline-bench.
//
// Runs the same scenarios as the Taskline benchmark (enqueue_single,
// enqueue_bulk, process, latency) against a given Redis with BullMQ's
// recommended production settings, and prints exactly one line of JSON on
// stdout. Everything else (progress, warnings, errors) goes to stderr.
//
// Exit codes: 0 ok, 1 Redis unreachable / run failed, 2 bad arguments.
// See README.md in this directory.

import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(import.meta.url);

const SCENARIOS = ['enqueue_single', 'enqueue_bulk', 'process', 'latency'];
const BULK_CHUNK = 1000;
const KEEP_COMPLETED = { count: 1000 };
const KEEP_FAILED = { count: 5000 };

const USAGE = `usage: node bench.mjs --url redis://HOST:PORT/[DB] [options]

options (defaults in brackets):
  --url URL               Redis to use [$REDIS_URL]; required if REDIS_URL is unset
  --jobs N                jobs per throughput scenario [10000]
  --concurrency C         adds in flight (enqueue_single) and worker concurrency [50]
  --payload-bytes B       approximate size of each job's JSON payload [100]
  --rate R                latency scenario: jobs enqueued per second [1000]
  --latency-seconds S     latency scenario: seconds of steady enqueueing [10]
  --scenarios LIST        comma-separated subset of ${SCENARIOS.join(',')} [all]
  --prefix P              BullMQ key prefix; queues get fresh names under it [taskline-bench-bullmq]
  --timeout-seconds T     give up (exit 1) if the whole run takes longer [900]
  --warmup-jobs W         untimed jobs enqueued and processed first, to load
                          BullMQ's Lua scripts and warm the JIT; 0 disables [1000]
  --breakdown             also report per-command Redis calls per job
  -h, --help              show this help

Prints one line of JSON on stdout. Exit codes: 0 ok, 1 Redis unreachable or
run failed, 2 bad arguments.`;

const log = (...a) => console.error('[bullmq-bench]', ...a);
// A caller that stops reading stderr must not kill the run.
process.stderr.on('error', () => {});

// Set once connections exist: best-effort removal of this run's queues, used
// on the normal path and when the run is interrupted or times out.
let cleanupHook = null;
// Set when the run is being aborted: producers stop adding jobs.
let stopping = false;

// Try to clean up (at most `capMs`), then exit with `code`.
async function abort(msg, code, capMs = 5000) {
  if (stopping) {
    // Another abort is already cleaning up and will exit; errors caused by
    // that cleanup (closed connections) must not change the exit code.
    console.error(`bench.mjs: ${msg}`);
    return new Promise(() => {});
  }
  stopping = true;
  console.error(`bench.mjs: ${msg}`);
  if (cleanupHook) {
    const hook = cleanupHook;
    cleanupHook = null;
    await Promise.race([hook().catch(() => {}), sleep(capMs)]);
  }
  process.exit(code);
}

function usageError(msg) {
  console.error(`bench.mjs: ${msg}\n\n${USAGE}`);
  process.exit(2);
}

function fail(msg, err) {
  console.error(`bench.mjs: ${msg}${err ? `: ${err && err.message ? err.message : err}` : ''}`);
  process.exit(1);
}

// ---------------------------------------------------------------- arguments

function parseArguments(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        url: { type: 'string' },
        jobs: { type: 'string' },
        concurrency: { type: 'string' },
        'payload-bytes': { type: 'string' },
        rate: { type: 'string' },
        'latency-seconds': { type: 'string' },
        scenarios: { type: 'string' },
        prefix: { type: 'string' },
        'timeout-seconds': { type: 'string' },
        'warmup-jobs': { type: 'string' },
        breakdown: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    usageError(e.message);
  }
  const v = parsed.values;
  if (v.help) {
    console.error(USAGE);
    process.exit(0);
  }

  const int = (name, def, min) => {
    const raw = v[name];
    if (raw === undefined) return def;
    if (!/^\d+$/.test(raw.trim())) usageError(`--${name} must be a whole number, got '${raw}'`);
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) usageError(`--${name} must be >= ${min}, got '${raw}'`);
    return n;
  };
  const num = (name, def) => {
    const raw = v[name];
    if (raw === undefined) return def;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || n <= 0) {
      usageError(`--${name} must be a positive number, got '${raw}'`);
    }
    return n;
  };

  const url = v.url ?? process.env.REDIS_URL;
  if (!url) usageError('--url is required (or set REDIS_URL)');
  let parsedUrl;
  try {
    parsedUrl = new URL(url);
  } catch {
    usageError(`--url is not a valid URL: '${url}'`);
  }
  if (!['redis:', 'rediss:'].includes(parsedUrl.protocol)) {
    usageError(`--url must start with redis:// or rediss://, got '${url}'`);
  }

  let scenarios = SCENARIOS;
  if (v.scenarios !== undefined) {
    const list = v.scenarios.split(',').map((s) => s.trim()).filter(Boolean);
    if (list.length === 0) usageError('--scenarios is empty');
    for (const s of list) {
      if (!SCENARIOS.includes(s)) usageError(`unknown scenario '${s}' (known: ${SCENARIOS.join(', ')})`);
    }
    // Keep the canonical order, drop duplicates.
    scenarios = SCENARIOS.filter((s) => list.includes(s));
  }

  const prefix = v.prefix ?? 'taskline-bench-bullmq';
  if (!/^[A-Za-z0-9_.:-]+$/.test(prefix)) {
    usageError(`--prefix may only contain letters, digits and _ . : -, got '${prefix}'`);
  }

  const rate = num('rate', 1000);
  const latencySeconds = num('latency-seconds', 10);
  if (scenarios.includes('latency') && Math.round(rate * latencySeconds) < 1) {
    usageError('--rate x --latency-seconds must give at least one job');
  }

  return {
    url,
    jobs: int('jobs', 10000, 1),
    concurrency: int('concurrency', 50, 1),
    payloadBytes: int('payload-bytes', 100, 0),
    rate,
    latencySeconds,
    scenarios,
    prefix,
    timeoutSeconds: num('timeout-seconds', 900),
    warmupJobs: int('warmup-jobs', 1000, 0),
    breakdown: Boolean(v.breakdown),
  };
}

function redactUrl(url) {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

// ------------------------------------------------------------------ helpers

const now = () => process.hrtime.bigint();
const secondsSince = (t0) => Number(now() - t0) / 1e9;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, digits = 3) => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

// A JSON object whose serialisation is about `bytes` long.
// JSON.stringify({data: ''}) is 11 bytes; `extraLen` is what other fields add.
function padding(bytes, extraLen = 0) {
  return 'x'.repeat(Math.max(0, bytes - 11 - extraLen));
}

// Redis cost: INFO commandstats (sum of calls=, excluding our own INFO calls)
// and INFO cpu (used_cpu_sys + used_cpu_user, all threads).
async function redisSnapshot(stats) {
  const cmd = await stats.info('commandstats');
  const cpu = await stats.info('cpu');
  const perCommand = new Map();
  let calls = 0;
  let evalsha = 0;
  for (const line of cmd.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (!m) continue;
    const name = m[1];
    const n = Number(m[2]);
    if (name === 'info') continue; // our own measurement calls
    perCommand.set(name, n);
    calls += n;
    if (name === 'evalsha' || name === 'eval') evalsha += n;
  }
  const field = (k) => {
    const m = new RegExp(`^${k}:([0-9.]+)`, 'm').exec(cpu);
    return m ? Number(m[1]) : NaN;
  };
  return { calls, evalsha, perCommand, cpuSeconds: field('used_cpu_sys') + field('used_cpu_user') };
}

function redisCost(before, after, jobs, breakdown) {
  const out = {
    redis_calls_per_job: round((after.calls - before.calls) / jobs, 3),
    evalsha_calls_per_job: round((after.evalsha - before.evalsha) / jobs, 3),
    redis_cpu_us_per_job: round(((after.cpuSeconds - before.cpuSeconds) * 1e6) / jobs, 2),
  };
  if (breakdown) {
    const per = {};
    for (const [name, n] of after.perCommand) {
      const d = n - (before.perCommand.get(name) ?? 0);
      if (d > 0) per[name] = round(d / jobs, 3);
    }
    out.calls_per_job_by_command = Object.fromEntries(Object.entries(per).sort((a, b) => b[1] - a[1]));
  }
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  // nearest-rank
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

// ------------------------------------------------------------------- main

async function main() {
  const args = parseArguments(process.argv.slice(2));

  let bullmq, IORedis;
  try {
    bullmq = await import('bullmq');
    IORedis = (await import('ioredis')).Redis;
  } catch (e) {
    fail('cannot load bullmq/ioredis; run `npm ci` in bench/bullmq first', e);
  }
  const { Queue, Worker } = bullmq;
  const bullmqVersion = require('bullmq/package.json').version;
  const ioredisVersion = require('ioredis/package.json').version;

  const watchdog = setTimeout(() => {
    abort(`run did not finish within --timeout-seconds ${args.timeoutSeconds}`, 1);
  }, args.timeoutSeconds * 1000);
  watchdog.unref();
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, () => abort(`interrupted by ${sig}; cleaning up`, sig === 'SIGINT' ? 130 : 143));
  }

  // Preflight + stats connection: fail fast (exit 1) if Redis is unreachable.
  const stats = new IORedis(args.url, {
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectionName: 'bullmq-bench-stats',
  });
  let lastConnError;
  stats.on('error', (e) => (lastConnError = e)); // reported below
  let redisVersion;
  try {
    await stats.connect();
    await stats.ping();
    const server = await stats.info('server');
    redisVersion = /^redis_version:(\S+)/m.exec(server)?.[1] ?? 'unknown';
  } catch (e) {
    stats.disconnect();
    fail(`Redis is unreachable at ${redactUrl(args.url)}`, lastConnError ?? e);
  }
  log(`bullmq ${bullmqVersion}, ioredis ${ioredisVersion}, node ${process.version}, redis ${redisVersion}`);

  // BullMQ production settings: the producer (Queue) connection and each
  // Worker's connection are separate; workers use maxRetriesPerRequest: null
  // (BullMQ duplicates it for its blocking connection).
  const producerConn = new IORedis(args.url, { connectionName: 'bullmq-bench-producer' });
  producerConn.on('error', (e) => log('producer connection error:', e.message));
  const workerConns = [];
  const newWorkerConn = () => {
    const c = new IORedis(args.url, {
      maxRetriesPerRequest: null,
      connectionName: 'bullmq-bench-worker',
    });
    c.on('error', (e) => log('worker connection error:', e.message));
    workerConns.push(c);
    return c;
  };

  const runId = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const queues = [];
  const workers = [];
  const newQueue = async (scenario) => {
    const q = new Queue(`${scenario}-${runId}`, {
      connection: producerConn,
      prefix: args.prefix,
      defaultJobOptions: { removeOnComplete: KEEP_COMPLETED, removeOnFail: KEEP_FAILED },
    });
    q.on('error', (e) => log(`queue ${q.name} error:`, e.message));
    queues.push(q);
    await q.waitUntilReady();
    return q;
  };
  const newWorker = async (queue, processor) => {
    const w = new Worker(queue.name, processor, {
      connection: newWorkerConn(),
      prefix: args.prefix,
      concurrency: args.concurrency,
      autorun: false,
      removeOnComplete: KEEP_COMPLETED,
      removeOnFail: KEEP_FAILED,
    });
    w.on('error', (e) => log(`worker ${queue.name} error:`, e.message));
    workers.push(w);
    await w.waitUntilReady();
    return w;
  };

  cleanupHook = () => cleanup(queues, workers, workerConns, producerConn, stats, args);

  const payload = { data: padding(args.payloadBytes) };
  const N = args.jobs;
  const C = args.concurrency;
  const results = {};

  const addBulk = async (queue, n, name) => {
    for (let i = 0; i < n && !stopping; i += BULK_CHUNK) {
      const m = Math.min(BULK_CHUNK, n - i);
      const batch = new Array(m);
      for (let j = 0; j < m; j++) batch[j] = { name, data: payload };
      await queue.addBulk(batch);
    }
  };

  const throughput = (jobs, seconds, before, after) => ({
    jobs,
    seconds: round(seconds, 4),
    jobs_per_sec: round(jobs / seconds, 1),
    ...redisCost(before, after, jobs, args.breakdown),
  });

  try {
    // ------------------------------------------------- warm-up (untimed)
    // Loads the Lua scripts into Redis (ioredis falls back from EVALSHA to
    // EVAL once per script) and warms V8, so the first scenario is not
    // penalised relative to the others.
    if (args.warmupJobs > 0) {
      const W = args.warmupJobs;
      log(`warm-up: ${W} jobs (untimed)`);
      const q = await newQueue('warmup');
      const half = Math.ceil(W / 2);
      let next = 0;
      const lane = async () => {
        while (next < half && !stopping) {
          next++;
          await q.add('bench', payload);
        }
      };
      await Promise.all(Array.from({ length: Math.min(C, half) }, lane));
      await addBulk(q, W - half, 'bench');
      let seen = 0;
      let finish;
      const allDone = new Promise((r) => (finish = r));
      const w = await newWorker(q, async () => {});
      const count = () => {
        if (++seen === W) finish();
      };
      w.on('completed', count);
      w.on('failed', count);
      const running = w.run().catch((e) => log('worker.run failed:', e.message));
      await allDone;
      await w.close();
      await running;
    }

    // ---------------------------------------------------- enqueue_single
    if (args.scenarios.includes('enqueue_single')) {
      log(`enqueue_single: ${N} x queue.add, ${C} in flight`);
      const q = await newQueue('enqueue_single');
      let next = 0;
      const lane = async () => {
        while (next < N && !stopping) {
          next++;
          await q.add('bench', payload);
        }
      };
      const before = await redisSnapshot(stats);
      const t0 = now();
      await Promise.all(Array.from({ length: Math.min(C, N) }, lane));
      const seconds = secondsSince(t0);
      const after = await redisSnapshot(stats);
      results.enqueue_single = throughput(N, seconds, before, after);
      log('enqueue_single:', JSON.stringify(results.enqueue_single));
    }

    // ------------------------------------------------------ enqueue_bulk
    if (args.scenarios.includes('enqueue_bulk')) {
      log(`enqueue_bulk: ${N} jobs via addBulk in chunks of ${BULK_CHUNK}`);
      const q = await newQueue('enqueue_bulk');
      const before = await redisSnapshot(stats);
      const t0 = now();
      await addBulk(q, N, 'bench');
      const seconds = secondsSince(t0);
      const after = await redisSnapshot(stats);
      results.enqueue_bulk = throughput(N, seconds, before, after);
      log('enqueue_bulk:', JSON.stringify(results.enqueue_bulk));
    }

    // ----------------------------------------------------------- process
    if (args.scenarios.includes('process')) {
      log(`process: preloading ${N} jobs, then one worker with concurrency ${C}`);
      const q = await newQueue('process');
      await addBulk(q, N, 'bench');
      const counts = await q.getJobCounts('wait', 'prioritized', 'delayed');
      if (counts.wait !== N) log(`warning: expected ${N} waiting jobs, found`, JSON.stringify(counts));

      let done = 0;
      let failed = 0;
      let finish;
      const allDone = new Promise((r) => (finish = r));
      const w = await newWorker(q, async () => {});
      w.on('completed', () => {
        if (++done + failed === N) finish();
      });
      w.on('failed', (_job, err) => {
        if (failed++ === 0) log('process: a job failed:', err?.message);
        if (done + failed === N) finish();
      });

      const before = await redisSnapshot(stats);
      const t0 = now();
      const running = w.run().catch((e) => log('worker.run failed:', e.message));
      await allDone;
      const seconds = secondsSince(t0);
      const after = await redisSnapshot(stats);
      await w.close();
      await running;
      results.process = { ...throughput(N, seconds, before, after), completed: done, failed };
      if (failed) log(`warning: ${failed} jobs failed in process`);
      log('process:', JSON.stringify(results.process));
    }

    // ----------------------------------------------------------- latency
    if (args.scenarios.includes('latency')) {
      const R = args.rate;
      const S = args.latencySeconds;
      const total = Math.round(R * S);
      log(`latency: ${total} jobs at ${R}/s for ${S}s to an idle worker (concurrency ${C})`);
      const q = await newQueue('latency');

      const samplesNs = [];
      let failed = 0;
      let finish;
      const allDone = new Promise((r) => (finish = r));
      const w = await newWorker(q, async (job) => {
        const start = process.hrtime.bigint();
        samplesNs.push(Number(start - BigInt(job.data.sent_ns)));
      });
      w.on('completed', () => {
        if (samplesNs.length + failed >= total) finish();
      });
      w.on('failed', (_job, err) => {
        if (failed++ === 0) log('latency: a job failed:', err?.message);
        if (samplesNs.length + failed >= total) finish();
      });
      const running = w.run().catch((e) => log('worker.run failed:', e.message));
      await sleep(500); // let the worker reach its idle blocking wait

      // sent_ns is a 16-20 digit string; size the padding so the payload
      // stays about --payload-bytes long.
      const sentNsLen = `,"sent_ns":""`.length + String(now()).length;
      const pad = padding(args.payloadBytes, sentNsLen);
      const adds = [];
      let addErrors = 0;
      const send = () => {
        const p = q.add('latency', { sent_ns: String(process.hrtime.bigint()), data: pad });
        adds.push(
          p.catch((e) => {
            if (addErrors++ === 0) log('latency: add failed:', e.message);
          }),
        );
      };

      const before = await redisSnapshot(stats);
      const intervalNs = 1e9 / R;
      let sent = 0;
      const t0 = now();
      await new Promise((resolve) => {
        const tick = () => {
          const elapsed = Number(now() - t0);
          const due = Math.min(total, Math.floor(elapsed / intervalNs) + 1);
          while (sent < due) {
            send();
            sent++;
          }
          if (sent >= total || stopping) return resolve();
          const waitMs = (sent * intervalNs - Number(now() - t0)) / 1e6;
          setTimeout(tick, Math.max(0, waitMs));
        };
        tick();
      });
      const sendSeconds = secondsSince(t0);
      await Promise.all(adds);
      const drainTimeoutMs = Math.max(10000, S * 5000);
      let drainTimer;
      const drained = await Promise.race([
        allDone.then(() => true),
        new Promise((r) => (drainTimer = setTimeout(() => r(false), drainTimeoutMs))),
      ]);
      clearTimeout(drainTimer);
      const seconds = secondsSince(t0);
      const after = await redisSnapshot(stats);
      if (!drained) {
        log(`warning: only ${samplesNs.length}/${total} latency jobs started within ${drainTimeoutMs} ms`);
      }
      await w.close();
      await running;

      const sorted = samplesNs.slice().sort((a, b) => a - b);
      const ms = (ns) => (ns === null ? null : round(ns / 1e6, 3));
      const processed = samplesNs.length;
      results.latency = {
        samples: processed,
        p50_ms: ms(percentile(sorted, 50)),
        p95_ms: ms(percentile(sorted, 95)),
        p99_ms: ms(percentile(sorted, 99)),
        max_ms: ms(sorted.length ? sorted[sorted.length - 1] : null),
        rate: R,
        achieved_rate: round(sent / sendSeconds, 1),
        jobs: total,
        seconds: round(seconds, 4),
        ...redisCost(before, after, Math.max(1, processed), args.breakdown),
        failed,
        add_errors: addErrors,
      };
      log('latency:', JSON.stringify(results.latency));
    }
  } catch (e) {
    log('scenario failed:', e && e.stack ? e.stack : e);
    await abort(`benchmark run failed: ${e && e.message ? e.message : e}`, 1, 15000);
  }

  const hook = cleanupHook;
  cleanupHook = null;
  await hook();
  clearTimeout(watchdog);

  const report = {
    peer: 'bullmq',
    bullmq_version: bullmqVersion,
    ioredis_version: ioredisVersion,
    node_version: process.version,
    redis_version: redisVersion,
    params: {
      url: redactUrl(args.url),
      jobs: args.jobs,
      concurrency: args.concurrency,
      payload_bytes: args.payloadBytes,
      rate: args.rate,
      latency_seconds: args.latencySeconds,
      scenarios: args.scenarios,
      prefix: args.prefix,
      warmup_jobs: args.warmupJobs,
      bulk_chunk: BULK_CHUNK,
      remove_on_complete: KEEP_COMPLETED,
      remove_on_fail: KEEP_FAILED,
    },
    results,
  };
  process.stdout.write(JSON.stringify(report) + '\n');

  // Every connection is closed, so the process should exit on its own; if a
  // handle lingers, do not hang the caller.
  setTimeout(() => {
    log('warning: handles still open after cleanup; exiting:', process.getActiveResourcesInfo().join(','));
    process.exit(0);
  }, 3000).unref();
}

async function cleanup(queues, workers, workerConns, producerConn, stats, args) {
  for (const w of workers) {
    try {
      await w.close(true);
    } catch (e) {
      log('worker close failed:', e.message);
    }
  }
  for (const q of queues) {
    try {
      await q.obliterate({ force: true });
    } catch (e) {
      log(`obliterate ${q.name} failed:`, e.message);
    }
    try {
      await q.close();
    } catch (e) {
      log(`queue close ${q.name} failed:`, e.message);
    }
  }
  // Anything BullMQ left behind under our queue names (obliterate should
  // leave nothing): report and delete it.
  for (const q of queues) {
    try {
      const pattern = `${args.prefix}:${q.name}:*`;
      let cursor = '0';
      const left = [];
      do {
        const [next, keys] = await stats.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        left.push(...keys);
      } while (cursor !== '0');
      if (left.length) {
        log(`note: ${left.length} keys left under ${pattern} after obliterate (${left.slice(0, 5).join(', ')}); deleting`);
        for (let i = 0; i < left.length; i += 500) await stats.del(...left.slice(i, i + 500));
      }
    } catch (e) {
      log('leftover-key check failed:', e.message);
    }
  }
  for (const c of workerConns) await c.quit().catch(() => c.disconnect());
  await producerConn.quit().catch(() => producerConn.disconnect());
  await stats.quit().catch(() => stats.disconnect());
}

main().catch((e) => fail('unexpected error', e && e.stack ? e.stack : e));
