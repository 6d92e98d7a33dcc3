import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { contextKeys, infraConfigFromContext, infraDefaults, InfraConfigError, nodeIdsOfCount, validateInfraConfig, type InfraConfig } from '../../lib/infra/config.ts';
import { projectRoot } from '../../lib/infra/handler-function.ts';

const fromContext = (context: Record<string, unknown>, environment: NodeJS.ProcessEnv = {}) =>
  infraConfigFromContext((key) => context[key], { keys: Object.keys(context), environment });

/** The problems an invalid context reports (fails the test if it is valid). */
function problemsOf(context: Record<string, unknown>): string[] {
  try {
    fromContext(context);
  } catch (error) {
    if (error instanceof InfraConfigError) return error.problems;
    throw error;
  }
  throw new Error(`expected ${JSON.stringify(context)} to be refused`);
}

describe('Infra config: typed in one place, from cdk.json context and -c flags', () => {
  it('takes cdk.json as shipped to the documented defaults', () => {
    // Prepare
    const cdkJson = JSON.parse(readFileSync(path.join(projectRoot, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };

    // Act
    const config = fromContext(cdkJson.context);

    // Assess
    expect(config).toEqual({ ...infraDefaults, account: undefined });
    expect(Object.keys(cdkJson.context).filter((key) => key.startsWith('epochkv:')).sort()).toEqual(
      // The account and the alarm email have no default; nodeCount is the alternative to nodeIds.
      Object.values(contextKeys).filter((key) => key !== contextKeys.nodeCount && key !== contextKeys.account && key !== contextKeys.alarmEmail).sort(),
    );
  });

  it('parses -c strings: comma lists, JSON lists, integers, booleans; the account from CDK_DEFAULT_ACCOUNT', () => {
    const config = fromContext(
      {
        [contextKeys.replicaRegions]: 'eu-central-1, ap-northeast-1',
        [contextKeys.nodeIds]: '["n1","n2"]',
        [contextKeys.shardCount]: '16',
        [contextKeys.leaseMs]: '9000',
        [contextKeys.tickMs]: '1500',
        [contextKeys.deletionProtection]: 'false',
      },
      { CDK_DEFAULT_ACCOUNT: '123456789012' },
    );
    expect(config).toMatchObject({
      replicaRegions: ['eu-central-1', 'ap-northeast-1'],
      nodeIds: ['n1', 'n2'],
      shardCount: 16,
      leaseMs: 9000,
      tickMs: 1500,
      deletionProtection: false,
      account: '123456789012',
    });
  });

  it('takes `-c epochkv:replicaRegions=` as no replica regions, and a node count as generated ids', () => {
    expect(fromContext({ [contextKeys.replicaRegions]: '' }).replicaRegions).toEqual([]);
    expect(fromContext({ [contextKeys.nodeCount]: '5' }).nodeIds).toEqual(['node-a', 'node-b', 'node-c', 'node-d', 'node-e']);
    expect(nodeIdsOfCount(2)).toEqual(['node-a', 'node-b']);
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['duplicate regions', { [contextKeys.replicaRegions]: ['eu-west-1', 'us-east-1'] }, /regions must be distinct: us-east-1 appears more than once/],
    ['tickMs * 3 > leaseMs', { [contextKeys.tickMs]: 2500, [contextKeys.leaseMs]: 6000 }, /tickMs \* 3 must be <= leaseMs \(tickMs=2500, leaseMs=6000\)/],
    ['an unknown replication mode', { [contextKeys.replication]: 'majority' }, /epochkv:replication must be one of async, quorum, all; got "majority"/],
    ['a typo in a key', { 'epochkv:sharCount': 4 }, /unknown context key epochkv:sharCount/],
    ['a region that is not one', { [contextKeys.homeRegion]: 'virginia' }, /"virginia" is not an AWS region name/],
    ['a node count that disagrees with the ids', { [contextKeys.nodeCount]: 2, [contextKeys.nodeIds]: ['a', 'b', 'c'] }, /nodeCount=2 disagrees with epochkv:nodeIds/],
    ['duplicate node ids', { [contextKeys.nodeIds]: ['a', 'a'] }, /nodeIds has duplicates: a/],
    ['too many shards', { [contextKeys.shardCount]: 1000 }, /shardCount must be an integer from 1 to 256; got 1000/],
    ['a non-integer', { [contextKeys.leaseMs]: '6s' }, /epochkv:leaseMs must be an integer; got "6s"/],
    ['a prefix that cannot name a queue', { [contextKeys.prefix]: 'Epoch_KV' }, /epochkv:prefix must be lowercase letters/],
    ['a burst below the rate', { [contextKeys.apiRateLimitPerSecond]: 100, [contextKeys.apiBurstLimit]: 10 }, /epochkv:apiBurstLimit must be an integer >= epochkv:apiRateLimitPerSecond/],
    ['a retention CloudWatch does not offer', { [contextKeys.logRetentionDays]: 10 }, /epochkv:logRetentionDays must be one of 1, 3, 5/],
    ['a log retention of no entries', { [contextKeys.logRetainEntries]: 0 }, /epochkv:logRetainEntries must be an integer >= 1 \(the log's head always stays\); got 0/],
    ['a log retention of no time', { [contextKeys.logRetainAgeMs]: 0 }, /epochkv:logRetainAgeMs must be a positive integer \(ms\); got 0/],
  ])('refuses %s with a clear message', (_, context, message) => {
    const problems = problemsOf(context);
    expect(problems.join('\n')).toMatch(message);
  });

  it('lists every problem of a configuration at once', () => {
    const problems = problemsOf({ [contextKeys.replicaRegions]: ['us-east-1'], [contextKeys.tickMs]: 5000, [contextKeys.replication]: 'majority' });
    expect(problems).toHaveLength(3);
  });

  it('validates a configuration built in code the same way', () => {
    const config: InfraConfig = { ...infraDefaults, account: undefined, replicaRegions: ['us-east-1'] };
    expect(() => validateInfraConfig(config)).toThrow(/regions must be distinct/);
  });

  it('bin/app.ts stops with the problems and exit code 1 on a bad -c value, before building anything', () => {
    // The CDK CLI hands -c values to the app in CDK_CONTEXT_JSON.
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'bin/app.ts'], {
      cwd: projectRoot,
      env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify({ [contextKeys.tickMs]: 3000, [contextKeys.leaseMs]: 6000 }) },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('epochkv: invalid configuration');
    expect(result.stderr).toContain('tickMs * 3 must be <= leaseMs (tickMs=3000, leaseMs=6000)');
  });
});
