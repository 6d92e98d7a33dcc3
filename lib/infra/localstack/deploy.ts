/**
 * `npm run deploy:localstack [-- -c epochkv:key=value ...]`: bootstraps every region of the
 * cluster in LocalStack and deploys all stacks with cdklocal (aws-cdk-local), deletion
 * protection off. Start LocalStack first:
 *   docker compose -f lib/infra/localstack/docker-compose.yml up -d
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { contextKeys } from '../config.ts';
import { projectRoot } from '../handler-function.ts';
import { deploymentDirectory, localstack, localstackConfig, outputsFile, probeLocalstack, writeDeployment } from './target.ts';

function run(command: string, args: string[]): void {
  console.log(`deploy:localstack: ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, {
    cwd: projectRoot,
    stdio: 'inherit',
    // cdklocal points the CDK CLI at LocalStack itself and removes other AWS_* settings.
    env: { ...process.env, AWS_ACCESS_KEY_ID: localstack.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: localstack.credentials.secretAccessKey },
  });
  if (result.status !== 0) {
    console.error(`deploy:localstack: ${command} ${args[0] ?? ''} ${args[1] ?? ''} failed (exit ${result.status ?? result.signal})`);
    process.exit(result.status ?? 1);
  }
}

const forwarded = process.argv.slice(2);
const probe = await probeLocalstack(localstack.endpoint);
if (!probe.reachable) {
  console.error(`deploy:localstack: LocalStack is not reachable: ${probe.reason}.\nStart it with: docker compose -f ${localstack.composeFile} up -d`);
  process.exit(1);
}
const { config } = localstackConfig(forwarded);
const regions = [config.homeRegion, ...config.replicaRegions];
const startedMs = Date.now();
mkdirSync(deploymentDirectory, { recursive: true });
run('npx', ['cdklocal', 'bootstrap', ...regions.map((region) => `aws://${localstack.account}/${region}`)]);
run('npx', [
  'cdklocal',
  'deploy',
  '--all',
  '--require-approval',
  'never',
  '--outputs-file',
  outputsFile,
  '-c',
  `${contextKeys.deletionProtection}=false`,
  '-c',
  `${contextKeys.account}=${localstack.account}`,
  ...forwarded,
]);
writeDeployment({ endpoint: localstack.endpoint, config, deployedAt: new Date().toISOString() });
console.log(`deploy:localstack: ${regions.length} regions deployed in ${Math.round((Date.now() - startedMs) / 1000)} s; outputs in ${outputsFile}. Next: npm run test:localstack`);
