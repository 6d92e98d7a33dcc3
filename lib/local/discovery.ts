/**
 * How the `epochkv` CLI finds the local cloud `npm start` started, whatever its base port:
 * `npm start` writes `.epochkv/local-cloud.json` in its working directory while it runs, and
 * the CLI looks for it in its own working directory and then each parent.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const discoveryFileName = path.join('.epochkv', 'local-cloud.json');

export interface LocalCloudDiscovery {
  /** The `npm start` process: a file whose process is gone is stale (it was killed -9). */
  pid: number;
  /** The home region's API, the CLI's default endpoint. */
  apiUrl: string;
  regions: { region: string; role: string; apiUrl: string }[];
  dynamoEndpoint: string;
  sqsEndpoint: string;
  startedAt: string;
}

/** Writes the file under `directory` and returns its path. */
export function writeDiscoveryFile(directory: string, discovery: LocalCloudDiscovery): string {
  const file = path.join(directory, discoveryFileName);
  mkdirSync(path.dirname(file), { recursive: true });
  // Write then rename, so a CLI started at the same moment never reads half a file.
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(discovery, null, 2)}\n`);
  renameSync(temporary, file);
  return file;
}

/** Removes the file if it is still this process's (a second `npm start` may have replaced it). */
export function removeDiscoveryFile(file: string, pid = process.pid): void {
  try {
    const current = JSON.parse(readFileSync(file, 'utf8')) as Partial<LocalCloudDiscovery>;
    if (current.pid === pid) rmSync(file, { force: true });
  } catch {
    // Already gone or unreadable: nothing of ours to remove.
  }
}

export type DiscoveryResult =
  | { found: true; file: string; discovery: LocalCloudDiscovery }
  | { found: false; stale?: string | undefined };

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The nearest live local cloud's file from `start` upwards; a stale one is named, not used. */
export function findLocalCloud(start: string = process.cwd()): DiscoveryResult {
  let stale: string | undefined;
  for (let directory = path.resolve(start); ; directory = path.dirname(directory)) {
    const file = path.join(directory, discoveryFileName);
    let discovery: LocalCloudDiscovery | undefined;
    try {
      discovery = JSON.parse(readFileSync(file, 'utf8')) as LocalCloudDiscovery;
    } catch {
      discovery = undefined;
    }
    if (discovery !== undefined && typeof discovery.apiUrl === 'string') {
      if (typeof discovery.pid === 'number' && processAlive(discovery.pid)) return { found: true, file, discovery };
      stale ??= file;
    }
    if (path.dirname(directory) === directory) return { found: false, stale };
  }
}
