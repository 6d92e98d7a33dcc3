/**
 * The peer: a 3-member etcd cluster on loopback, driven through etcd's own JSON gateway
 * (`/v3/kv/put`, `/v3/kv/range`) with the same HTTP client and load runner as epochkv. Its
 * data directories go to a tmpfs when there is one (/dev/shm): DynamoDB Local runs in memory,
 * so neither side pays for a disk. When `etcd` is not installed the section is skipped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort } from '../local/emulators.ts';
import { failureCode, type HttpClient } from './http.ts';
import type { Outcome } from './load.ts';

export const etcdInstallHint =
  'etcd is not installed: on Debian/Ubuntu `sudo apt-get install etcd-server` (the `etcd` binary), or unpack a release from https://github.com/etcd-io/etcd/releases onto PATH; then run the benchmark again';

/** The etcd binary and its version, or undefined when there is none on PATH (or in EPOCHKV_ETCD). */
export function findEtcd(): { binary: string; version: string } | undefined {
  const binary = process.env.EPOCHKV_ETCD ?? 'etcd';
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) return undefined;
  const version = /etcd Version:\s*(\S+)/.exec(probe.stdout)?.[1] ?? probe.stdout.split('\n')[0] ?? 'unknown';
  return { binary, version };
}

interface Member {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDirectory: string;
  child: ChildProcess | undefined;
  id: string | undefined;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');

export class EtcdCluster {
  readonly members: Member[];
  readonly dataRoot: string;
  readonly #binary: string;
  readonly #http: HttpClient;
  readonly #initialCluster: string;
  readonly #token: string;

  private constructor(binary: string, http: HttpClient, members: Member[], dataRoot: string) {
    this.#binary = binary;
    this.#http = http;
    this.members = members;
    this.dataRoot = dataRoot;
    this.#initialCluster = members.map((member) => `${member.name}=${member.peerUrl}`).join(',');
    this.#token = `epochkv-bench-${process.pid}-${Date.now()}`;
  }

  static async start(binary: string, http: HttpClient, size = 3): Promise<EtcdCluster> {
    const base = existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
    const dataRoot = mkdtempSync(path.join(base, 'epochkv-bench-etcd-'));
    const members: Member[] = [];
    for (let index = 0; index < size; index += 1) {
      members.push({
        name: `m${index}`,
        clientUrl: `http://127.0.0.1:${await freePort()}`,
        peerUrl: `http://127.0.0.1:${await freePort()}`,
        dataDirectory: path.join(dataRoot, `m${index}`),
        child: undefined,
        id: undefined,
      });
    }
    const cluster = new EtcdCluster(binary, http, members, dataRoot);
    try {
      for (let index = 0; index < size; index += 1) cluster.startMember(index);
      await cluster.waitHealthy(30_000);
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  startMember(index: number): void {
    const member = this.members[index] as Member;
    if (member.child !== undefined && member.child.exitCode === null && member.child.signalCode === null) return;
    // With a data directory from an earlier start, etcd ignores the initial-cluster flags and rejoins.
    member.child = spawn(
      this.#binary,
      [
        '--name', member.name,
        '--data-dir', member.dataDirectory,
        '--listen-client-urls', member.clientUrl,
        '--advertise-client-urls', member.clientUrl,
        '--listen-peer-urls', member.peerUrl,
        '--initial-advertise-peer-urls', member.peerUrl,
        '--initial-cluster', this.#initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', this.#token,
        '--logger', 'zap',
        '--log-level', 'error',
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
  }

  alive(index: number): boolean {
    const child = this.members[index]?.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  async kill(index: number): Promise<void> {
    const child = this.members[index]?.child;
    if (child === undefined || !this.alive(index)) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  }

  /** Each live member's status: its id and the leader it knows. */
  async status(index: number): Promise<{ id: string; leader: string } | undefined> {
    const member = this.members[index] as Member;
    try {
      const answer = await this.#http.request('POST', `${member.clientUrl}/v3/maintenance/status`, { body: '{}', timeoutMs: 1_000 });
      if (answer.status !== 200) return undefined;
      const body = JSON.parse(answer.body.toString('utf8')) as { header?: { member_id?: string }; leader?: string };
      if (body.header?.member_id === undefined) return undefined;
      member.id = body.header.member_id;
      return { id: body.header.member_id, leader: body.leader ?? '0' };
    } catch {
      return undefined;
    }
  }

  /** The index of the member every live member agrees is the leader, or undefined. */
  async leader(): Promise<number | undefined> {
    const statuses = await Promise.all(this.members.map((_, index) => (this.alive(index) ? this.status(index) : Promise.resolve(undefined))));
    const leaders = new Set(statuses.filter((status) => status !== undefined).map((status) => status!.leader));
    if (leaders.size !== 1) return undefined;
    const [leaderId] = [...leaders];
    const index = this.members.findIndex((member) => member.id === leaderId);
    return index === -1 || !this.alive(index) ? undefined : index;
  }

  async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const statuses = await Promise.all(this.members.map((_, index) => (this.alive(index) ? this.status(index) : Promise.resolve(undefined))));
      const live = this.members.filter((_, index) => this.alive(index)).length;
      if (statuses.filter((status) => status !== undefined && status.leader !== '0').length === live && (await this.leader()) !== undefined) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`etcd: the cluster did not become healthy within ${timeoutMs} ms`);
  }

  async put(member: number, key: string, value: string, timeoutMs = 5_000): Promise<Outcome> {
    const url = `${(this.members[member] as Member).clientUrl}/v3/kv/put`;
    let answer;
    try {
      answer = await this.#http.request('POST', url, { body: JSON.stringify({ key: b64(key), value: b64(value) }), headers: { 'content-type': 'application/json' }, timeoutMs });
    } catch (error) {
      return { ok: false, code: failureCode(undefined, error) };
    }
    if (answer.status !== 200) return { ok: false, code: `etcd ${failureCode(answer)}` };
    // The raft term is etcd's epoch: it grows with every election.
    const term = Number((JSON.parse(answer.body.toString('utf8')) as { header?: { raft_term?: string } }).header?.raft_term);
    return Number.isFinite(term) ? { ok: true, epoch: term } : { ok: false, code: 'etcd answer without a header' };
  }

  /** Linearizable (etcd's default) or serializable (a member's local copy) range read of one key. */
  async get(member: number, key: string, serializable: boolean): Promise<Outcome> {
    const url = `${(this.members[member] as Member).clientUrl}/v3/kv/range`;
    let answer;
    try {
      answer = await this.#http.request('POST', url, { body: JSON.stringify({ key: b64(key), serializable }), headers: { 'content-type': 'application/json' } });
    } catch (error) {
      return { ok: false, code: failureCode(undefined, error) };
    }
    return answer.status === 200 ? { ok: true } : { ok: false, code: `etcd ${failureCode(answer)}` };
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((_, index) => this.kill(index)));
    rmSync(this.dataRoot, { recursive: true, force: true });
  }
}
