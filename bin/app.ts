/**
 * The CDK app entry (`npx cdk synth`, `npx cdk deploy --all`): a data stack and a service
 * stack per region, from the configuration in cdk.json's context (override with `-c`).
 * Synthesis needs no credentials and no network: no lookups, esbuild bundles locally.
 */
import { App } from 'aws-cdk-lib';
import { infraConfigFromContext, InfraConfigError } from '../lib/infra/config.ts';
import { addNagChecks, buildCluster } from '../lib/infra/stacks.ts';

const app = new App();
try {
  const config = infraConfigFromContext((key) => app.node.tryGetContext(key), { keys: Object.keys(app.node.getAllContext()) });
  buildCluster(app, config);
} catch (error) {
  if (!(error instanceof InfraConfigError)) throw error;
  console.error(error.message);
  process.exit(1);
}
addNagChecks(app);
app.synth();
