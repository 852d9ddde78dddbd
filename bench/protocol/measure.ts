import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { BenchClient } from './clients.js';

/** One workload: `inFlight` callers, each sending `payload` again as soon as its last call is answered. */
export interface Workload {
  id: 'rt1' | 'rt64' | 'bulk';
  title: string;
  payloadBytes: number;
  inFlight: number;
  /** Figure reported: calls per second, or payload MiB per second. */
  unit: 'calls/s' | 'MiB/s';
}

export interface RunFigure {
  calls: number;
  elapsedMs: number;
  /** In the workload's unit. */
  value: number;
  /** CPU time of the client (driver) process per second of wall time, in percent of one core. */
  clientCpuPct: number;
  /** Same for the server child, from /proc (null where there is no /proc). */
  serverCpuPct: number | null;
  /** Client plus server CPU time per call, in microseconds: less sensitive to other load than the rate. */
  cpuUsPerCall: number | null;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** User + system CPU time of a process in microseconds, from /proc/<pid>/stat; null if unreadable. */
export function processCpuUs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e6) / USER_HZ;
  } catch {
    return null;
  }
}

/**
 * Runs a workload for `durationMs`: callers stop starting calls at the deadline, the calls still
 * in flight are awaited and counted, and the rate is calls over the time until the last answer.
 */
export async function runFor(client: BenchClient, w: Workload, payload: Buffer, durationMs: number, serverPid?: number): Promise<RunFigure> {
  let calls = 0;
  let seq = 0;
  const server0 = serverPid === undefined ? null : processCpuUs(serverPid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  const caller = async () => {
    while (performance.now() < deadline) {
      await client.call(payload, ++seq);
      calls++;
    }
  };
  await Promise.all(Array.from({ length: w.inFlight }, caller));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const server1 = serverPid === undefined ? null : processCpuUs(serverPid);
  const clientUs = cpu.user + cpu.system;
  const serverUs = server0 === null || server1 === null ? null : server1 - server0;
  const perSecond = calls / (elapsedMs / 1000);
  return {
    calls,
    elapsedMs: Math.round(elapsedMs),
    value: w.unit === 'MiB/s' ? (perSecond * w.payloadBytes) / (1024 * 1024) : perSecond,
    clientCpuPct: Math.round((clientUs / 1000 / elapsedMs) * 100),
    serverCpuPct: serverUs === null ? null : Math.round((serverUs / 1000 / elapsedMs) * 100),
    cpuUsPerCall: serverUs === null || calls === 0 ? null : Math.round(((clientUs + serverUs) / calls) * 10) / 10,
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
